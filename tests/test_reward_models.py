"""Reward-robust RLHF (BRME) and RLBFF principle models: hand-computed formulas, the data they learn from, their
configs, and one cheap learning check each (docs/reward-models.md holds the GRPO tables)."""

import math
from pathlib import Path

import pytest
import torch
from test_reward_model import make_pairs
from tiny import WORDS
from transformers import Qwen2Config, Qwen2ForSequenceClassification

from mmalign.algorithms.reward_model import (
    BRMEConfig,
    RewardModelConfig,
    gaussian_heads,
    text_scorer,
    train_brme,
    train_principle_model,
)
from mmalign.preference import brme_reward, gaussian_preference_loss
from mmalign.rewards import check_reward_spec, resolve_reward
from mmalign.run_config import load_run_config
from mmalign.task import RewardError
from mmalign.text.policy import word_tokenizer
from mmalign.text.reward_models import (
    PRINCIPLES,
    PrincipleCheck,
    bleu_pairs,
    brme_reward_model,
    entailment_item,
    key_term,
    principle_examples,
    satisfies,
)
from mmalign.text.rewards import bleu

CONFIGS = Path(__file__).parents[1] / "configs" / "text"
ROW = {"prompt": "What is the capital of Australia?", "references": ["Canberra is the capital.", "Canberra"]}


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_gaussian_preference_loss_hand_values():
    # mu = 1 - 0, v = 1 + 1: z = 1 / sqrt(1 + 2 pi / 8); loss = -log s(z) = softplus(-z)
    z = 1 / math.sqrt(1 + 2 * math.pi / 8)
    loss = gaussian_preference_loss(t([1.0]), t([1.0]), t([0.0]), t([1.0]))
    assert loss.shape == (1, 1) and loss.item() == pytest.approx(softplus(-z))
    # KL(N(m, 1) || N(m, 2^2)) = log 2 + 1 / 8 - 1/2 for each response
    kl = math.log(2.0) + 1 / 8 - 0.5
    loss = gaussian_preference_loss(t([1.0]), t([1.0]), t([0.0]), t([1.0]), sigma0=2.0, beta=0.5)
    assert loss.item() == pytest.approx(softplus(-z) + 0.5 * 2 * kl)
    # a wide head predicts a flatter preference: the loss of a won pair rises with std; std -> 0 is Bradley-Terry
    wide = gaussian_preference_loss(t([2.0]), t([3.0]), t([0.0]), t([3.0]))
    sharp = gaussian_preference_loss(t([2.0]), t([1e-6]), t([0.0]), t([1e-6]))
    assert wide.item() > sharp.item() == pytest.approx(softplus(-2.0))
    # the order matters: swapping chosen and rejected costs more
    assert gaussian_preference_loss(t([0.0]), t([1.0]), t([1.0]), t([1.0])).item() == pytest.approx(softplus(z))


def test_brme_reward_mixes_the_most_confident_head_with_the_worst():
    means, stds = t([1.0, 3.0, 2.0], [0.0, -1.0, 4.0]), t([0.5, 0.1, 0.9], [0.3, 0.2, 0.1])
    # row 0: nominal = 3 (std 0.1), min = 1; row 1: nominal = 4 (std 0.1), min = -1
    assert brme_reward(means, stds, 0.25).tolist() == pytest.approx([0.25 * 3 + 0.75 * 1, 0.25 * 4 + 0.75 * -1])
    assert brme_reward(means, stds, 1.0).tolist() == [3.0, 4.0]
    assert brme_reward(means, stds, 0.0).tolist() == [1.0, -1.0]
    with pytest.raises(ValueError, match="lam"):
        brme_reward(means, stds, 1.5)


def test_gaussian_heads_split_means_and_scales():
    means, stds = gaussian_heads(t([1.0, 2.0, 0.0, 10.0]))
    assert means.tolist() == [[1.0, 2.0]]
    assert stds[0].tolist() == pytest.approx([math.log(2) + 1e-3, softplus(10.0) + 1e-3])
    with pytest.raises(ValueError, match="2K"):
        gaussian_heads(t([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="heads"):
        BRMEConfig(heads=0)


def test_principle_labels_are_the_verifiers():
    assert key_term(ROW) == "Canberra"
    cases = {
        ("one_sentence", "Canberra is the capital."): True, ("one_sentence", "Canberra. It is big."): False,
        ("one_sentence", "Canberra is the capital"): False, ("key_term", "I think it is canberra."): True,
        ("key_term", "It is Sydney."): False, ("number", "About 3 hours."): True, ("number", "Three."): False,
        ("no_question", "Why do you ask?"): False, ("no_question", "Canberra."): True,
        ("short", "one two three four five six"): True, ("short", "one two three four five six seven"): False,
    }
    for (name, response), label in cases.items():
        assert satisfies(name, ROW, response) is label, (name, response)
    item = (ROW["prompt"], "Canberra. | the response mentions Canberra")
    assert entailment_item(ROW, "Canberra.", "key_term") == item
    examples = principle_examples([ROW], ["no_question", "key_term"], seed=0)
    assert len(examples) == 2 * 8  # 8 candidate responses, each under both principles
    for (_, text), label in examples:
        response, principle = text.split(" | ")
        name = "no_question" if "question" in principle else "key_term"
        assert label == int(satisfies(name, ROW, response))
    assert PrincipleCheck(["no_question", "short"])([ROW, ROW], ["Canberra.", "Why is it so, my friend, tell me?"]) \
        == [1.0, 0.0]
    with pytest.raises(RewardError, match="choose from"):
        PrincipleCheck(["polite"])


def test_bleu_pairs_prefer_the_higher_bleu():
    rows = [ROW, {"prompt": "Translate to German: good morning", "references": ["Guten Morgen"]}]
    pairs = bleu_pairs(rows, 12, seed=0)
    assert len(pairs) == 12
    refs = {r["prompt"]: r["references"] for r in rows}
    for (prompt, chosen), (prompt_r, rejected) in pairs:
        assert prompt == prompt_r and bleu(chosen, refs[prompt]) > bleu(rejected, refs[prompt])


@pytest.mark.parametrize("name", ["tiny_brme", "tiny_bt_proxy", "tiny_bt_proxy_ppo", "tiny_principles",
                                  "tiny_seq2seq_grpo", "tiny_seq2seq_ppo"])
def test_reward_model_configs_load(name):
    cfg = load_run_config(CONFIGS / f"{name}.yaml")
    for spec in cfg.task_args.rewards:
        check_reward_spec(spec)  # names and options, without training the reward models
    assert {s["name"] for s in cfg.task_args.rewards} & {"brme", "bt_rm", "principles", "seq2seq_rm"}


def tiny_classifier(num_labels: int, seed: int = 0):
    torch.manual_seed(seed)
    tok = word_tokenizer(WORDS)
    model = Qwen2ForSequenceClassification(Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, num_labels=num_labels, pad_token_id=0))
    return model, text_scorer(model, tok)


def test_brme_heads_learn_the_preference(learning):
    """Every Gaussian head ranks held-out pairs; swapped labels would drive the accuracy to 0."""
    model, score = tiny_classifier(num_labels=2 * 3, seed=learning.seed)
    train, held_out = make_pairs(96, seed=2 * learning.seed), make_pairs(48, seed=2 * learning.seed + 1)
    history = train_brme(score, model.parameters(), train,
                         RewardModelConfig(lr=3e-3, epochs=2, batch_size=16, seed=learning.seed), BRMEConfig(heads=3))
    with torch.no_grad():
        (mc, sc), (mr, _) = (gaussian_heads(score([p[i] for p in held_out])) for i in (0, 1))
    accuracy = (mc > mr).float().mean(0)  # per head
    learning.report(worst_head=float(accuracy.min()), loss0=history[0]["loss"], loss=history[-1]["loss"])
    assert history[-1]["loss"] < history[0]["loss"]
    assert bool((accuracy > 0.9).all()), accuracy
    assert bool((brme_reward(mc, sc, 0.5) > brme_reward(mr, sc, 0.5)).float().mean() > 0.9)


def test_principle_model_learns_the_entailment(learning):
    """Entailment of "mentions cat" from (prompt, response, principle) items: held-out accuracy far above chance."""
    model, score = tiny_classifier(num_labels=1, seed=learning.seed)

    def examples(seed):
        pairs = make_pairs(48, seed)  # responses end in "cat" or "dog"; the principle names one of the two
        return [((p[0], f"{p[1]} about {animal}"), int(p[1].endswith(animal)))
                for pair in pairs for p in pair for animal in ("cat", "dog")]

    history = train_principle_model(score, model.parameters(), examples(2 * learning.seed),
                                    RewardModelConfig(lr=3e-3, epochs=4, batch_size=16, seed=learning.seed))
    held_out = examples(2 * learning.seed + 1)
    with torch.no_grad():
        logits = score([e[0] for e in held_out])
    accuracy = float(((logits > 0).long() == torch.tensor([e[1] for e in held_out])).float().mean())
    learning.report(accuracy=accuracy, loss0=history[0]["loss"], loss=history[-1]["loss"])
    assert history[-1]["loss"] < history[0]["loss"]
    assert accuracy > 0.9, accuracy


def test_reward_model_options_are_checked():
    assert set(PRINCIPLES) == {"one_sentence", "key_term", "number", "no_question", "short"}
    with pytest.raises(RewardError, match="bt_rm"):
        brme_reward_model(heads=0)  # refused before any data is built or model trained
    with pytest.raises(RewardError, match="accepts"):
        check_reward_spec({"name": "principles", "principle": ["short"]})


def test_config_rewards_build_and_score():
    """The registry path of a config: tiny proxies and a principle model trained on the instruction set score."""
    rows = [ROW, {"prompt": "Translate to German: good morning", "references": ["Guten Morgen"]}]
    outputs = ["Canberra is the capital.", "why why why ?"]
    for spec in ({"name": "brme", "heads": 2, "num_pairs": 16, "epochs": 1},
                 {"name": "bt_rm", "num_pairs": 16, "epochs": 1},
                 {"name": "principles", "principles": ["no_question"], "train_rows": 4, "epochs": 1}):
        _, fn, _ = resolve_reward(spec)
        scores = fn(rows, outputs)
        assert len(scores) == 2 and all(math.isfinite(s) for s in scores)
        assert fn(rows, outputs) == scores  # eval mode: scoring is deterministic
    again = resolve_reward({"name": "bt_rm", "num_pairs": 16, "epochs": 1})[1]
    assert again(rows, outputs) == resolve_reward({"name": "bt_rm", "num_pairs": 16, "epochs": 1})[1](rows, outputs)

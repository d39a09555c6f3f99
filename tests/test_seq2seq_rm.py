"""Sequence-to-sequence reward modelling (mmalign/text/seq2seq_rm.py): the mapping data, the token rewards against
the model's greedy tokens by hand, a trained model preferring the chosen response of its pairs, and per-token
rewards reaching PPO through the trainer (ragged lists padded, sequence rewards on the last step)."""

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from mmalign.run_config import load_run_config
from mmalign.task import RewardError, StepRewards, check_rewards
from mmalign.text.policy import word_tokenizer
from mmalign.text.reward_models import data_rows, vocabulary
from mmalign.text.seq2seq_rm import Seq2SeqRewardModel, mapping_examples
from mmalign.trainer import Trainer, add_rewards

PAIRS = [(("p1", "good answer"), ("p1", "bad")), (("p2", "yes"), ("p2", "no no"))]


def test_mapping_examples_are_correction_and_identity():
    assert mapping_examples(PAIRS) == [("p1", "bad", "good answer"), ("p1", "good answer", "good answer"),
                                       ("p2", "no no", "yes"), ("p2", "yes", "yes")]


def random_rm(max_new_tokens: int = 12) -> Seq2SeqRewardModel:
    """An untrained reward model over a word tokenizer: its greedy tokens are arbitrary, which the test reads."""
    rm = Seq2SeqRewardModel(num_pairs=4, match=2.0, diverge=-0.5)
    rm.tokenizer = word_tokenizer("p1 p2 good answer bad yes no".split())
    rm.max_new_tokens = max_new_tokens
    torch.manual_seed(0)
    rm.model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(rm.tokenizer), hidden_size=16, intermediate_size=32,
                                            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)).eval()
    return rm


@pytest.mark.parametrize("limit", [12, 2])
def test_token_rewards_compare_each_token_with_the_greedy_one(limit):
    """x SEP y SEP y_1 .. y_n EOS: the model's greedy token at the position before y_t (and before the stop token)
    against y_t, `match` or `diverge`; at the length limit the stop token is not judged."""
    rm = random_rm(max_new_tokens=limit)
    tok = rm.tokenizer
    ids = tok("p1", add_special_tokens=False)["input_ids"] + [tok.bos_token_id]
    ids += tok("good answer", add_special_tokens=False)["input_ids"] + [tok.bos_token_id]
    head = len(ids)
    ids += tok("good answer", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        greedy = rm.model(input_ids=torch.tensor([ids])).logits[0].argmax(-1)
    want = [2.0 if int(greedy[p - 1]) == ids[p] else -0.5 for p in range(head, len(ids))]
    assert rm.step_rewards(["p1"], ["good answer"]) == [want if limit > 2 else want[:2]]
    assert rm(["p1"], ["good answer"]) == [sum(want if limit > 2 else want[:2])]
    assert len(rm.step_rewards(["p1"], [""])[0]) == 1  # an empty answer: only its stop token, judged
    assert isinstance(rm, StepRewards) and rm.per_step


def test_trained_model_prefers_the_chosen_response(learning):
    """Sequence MLE on correction and identity mappings: on its own pairs the chosen response gets the higher
    sequence reward (with match and diverge swapped, the rejected one would)."""
    train, held_out = data_rows()
    tok = word_tokenizer(vocabulary(train + held_out) + ["why?"])
    rm = Seq2SeqRewardModel(num_pairs=32, seed=learning.seed, epochs=40, level="sequence")
    rm.learn(tok, max_new_tokens=64)
    pairs = [(c, r) for c, r in zip(rm.examples[1::2], rm.examples[0::2])]
    chosen = rm([p for (p, _, _), _ in pairs], [y for (_, y, _), _ in pairs])
    rejected = rm([p for _, (p, _, _) in pairs], [y for _, (_, y, _) in pairs])
    acc = sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)
    learning.report(accuracy=acc, loss_first=rm.history[0], loss_last=rm.history[-1])
    assert rm.history[-1] < 0.5 * rm.history[0]
    assert acc >= 0.8


def test_ragged_step_rewards_are_padded_and_checked():
    out = check_rewards([[1.0, -1.0], [], [0.5]], 3, "s2s", steps=4, lengths=[3, 1, 4])
    assert out.tolist() == [[1.0, -1.0, 0.0, 0.0], [0.0] * 4, [0.5, 0.0, 0.0, 0.0]]
    with pytest.raises(RewardError, match="3 per-step rewards for output 0, which has 2 steps"):
        check_rewards([[1.0, 1.0, 1.0], [1.0]], 2, "s2s", steps=4, lengths=[2, 4])


def test_sequence_rewards_join_step_rewards_on_the_last_real_step():
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    steps = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    want = [[1.0, 12.0, 0.0], [0.0, 0.0, 21.0]]
    assert add_rewards(steps, torch.tensor([10.0, 20.0]), mask).tolist() == want
    assert add_rewards(torch.tensor([10.0, 20.0]), steps, mask).tolist() == want


def test_ppo_trains_on_the_token_rewards(tmp_path):
    """The shipped PPO config: rollout rewards are the model's per-token rewards (+ BLEU, weight 0, on the last
    step); one update runs."""
    cfg = load_run_config("configs/text/tiny_seq2seq_ppo.yaml", [
        f"trainer.output_dir={tmp_path}", "trainer.steps=1", "trainer.contexts_per_step=2", "trainer.num_samples=2"])
    cfg.task_args.rewards[0].update(num_pairs=8, epochs=2)
    trainer = Trainer(cfg)
    rm = trainer.task.rewards[0][1]
    contexts = trainer.contexts_for(0)
    rollout = trainer.task.policy.sample(contexts, 2)
    trainer.score(contexts, rollout)
    want = rm.step_rewards([contexts[int(g)] for g in rollout.group], rollout.outputs)
    for row, real, w in zip(rollout.rewards, rollout.mask.sum(1).tolist(), want):
        assert row[:len(w)].tolist() == w and not row[len(w):].any() and len(w) <= real
    assert "loss" in trainer.step(0)

"""Text reward functions (mmalign.text.rewards) checked against hand-computed values, and reward specs
(mmalign.rewards)."""

import math
import subprocess
import sys

import pytest
import sacrebleu
import torch

from mmalign.rewards import REWARDS, combine_rewards, resolve_reward
from mmalign.task import RewardError, check_rewards
from mmalign.text.rewards import (
    BleuReward,
    ChrfReward,
    ExactMatchReward,
    RegexReward,
    SequenceClassifierReward,
    bleu,
    extract_answer,
    think_answer_format,
)

HYP = "the cat sat on a mat today"
REFS = ["the cat sat on the mat", "a cat sat on the mat"]


# --- BLEU -------------------------------------------------------------------------------------------------------


def test_bleu_add_one_two_references_by_hand():
    # Merged (max) reference counts: the x2, a, cat, sat, on, mat. Hypothesis n-grams and matches:
    # 1-grams 6/7, 2-grams (the cat, cat sat, sat on) 3/6, 3-grams (the cat sat, cat sat on) 2/5, 4-grams 1/4.
    # Add-one on every order: (7/8 * 4/7 * 3/6 * 2/5)^(1/4) = 0.1^(1/4); 7 tokens > shortest reference 6 -> BP 1.
    assert bleu(HYP, REFS) == pytest.approx(0.1**0.25, abs=1e-12)
    assert round(100 * bleu(HYP, REFS), 2) == 56.23  # the reference notes' number


def test_bleu_add_one_single_reference_by_hand():
    # Against "the cat sat on the mat" alone, "a" no longer matches: 1-grams 5/7 -> (6/8 * 4/7 * 3/6 * 2/5)^(1/4).
    assert bleu(HYP, REFS[:1]) == pytest.approx((6 / 8 * 4 / 7 * 3 / 6 * 2 / 5) ** 0.25, abs=1e-12)
    assert round(100 * bleu(HYP, REFS[:1]), 2) == 54.11


def test_garbage_scores_nonzero_under_add_one_and_zero_under_exp():
    # "zzz qqq": p = (0+1)/(2+1), (0+1)/(1+1), 1/1, 1/1 (add-one applies to unigrams too); BP = exp(1 - 6/2).
    expected = (1 / 3 * 1 / 2) ** 0.25 * math.exp(-2)
    assert bleu("zzz qqq", REFS, "add-one") == pytest.approx(expected, abs=1e-12)
    assert bleu("zzz qqq", REFS, "add-one") == pytest.approx(0.0865, abs=5e-5)
    assert bleu("zzz qqq", REFS, "exp") == 0.0


def test_brevity_penalty_uses_the_shortest_reference():
    # 5 tokens, references of 3 and 6 tokens. Every n-gram matches (1-grams 5/5 using the 6-token reference's two
    # "the"), so precision is 1. Shortest reference (3) -> BP 1 -> score 1. sacrebleu's closest (6) would give
    # BP = exp(1 - 6/5).
    refs = ["the cat sat", "the cat sat on the mat"]
    assert bleu("the cat sat on the", refs) == 1.0
    closest_bp = math.exp(1 - 6 / 5)
    assert sacrebleu.sentence_bleu("the cat sat on the", refs).score / 100 == pytest.approx(closest_bp, abs=1e-6)


def test_short_hypothesis_gets_brevity_penalty_and_add_one_on_empty_orders():
    # "the cat" vs a 6-token reference: p1 = 3/3, p2 = 2/2, p3 = p4 = (0+1)/(0+1) = 1; BP = exp(1 - 6/2).
    assert bleu("the cat", ["the cat sat on the mat"]) == pytest.approx(math.exp(-2), abs=1e-12)


@pytest.mark.parametrize(
    "smoothing, two_refs, one_ref",
    [("exp", 45.50, 43.47), ("add-k", 55.95, 53.45), ("add-one", 56.23, 54.11)],
)
def test_bleu_smoothings_match_reference_table(smoothing, two_refs, one_ref):
    assert bleu(HYP, REFS, smoothing) == pytest.approx(two_refs / 100, abs=5e-5)
    assert bleu(HYP, REFS[:1], smoothing) == pytest.approx(one_ref / 100, abs=5e-5)


def test_bleu_tokenizes_with_13a_and_keeps_case():
    assert bleu("The cat sat on the mat.", ["The cat sat on the mat ."]) == 1.0  # 13a splits the final period
    assert bleu("THE CAT SAT ON THE MAT", ["the cat sat on the mat"]) < 0.2


@pytest.mark.parametrize("smoothing", ["add-one", "exp", "add-k"])
def test_empty_answer_scores_zero(smoothing):
    reward = BleuReward(smoothing=smoothing)
    ctx = {"prompt": "p", "references": REFS}
    assert reward([ctx, ctx, ctx], ["", "   ", "<think>hm</think><answer> </answer>"]) == [0.0, 0.0, 0.0]


def test_bleu_rejects_unknown_smoothing_and_missing_references():
    with pytest.raises(ValueError, match="add-one"):
        bleu(HYP, REFS, smoothing="add-two")
    with pytest.raises(ValueError, match="add-one"):
        BleuReward(smoothing="exponential")
    with pytest.raises(ValueError, match="non-empty"):
        bleu(HYP, [])


def test_bleu_reward_reads_references_and_extracts_answer():
    rows = [{"prompt": "p", "references": REFS}, {"prompt": "q", "ref": "the cat sat on the mat"}]
    wrapped = f"<think>let me think</think><answer>{HYP}</answer>"
    assert BleuReward()(rows[:1], [wrapped]) == pytest.approx([0.1**0.25])
    assert BleuReward(extract_answer=False)(rows[:1], [wrapped])[0] < 0.1**0.25
    assert BleuReward(references_key="ref")(rows[1:], ["the cat sat on the mat"]) == [1.0]
    with pytest.raises(ValueError, match="'references' field"):
        BleuReward()(rows[1:], [HYP])


def test_extract_answer():
    assert extract_answer("<think>x</think><answer> Paris </answer>") == "Paris"
    assert extract_answer("<answer>a\nb</answer> <answer>c</answer>") == "a\nb"
    assert extract_answer("  no tags ") == "no tags"


# --- other rule-based rewards -----------------------------------------------------------------------------------


def test_chrf_reward():
    rows = [{"references": ["the cat sat on the mat"]}] * 3
    scores = ChrfReward()(rows, ["the cat sat on the mat", "", "the cat"])
    assert scores[:2] == [pytest.approx(1.0), 0.0]
    assert scores[2] == pytest.approx(sacrebleu.sentence_chrf("the cat", ["the cat sat on the mat"]).score / 100)
    assert 0.0 < scores[2] < 1.0


def test_exact_match_normalization():
    rows = [{"references": ["Paris", "The capital is Paris."]}] * 4
    outputs = ["  paris ", "the capital  is\nParis.", "<answer>PARIS</answer>", "Paris!"]
    assert ExactMatchReward()(rows, outputs) == [1.0, 1.0, 1.0, 0.0]
    assert ExactMatchReward(normalize=False)(rows, outputs) == [0.0, 0.0, 0.0, 0.0]
    assert ExactMatchReward(normalize=False)(rows[:1], [" Paris\n"]) == [1.0]  # stripped, case kept


def test_regex_reward():
    rows = [{"pattern": r"\d+"}, {"pattern": r"cat"}]
    assert RegexReward(r"\bmice\b")(rows, ["three mice", "mouse"]) == [1.0, 0.0]
    assert RegexReward(r"mice", fullmatch=True)(rows, ["three mice", " mice "]) == [0.0, 1.0]
    assert RegexReward(r"MICE", ignore_case=True)(rows, ["mice", "x"]) == [1.0, 0.0]
    assert RegexReward(pattern_key="pattern")(rows, ["42", "dog"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="exactly one"):
        RegexReward()


def test_think_answer_format():
    outputs = [
        "<think>reason</think><answer>42</answer>",
        "  <think>a\nb</think>\n<answer>x</answer>\n",
        "<answer>42</answer>",
        "<think>r</think><answer>42</answer> trailing",
        "<think>r</think>",
    ]
    assert think_answer_format([{}] * 5, outputs) == [1.0, 1.0, 0.0, 0.0, 0.0]


# --- validation and combination ---------------------------------------------------------------------------------


def test_check_rewards_returns_float_tensor():
    out = check_rewards([1, 0.5, torch.tensor(2.0)], 3, "bleu")
    assert out.dtype == torch.float32 and out.tolist() == [1.0, 0.5, 2.0]
    assert check_rewards(torch.ones(2, dtype=torch.float64), 2, "x").dtype == torch.float32


def test_check_rewards_names_the_function_and_the_problem():
    with pytest.raises(ValueError, match=r"'my_reward' returned 2 values .* for 3 outputs; expected 3"):
        check_rewards([0.1, 0.2], 3, "my_reward")
    with pytest.raises(ValueError, match=r"'my_reward' returned non-finite values at positions \[1\]"):
        check_rewards([0.1, float("nan"), 0.3], 3, "my_reward")
    with pytest.raises(ValueError, match=r"non-finite values at positions \[0\]"):
        check_rewards(torch.tensor([float("inf")]), 1, "rm")
    with pytest.raises(ValueError, match=r"'my_reward' returned \[0.1, None\]; expected 2 numbers"):
        check_rewards([0.1, None], 2, "my_reward")
    with pytest.raises(RewardError, match=r"shape \(2, 1\)"):
        check_rewards(torch.zeros(2, 1), 2, "rm")


def constant(value):
    def fn(contexts, outputs, **kwargs):
        return [value] * len(outputs)

    return fn


def length_reward(contexts, outputs, **kwargs):
    return [float(len(o)) for o in outputs]


def test_combine_rewards_weights_and_reports_each():
    combined = combine_rewards({"one": constant(1.0), "len": length_reward}, weights=[0.5, 2.0])
    total, per_fn = combined([{}, {}], ["ab", "abcd"])
    assert total.tolist() == [0.5 + 4.0, 0.5 + 8.0]
    assert per_fn["one"].tolist() == [1.0, 1.0] and per_fn["len"].tolist() == [2.0, 4.0]
    total, per_fn = combine_rewards([length_reward])([{}], ["abc"])
    assert total.tolist() == [3.0] and list(per_fn) == ["length_reward"]


def test_combine_rewards_errors():
    with pytest.raises(ValueError, match="2 weights for 1 reward"):
        combine_rewards([length_reward], weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="dict"):
        combine_rewards([BleuReward(), BleuReward(smoothing="exp")])
    with pytest.raises(ValueError, match=r"'broken' returned 1 values .* for 2 outputs"):
        combine_rewards({"broken": lambda contexts, outputs: [1.0]})([{}, {}], ["a", "b"])


def test_resolve_reward_from_registry():
    name, fn, weight = resolve_reward({"name": "bleu", "smoothing": "exp", "weight": 0.5})
    assert (name, weight) == ("bleu", 0.5)
    assert isinstance(fn, BleuReward) and fn.smoothing == "exp"
    name, fn, weight = resolve_reward("format")
    assert (name, fn, weight) == ("format", think_answer_format, 1.0)
    name, fn, _ = resolve_reward({"name": "exact_match", "label": "em", "normalize": False})
    assert name == "em" and fn.normalize is False
    assert set(REWARDS) >= {"bleu", "chrf", "exact_match", "regex", "format", "reward_model"}


def test_resolve_reward_from_import_string():
    name, fn, weight = resolve_reward({"fn": "mmalign.text.rewards:think_answer_format", "weight": 2})
    assert (name, fn, weight) == ("format", think_answer_format, 2.0)  # a reward function, used as is
    name, fn, _ = resolve_reward({"fn": "mmalign.text.rewards:BleuReward", "smoothing": "add-k"})  # a factory
    assert name == "bleu" and isinstance(fn, BleuReward) and fn.smoothing == "add-k"
    name, fn, _ = resolve_reward({"fn": "mmalign.text.rewards:RegexReward", "pattern": "mice", "label": "mice"})
    assert name == "mice" and fn([{}], ["three mice"]) == [1.0]


def test_resolve_reward_errors():
    with pytest.raises(ValueError, match=r"unknown reward 'blue'; use one of \['bleu'"):
        resolve_reward({"name": "blue"})
    with pytest.raises(ValueError, match=r"bad options \['smooth'\].*accepts \['references_key', 'smoothing'"):
        resolve_reward({"name": "bleu", "smooth": True})
    with pytest.raises(ValueError, match="exactly one of 'name'"):
        resolve_reward({"weight": 1.0})
    with pytest.raises(ValueError, match="cannot import"):
        resolve_reward({"fn": "mmalign.rewards:nope"})


def test_core_imports_no_domain_library():
    """The reward registry names its rewards by import string: the trainer, the CLI and the registry load in a fresh
    interpreter without any domain's libraries (they come with the reward, model or env that needs them)."""
    heavy = ["sacrebleu", "transformers", "diffusers", "gymnasium", "mujoco"]
    code = (f"import sys, mmalign.trainer, mmalign.cli, mmalign.rewards\n"
            f"loaded = [m for m in {heavy!r} if m in sys.modules]\n"
            "assert not loaded, f'importing the core loaded {loaded}'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- learned reward model ---------------------------------------------------------------------------------------

WORDS = "the cat sat on mat dog ran park user assistant : hello".split()
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>")


def tiny_classifier(num_labels=1):
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(WORDS) + 2, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64, num_labels=num_labels,
        pad_token_id=0,
    )  # fmt: skip
    return Qwen2ForSequenceClassification(cfg)


def manual_score(model, tokenizer, text):
    ids = tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return float(model(input_ids=ids).logits[0, 0])


def test_sequence_classifier_reward_scores_prompt_plus_output():
    model, tokenizer = tiny_classifier(), word_tokenizer()
    reward = SequenceClassifierReward(model, tokenizer, batch_size=2)
    rows = [{"prompt": "the cat "}, {"prompt": "the dog "}, {"prompt": "hello "}]
    outputs = ["sat on the mat", "ran", "the dog ran park"]
    assert reward.format_text(rows[0], outputs[0]) == "the cat sat on the mat"
    scores = reward(rows, outputs)  # padded batches of 2 and 1
    expected = [manual_score(model, tokenizer, p["prompt"] + o) for p, o in zip(rows, outputs, strict=True)]
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(scores)) == 3


def test_sequence_classifier_reward_uses_chat_template(tmp_path):
    model, tokenizer = tiny_classifier(), word_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    # From a local folder; with a model folder, transformers picks the model type's tokenizer class (Qwen2's, which
    # splits words differently from this toy word-level one), so the scoring check passes the tokenizer explicitly.
    assert SequenceClassifierReward(tmp_path).tokenizer.chat_template == CHAT_TEMPLATE
    reward = SequenceClassifierReward(tmp_path, tokenizer)
    text = reward.format_text({"prompt": "hello"}, "the cat")
    assert text == "user : hello assistant : the cat "
    assert reward([{"prompt": "hello"}], ["the cat"]) == pytest.approx(
        [manual_score(model, tokenizer, text)], abs=1e-5
    )


def test_sequence_classifier_reward_needs_one_label():
    with pytest.raises(ValueError, match="num_labels=1"):
        SequenceClassifierReward(tiny_classifier(num_labels=2), word_tokenizer())
    with pytest.raises(ValueError, match="no tokenizer"):
        SequenceClassifierReward(tiny_classifier())

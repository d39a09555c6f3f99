"""Decoding-time alignment against its formulas, on tiny real causal LMs (tests/tiny.py) sharing one vocabulary."""

import pytest
import torch
from tiny import PROMPTS, ROWS, WORDS, tiny_lm, tiny_policy

from mmalign.decoding import (
    CalibratedReward,
    GuidedLM,
    Source,
    best_of_n,
    bon_win_rate,
    bon_wins,
    calibrate,
    guided,
    sequence_kl,
    transform,
)
from mmalign.text.policy import positions, word_tokenizer
from mmalign.text.search import lookahead_decode, value_guided_decode


def test_guided_is_anchor_plus_weighted_differences():
    anchor, a, b, c = torch.randn(4, 3, 7).unbind(0)
    out = guided(anchor, [(0.5, a, b), (2.0, c, None)])
    torch.testing.assert_close(out, anchor + 0.5 * (a - b) + 2.0 * c)
    assert torch.equal(guided(anchor, [(0.0, a, b), (0.0, c, None)]), anchor)


def prefill_logits(model, policy, contexts):
    ids, attn = policy.encode(contexts)
    return model(input_ids=ids, attention_mask=attn, position_ids=positions(attn)).logits[:, -1].float()


@torch.no_grad()
def test_rast_and_genarm_logits_equal_their_formulas():
    policy = tiny_policy(seed=0)
    small_rl, small_base, arm = tiny_lm(1), tiny_lm(2), tiny_lm(3)
    large = prefill_logits(policy.model, policy, PROMPTS)
    rl, base, arm_logits = (prefill_logits(m, policy, PROMPTS) for m in (small_rl, small_base, arm))
    ids, attn = policy.encode(PROMPTS)
    inputs = {"input_ids": ids, "attention_mask": attn, "position_ids": positions(attn), "use_cache": True}
    rast = GuidedLM(policy.model, [Source(0.7, small_rl, small_base)])(**inputs).logits[:, -1]
    torch.testing.assert_close(rast, large + 0.7 * (rl - base), rtol=1e-5, atol=1e-5)
    beta = 0.5
    genarm = GuidedLM(policy.model, [Source(2.0 / beta, arm, logprobs=True)])(**inputs).logits[:, -1]
    torch.testing.assert_close(genarm, large + 4.0 * torch.log_softmax(arm_logits, -1), rtol=1e-5, atol=1e-5)


def test_zero_weight_guidance_samples_exactly_the_base_model():
    policy = tiny_policy(seed=0)
    guided_lm = GuidedLM(policy.model, [Source(0.0, tiny_lm(1), tiny_lm(2)), Source(0.0, tiny_lm(3), logprobs=True)])
    torch.manual_seed(5)
    plain = policy.sample(PROMPTS, 3)
    torch.manual_seed(5)
    same = policy.sample(PROMPTS, 3, model=guided_lm)
    assert same.outputs == plain.outputs and torch.equal(same.logprobs, plain.logprobs)
    assert guided_lm.calls > 0 and len(guided_lm.models) == 1  # zero-weight models never run


def test_guidance_changes_what_is_sampled():
    policy = tiny_policy(seed=0)
    steer = GuidedLM(policy.model, [Source(5.0, tiny_lm(1), tiny_lm(2))])
    torch.manual_seed(5)
    plain = policy.sample(PROMPTS, 4).outputs
    torch.manual_seed(5)
    steered = policy.sample(PROMPTS, 4, model=steer).outputs
    assert steered != plain


def count_cat(contexts, outputs):
    return [float(o.split().count("cat")) for o in outputs]


def count_dog(contexts, outputs):
    return [float(o.split().count("dog")) for o in outputs]


def test_best_of_one_is_plain_sampling_and_best_of_many_is_the_best():
    policy = tiny_policy(seed=0)
    torch.manual_seed(3)
    plain = policy.sample(PROMPTS, 1).outputs
    torch.manual_seed(3)
    assert best_of_n(policy, PROMPTS, count_cat, 1)[0] == plain
    torch.manual_seed(3)
    drawn = policy.sample(PROMPTS, 8).outputs
    torch.manual_seed(3)
    best, cost = best_of_n(policy, PROMPTS, count_cat, 8)
    for i, out in enumerate(best):
        assert count_cat(None, [out])[0] == max(count_cat(None, drawn[8 * i: 8 * i + 8]))
    assert cost.tokens > 0 and cost.model_calls > 0
    with pytest.raises(ValueError, match="n >= 1"):
        best_of_n(policy, PROMPTS, count_cat, 0)


def test_search_with_one_candidate_is_greedy():
    policy = tiny_policy(seed=0)
    greedy = policy.sample(PROMPTS, 1, greedy=True).outputs
    assert lookahead_decode(policy, PROMPTS, count_cat, k=1)[0] == greedy
    assert value_guided_decode(policy, PROMPTS, count_cat, tiny_lm(1), k=1)[0] == greedy


def test_search_under_a_reward_raises_it():
    policy = tiny_policy(seed=0)
    greedy = sum(count_dog(None, policy.sample(PROMPTS, 1, greedy=True).outputs))
    deal, cost = lookahead_decode(policy, PROMPTS, count_dog, k=8, depth=2)
    assert sum(count_dog(None, deal)) > greedy + 2, deal
    assert cost.tokens > 3 * len(PROMPTS)  # the lookahead tokens are counted
    tq, _ = value_guided_decode(policy, PROMPTS, count_dog, policy.model, k=8, alpha=20.0,
                                generator=torch.Generator().manual_seed(0))
    assert sum(count_dog(None, tq)) > greedy + 2, tq


def test_calibrated_reward_is_uniform_on_the_references_own_samples():
    ref = torch.tensor([[0.3, 0.1, 0.9, 0.5]])
    own = calibrate(ref[0], ref.expand(4, 4))
    assert sorted(own.tolist()) == [0.125, 0.375, 0.625, 0.875]
    assert calibrate(torch.tensor([0.5]), torch.tensor([[0.5, 0.5]])).item() == 0.5  # ties count half
    u = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(transform(u, "exp", 3.0), torch.exp(3.0 * u))
    assert torch.equal(transform(u, "identity"), u)
    with pytest.raises(ValueError, match="identity, exp, log"):
        transform(u, "cube")


def test_ctrl_reward_wraps_any_reward():
    refs = {ROWS[0]["prompt"]: ["cat", "cat cat", "dog", "cat cat cat"]}
    ctrl = CalibratedReward(count_cat, refs, kind="exp", t=2.0)
    got = ctrl([ROWS[0]] * 2, ["cat cat", "cat cat cat cat"])
    assert got == pytest.approx([torch.exp(torch.tensor(2 * 0.625)).item(), torch.exp(torch.tensor(2.0)).item()])
    with pytest.raises(KeyError, match="no reference samples"):
        ctrl([ROWS[1]], ["cat"])


def test_bon_wins_take_each_sides_best_and_count_ties_half():
    mine = torch.tensor([[0.1, 0.5], [0.3, 0.3], [0.2, 0.0]])
    theirs = torch.tensor([[0.4, 0.2], [0.1, 0.3], [0.9, 0.1]])
    assert bon_wins(mine, theirs).tolist() == [1.0, 0.5, 0.0]  # bests 0.5 > 0.4, 0.3 = 0.3, 0.2 < 0.9
    assert bon_wins(theirs, mine).tolist() == [0.0, 0.5, 1.0]
    assert bon_wins(mine[:, :1], theirs[:, :1]).tolist() == [0.0, 1.0, 0.0]  # best-of-1: the first draws
    with pytest.raises(ValueError, match="N samples of each side"):
        bon_wins(mine, theirs[:, :1])


def test_sequence_kl_sums_the_log_ratio_over_real_steps():
    logprobs, ref = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]]), torch.tensor([[-1.5, -1.0, -9.0],
                                                                                           [-0.5, -2.5, -0.5]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    assert sequence_kl(logprobs, ref, mask).tolist() == [0.5 - 1.0, 2.0]  # the padded step (+6) counts nothing


def one_token_policy(seed: int, reference: int):
    """A tiny policy of one-token answers whose reference (a frozen copy) is another tiny LM, seed `reference`; a low
    temperature sharpens both (random-init logits are near uniform)."""
    policy = tiny_policy(seed=reference, reference="copy", max_new_tokens=1, temperature=0.1)
    policy.model.load_state_dict(tiny_lm(seed).state_dict())
    return policy


def word_index(contexts, outputs):
    """A reward with a value per word of tests/tiny.py (-1 for an empty answer)."""
    return [float(WORDS.index(o)) if o in WORDS else -1.0 for o in outputs]


@torch.no_grad()
def first_token_values(policy, model, context) -> dict[float, float]:
    """P(reward = v) of a one-token answer of `model` to `context`: softmax(logits / T) summed over tokens."""
    p = torch.softmax(prefill_logits(model, policy, [context])[0] / policy.temperature, -1)
    tok = policy.tokenizer
    rewards = word_index(None, [tok.decode([i], skip_special_tokens=True) for i in range(len(p))])
    out: dict[float, float] = {}
    for v, q in zip(rewards, p.tolist()):
        out[v] = out.get(v, 0.0) + q
    return out


def exact_bon_win(pol: dict, ref: dict, n: int) -> float:
    """P(best of n policy rewards > best of n reference rewards) + 1/2 P(equal), from the two distributions."""
    values = sorted(set(pol) | set(ref))

    def cdf(d, v):
        return sum(q for x, q in d.items() if x <= v)

    def below(d, v):
        return sum(q for x, q in d.items() if x < v)

    win = 0.0
    for v in values:  # P(max = v) = F(v)^n - F(v-)^n
        p_max = cdf(pol, v) ** n - below(pol, v) ** n
        win += p_max * (below(ref, v) ** n + 0.5 * (cdf(ref, v) ** n - below(ref, v) ** n))
    return win


def test_bon_win_rate_and_kl_of_one_token_answers_equal_their_formulas():
    """With one-token answers the sequence KL is the first token's KL(pi || pi_ref), and the best-of-N win rate is
    exact from the two first-token distributions; the Monte-Carlo estimates land on both."""

    policy, context, n, rounds = one_token_policy(seed=1, reference=0), ROWS[0], 3, 1500
    pol, ref = (first_token_values(policy, m, context) for m in (policy.model, policy.ref_model))
    with torch.no_grad():
        logp, logq = (torch.log_softmax(prefill_logits(m, policy, [context])[0] / policy.temperature, -1)
                      for m in (policy.model, policy.ref_model))
    kl = float((logp.exp() * (logp - logq)).sum())
    torch.manual_seed(0)
    got = bon_win_rate(policy, [context], word_index, n, policy.prompt_sampler(reference=True), rounds)
    assert got["kl"] == pytest.approx(kl, abs=0.05) and kl > 0.2
    assert got["win_rate"] == pytest.approx(exact_bon_win(pol, ref, n), abs=0.04)
    swapped = exact_bon_win(ref, pol, n)
    assert abs(exact_bon_win(pol, ref, n) - swapped) > 0.1  # the two sides are told apart


def test_bon_win_rate_against_itself_is_one_half():
    """A policy against its own copy: no KL (exactly), and best-of-1 wins half the draws in expectation."""

    policy = tiny_policy(seed=0, reference="copy")
    torch.manual_seed(0)
    got = bon_win_rate(policy, ROWS, word_index, 1, policy.prompt_sampler(reference=True), rounds=400, batch=1)
    assert got["kl"] == 0.0
    assert got["win_rate"] == pytest.approx(0.5, abs=0.05)
    torch.manual_seed(0)
    wins = [bon_win_rate(policy, [row], word_index, 1, policy.prompt_sampler(reference=True), rounds=400)["win_rate"]
            for row in ROWS]  # the same draws: one context at a time, as batch=1 drew them
    assert got["win_rate_se"] == pytest.approx(abs(wins[0] - wins[1]) / 2, rel=1e-5)  # std of two / sqrt(2)
    assert got["reward"] == pytest.approx(got["reference_reward"], abs=1.0)
    with pytest.raises(ValueError, match="n >= 1"):
        bon_win_rate(policy, ROWS, word_index, 0, policy.prompt_sampler(reference=True))


def test_arm_loss_is_bradley_terry_on_summed_log_probs():
    """GenARM's reward model: r(x, y) = sum_t log pi_r(y_t | x, y_<t), loss -log sigmoid(beta (r_w - r_l))."""
    from mmalign.algorithms.offline import PreferenceConfig, preference_loss

    policy = tiny_policy(seed=0)
    rows = [{"prompt": r["prompt"], "chosen": r["references"][0], "rejected": "the the the"} for r in ROWS]
    loss, _ = preference_loss(policy, rows, PreferenceConfig(loss="arm", beta=0.5))
    sums = []
    for key in ("chosen", "rejected"):
        rollout = policy.rollout_from(rows, [r[key] for r in rows])
        sums.append((policy.logprobs(rollout) * rollout.mask).sum(-1))
    expected = -torch.nn.functional.logsigmoid(0.5 * (sums[0] - sums[1])).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


PROMPT = "Translate to German: good morning"  # a row of the shipped instruction set, with references


def test_cli_samples_and_evaluates_with_a_decoding_method(tmp_path, capsys):
    import json
    from pathlib import Path

    from mmalign.cli import main

    config = str(Path(__file__).resolve().parents[1] / "configs/text/tiny_grpo.yaml")
    args = [config, f"trainer.output_dir={tmp_path}", "task_args.eval_size=4"]
    assert main(["sample", *args, "--prompt", PROMPT, "--decode", "bon", "--decode-arg", "n=3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["context"] == PROMPT and lines[-1]["cost/tokens"] > 0
    assert main(["eval", *args, "--decode", "deal", "--decode-arg", "k=2", "--decode-arg", "depth=1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert "reward/bleu" in report and report["cost/model_calls"] > 0
    assert main(["sample", *args, "--prompt", "x", "--decode", "rast"]) == 2
    assert "needs small and small_base" in capsys.readouterr().err
    assert main(["sample", *args, "--prompt", "x", "--decode", "beam"]) == 2  # the task names its methods
    assert "--decode beam: unknown decoding method 'beam'; use one of sample, greedy, bon" in capsys.readouterr().err
    assert main(["eval", *args, "--decode-arg", "n=3"]) == 2
    assert "--decode METHOD" in capsys.readouterr().err


def test_cli_reports_the_best_of_n_win_rate_against_the_reference(tmp_path, capsys):
    """`mmalign eval --win-rate N`: an untrained policy against its reference copy has KL 0 exactly; a policy with
    no reference, or the flag beside --decode, is refused with the fix."""
    import json
    from pathlib import Path

    from mmalign.cli import main

    config = str(Path(__file__).resolve().parents[1] / "configs/text/tiny_grpo.yaml")
    args = [config, f"trainer.output_dir={tmp_path}", "task_args.eval_size=3"]
    assert main(["eval", *args, "task_args.reference=copy", "--win-rate", "2", "--rounds", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["kl"] == 0.0 and 0.0 <= report["win_rate"] <= 1.0
    assert main(["eval", *args, "--win-rate", "2"]) == 2
    assert "set reference: copy" in capsys.readouterr().err
    assert main(["eval", *args, "--win-rate", "2", "--decode", "bon"]) == 2
    assert "leave out --decode" in capsys.readouterr().err


def test_decoder_wires_each_method_and_refuses_a_foreign_vocabulary():
    from mmalign.text.decoder import Decoder, DecodeSettings

    policy = tiny_policy(seed=0)
    models = {"rl": tiny_lm(1), "base": tiny_lm(2), "arm": tiny_lm(3), "big": tiny_lm(4, vocab=99)}
    rast = Decoder(policy, "rast", settings=DecodeSettings(small="rl", small_base="base", weight=0.0),
                   load=models.__getitem__)
    torch.manual_seed(1)
    plain = policy.sample(PROMPTS, 1).outputs
    torch.manual_seed(1)
    assert rast.sample(PROMPTS, 1).outputs == plain  # lambda 0: the large model's own samples
    genarm = Decoder(policy, "genarm", settings=DecodeSettings(arm=["arm"], weight=1.0, beta=0.1),
                     load=models.__getitem__)
    assert len(genarm.sample(PROMPTS, 2).outputs) == 2 * len(PROMPTS) and genarm.report()["cost/model_calls"] > 0
    tq = Decoder(policy, "tq", count_dog, DecodeSettings(aligned="rl", k=1), load=models.__getitem__)
    assert tq.sample(PROMPTS).outputs == policy.sample(PROMPTS, 1, greedy=True).outputs
    spent = []
    for rollout in (0, 1):  # Q from a 1-token rollout instead of one to the end: fewer tokens
        tq = Decoder(policy, "tq", count_dog, DecodeSettings(aligned="rl", k=2, rollout=rollout), models.__getitem__)
        tq.sample(PROMPTS)
        spent.append(tq.cost.tokens)
    assert spent[1] < spent[0]
    with pytest.raises(ValueError, match="share one tokenizer"):
        Decoder(policy, "tq", count_dog, DecodeSettings(aligned="big"), load=models.__getitem__)
    with pytest.raises(ValueError, match="searches under a reward"):
        Decoder(policy, "bon")


def test_best_of_n_ranks_diffusion_samples_too():
    """The same best-of-N over a (tiny) diffusion policy: the brightest of N images per prompt."""
    import numpy as np
    from diffusion_tiny import PROMPTS as IMAGE_PROMPTS
    from diffusion_tiny import tiny_diffusion_policy

    def brightness(contexts, outputs):
        return [float(np.asarray(o, np.float32).mean()) for o in outputs]

    policy = tiny_diffusion_policy()
    torch.manual_seed(0)
    drawn = brightness(None, policy.sample(IMAGE_PROMPTS, 4).outputs)
    torch.manual_seed(0)
    best, cost = best_of_n(policy, IMAGE_PROMPTS, brightness, 4)
    assert brightness(None, best) == [max(drawn[:4]), max(drawn[4:])]
    assert cost.model_calls == policy.num_steps


def test_ctrl_from_a_config_calibrates_against_the_reference_model(tmp_path):
    """`{name: ctrl, reward: {name: bleu}}` in a text config: reference samples drawn once per prompt with LoRA
    disabled, seeded by the prompt (the training RNG untouched); rewards in [exp(0), exp(t)]; no reference, no CTRL."""
    from pathlib import Path

    from mmalign.config import ConfigError
    from mmalign.run_config import load_run_config
    from mmalign.text.task import TextTask

    config = Path(__file__).resolve().parents[1] / "configs/text/tiny_grpo.yaml"
    ctrl = "task_args.rewards=[{name: ctrl, reward: {name: bleu, smoothing: add-one}, samples: 4, t: 2.0}]"
    task = TextTask(load_run_config(config, [ctrl, "task_args.lora.rank=4"]).task_args)
    _, fn, _ = task.rewards[0]
    rows = task.train_contexts[:2]
    torch.manual_seed(0)
    values = fn(rows, [r["references"][0] for r in rows])
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), after)  # drawing reference samples left the global RNG alone
    assert all(1.0 <= v <= torch.exp(torch.tensor(2.0)).item() for v in values)
    assert values == pytest.approx([torch.exp(torch.tensor(2.0)).item()] * 2)  # a reference beats every sample
    assert len(fn._outputs[rows[0]["prompt"]]) == 4
    with pytest.raises(ConfigError, match="reference"):
        TextTask(load_run_config(config, [ctrl]).task_args)


def test_a_word_tokenizer_saved_beside_a_model_keeps_its_vocabulary(tmp_path):
    """A generic fast tokenizer saved beside a Qwen2 model loads as itself, not rebuilt as Qwen2's class (which
    encoded every word to nothing)."""
    from mmalign.text.task import load_causal_lm

    tiny_lm(0).save_pretrained(tmp_path)
    word_tokenizer(WORDS).save_pretrained(tmp_path)
    _, tokenizer = load_causal_lm(str(tmp_path))
    assert tokenizer("the cat sat", add_special_tokens=False)["input_ids"] == \
        word_tokenizer(WORDS)("the cat sat", add_special_tokens=False)["input_ids"] != []


@torch.no_grad()
def test_a_lora_runs_final_adapter_loads_merged_over_its_base(tmp_path):
    """A LoRA run's final/ (policy.save_pretrained: PEFT adapter + tokenizer) loads as its base model with the
    adapter merged in: the same logits as the adapted policy; an adapter naming no base, and no base given, fails."""
    import json

    from mmalign.config import ConfigError
    from mmalign.text.decoder import Decoder, DecodeSettings
    from mmalign.text.task import load_causal_lm

    base = tmp_path / "base"
    tiny_lm(0).save_pretrained(base)
    word_tokenizer(WORDS).save_pretrained(base)
    tuned = tiny_policy(seed=0, lora=True)  # tiny_lm(0) with nonzero LoRA weights
    tuned.save_pretrained(tmp_path / "final")
    merged, tokenizer = load_causal_lm(str(tmp_path / "final"), base=str(base))
    assert not hasattr(merged, "disable_adapter") and tokenizer.get_vocab() == tuned.tokenizer.get_vocab()
    torch.testing.assert_close(prefill_logits(merged, tuned, PROMPTS), prefill_logits(tuned.model, tuned, PROMPTS))
    assert not torch.allclose(prefill_logits(tiny_lm(0), tuned, PROMPTS), prefill_logits(merged, tuned, PROMPTS))

    plain = tiny_policy(seed=0)  # decoding the plain policy with method "aligned" samples the tuned model
    own = Decoder(plain, "aligned", settings=DecodeSettings(aligned="final"), load=lambda _: merged)
    torch.manual_seed(3)
    expected = tuned.sample(PROMPTS, 1).outputs
    torch.manual_seed(3)
    assert own.sample(PROMPTS).outputs == expected and own.report()["cost/tokens"] > 0

    config = json.loads((tmp_path / "final/adapter_config.json").read_text())
    (tmp_path / "final/adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": None}))
    with pytest.raises(ConfigError, match="names no base model"):
        load_causal_lm(str(tmp_path / "final"))
    with pytest.raises(ValueError, match="needs aligned"):
        Decoder(plain, "aligned", load=lambda _: merged)


def test_sampled_pairs_keep_the_best_and_worst_answer_under_the_weighted_rewards():
    """Hand-ranked: cat counts +1, dog counts -2 (weights); ties go to the first drawn; all-equal rows drop."""
    from mmalign.config import ConfigError
    from mmalign.text.task import sampled_pairs

    rewards = [("cat", count_cat, 1.0), ("dog", count_dog, -2.0)]
    rows = [{"prompt": "p0"}, {"prompt": "p1"}, {"prompt": "p2"}]
    answers = [["a cat", "cat cat dog", "cat cat", "cat cat"],  # 1, 0, 2, 2: chosen the first "cat cat"
               ["dog", "dog dog", "a", "cat dog"],              # -2, -4, 0, -1
               ["a", "the", "mat", "red"]]                      # all 0: no preference
    pairs = sampled_pairs(rows, answers, rewards)
    assert pairs == [{"prompt": "p0", "chosen": "cat cat", "rejected": "cat cat dog"},
                     {"prompt": "p1", "chosen": "a", "rejected": "dog dog"}]
    flipped = sampled_pairs(rows, answers, [("cat", count_cat, -1.0), ("dog", count_dog, 2.0)])
    assert [(p["chosen"], p["rejected"]) for p in flipped] == [("cat cat dog", "cat cat"), ("dog dog", "a")]
    with pytest.raises(ConfigError, match="score alike"):
        sampled_pairs(rows[2:], answers[2:], rewards)


def test_preference_samples_build_pairs_of_the_policys_own_answers_and_train_an_arm(tmp_path):
    """`task_args.preference_samples` in a config: pairs of the initial policy's samples, seeded (the same rows twice,
    the global RNG untouched), that GenARM's `arm` loss trains on; conflicting options are refused."""
    from pathlib import Path

    from mmalign.config import ConfigError
    from mmalign.run_config import load_run_config
    from mmalign.text.task import TextTask, policy_answers
    from mmalign.trainer import Trainer

    config = Path(__file__).resolve().parents[1] / "configs/text/tiny_grao.yaml"
    args = ["task_args.preference_rejects=0", "task_args.preference_samples=4", "preference.loss=arm",
            f"trainer.output_dir={tmp_path}", "task_args.eval_size=2", "trainer.contexts_per_step=4"]
    cfg = load_run_config(config, args)
    torch.manual_seed(0)
    trainer = Trainer(cfg)
    after = torch.rand(1)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), after)  # sampling the pairs left the global RNG alone
    rows = trainer.task.train_contexts
    assert rows and all(r["chosen"] != r["rejected"] for r in rows)
    task = trainer.task
    answers = policy_answers(task.policy, rows[:3], 4)
    assert [len(a) for a in answers] == [4, 4, 4] and answers == policy_answers(task.policy, rows[:3], 4)
    metrics = trainer.step(0)
    assert torch.isfinite(torch.tensor(metrics["loss"])) and metrics["grad_norm"] > 0, metrics
    for bad, match in [(["task_args.preference_rejects=3"], "not both"), (["task_args.preference_samples=1"], "two")]:
        with pytest.raises(ConfigError, match=match):
            TextTask(load_run_config(config, [*args, *bad]).task_args)

"""B2-DiffuRL: the backward progressive window schedule, branch sampling that shares prefixes exactly and saves
denoiser calls, sibling selection, and the DDPO / B2 advantage preparation through the shared loss, with the
per-prompt statistics held by the algorithm (and the Trainer's checkpoints), never by the policy."""

import pytest
import torch
from diffusion_tiny import PROMPTS, tiny_diffusion_policy

from mmalign.algorithms.grpo import grpo_loss
from mmalign.checkpoint import finalize_checkpoint, save_checkpoint
from mmalign.diffusion.algorithms import B2Config, DDPOConfig, b2_prepare, ddpo_prepare, reward_stats
from mmalign.diffusion.branching import sample_branched
from mmalign.diffusion.schedule import B2Schedule, PerPromptStats, b2_select, timestep_mask


def test_b2_schedule_matches_reference_formula():
    s = B2Schedule(num_steps=20, split_left=14, split_right=20, stages=100)
    splits = [s.split_step(i) for i in range(100)]
    # run_process.sh: split(i) = 14 + floor(i * 7 / 100): stages 0-14 -> 14, ..., 86-99 -> 20
    assert splits[0] == 14 and splits[14] == 14 and splits[15] == 15 and splits[85] == 19 and splits[86] == 20
    assert splits[99] == 20 and s.split_step(500) == 20
    assert splits == sorted(splits)
    assert s.branch_step(0) == 6 and s.branch_step(99) == 0  # the trained interval always reaches the last step
    with pytest.raises(ValueError):
        B2Schedule(num_steps=10, split_left=14, split_right=20)


def test_timestep_mask_window_and_fraction():
    m = timestep_mask(3, 10, start=4)
    assert m[:, :4].sum() == 0 and m[:, 4:].all()
    g = torch.Generator().manual_seed(0)
    m = timestep_mask(5, 10, start=0, fraction=0.3, generator=g)
    assert m.sum(1).tolist() == [3] * 5 and len({tuple(r.tolist()) for r in m}) > 1  # shuffled per sample
    m = timestep_mask(2, 10, start=2, end=5)
    assert m.tolist() == [[False] * 2 + [True] * 3 + [False] * 5] * 2
    m = timestep_mask(4, 10, start=2, end=6, fraction=0.5, generator=g)
    assert m.sum(1).tolist() == [2] * 4 and not m[:, :2].any() and not m[:, 6:].any()
    with pytest.raises(ValueError, match="start < end"):
        timestep_mask(2, 10, start=5, end=5)


def test_branches_share_prefix_exactly_and_save_denoiser_calls():
    torch.manual_seed(0)
    policy = tiny_diffusion_policy("ddim", guidance=3.0)
    t, branches, per_ctx, branch_step = policy.num_steps, 2, 4, 2
    policy.net_calls = 0
    r = sample_branched(policy, PROMPTS, per_ctx, branch_step, branches)
    b = len(PROMPTS) * per_ctx
    trunks = b // branches
    # CFG doubles every call; trunks run the prefix, every sample runs the suffix
    assert policy.net_calls == 2 * (trunks * branch_step + b * (t - branch_step))
    saved = 2 * b * t - policy.net_calls
    assert saved == 2 * (b - trunks) * branch_step
    lat, br = r.state["latents"], r.state["branch"]
    for g in br.unique():
        idx = (br == g).nonzero().squeeze(1)
        assert len(idx) == branches
        assert torch.equal(lat[idx[0], : branch_step + 1], lat[idx[1], : branch_step + 1])  # shared prefix, exact
        assert not torch.equal(lat[idx[0], branch_step + 1], lat[idx[1], branch_step + 1])  # fresh noise after
    assert r.mask[:, :branch_step].sum() == 0 and r.mask[:, branch_step:].all()
    assert torch.allclose(policy.logprobs(r), r.logprobs, atol=1e-5)
    assert r.group.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_policy_follows_b2_schedule_through_set_progress():
    """The branch point follows the Trainer's iteration (`set_progress`); sampling again does not advance it."""
    policy = tiny_diffusion_policy("flow")
    policy.b2 = B2Schedule(num_steps=3, split_left=1, split_right=3, stages=3, branches=2)
    starts = []
    for step in (0, 1, 2, 1):
        policy.set_progress(step)
        for _ in range(2):
            r = policy.sample(PROMPTS, 2)
            starts.append(int(r.mask.float().argmax(1)[0]))
    assert starts == [2, 2, 1, 1, 0, 0, 1, 1]


def test_b2_select_best_and_worst_per_sibling_group():
    scores = torch.tensor([0.9, 0.1, -0.8, 0.2, 0.3, 0.4])
    branch = torch.tensor([0, 0, 0, 1, 1, 1])
    assert b2_select(scores, branch, 0.5, -0.5).tolist() == [True, False, True, False, False, False]


def test_per_prompt_stats_use_history_and_batch_fallback():
    stats = PerPromptStats(history=2, min_count=4)
    a = stats(["p", "p", "q", "q"], torch.tensor([1.0, 3.0, 0.0, 0.0]))
    batch = torch.tensor([1.0, 3.0, 0.0, 0.0])
    assert torch.allclose(a, (batch - batch.mean()) / (batch.std() + 1e-6))  # fewer than 4 values per prompt
    b = stats(["p", "p"], torch.tensor([5.0, 7.0]))
    hist = torch.tensor([1.0, 3.0, 5.0, 7.0])
    assert torch.allclose(b, (torch.tensor([5.0, 7.0]) - hist.mean()) / (hist.std() + 1e-6))


def test_b2_and_ddpo_prepare_train_through_grpo_loss():
    torch.manual_seed(0)
    policy = tiny_diffusion_policy("ddim", lora=True)
    r = sample_branched(policy, PROMPTS, 4, 1, 2)
    r.rewards = torch.tensor([1.0, -1.0, 0.0, 0.0, 2.0, 0.0, 0.5, 0.4])
    cfg = B2Config(min_count=0, pos_threshold=0.5, neg_threshold=-0.5)
    metrics = b2_prepare(policy, r, cfg, reward_stats(cfg))
    kept = r.mask.any(1)
    assert 0 < metrics["frac_kept"] < 1 and kept.sum() <= 2 * 4
    loss, m = grpo_loss(policy, r, cfg)
    loss.backward()
    assert float(m["ratio"]) == pytest.approx(1.0, abs=1e-5)
    r2 = policy.sample(PROMPTS, 2)
    r2.rewards = torch.tensor([1.0, 0.0, 2.0, 0.0])
    ddpo_prepare(policy, r2, DDPOConfig(min_count=0), reward_stats(DDPOConfig(min_count=0)))
    assert r2.extras["advantages"].abs().max() <= 5.0
    grpo_cfg = B2Config(mode="grpo")
    r3 = sample_branched(policy, PROMPTS, 4, 1, 2)
    r3.rewards = torch.arange(8.0)
    b2_prepare(policy, r3, grpo_cfg, reward_stats(grpo_cfg))
    adv = r3.extras["advantages"].view(4, 2)
    assert torch.allclose(adv.sum(1), torch.zeros(4), atol=1e-5) and r3.mask[:, 1:].all()


def _ddpo_trainer(tmp_path, name: str):
    """A tiny DDPO run over two prompts, so their reward histories reach across iterations."""
    from mmalign.diffusion.settings import SamplingSettings
    from mmalign.diffusion.task import DiffusionTaskConfig
    from mmalign.run_config import RunConfig, TrainerConfig
    from mmalign.trainer import Trainer

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "{p}"}}\n' for p in ["a red circle left", "a blue square top",
                                                                  "a green triangle right"]))
    task = DiffusionTaskConfig(tiny=True, sampling=SamplingSettings(num_steps=2), prompts=str(prompts),
                               eval_fraction=0.3, eval_samples=1, rewards=[{"name": "jpeg_compressibility"}])
    trainer = TrainerConfig(name=name, output_dir=str(tmp_path), steps=4, contexts_per_step=2, num_samples=3,
                            minibatches=1, lr=1e-2, cpu=True)
    return Trainer(RunConfig("diffusion", task, trainer, "ddpo", DDPOConfig(history=4, min_count=4)))


def test_ddpo_statistics_are_algorithm_state_and_a_resumed_run_continues_them(tmp_path):
    whole = _ddpo_trainer(tmp_path, "whole")
    curve = [whole.step(k) for k in range(4)]
    assert not hasattr(whole.policy, "reward_stats")  # the policy acts; the algorithm keeps the statistics
    assert sorted(whole.algo_state.buffers) == ["a blue square top", "a red circle left"]
    first = _ddpo_trainer(tmp_path, "split")
    for k in range(2):
        first.step(k)
    ckpt = tmp_path / "split" / "checkpoints" / "step_000002"
    save_checkpoint(ckpt, first.checkpoint_parts(2))
    finalize_checkpoint(ckpt, keep=1)
    resumed = _ddpo_trainer(tmp_path, "resumed")
    assert resumed.load_checkpoint(ckpt) == 2
    assert resumed.algo_state.state_dict() == first.algo_state.state_dict()
    for k in (2, 3):
        got = resumed.step(k)
        for key, value in curve[k].items():
            if not key.startswith("time"):
                assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (k, key)

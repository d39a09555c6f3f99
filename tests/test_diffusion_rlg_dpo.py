"""RL guidance (w=0 / w=1 reproduce base / fine-tuned samples for the same noise) and Diffusion-DPO through the
shared preference loss, which draws each row's noise and timestep once for chosen and rejected."""

import numpy as np
import pytest
import torch
from diffusion_tiny import PROMPTS, tiny_diffusion_policy

from mmalign.algorithms.offline import PreferenceConfig, given_rollouts, preference_loss
from mmalign.diffusion import shapes
from mmalign.diffusion.dpo import denoising_logprobs, preference_rows
from mmalign.diffusion.policy import DiffusionPolicy
from mmalign.diffusion.rlg import generate


@pytest.mark.parametrize("family,deterministic", [("ddim", False), ("ddim", True), ("flow", False), ("flow", True)])
def test_rlg_endpoints_reproduce_base_and_finetuned(family, deterministic):
    torch.manual_seed(0)
    policy = tiny_diffusion_policy(family, guidance=3.0, lora=True)
    _, tuned = generate(policy, PROMPTS, seed=7, deterministic=deterministic)
    with policy.reference_mode():
        _, base = generate(policy, PROMPTS, seed=7, deterministic=deterministic)
    assert not torch.allclose(tuned, base, atol=1e-4)
    _, w1 = generate(policy, PROMPTS, seed=7, rlg_scale=1.0, deterministic=deterministic)
    _, w0 = generate(policy, PROMPTS, seed=7, rlg_scale=0.0, deterministic=deterministic)
    assert torch.allclose(w1, tuned, atol=1e-5) and torch.allclose(w0, base, atol=1e-5)
    _, w2 = generate(policy, PROMPTS, seed=7, rlg_scale=2.0, deterministic=deterministic)
    assert not torch.allclose(w2, tuned, atol=1e-4)
    _, late = generate(policy, PROMPTS, seed=7, rlg_scale=0.0, rlg_start=policy.num_steps)
    _, plain = generate(policy, PROMPTS, seed=7)
    assert torch.allclose(late, plain, atol=1e-6)  # RLG from a step past the end = the fine-tuned model


def test_rlg_needs_a_reference():
    policy = tiny_diffusion_policy("ddim")
    with pytest.raises(ValueError, match="reference"):
        generate(policy, PROMPTS, rlg_scale=1.5)


def pixel_policy(family: str, **kw) -> DiffusionPolicy:
    """A policy over 8x8 RGB pixels (no VAE), with random LoRA adapters as the trained part unless the reference is
    a copy."""
    return tiny_diffusion_policy(family, lora=kw.get("reference") != "copy", channels=3, **kw)


@pytest.mark.parametrize("family", ["ddim", "flow"])
def test_diffusion_dpo_through_shared_preference_loss(family):
    torch.manual_seed(0)
    policy = pixel_policy(family)
    rows = preference_rows(shapes.rows()[:2], 1, policy)
    assert rows[0]["chosen"].shape == (8, 8, 3)
    attributes = set(vars(policy))
    loss, metrics = preference_loss(policy, rows, PreferenceConfig(loss="dpo", beta=100.0))
    # LoRA starts random (init=False), reference = adapters off: a finite DPO loss with gradients
    assert torch.isfinite(loss) and loss.requires_grad
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters() if p.requires_grad)
    assert set(vars(policy)) == attributes  # no draws left behind on the policy


def test_chosen_and_rejected_share_their_draws_and_the_rng_moves_on_once():
    policy = pixel_policy("ddim")
    rows = preference_rows(shapes.rows()[:3], 1, policy)
    torch.manual_seed(0)
    c, r = given_rollouts(policy, rows, [[row["chosen"] for row in rows], [row["rejected"] for row in rows]])
    after = torch.rand(())
    assert torch.equal(c.state["noise"], r.state["noise"]) and torch.equal(c.state["train_t"], r.state["train_t"])
    assert not torch.equal(c.state["noise"][0], c.state["noise"][1])  # each row draws its own
    torch.manual_seed(0)
    alone = policy.rollout_from(rows, [row["chosen"] for row in rows])  # one call from the global RNG
    assert torch.equal(alone.state["noise"], c.state["noise"])
    assert torch.equal(alone.state["train_t"], c.state["train_t"])
    assert torch.equal(torch.rand(()), after)  # the pair consumed the RNG as one call does
    nxt = given_rollouts(policy, rows, [[row["chosen"] for row in rows]])[0]
    assert not torch.equal(nxt.state["noise"], c.state["noise"])  # the next micro-batch draws afresh


def test_dpo_loss_at_identical_policy_is_log2():
    torch.manual_seed(0)
    policy = pixel_policy("ddim", reference="copy")
    rng = np.random.default_rng(0)
    rows = [{"prompt": "a red circle", "chosen": shapes.draw(shapes.rows()[0], 8, rng),
             "rejected": shapes.draw(shapes.rows()[1], 8, rng)}]
    loss, _ = preference_loss(policy, rows, PreferenceConfig(loss="dpo", beta=10.0))
    assert float(loss.detach()) == pytest.approx(np.log(2), abs=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_dpo_scores_the_denoising_error_against_the_models_own_target(prediction_type):
    """Eq. 14's error is against what the denoiser predicts: eps, or v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho
    2022, Sec. 4) for a v-predicting scheduler."""
    torch.manual_seed(0)
    policy = pixel_policy("ddim")
    policy.prediction_type = prediction_type
    rows = preference_rows(shapes.rows()[:2], 1, policy)
    rollout = policy.rollout_from(rows, [row["chosen"] for row in rows])
    s = rollout.state
    a = policy.alphas_cumprod[s["train_t"]].view(-1, 1, 1, 1)
    xt = a.sqrt() * s["x0"] + (1 - a).sqrt() * s["noise"]
    target = s["noise"] if prediction_type == "epsilon" else a.sqrt() * s["noise"] - (1 - a).sqrt() * s["x0"]
    with torch.no_grad():
        pred = policy.net_at(xt, s["train_t"].float(), s["prompt_embeds"], s["pooled"])
        got = denoising_logprobs(policy, rollout)
    assert torch.allclose(got[:, 0], -((pred - target) ** 2).mean(dim=(1, 2, 3)), atol=1e-6)
    policy.prediction_type = "sample"
    with pytest.raises(ValueError, match="predicts 'sample'"):
        denoising_logprobs(policy, rollout)


def test_rlg_sweep_command_writes_the_table_and_a_grid_per_weight(tmp_path, capsys):
    """`python -m mmalign.diffusion.rlg CONFIG --checkpoint ... --scales 0 1`: w = 0 evaluates the base model and w = 1
    the fine-tuned one exactly (same seeded noise), each with its image grid."""
    import json
    from pathlib import Path

    from mmalign.cli import build_task
    from mmalign.diffusion.rlg import main
    from mmalign.run_config import load_run_config
    from mmalign.trainer import Trainer

    config = str(Path(__file__).resolve().parents[1] / "configs/diffusion/shapes_grpo.yaml")
    overrides = ["task_args.tiny=true", "task_args.sampling.num_steps=3", "task_args.trained_steps.end=0",
                 "task_args.reference=copy",
                 "task_args.eval_fraction=0.05", "task_args.eval_samples=2", "trainer.steps=1",
                 "trainer.contexts_per_step=2", "trainer.num_samples=2", "trainer.lr=0.01", "trainer.save_every=1",
                 "trainer.eval_every=0", "trainer.cpu=true", f"trainer.output_dir={tmp_path}", "trainer.name=run"]
    run = Trainer(load_run_config(config, overrides)).train()
    checkpoint = str(next((run / "checkpoints").iterdir()))
    main([config, *overrides, "--checkpoint", checkpoint, "--scales", "0", "1", "--out", str(tmp_path / "sweep")])
    assert capsys.readouterr().out.startswith("| w | ")
    rows = [json.loads(line) for line in (tmp_path / "sweep" / "rlg_sweep.jsonl").read_text().splitlines()]
    _, base = build_task(config, overrides)
    _, tuned = build_task(config, overrides, checkpoint)
    assert rows[0]["reward"] == base.evaluate(base.policy)["reward"]
    assert rows[1]["reward"] == tuned.evaluate(tuned.policy)["reward"]
    assert rows[0]["reward"] != rows[1]["reward"]
    assert (tmp_path / "sweep" / "rlg_w0.png").is_file() and (tmp_path / "sweep" / "rlg_w1.png").is_file()

"""RL guidance (w=0 / w=1 reproduce base / fine-tuned samples for the same noise) and Diffusion-DPO through the
shared preference loss, which draws each row's noise and timestep once for chosen and rejected."""

import numpy as np
import pytest
import torch
from diffusion_tiny import PROMPTS, tiny_diffusion_policy

from mmalign.algorithms.offline import PreferenceConfig, given_rollouts, preference_loss
from mmalign.diffusion import shapes
from mmalign.diffusion.dpo import preference_rows
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

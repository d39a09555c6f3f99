"""The denoising-step policy beyond the contract (test_contract.py): the latent chain a rollout keeps, LoRA as the
only trainable part, the timestep mask, references, KL through the shared core, LoRA saving."""

import numpy as np
import pytest
import torch
from adapters import domain_cases
from diffusion_tiny import PROMPTS, tiny_diffusion_policy

from mmalign.algorithms.grpo import GRPOConfig, grpo_loss, grpo_prepare
from mmalign.diffusion.settings import TrainedSteps


@pytest.mark.parametrize("name", domain_cases("diffusion"))
def test_rollout_keeps_the_latent_chain_and_decodes_each_sample(sampled, name):
    policy, rollout = sampled(name)
    b, t = rollout.mask.shape
    assert rollout.state["latents"].shape == (b, t + 1, 4, 8, 8)  # (B, T+1, C, h, w): x_T ... x_0
    assert len(rollout.outputs) == b  # no VAE: the final latents are the pixels, one (8, 8, C) uint8 array each
    assert all(o.shape == (8, 8, policy.channels) and o.dtype == np.uint8 for o in rollout.outputs)


def test_lora_is_the_only_trainable_part_and_reference_differs(sampled):
    policy, rollout = sampled("diffusion-ddim-unet-cfg-lora")
    names = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert names and all("lora" in n for n in names)
    ref = policy.ref_logprobs(rollout)
    assert not torch.allclose(ref, rollout.logprobs, atol=1e-4)  # adapters off = a different policy
    policy.denoiser.disable_adapters()
    base = policy.logprobs(rollout)
    policy.denoiser.enable_adapters()
    assert torch.allclose(ref, base, atol=1e-6)


def test_timestep_fraction_masks_steps_and_skips_their_compute():
    torch.manual_seed(0)
    policy = tiny_diffusion_policy("ddim", trained=TrainedSteps(fraction=0.34))
    rollout = policy.sample(PROMPTS, 2)
    assert rollout.mask.sum(1).tolist() == [1, 1, 1, 1]
    policy.net_calls = 0
    logp = policy.logprobs(rollout)
    assert policy.net_calls == 4  # one denoiser row per trained step
    assert torch.allclose(logp, rollout.logprobs, atol=1e-5) and (logp[~rollout.mask] == 0).all()


def test_train_start_and_end_mask_steps_outside_the_window():
    policy = tiny_diffusion_policy("flow", trained=TrainedSteps(start=2))
    rollout = policy.sample(PROMPTS, 1)
    assert rollout.mask.tolist() == [[False, False, True]] * 2
    policy = tiny_diffusion_policy("ddim", trained=TrainedSteps(end=1))
    rollout = policy.sample(PROMPTS, 1)
    assert rollout.mask.tolist() == [[True, False, False]] * 2
    assert torch.allclose(policy.logprobs(rollout), rollout.logprobs) and (rollout.logprobs[:, 1:] == 0).all()


def test_grpo_step_with_kl_through_shared_core():
    torch.manual_seed(0)
    policy = tiny_diffusion_policy("ddim", 2.0, lora=True)
    rollout = policy.sample(PROMPTS, 2)
    rollout.rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    cfg = GRPOConfig(beta=0.01, clip_low=1e-4, clip_high=1e-4)
    grpo_prepare(policy, rollout, cfg)
    loss, metrics = grpo_loss(policy, rollout, cfg)
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert float(metrics["ratio"]) == pytest.approx(1.0, abs=1e-5)


def test_save_pretrained_writes_lora_adapter(sampled, tmp_path):
    policy = sampled("diffusion-ddim-unet-cfg-lora")[0]
    policy.save_pretrained(tmp_path / "final")
    assert list((tmp_path / "final" / "lora").glob("*.safetensors"))


def test_a_share_of_the_held_out_images_gets_the_noise_one_process_draws():
    """Evaluation draws the noise of all held-out images in seeded chunks; any share of them (a process's part of a
    split evaluation, batched its own way) gets exactly those rows."""
    from mmalign.diffusion.policy import chunked_noise, seeded_noise

    policy, total, chunk = tiny_diffusion_policy(), 10, 4
    whole = [seeded_noise(policy, min(chunk, total - start), 7 + start) for start in range(0, total, chunk)]
    xs, zs = torch.cat([x for x, _ in whole]), torch.cat([z for _, z in whole], dim=1)
    for share in ([0, 1, 2], [3, 4, 5, 6, 7, 8, 9], [5], list(range(total))):
        x, z = chunked_noise(policy, share, total, 7, chunk)
        assert torch.equal(x, xs[share]) and torch.equal(z, zs[:, share])

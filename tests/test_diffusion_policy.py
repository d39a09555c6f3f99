"""Contract tests of the denoising-step policy: re-scored log-probs equal the sampled ones (both step families,
with and without CFG, with LoRA on), the timestep mask, references, KL, LoRA saving, B2 branching, RLG."""

import pytest
import torch
from mmalign.diffusion.models import tiny_components
from mmalign.diffusion.policy import DiffusionPolicy, add_lora

from mmalign.algorithms.grpo import GRPOConfig, grpo_loss, grpo_prepare

WORDS = "a red green blue circle square triangle left right top bottom".split()
PROMPTS = ["a red circle left", "a blue square top"]


def make_policy(family="ddim", guidance=1.0, lora=False, denoiser="unet", **kw) -> DiffusionPolicy:
    comp = tiny_components(WORDS, family=family, denoiser=denoiser)
    if lora:
        add_lora(comp.denoiser, init=False)  # random B: the adapter changes the outputs
        kw.setdefault("reference", "lora")
    return DiffusionPolicy(comp, num_steps=3, guidance_scale=guidance, max_text_length=6, **kw)


CASES = [("ddim", 1.0, False, "unet"), ("ddim", 4.0, False, "unet"), ("ddim", 4.0, True, "unet"),
         ("flow", 1.0, False, "unet"), ("flow", 4.5, True, "unet"), ("flow", 4.5, True, "sd3")]


@pytest.mark.parametrize("family,guidance,lora,denoiser", CASES)
def test_rescored_logprobs_equal_sampled(family, guidance, lora, denoiser):
    torch.manual_seed(0)
    policy = make_policy(family, guidance, lora, denoiser)
    rollout = policy.sample(PROMPTS, 2)
    assert rollout.logprobs.shape == (4, 3) and rollout.state["latents"].shape == (4, 4, 4, 8, 8)
    assert len(rollout.outputs) == 4 and rollout.outputs[0].shape == (8, 8, 3) or rollout.outputs[0].ndim == 3
    logp = policy.logprobs(rollout)
    assert logp.requires_grad
    assert torch.allclose(logp, rollout.logprobs, atol=1e-5), (logp - rollout.logprobs).abs().max()
    # a minibatch slice re-scores identically too
    sub = rollout[torch.tensor([3, 0])]
    assert torch.allclose(policy.logprobs(sub), sub.logprobs, atol=1e-5)


def test_lora_is_the_only_trainable_part_and_reference_differs():
    torch.manual_seed(0)
    policy = make_policy("ddim", 2.0, lora=True)
    names = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert names and all("lora" in n for n in names)
    rollout = policy.sample(PROMPTS, 1)
    ref = policy.ref_logprobs(rollout)
    assert not torch.allclose(ref, rollout.logprobs, atol=1e-4)  # adapters off = a different policy
    policy.denoiser.disable_adapters()
    base = policy.logprobs(rollout)
    policy.denoiser.enable_adapters()
    assert torch.allclose(ref, base, atol=1e-6)


def test_copy_reference_matches_policy_before_training():
    torch.manual_seed(0)
    policy = make_policy("ddim", reference="copy")
    rollout = policy.sample(PROMPTS, 1)
    assert torch.allclose(policy.ref_logprobs(rollout), rollout.logprobs, atol=1e-5)


def test_timestep_fraction_masks_steps_and_skips_their_compute():
    torch.manual_seed(0)
    policy = make_policy("ddim", timestep_fraction=0.34)
    rollout = policy.sample(PROMPTS, 2)
    assert rollout.mask.sum(1).tolist() == [1, 1, 1, 1]
    policy.net_calls = 0
    logp = policy.logprobs(rollout)
    assert policy.net_calls == 4  # one denoiser row per trained step
    assert torch.allclose(logp, rollout.logprobs, atol=1e-5) and (logp[~rollout.mask] == 0).all()


def test_train_start_and_end_mask_steps_outside_the_window():
    policy = make_policy("flow", train_start=2)
    rollout = policy.sample(PROMPTS, 1)
    assert rollout.mask.tolist() == [[False, False, True]] * 2
    policy = make_policy("ddim", train_end=1)
    rollout = policy.sample(PROMPTS, 1)
    assert rollout.mask.tolist() == [[True, False, False]] * 2
    assert torch.allclose(policy.logprobs(rollout), rollout.logprobs) and (rollout.logprobs[:, 1:] == 0).all()


def test_grpo_step_with_kl_through_shared_core():
    torch.manual_seed(0)
    policy = make_policy("ddim", 2.0, lora=True)
    rollout = policy.sample(PROMPTS, 2)
    rollout.rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    cfg = GRPOConfig(beta=0.01, clip_low=1e-4, clip_high=1e-4)
    grpo_prepare(policy, rollout, cfg)
    loss, metrics = grpo_loss(policy, rollout, cfg)
    loss.backward()
    grads = [p.grad for p in policy.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert float(metrics["ratio"]) == pytest.approx(1.0, abs=1e-5)


def test_save_pretrained_writes_lora_adapter(tmp_path):
    policy = make_policy("ddim", lora=True)
    policy.save_pretrained(tmp_path / "final")
    assert list((tmp_path / "final" / "lora").glob("*.safetensors"))

"""The video denoising-step adapter beyond the contract (test_contract.py): clips start at their conditioning frame,
first-frame conditioning, seeded generation, a saved model loads back from a local folder, clear errors, the
trained step window."""

import numpy as np
import pytest
import torch
from adapters import CASES, domain_cases
from diffusion_tiny import VIDEO_WORDS, tiny_video_policy, video_contexts

from mmalign.algorithms.grpo import GRPOConfig, grpo_loss, grpo_prepare
from mmalign.diffusion.models import load_components, save_components
from mmalign.diffusion.settings import SamplingSettings, TrainedSteps
from mmalign.diffusion.video.policy import VideoPolicy, generate_clips, tiny_video_components


@pytest.mark.parametrize("name", domain_cases("video"))
def test_rollout_keeps_the_latent_chain_and_clips_start_at_their_frame(sampled, name):
    policy, rollout = sampled(name)
    (b, t), f = rollout.mask.shape, policy.num_frames
    assert rollout.state["latents"].shape == (b, t + 1, 3, f, 8, 8)  # (B, T+1, C, F, h, w)
    contexts = CASES[name].contexts
    for clip, g in zip(rollout.outputs, rollout.group.tolist(), strict=True):
        assert clip.shape == (f + 1, 8, 8, 3) and clip.dtype == np.uint8
        assert (clip[0] == contexts[g]["frame"]).all()  # the clip starts at its conditioning frame


def test_first_frame_conditions_the_denoiser(sampled):
    policy = sampled("video-folded-ddim")[0]
    torch.manual_seed(0)
    x = policy.init_noise(1)
    k = torch.zeros(1, dtype=torch.long)
    emb, _ = policy.encode(["push block up"])
    a, b = (policy.predict(x, k, emb, policy.encode_frames([c["frame"]])) for c in video_contexts(2, seed=1))
    assert not torch.allclose(a, b)


def test_grpo_step_changes_logprobs_and_seeded_generation_is_reproducible():
    torch.manual_seed(0)
    policy = tiny_video_policy()
    c = video_contexts()
    first = generate_clips(policy, c, seed=3)
    assert all((a == b).all() for a, b in zip(first, generate_clips(policy, c, seed=3)))
    rollout = policy.sample(c, 4)
    rollout.rewards = torch.randn(8)
    cfg = GRPOConfig(clip_low=1e-3, clip_high=1e-3)
    grpo_prepare(policy, rollout, cfg)
    opt = torch.optim.SGD(policy.denoiser.parameters(), lr=1e-2)
    loss, _ = grpo_loss(policy, rollout, cfg)
    loss.backward()
    opt.step()
    assert not torch.allclose(policy.logprobs(rollout), rollout.logprobs, atol=1e-6)


def test_saved_model_loads_from_a_local_folder(tmp_path):
    comp = tiny_video_components(VIDEO_WORDS, frames=4)
    save_components(comp, tmp_path / "video")
    policy = VideoPolicy(load_components(tmp_path / "video"), 0, SamplingSettings(num_steps=2, max_text_length=4))
    assert policy.num_frames == 4 and policy.channels == 3
    assert generate_clips(policy, video_contexts(1), seed=0)[0].shape == (5, 8, 8, 3)


def test_bad_inputs_name_the_problem(sampled):
    policy = sampled("video-folded-ddim")[0]
    with pytest.raises(ValueError, match="'frame'"):
        policy.sample(["push block up"], 1)
    with pytest.raises(ValueError, match="resize"):
        policy.sample(video_contexts(1, size=16), 1)
    with pytest.raises(ValueError, match="num_frames"):
        VideoPolicy(tiny_video_components(VIDEO_WORDS, kind="3d"), 0, SamplingSettings(num_steps=2))


def test_train_end_masks_the_late_steps():
    torch.manual_seed(0)
    policy = tiny_video_policy(trained=TrainedSteps(end=2))
    rollout = policy.sample(video_contexts(), 2)
    assert rollout.mask[:, :2].all() and not rollout.mask[:, 2:].any()
    assert (rollout.logprobs[:, 2:] == 0).all()
    assert torch.allclose(policy.logprobs(rollout), rollout.logprobs, atol=1e-5)

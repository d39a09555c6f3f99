"""Contract tests of the video denoising-step adapter: re-scored log-probs equal the sampled ones (frame-folding 2D
UNet and UNet3DConditionModel, DDIM and flow, with CFG), first-frame conditioning, seeded generation, a saved model
loads back from a local folder."""

import numpy as np
import pytest
import torch
from mmalign.diffusion.models import load_components, save_components
from mmalign.diffusion.video import VideoPolicy, generate_clips, tiny_video_components

from mmalign.algorithms.grpo import GRPOConfig, grpo_loss, grpo_prepare

WORDS = "push block up down left right".split()


def contexts(n=2, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return [{"prompt": p, "frame": rng.integers(0, 256, (size, size, 3), dtype=np.uint8)}
            for p in ["push block up", "push block left down"][:n]]


def make(kind="folded", family="ddim", guidance=1.0, frames=4, **kw):
    comp = tiny_video_components(WORDS, frames=frames, kind=kind, family=family)
    return VideoPolicy(comp, num_frames=frames, num_steps=3, guidance_scale=guidance, max_text_length=4, **kw)


@pytest.mark.parametrize("kind,family,guidance", [("folded", "ddim", 1.0), ("folded", "flow", 3.0),
                                                  ("3d", "ddim", 2.0)])
def test_rescored_logprobs_equal_sampled(kind, family, guidance):
    torch.manual_seed(0)
    policy = make(kind, family, guidance, frames=3 if kind == "3d" else 4)
    f = policy.num_frames
    rollout = policy.sample(contexts(), 2)
    assert rollout.state["latents"].shape == (4, 4, 3, f, 8, 8)  # (B, T+1, C, F, h, w)
    assert rollout.logprobs.shape == (4, 3)
    clip = rollout.outputs[1]
    assert clip.shape == (f + 1, 8, 8, 3) and clip.dtype == np.uint8
    assert (clip[0] == contexts()[0]["frame"]).all()  # the clip starts at its conditioning frame
    logp = policy.logprobs(rollout)
    assert logp.requires_grad
    assert torch.allclose(logp, rollout.logprobs, atol=1e-5), (logp - rollout.logprobs).abs().max()
    sub = rollout[torch.tensor([3, 0])]
    assert torch.allclose(policy.logprobs(sub), sub.logprobs, atol=1e-5)


def test_first_frame_conditions_the_denoiser():
    torch.manual_seed(0)
    policy = make()
    x = policy.init_noise(1)
    k = torch.zeros(1, dtype=torch.long)
    emb, _ = policy.encode(["push block up"])
    a, b = (policy.predict(x, k, emb, policy.encode_frames([c["frame"]])) for c in contexts(2, seed=1))
    assert not torch.allclose(a, b)


def test_grpo_step_changes_logprobs_and_seeded_generation_is_reproducible():
    torch.manual_seed(0)
    policy = make()
    c = contexts()
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
    comp = tiny_video_components(WORDS, frames=4)
    save_components(comp, tmp_path / "video")
    policy = VideoPolicy(load_components(tmp_path / "video"), num_steps=2, max_text_length=4)
    assert policy.num_frames == 4 and policy.channels == 3
    assert generate_clips(policy, contexts(1), seed=0)[0].shape == (5, 8, 8, 3)


def test_bad_inputs_name_the_problem():
    policy = make()
    with pytest.raises(ValueError, match="'frame'"):
        policy.sample(["push block up"], 1)
    with pytest.raises(ValueError, match="resize"):
        policy.sample(contexts(1, size=16), 1)
    with pytest.raises(ValueError, match="num_frames"):
        VideoPolicy(tiny_video_components(WORDS, kind="3d"), num_steps=2)


def test_train_end_masks_the_late_steps():
    torch.manual_seed(0)
    policy = make(train_end=2)
    rollout = policy.sample(contexts(), 2)
    assert rollout.mask[:, :2].all() and not rollout.mask[:, 2:].any()
    assert (rollout.logprobs[:, 2:] == 0).all()
    assert torch.allclose(policy.logprobs(rollout), rollout.logprobs, atol=1e-5)

"""Staged visual future rollouts: every stage starts from the previous stage's chosen last frame, the chosen
candidate is the critic's best, and the long clip is the kept stages joined."""

import numpy as np
import pytest
import torch
from diffusion_tiny import tiny_video_policy

from mmalign.diffusion.video.staged import staged_rollout
from mmalign.diffusion.video.world_model import JEPA, JEPAConfig, PFCReward


def test_each_stage_starts_from_the_previous_chosen_last_frame():
    torch.manual_seed(0)
    policy = tiny_video_policy(num_steps=2)
    wm = JEPA(JEPAConfig(size=8, dim=8, width=8, context=2, future=1))  # untrained, but a real model
    critic = PFCReward(wm, context=2, future=1)
    first = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    video, stages = staged_rollout(policy, {"prompt": "push block up", "frame": first}, critic, stages=3,
                                   candidates=3, prompts=["push block up", "push block left", "push block down"])
    assert video.shape == (1 + 3 * 4, 8, 8, 3)
    assert (stages[0].context["frame"] == first).all()
    for prev, cur in zip(stages, stages[1:]):
        assert (cur.context["frame"] == prev.candidates[prev.chosen][-1]).all()
    for i, s in enumerate(stages):
        assert len(s.candidates) == 3 and s.chosen == int(np.argmax(s.scores))
        assert len({c.tobytes() for c in s.candidates}) == 3  # the candidates differ
        assert (video[1 + 4 * i:1 + 4 * (i + 1)] == s.candidates[s.chosen][1:]).all()
    assert [s.context["prompt"] for s in stages] == ["push block up", "push block left", "push block down"]


def test_staged_rollout_rejects_mismatched_prompts():
    policy = tiny_video_policy(num_steps=2)
    ctx = {"prompt": "push block up", "frame": np.zeros((8, 8, 3), np.uint8)}
    with pytest.raises(ValueError, match="one instruction per stage"):
        staged_rollout(policy, ctx, lambda c, o: [0.0] * len(o), stages=2, prompts=["push block up"])

"""Every B-Pref teacher through a feedback round, and PrefPPO on a Meta-World task named only in the config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mmalign.robotics.feedback import FeedbackConfig, PreferenceFeedback
from mmalign.robotics.reward_ensemble import RewardEnsembleConfig
from mmalign.robotics.sampler import Episode
from mmalign.robotics.teachers import TEACHERS
from mmalign.tracking import read_metrics

ROOT = Path(__file__).resolve().parents[1]
METAWORLD = str(ROOT / "configs/robotics/metaworld_prefppo.yaml")


def _reach_like_episodes(n: int, length: int = 40, seed: int = 0) -> list[Episode]:
    """Episodes with negative per-step rewards, as the planar tasks pay (-distance), of varying quality."""
    rng = np.random.default_rng(seed)
    eps = []
    for i in range(n):
        obs = rng.normal(size=(length, 3)).astype(np.float32)
        rewards = (-1.0 - i / n + 0.1 * obs[:, 0]).astype(np.float32)
        eps.append(Episode(obs, rng.uniform(-1, 1, (length, 2)).astype(np.float32), rewards, np.zeros(length, bool)))
    return eps


@pytest.mark.parametrize("teacher", sorted(TEACHERS))
def test_every_teacher_labels_and_fits_on_negative_rewards(teacher):
    """B-Pref calibrates skip / equal thresholds from recent returns; on negative rewards its eps x margin would skip
    nearly every pair (and a fit on no labels is NaN): here each teacher answers and the reward stays finite."""
    overrides = {"eps_skip": 1.0} if teacher == "skip" else {}  # skip every pair whose best is below the mean
    cfg = FeedbackConfig(teacher=teacher, teacher_overrides=overrides, segment_length=10, queries_per_round=20,
                         large_batch=2, reward_model=RewardEnsembleConfig(epochs=2))
    fb = PreferenceFeedback(cfg, obs_dim=3, act_dim=2, seed=0)
    for ep in _reach_like_episodes(20):
        fb.add_episode(ep)
    metrics = fb.round()
    assert fb.feedback == 20 and 0 < metrics["reward_model/labels"] <= 20
    if teacher == "skip":
        assert metrics["reward_model/labels"] < 20  # the pairs below the mean are skipped, the others answered
    assert torch.isfinite(fb.reward(torch.zeros(4, 3), torch.zeros(4, 2), env_steps=1)).all()


def test_metaworld_prefppo_runs_another_task_by_its_name(tmp_path):
    """The shipped Meta-World config, its task name changed (drawer-close-v3, not one the docs ran): envs, a
    feedback round and the evaluation, on a small budget."""
    pytest.importorskip("metaworld")
    from mmalign.cli import main

    assert main(["train", METAWORLD, f"trainer.output_dir={tmp_path}", "task_args.env_kwargs.task=drawer-close-v3",
                 "task_args.env_kwargs.max_episode_steps=20", "task_args.num_envs=2", "task_args.eval_episodes=1",
                 "trainer.num_samples=40", "trainer.steps=2", "trainer.eval_every=2", "trainer.save_every=0",
                 "trainer.epochs=1", "trainer.minibatches=1", "task_args.feedback.segment_length=10",
                 "task_args.feedback.queries_per_round=4", "task_args.feedback.large_batch=2",
                 "task_args.feedback.reward_model.epochs=1", "task_args.feedback.heldout_every=3"]) == 0
    rows = read_metrics(tmp_path / "metaworld_prefppo/metrics.jsonl")
    last = [r for r in rows if "eval/success_rate" in r][-1]
    assert last["eval/feedback"] == 4 and last["eval/env_steps"] > 60 and "eval/success_rate" in last
    assert any("reward_model/loss" in r for r in rows)  # the reward model was fit on the round's labels

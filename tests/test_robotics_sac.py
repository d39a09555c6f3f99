"""PEBBLE's SAC learner: the tanh-squashed log-prob by hand, and the update schedule of its loop."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mmalign.robotics.pebble import updates_due
from mmalign.robotics.sac import SquashedGaussianActor

ROOT = Path(__file__).resolve().parents[1]


def _hand_logp(mean: float, std: float, u: float) -> float:
    """log N(u; mean, std) - log(1 - tanh(u)^2) (Haarnoja et al. 2018, Eq. 21), one action dimension."""
    normal = -0.5 * ((u - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)
    return normal - math.log(1 - math.tanh(u) ** 2)


def test_squashed_gaussian_log_prob_is_eq_21_by_hand():
    mean, log_std = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.0, -1.0]])
    eps = torch.tensor([[0.0, 1.0]])
    action, logp = SquashedGaussianActor._squash(mean, log_std, eps)
    std1 = math.exp(-1.0)
    u = (0.5, -1.0 + std1)  # mean + std * eps
    torch.testing.assert_close(action, torch.tensor([[math.tanh(u[0]), math.tanh(u[1])]]))
    want = _hand_logp(0.5, 1.0, u[0]) + _hand_logp(-1.0, std1, u[1])  # dims independent: log-probs add
    torch.testing.assert_close(logp, torch.tensor([want]))
    _, det = SquashedGaussianActor._squash(mean, log_std, None)  # deterministic: u = mean
    torch.testing.assert_close(det, torch.tensor([_hand_logp(0.5, 1.0, 0.5) + _hand_logp(-1.0, std1, -1.0)]))


def test_updates_due_earns_updates_per_env_step_whatever_the_vector():
    assert updates_due(0.25, 1000, 1008) == 2  # 8 envs, a quarter update per env step
    assert updates_due(0.25, 1008, 1008) == 0  # an autoreset step: no real step, no update
    assert sum(updates_due(0.05, 8 * k, 8 * (k + 1)) for k in range(10)) == 4  # 80 env steps x 0.05
    assert updates_due(1.0, 5, 7) == 2


def test_pebble_does_updates_per_step_sac_updates_per_env_step():
    pytest.importorskip("mujoco")
    from mmalign.robotics.pebble import Pebble, load_config

    cfg = load_config(ROOT / "configs/robotics/reach_pebble.yaml", [
        "device=cpu", "task.num_envs=2", "task.video=false", "task.feedback.reward=ground_truth",
        "task.feedback.unsup_steps=0", "sac.hidden=[8]", "sac.batch_size=8", "sac.learning_starts=0",
        "sac.updates_per_step=0.25", "task.env_kwargs={max_episode_steps: 20}"])
    pebble = Pebble(cfg)
    while pebble.env_steps < 60:  # 2 envs x 20-step episodes: two autoreset steps on the way
        pebble.step()
    adam = pebble.agent.actor_opt
    steps = {int(s["step"]) for s in adam.state.values()}
    assert steps == {pebble.env_steps // 4}, (steps, pebble.env_steps)  # 0.25 per env step, not one per vector step

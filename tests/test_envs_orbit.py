"""The orbit task: a planar task whose reward is of another kind (a motion, not a place)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

pytest.importorskip("mujoco")

from mmalign.envs import ORBIT_ID, scripted_policy  # noqa: E402
from mmalign.envs.layout import OBS_LAYOUT  # noqa: E402


def _episode(env, policy, seed: int) -> tuple[float, bool]:
    obs, _ = env.reset(seed=seed)
    ret, ok, done = 0.0, False, False
    while not done:
        obs, r, term, trunc, info = env.step(policy(obs))
        ret, ok, done = ret + r, ok or info["success"], term or trunc
    return ret, ok


def test_orbit_env_api_and_layout():
    env = gym.make(ORBIT_ID)
    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert env.unwrapped.task == "orbit" and obs.shape == (10,) and not info["success"]
    assert np.all(obs[OBS_LAYOUT["obj_pos"]] == 0)


def test_orbit_scripted_succeeds_and_reach_and_random_do_not():
    env = gym.make(ORBIT_ID)
    env.action_space.seed(0)
    orbit = [_episode(env, scripted_policy("orbit"), s) for s in range(3)]
    reach = [_episode(env, scripted_policy("reach"), s) for s in range(3)]  # goes to the centre and stays
    rand = [_episode(env, lambda o: env.action_space.sample(), s) for s in range(3)]
    assert all(ok for _, ok in orbit) and not any(ok for _, ok in reach) and not any(ok for _, ok in rand)
    assert min(r for r, _ in orbit) > 40 and max(r for r, _ in reach) < -50


def test_orbit_reward_is_minus_one_standing_at_the_centre():
    env = gym.make(ORBIT_ID).unwrapped
    obs, _ = env.reset(seed=1)
    for _ in range(60):  # drive to the centre, then stop
        obs, r, *_ = env.step(scripted_policy("reach")(obs))
    assert np.linalg.norm(obs[0:2] - obs[8:10]) < 0.01
    assert r == pytest.approx(-1.0, abs=0.15)  # v_tan ~ 0, |d - R| / R ~ 1

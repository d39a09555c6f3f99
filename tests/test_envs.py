"""Tests of mmalign.envs: the planar MuJoCo tasks, their scripted controllers and the Meta-World wrapper."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

# importing mmalign.envs registers the ids and defaults MUJOCO_GL to osmesa on a machine without a display
from mmalign.envs import (
    ENV_IDS,
    MAX_EPISODE_STEPS,
    METAWORLD_IDS,
    OBS_DIM,
    OBS_LAYOUT,
    ORBIT_ID,
    TASKS,
    scripted_policy,
)

PLANAR = list(ENV_IDS.items())


def _rollout(env: gym.Env, seed: int, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """Observations (T+1, obs_dim), rewards (T,) and successes of one episode under fixed actions."""
    obs, _ = env.reset(seed=seed)
    observations, rewards, successes = [obs], [], []
    for action in actions:
        obs, reward, _, _, info = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        successes.append(info["success"])
    return np.array(observations), np.array(rewards), successes


def _run_policy(env: gym.Env, policy, seed: int) -> list[bool]:
    """Per-step successes of one full episode (until TimeLimit truncates it)."""
    obs, _ = env.reset(seed=seed)
    successes, done = [], False
    while not done:
        obs, _, terminated, truncated, info = env.step(policy(obs))
        successes.append(info["success"])
        done = terminated or truncated
    return successes


def test_import_mmalign_envs_does_not_import_mujoco():
    code = "import sys, mmalign, mmalign.envs; assert 'mujoco' not in sys.modules, 'mujoco imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_all_ids_registered():
    assert set(ENV_IDS) == set(TASKS)
    for env_id in [*ENV_IDS.values(), *METAWORLD_IDS.values(), "mmalign/MetaWorld-v3"]:
        assert env_id in gym.registry
    assert gym.spec(ENV_IDS["push"]).max_episode_steps == MAX_EPISODE_STEPS


@pytest.mark.parametrize(("task", "env_id"), PLANAR)
def test_check_env(task, env_id):
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.unwrapped.task == task
    assert env.observation_space.shape == (OBS_DIM,) and env.observation_space.dtype == np.float32
    assert env.action_space.shape == (2,)


@pytest.mark.parametrize(("task", "env_id"), PLANAR)
def test_observation_layout(task, env_id):
    env = gym.make(env_id)
    obs, info = env.reset(seed=0)
    unwrapped = env.unwrapped
    np.testing.assert_allclose(obs[OBS_LAYOUT["goal"]], unwrapped.goal, atol=1e-6)
    np.testing.assert_allclose(obs[OBS_LAYOUT["ee_pos"]], unwrapped.data.site("ee").xpos[:2], atol=1e-6)
    assert np.all(obs[OBS_LAYOUT["ee_vel"]] == 0) and np.all(obs[OBS_LAYOUT["obj_vel"]] == 0)
    assert (task == "reach") == bool(np.all(obs[OBS_LAYOUT["obj_pos"]] == 0))
    assert isinstance(info["success"], bool) and not info["success"]


@pytest.mark.parametrize(("task", "env_id"), PLANAR)
def test_scripted_controller_succeeds(task, env_id):
    env = gym.make(env_id)
    for seed in range(5):
        successes = _run_policy(env, scripted_policy(task), seed)
        assert len(successes) == MAX_EPISODE_STEPS
        assert successes[-1], f"{task}: scripted controller not successful at the end of seed {seed}"


@pytest.mark.parametrize(("task", "env_id"), PLANAR)
def test_random_policy_rarely_succeeds(task, env_id):
    env = gym.make(env_id)
    env.action_space.seed(0)
    hits = sum(any(_run_policy(env, lambda obs: env.action_space.sample(), seed)) for seed in range(20))
    assert hits <= 3, f"{task}: random actions succeeded in {hits}/20 episodes"


@pytest.mark.parametrize(("task", "env_id"), PLANAR)
def test_same_seed_same_trajectory(task, env_id):
    actions = np.random.default_rng(1).uniform(-1, 1, size=(60, 2)).astype(np.float32)
    first, other = gym.make(env_id), gym.make(env_id)
    _rollout(other, seed=7, actions=actions[::-1])  # a different history must not leak into the next episode
    obs_a, rew_a, _ = _rollout(first, seed=3, actions=actions)
    obs_b, rew_b, _ = _rollout(other, seed=3, actions=actions)
    assert np.array_equal(obs_a, obs_b) and np.array_equal(rew_a, rew_b)
    obs_c, _, _ = _rollout(other, seed=4, actions=actions[:1])
    assert not np.array_equal(obs_a[0], obs_c[0])


def test_scripted_policy_noise_is_seeded():
    env = gym.make(ENV_IDS["push"])
    obs, _ = env.reset(seed=0)
    a, b = scripted_policy("push", noise_std=0.3, seed=5), scripted_policy("push", noise_std=0.3, seed=5)
    assert np.array_equal(a(obs), b(obs)) and a(obs).dtype == np.float32
    assert np.all(np.abs(a(obs)) <= 1)
    with pytest.raises(ValueError, match="no scripted controller"):
        scripted_policy("fly")


@pytest.mark.parametrize(("task", "env_id"), PLANAR)
def test_render_shows_scene_and_robot(task, env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    before = env.render()
    assert before.shape == (64, 64, 3) and before.dtype == np.uint8
    assert before.std() > 20, "blank frame"
    for _ in range(8):
        env.step(np.array([1.0, 1.0], dtype=np.float32))
    after = env.render()
    moved = np.abs(after.astype(int) - before.astype(int)).sum(-1) > 30
    assert moved.sum() >= 10, "the robot did not visibly move"
    env.close()


# -- Meta-World ------------------------------------------------------------------------------------


def test_metaworld_missing_names_pip_install(monkeypatch):
    from mmalign.envs.metaworld_env import import_metaworld

    monkeypatch.setitem(sys.modules, "metaworld", None)  # makes `import metaworld` raise ImportError
    with pytest.raises(ImportError, match="pip install metaworld"):
        import_metaworld()


@pytest.mark.parametrize("env_id", [*ENV_IDS.values(), ORBIT_ID])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_action_raises_naming_env_and_entries(env_id, bad):
    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    state = env.unwrapped.data.qpos.copy()
    with pytest.raises(ValueError, match=rf"{env_id}\).*non-finite entries at index \[1\]"):
        env.step(np.array([0.5, bad], dtype=np.float32))
    assert np.array_equal(env.unwrapped.data.qpos, state), "the bad action must not reach the simulator"
    env.step(np.array([0.5, 0.5], dtype=np.float32))  # a finite action still steps


@pytest.fixture(scope="module")
def metaworld_available() -> None:
    from mmalign.envs.metaworld_env import import_metaworld

    try:
        import_metaworld()
    except ImportError as err:
        pytest.skip(str(err))


def test_metaworld_interface(metaworld_available):
    env = gym.make(METAWORLD_IDS["drawer-open-v3"], max_episode_steps=120)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.observation_space.dtype == np.float32
    assert any(_run_policy(env, scripted_policy("drawer-open-v3"), seed=0))
    actions = np.random.default_rng(0).uniform(-1, 1, size=(20, 4)).astype(np.float32)
    obs_a, rew_a, _ = _rollout(env, seed=2, actions=actions)
    obs_b, rew_b, _ = _rollout(env, seed=2, actions=actions)
    assert np.array_equal(obs_a, obs_b) and np.array_equal(rew_a, rew_b)
    assert not np.array_equal(obs_a[0], _rollout(env, seed=3, actions=actions[:1])[0][0])
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"MetaWorldEnv.*non-finite entries at index \[0, 3\]"):
        env.step(np.array([np.nan, 0.0, 0.0, np.inf], dtype=np.float32))


def test_metaworld_corner_cameras_are_turned_upright(metaworld_available):
    env = gym.make("mmalign/MetaWorld-v3", task="reach-v3", render_mode="rgb_array", camera="corner2")
    env.reset(seed=0)
    frame, raw = env.render(), env.unwrapped.mw_env.render()
    assert frame.shape == (64, 64, 3) and frame.std() > 20
    assert np.array_equal(frame, raw[::-1, ::-1])
    model, data = env.unwrapped.mw_env.model, env.unwrapped.mw_env.data
    image_up = data.cam_xmat[model.camera("corner2").id].reshape(3, 3)[:, 1]
    assert image_up[2] < 0, "corner2 no longer renders upside-down: drop it from UPSIDE_DOWN_CAMERAS"
    env.close()

"""BoxSyncVectorEnv steps the envs as gymnasium's SyncVectorEnv does: the same observations, rewards, ends and infos
at every step, across episode ends and autoresets, on its lean path and on gymnasium's info merge."""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import numpy as np
import pytest

from mmalign.robotics.env_runner import _make_env
from mmalign.robotics.sync_vector import BoxSyncVectorEnv

pytest.importorskip("mujoco")
REACH, SHORT = "mmalign/Reach-v0", {"max_episode_steps": 20}  # several truncations and autoresets in 70 steps


class OddInfo(gym.Wrapper):
    """Reach with an info that the lean merge leaves to gymnasium: an array value, in env 0 only."""

    def __init__(self, env: gym.Env, index: int):
        super().__init__(env)
        self.index = index

    def step(self, action):
        obs, reward, term, trunc, info = self.env.step(action)
        return obs, reward, term, trunc, {**info, "tip": obs[:2]} if self.index == 0 else info


def _fns(odd: bool) -> list:
    fns = [partial(_make_env, REACH, i, SHORT) for i in range(3)]
    return [(lambda f=f, i=i: OddInfo(f(), i)) for i, f in enumerate(fns)] if odd else fns


def _assert_same_steps(odd: bool) -> None:
    ours = BoxSyncVectorEnv(_fns(odd))
    theirs = gym.vector.SyncVectorEnv(_fns(odd), autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP)
    assert ours.lean
    assert np.array_equal(ours.reset(seed=[4] * 3)[0], theirs.reset(seed=[4] * 3)[0])
    rng, ends = np.random.default_rng(0), 0
    for _ in range(70):
        action = rng.uniform(-1.5, 1.5, (3, 2)).astype(np.float32)
        a, b = ours.step(action), theirs.step(action)
        for x, y in zip(a[:4], b[:4]):
            assert x.dtype == y.dtype and np.array_equal(x, y)
        assert list(a[4]) == list(b[4])
        for k in b[4]:
            assert a[4][k].dtype == b[4][k].dtype and np.array_equal(a[4][k], b[4][k]), k
        ends += int(a[3].sum())
    assert ends == 9  # 3 envs x 3 episodes of 20 steps (with an autoreset step after each)
    assert ("tip" in a[4]) == odd


def test_lean_steps_equal_gymnasium_sync_vector_env():
    _assert_same_steps(odd=False)


def test_infos_the_lean_merge_cannot_batch_go_through_gymnasium():
    _assert_same_steps(odd=True)

"""A group of envs stepped with a policy: the piece a sampler runs in its own process or in each Ray worker.

An `EnvRunner` holds a vector env over envs `indices` of a run (sync or gymnasium's `AsyncVectorEnv`, one
subprocess per env) and steps it with a policy's `act(obs, noise)`. Everything random is per env: env `i`'s resets
are seeded by (run seed, i, reset count) (`mmalign.envs.seeding`) and its exploration noise comes from its own
generator (`EnvNoise`), and the policy computes each row alone (`policy.rowwise`). So an env's trajectory is the
same whether one runner holds all the envs or each of several workers holds a share: the grouping is free.

gymnasium 1.x vector envs autoreset on the step *after* an episode ends (`AutoresetMode.NEXT_STEP`): that step
ignores the action and returns the reset observation with reward 0. It is not a transition: its mask is False.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from mmalign.robotics.sync_vector import BoxSyncVectorEnv

VECTORS = ("sync", "async")
"""How a runner steps its envs: one after another in its process, or each in a subprocess (AsyncVectorEnv)."""

COLUMNS = ("obs", "act", "sent", "logp", "next", "rew", "term", "trunc", "mask", "succ")
"""What a runner returns per env and step (see `EnvRunner.collect`)."""
BOOL_COLUMNS = ("term", "trunc", "mask", "succ")


@dataclass
class Episode:
    """One finished episode. obs (L, obs_dim), actions (L, act_dim) as sent to the env, rewards (L,) env reward,
    success (L,) bool `info["success"]` per step."""

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    success: np.ndarray

    @property
    def ret(self) -> float:
        return float(self.rewards.sum())


EPISODE_COLUMNS = {"obs": "obs", "actions": "sent", "rewards": "rew", "success": "succ"}
"""The `Episode` fields and the columns they are cut from."""


@dataclass
class Chunk:
    """What `EnvRunner.collect` returns: `columns[k]` (n, T, ...) numpy arrays of `COLUMNS`; `episodes` the episodes
    that ended, as (step t, env index, Episode); `env_steps` the real (non-autoreset) steps."""

    columns: dict[str, np.ndarray]
    episodes: list[tuple[int, int, Episode]]
    env_steps: int


def _no_steps() -> dict[str, list[np.ndarray]]:
    return {f: [] for f in EPISODE_COLUMNS}


def _make_env(env_id: str, index: int, kwargs: dict) -> gym.Env:
    import mmalign.envs  # noqa: F401  (registers the mmalign/ ids, also in a fresh subprocess)
    from mmalign.envs.seeding import SeededResets

    return SeededResets(gym.make(env_id, **kwargs), index)


def make_vec_env(env_id: str, num_envs: int, seed: int = 0, vector: str = "sync", indices: Sequence[int] | None = None,
                 **kwargs) -> gym.vector.VectorEnv:
    """A vector env of `num_envs` copies of `env_id` (NEXT_STEP autoreset), sub-env j being env `indices[j]` of the
    run (default 0 .. num_envs - 1) with per-env reset seeds, reset with run seed `seed`.

    Args:
        vector: "sync" (in this process: gymnasium's SyncVectorEnv, leaner for Box spaces, `sync_vector.py`) or
            "async" (gymnasium's AsyncVectorEnv: a subprocess per env).
        kwargs: keyword arguments of `gym.make` (env kwargs, max_episode_steps).
    """
    if vector not in VECTORS:
        raise ValueError(f"vector {vector!r} is not one of {list(VECTORS)}")
    indices = list(range(num_envs)) if indices is None else list(indices)
    fns = [partial(_make_env, env_id, i, kwargs) for i in indices]
    mode = gym.vector.AutoresetMode.NEXT_STEP
    env = BoxSyncVectorEnv(fns, autoreset_mode=mode) if vector == "sync" else gym.vector.AsyncVectorEnv(
        fns, autoreset_mode=mode)
    env.reset(seed=[seed] * len(indices))  # each SeededResets derives its own seed from (seed, its index)
    return env


class EnvNoise:
    """Exploration noise of a group of envs, env i's from its own generator seeded by (run seed, i): a row's draws do
    not depend on which other envs share the batch. A policy's `act(obs, noise)` draws (n, dim) through it."""

    def __init__(self, indices: Sequence[int], seed: int = 0):
        self.indices = list(indices)
        self.generators = [torch.Generator() for _ in self.indices]
        self.seed(seed)

    def seed(self, seed: int) -> None:
        from mmalign.envs.seeding import stream_seed

        for i, g in zip(self.indices, self.generators):
            g.manual_seed(stream_seed(seed, i, 1))

    def normal(self, dim: int) -> Tensor:
        """(n, dim) standard normal draws, row i from env i's generator."""
        return self._rows(dim, Tensor.normal_)

    def uniform(self, dim: int) -> Tensor:
        """(n, dim) uniform draws in [0, 1), row i from env i's generator."""
        return self._rows(dim, Tensor.uniform_)

    def _rows(self, dim: int, fill) -> Tensor:
        """Each row drawn in place by `fill(row, generator=g)`: the values of `torch.randn(dim, generator=g)` (or
        `rand`), without a tensor per row and a stack."""
        out = torch.empty(len(self.generators), dim)
        for row, g in zip(out, self.generators):
            fill(row, generator=g)
        return out


class EnvRunner:
    """Envs `indices` of a run in one vector env, stepped with a policy; their episodes go on across `collect` calls.

    Args:
        env_id: a gymnasium id.
        indices: which envs of the run this runner holds.
        seed: the run seed of their resets and noise (`restart` sets another).
        vector: "sync" or "async" (`make_vec_env`).
        env_kwargs: keyword arguments of `gym.make`.
        torch_threads: torch CPU threads of this process, set when given (a Ray worker's; the driver's own is
            the task's `torch_threads`).
    """

    def __init__(self, env_id: str, indices: Sequence[int], seed: int = 0, vector: str = "sync",
                 env_kwargs: dict | None = None, torch_threads: int | None = None):
        if torch_threads is not None:
            torch.set_num_threads(torch_threads)
        self.indices = list(indices)
        self.env = make_vec_env(env_id, len(self.indices), seed, vector, self.indices, **(env_kwargs or {}))
        self.noise = EnvNoise(self.indices, seed)
        self.restart(seed)

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        """One env's observation and action spaces."""
        return self.env.single_observation_space, self.env.single_action_space

    def restart(self, seed: int) -> None:
        """Reset every env and its noise with run seed `seed` and drop the unfinished episodes: the runner's state is
        then a function of the seed alone, which is how a checkpoint keeps it (`RobotTask.checkpoint_state`)."""
        n = len(self.indices)
        self.obs, _ = self.env.reset(seed=[seed] * n)
        self.noise.seed(seed)
        self.prev_done = np.zeros(n, dtype=bool)
        self.partial = [_no_steps() for _ in range(n)]  # each env's unfinished episode: pieces of its fields

    def collect(self, policy, steps: int) -> Chunk:
        """Run `steps` vector steps with `policy.act(obs (n, obs_dim), noise) -> (raw action, log-prob)`.

        Columns (n, T, ...): obs, act (raw samples), sent (clipped to [-1, 1], what the env ran), logp, next (the
        observation `step` returned: the final one at an episode end), rew, term and trunc (of real steps), mask
        (real steps; False on autoreset steps), succ (`info["success"]` of real steps). Floats are float32.
        """
        n = len(self.indices)
        c = self._buffers(steps, n)  # (T, n, ...): step t's values are written in one piece
        with torch.inference_mode():  # no autograd bookkeeping per op: about 20 % of `act` on a small network
            for t in range(steps):
                action, logp = policy.act(torch.as_tensor(self.obs, dtype=torch.float32), self.noise)
                sent = action.clamp(-1, 1).numpy()
                next_obs, reward, term, trunc, info = self.env.step(sent)
                c["obs"][t], c["act"][t], c["sent"][t] = self.obs, action.numpy(), sent
                c["logp"][t], c["next"][t] = logp.numpy(), next_obs
                c["rew"][t], c["term"][t], c["trunc"][t] = reward, term, trunc
                c["mask"][t] = real = ~self.prev_done  # the step after an episode end is gymnasium's autoreset step
                c["succ"][t] = info.get("success", False)
                self.prev_done = (term | trunc) & real
                self.obs = next_obs
        for k in ("term", "trunc", "succ"):
            c[k] &= c["mask"]
        episodes = self._episodes(c)
        return Chunk({k: np.ascontiguousarray(v.swapaxes(0, 1)) for k, v in c.items()}, episodes,
                     int(c["mask"].sum()))

    def _buffers(self, steps: int, n: int) -> dict[str, np.ndarray]:
        """Empty (T, n, ...) columns of `COLUMNS`."""
        obs_shape, act_shape = self.env.single_observation_space.shape, self.env.single_action_space.shape
        shapes = {"obs": obs_shape, "act": act_shape, "sent": act_shape, "next": obs_shape}
        return {k: np.empty((steps, n, *shapes.get(k, ())), bool if k in BOOL_COLUMNS else np.float32)
                for k in COLUMNS}

    def _episodes(self, c: dict[str, np.ndarray]) -> list[tuple[int, int, Episode]]:
        """Cut each env's real steps of the (T, n) columns `c` at its episode ends: the finished episodes as (step t,
        env index, Episode), the unfinished one's steps added to `partial` (it goes on in the next collect)."""
        out, done = [], c["term"] | c["trunc"]
        for i in range(len(self.indices)):
            real = np.flatnonzero(c["mask"][:, i])
            steps = {f: c[k][real, i] for f, k in EPISODE_COLUMNS.items()}
            start = 0
            for end in np.flatnonzero(done[real, i]) + 1:
                for f, v in steps.items():
                    self.partial[i][f].append(v[start:end])
                out.append((int(real[end - 1]), self.indices[i], Episode(**{
                    f: np.concatenate(v) for f, v in self.partial[i].items()})))
                self.partial[i], start = _no_steps(), end
            for f, v in steps.items():
                self.partial[i][f].append(v[start:])
        return out

    def close(self) -> None:
        self.env.close()

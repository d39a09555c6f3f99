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
from dataclasses import dataclass, field
from functools import partial

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

VECTORS = ("sync", "async")
"""How a runner steps its envs: one after another in its process, or each in a subprocess (AsyncVectorEnv)."""

COLUMNS = ("obs", "act", "sent", "logp", "next", "rew", "term", "trunc", "mask", "succ")
"""What a runner returns per env and step (see `EnvRunner.collect`)."""


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


@dataclass
class _Partial:
    obs: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    success: list = field(default_factory=list)


@dataclass
class Chunk:
    """What `EnvRunner.collect` returns: `columns[k]` (n, T, ...) numpy arrays of `COLUMNS`; `episodes` the episodes
    that ended, as (step t, env index, Episode); `env_steps` the real (non-autoreset) steps."""

    columns: dict[str, np.ndarray]
    episodes: list[tuple[int, int, Episode]]
    env_steps: int


def _make_env(env_id: str, index: int, kwargs: dict) -> gym.Env:
    import mmalign.envs  # noqa: F401  (registers the mmalign/ ids, also in a fresh subprocess)
    from mmalign.envs.seeding import SeededResets

    return SeededResets(gym.make(env_id, **kwargs), index)


def make_vec_env(env_id: str, num_envs: int, seed: int = 0, vector: str = "sync", indices: Sequence[int] | None = None,
                 **kwargs) -> gym.vector.VectorEnv:
    """A vector env of `num_envs` copies of `env_id` (NEXT_STEP autoreset), sub-env j being env `indices[j]` of the
    run (default 0 .. num_envs - 1) with per-env reset seeds, reset with run seed `seed`.

    Args:
        vector: "sync" (in this process) or "async" (gymnasium's AsyncVectorEnv: a subprocess per env).
        kwargs: keyword arguments of `gym.make` (env kwargs, max_episode_steps).
    """
    if vector not in VECTORS:
        raise ValueError(f"vector {vector!r} is not one of {list(VECTORS)}")
    indices = list(range(num_envs)) if indices is None else list(indices)
    fns = [partial(_make_env, env_id, i, kwargs) for i in indices]
    mode = gym.vector.AutoresetMode.NEXT_STEP
    env = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode) if vector == "sync" else gym.vector.AsyncVectorEnv(
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
        return torch.stack([torch.randn(dim, generator=g) for g in self.generators])

    def uniform(self, dim: int) -> Tensor:
        """(n, dim) uniform draws in [0, 1), row i from env i's generator."""
        return torch.stack([torch.rand(dim, generator=g) for g in self.generators])


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
        self.partial = [_Partial() for _ in range(n)]

    def collect(self, policy, steps: int) -> Chunk:
        """Run `steps` vector steps with `policy.act(obs (n, obs_dim), noise) -> (raw action, log-prob)`.

        Columns (n, T, ...): obs, act (raw samples), sent (clipped to [-1, 1], what the env ran), logp, next (the
        observation `step` returned: the final one at an episode end), rew, term and trunc (of real steps), mask
        (real steps; False on autoreset steps), succ (`info["success"]` of real steps).
        """
        n, cols, episodes, env_steps = len(self.indices), {k: [] for k in COLUMNS}, [], 0
        for t in range(steps):
            action, logp = policy.act(torch.as_tensor(self.obs, dtype=torch.float32), self.noise)
            sent = action.clamp(-1, 1).numpy()
            next_obs, reward, term, trunc, info = self.env.step(sent)
            real = ~self.prev_done  # the step after an episode end is gymnasium's autoreset step: no transition
            succ = np.asarray(info.get("success", np.zeros(n, bool)), dtype=bool) & real
            episodes += [(t, self.indices[i], ep) for i, ep in self._track(real, sent, reward, succ, term | trunc)]
            for k, v in zip(COLUMNS, (self.obs, action.numpy(), sent, logp.numpy(), next_obs, reward, term & real,
                                      trunc & real, real, succ)):
                cols[k].append(np.asarray(v))
            self.prev_done = (term | trunc) & real
            self.obs = next_obs
            env_steps += int(real.sum())
        return Chunk({k: np.stack(v, axis=1) for k, v in cols.items()}, episodes, env_steps)

    def _track(self, real, action, reward, success, done) -> list[tuple[int, Episode]]:
        """Add the real steps to the unfinished episodes; return the finished ones as (position, Episode)."""
        out = []
        for i in np.flatnonzero(real):
            p = self.partial[i]
            p.obs.append(self.obs[i].copy())
            p.actions.append(action[i].copy())
            p.rewards.append(float(reward[i]))
            p.success.append(bool(success[i]))
            if done[i]:
                out.append((i, Episode(np.array(p.obs, np.float32), np.array(p.actions, np.float32),
                                       np.array(p.rewards, np.float32), np.array(p.success))))
                self.partial[i] = _Partial()
        return out

    def close(self) -> None:
        self.env.close()

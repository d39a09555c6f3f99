"""Per-env random streams: every reset of env `index` seeded by (run seed, index, reset count).

A vector env seeds its sub-envs with `seed + position` once and lets their autoresets continue unseeded, so which
episode an env plays depends on how envs are numbered inside one vector env. With `SeededResets` around each sub-env,
env `index` plays the same episodes whether it sits in one vector env of eight or in a worker's vector env of two.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def stream_seed(*keys: int) -> int:
    """A seed in [0, 2**63) drawn from the key tuple by numpy's SeedSequence (distinct tuples, independent streams)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class SeededResets(gym.Wrapper):
    """Seeds every reset of the env it wraps: reset k after `reset(seed=s)` uses `stream_seed(s, index, 0, k)`.

    A reset with a seed sets the run seed and the count to 0; an unseeded one (a vector env's autoreset) takes the
    next count. Reset seeds are independent of the other envs, so are the episodes.

    Args:
        env: the env.
        index: the env's place in the run (0 .. num_envs - 1), whatever vector env or worker holds it.
    """

    def __init__(self, env: gym.Env, index: int):
        super().__init__(env)
        self.index, self.run_seed, self.resets = index, 0, 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.run_seed, self.resets = seed, 0
        obs_info = self.env.reset(seed=stream_seed(self.run_seed, self.index, 0, self.resets), options=options)
        self.resets += 1
        return obs_info

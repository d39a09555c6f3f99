"""Environment workers on Ray (`sampler: ray`): N actors, each an `EnvRunner` over its share of the envs.

Each `collect` puts a CPU copy of the acting policy in Ray's object store (the weights of this iteration), every
worker steps its envs with it for T steps, and the chunks come back as one Rollout, built exactly as the in-process
`VecEnvSampler` builds it. Env i's resets and noise are its own (`env_runner.py`), so for the same seed the rollout
is bit-identical to the in-process one, whatever the number of workers.

    ray.init(num_cpus=4)  # or leave it to the sampler: a local instance, or `address` of a running cluster
    sampler = RaySampler("mmalign/Reach-v0", num_envs=8, seed=0, workers=4)

Ray is optional (`pip install 'mmalign[ray]'`); this module imports it only when a sampler is built. On a cluster,
every node needs mmalign installed (the workers import it to build the envs).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mmalign.robotics.env_runner import Chunk, EnvRunner, Episode
from mmalign.robotics.sampler import VecEnvSampler


def import_ray():
    """The `ray` module, or an ImportError that says how to install it."""
    try:
        import ray
    except ImportError as e:
        raise ImportError("sampler: ray needs Ray: pip install 'mmalign[ray]' (or pip install ray), or use "
                          "sampler: local with vector: async for workers on this machine.") from e
    return ray


def shares(num_envs: int, workers: int) -> list[list[int]]:
    """Env indices of each worker: contiguous, sizes differing by at most one (env i stays env i)."""
    if not 1 <= workers <= num_envs:
        raise ValueError(f"ray_workers={workers} must be between 1 and num_envs={num_envs} (each worker holds at "
                         "least one env)")
    bounds = np.cumsum([0] + [num_envs // workers + (i < num_envs % workers) for i in range(workers)])
    return [list(range(lo, hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]


class RaySampler(VecEnvSampler):
    """A `VecEnvSampler` whose envs live in `workers` Ray actors (one CPU each).

    Args:
        env_id, num_envs, seed, vector, env_kwargs, on_episode: as `VecEnvSampler` (`vector` is each worker's).
        workers: Ray actors.
        address: a running Ray cluster ("auto", "ray://host:10001", ...); None starts a local instance with
            `workers` CPUs unless Ray is already initialised.
    """

    def __init__(self, env_id: str, num_envs: int, seed: int = 0, vector: str = "sync", env_kwargs: dict | None = None,
                 on_episode: Callable[[Episode], None] | None = None, workers: int = 2, address: str | None = None):
        self.workers, self.address = workers, address
        super().__init__(env_id, num_envs, seed, vector, env_kwargs, on_episode)

    def _start(self, env_id: str, seed: int, vector: str, env_kwargs: dict) -> None:
        ray = self.ray = import_ray()
        groups = shares(self.n, self.workers)
        if not ray.is_initialized():
            local = {"num_cpus": self.workers} if self.address is None else {}
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, **local)
        cpus = ray.cluster_resources().get("CPU", 0)
        if self.address is None and cpus < self.workers:  # the actors would wait forever (a cluster may autoscale)
            raise ValueError(f"ray_workers={self.workers} needs {self.workers} CPUs (1 per worker), but the local Ray "
                             f"instance has {cpus:g}: lower ray_workers or ray.init(num_cpus={self.workers})")
        remote = ray.remote(num_cpus=1)(EnvRunner)
        self.actors = [remote.remote(env_id, g, seed, vector, env_kwargs, torch_threads=1) for g in groups]
        self.observation_space, self.action_space = ray.get(self.actors[0].spaces.remote())

    def _collect(self, policy, steps: int) -> list[Chunk]:
        acting = self.ray.put(policy.for_workers())
        return self.ray.get([a.collect.remote(acting, steps) for a in self.actors])

    def restart(self, seed: int) -> None:
        self.ray.get([a.restart.remote(seed) for a in self.actors])

    def close(self) -> None:
        """Close the workers' envs (an async vector env's subprocesses too), then end the workers."""
        self.ray.get([a.close.remote() for a in self.actors])
        for a in self.actors:
            self.ray.kill(a)

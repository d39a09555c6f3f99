"""A tiny real robot adapter for tests: a Gaussian actor-critic over a vector of real MuJoCo reach envs."""

import torch

from mmalign.robotics.policy import GaussianActorCritic, GaussianPolicy
from mmalign.robotics.sampler import VecEnvSampler


def tiny_robot_policy(num_envs: int = 3, max_episode_steps: int | None = None, seed: int = 0) -> GaussianPolicy:
    """A `GaussianPolicy` (16x16 actor and critic) sampling `num_envs` seeded mmalign/Reach-v0 envs."""
    torch.manual_seed(seed)
    kw = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    sampler = VecEnvSampler("mmalign/Reach-v0", num_envs, seed, env_kwargs=kw)
    return GaussianPolicy(GaussianActorCritic(10, 2, (16, 16)), sampler)

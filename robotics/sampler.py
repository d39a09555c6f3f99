"""Collect `Rollout`s from vector envs, with episode ends and autoreset steps made explicit.

`VecEnvSampler` steps its envs in this process through one `EnvRunner` (`env_runner.py`: sync or async vector env);
`RaySampler` (`ray_sampler.py`) spreads them over Ray workers. Both assemble the same Rollout from the runners'
chunks, and since every env's resets and noise are its own, the same seed gives the same rollout either way.

A row of a rollout is one env's stream of steps, possibly across episodes:

- `extras["terminated"][b, t]`: the episode ended by termination after step t (successor value 0);
- `extras["truncated"][b, t]`: it was cut by a time limit; the successor is the final observation that
  `step` returned, and `extras["bootstrap_values"][b, t]` = V(final obs) (Pardo et al. 2018, time limits);
- the last column bootstraps from V(next obs) as well, because its successor lies outside the rollout.

Finished episodes (obs, actions, env rewards, successes) go to `on_episode` in the order of (step, env index), e.g.
an `EpisodeStore` for preference queries. `Rollout.outputs` holds one `Trajectory` per row, what a reward function
reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from mmalign.robotics.env_runner import Chunk, EnvRunner, Episode, make_vec_env
from mmalign.rollout import Rollout

__all__ = ["Critic", "Episode", "Trajectory", "VecEnvSampler", "make_sampler", "make_vec_env"]


class Trajectory(NamedTuple):
    """One row of a rollout, as reward functions see it: obs (T, obs_dim), env_actions (T, act_dim) as the env ran
    them (clipped to the action box), env_rewards (T,), mask (T,) real steps."""

    obs: Tensor
    env_actions: Tensor
    env_rewards: Tensor
    mask: Tensor


@runtime_checkable
class Critic(Protocol):
    """A policy with a critic (`GaussianPolicy`): a rollout it collects gets its bootstrap values and lives on its
    device. One without (SAC, which learns from a replay buffer) gets zero bootstrap values and CPU tensors."""

    device: torch.device

    def state_value(self, obs: Tensor) -> Tensor:
        """V(obs) without grad: (..., obs_dim) CPU -> (...) on the CPU."""
        ...


class VecEnvSampler:
    """Steps `num_envs` envs with a policy's `act`, keeping their episodes going across `collect` calls.

    Args:
        env_id: a gymnasium id whose vector env autoresets NEXT_STEP (gymnasium 1.x's default).
        num_envs: envs, the rows of a rollout.
        seed: run seed of the envs' resets and noise.
        vector: "sync" or "async" (gymnasium's AsyncVectorEnv: a subprocess per env).
        env_kwargs: keyword arguments of `gym.make`.
        on_episode: called with each finished `Episode`.
        reward_fn: optional per-step reward replacing the env's in `Rollout.rewards`:
            fn(obs (B, T, obs_dim), env_actions (B, T, act_dim)) -> (B, T); the env reward stays in state.
    """

    def __init__(self, env_id: str, num_envs: int, seed: int = 0, vector: str = "sync", env_kwargs: dict | None = None,
                 on_episode: Callable[[Episode], None] | None = None,
                 reward_fn: Callable[[Tensor, Tensor], Tensor] | None = None):
        self.n, self.on_episode, self.reward_fn = num_envs, on_episode, reward_fn
        self.env_steps = 0
        self.finished: list[Episode] = []
        self._start(env_id, seed, vector, env_kwargs or {})

    def _start(self, env_id: str, seed: int, vector: str, env_kwargs: dict) -> None:
        self.runner = EnvRunner(env_id, range(self.n), seed, vector, env_kwargs)
        self.observation_space, self.action_space = self.runner.spaces()

    def _collect(self, policy, steps: int) -> list[Chunk]:
        return [self.runner.collect(policy, steps)]

    def restart(self, seed: int) -> None:
        """Reset every env and its noise with `seed` and drop the unfinished episodes: the envs' state is then a
        function of the seed alone, which is how a checkpoint keeps it (`RobotTask.checkpoint_state`)."""
        self.runner.restart(seed)

    def close(self) -> None:
        self.runner.close()

    def collect(self, policy, steps: int) -> Rollout:
        """Run `steps` vector steps. Returns a Rollout with B = num_envs rows and T = steps columns.

        state: obs (B, T, obs_dim) float32, actions (B, T, act_dim) raw samples (what log-probs score),
        env_actions (B, T, act_dim) the samples clipped to the action box (what the env ran, what episodes and so
        preference segments hold, so what a learned reward must be fed), next_obs (B, T, obs_dim) (the
        final observation at an episode end), env_rewards (B, T), success (B, T) bool.
        rewards: (B, T) env rewards, or `reward_fn`'s. extras: terminated, truncated (B, T) bool,
        bootstrap_values (B, T): V(next_obs) for a `Critic`, else 0. Tensors on a `Critic`'s device, else on the
        CPU; outputs on the CPU.
        """
        chunks = self._collect(policy, steps)
        for _, _, ep in sorted((e for c in chunks for e in c.episodes), key=lambda e: e[:2]):
            self.finished.append(ep)
            if self.on_episode is not None:
                self.on_episode(ep)
        self.env_steps += sum(c.env_steps for c in chunks)
        cols = {k: np.concatenate([c.columns[k] for c in chunks]) for k in chunks[0].columns}
        return self._build(policy, cols)

    def _build(self, policy, c: dict[str, np.ndarray]) -> Rollout:
        t = {k: torch.as_tensor(v) for k, v in c.items()}
        obs, next_obs = t["obs"].float(), t["next"].float()
        critic = isinstance(policy, Critic)
        with torch.no_grad():
            # V of every successor; gae reads it only where truncated and in the last column
            bootstrap = policy.state_value(next_obs) if critic else torch.zeros(next_obs.shape[:2])
        env_rewards = t["rew"].float() * t["mask"]
        sent = t["sent"].float()
        rewards = env_rewards if self.reward_fn is None else self.reward_fn(obs, sent) * t["mask"]
        mask = t["mask"].bool()
        rollout = Rollout(
            group=torch.zeros(self.n, dtype=torch.long), logprobs=t["logp"].float(), mask=mask,
            outputs=[Trajectory(*row) for row in zip(obs, sent, env_rewards, mask)],
            state={"obs": obs, "actions": t["act"].float(), "env_actions": sent, "next_obs": next_obs,
                   "env_rewards": env_rewards, "success": t["succ"].bool()},
            rewards=rewards,
            extras={"terminated": t["term"].bool(), "truncated": t["trunc"].bool(), "bootstrap_values": bootstrap},
        )
        # on the learner's device (outputs, what rewards read, stay on the CPU)
        return rollout.to(policy.device) if critic else rollout

    def pop_finished(self) -> list[Episode]:
        """Episodes finished since the last call."""
        out, self.finished = self.finished, []
        return out


def make_sampler(kind: str, env_id: str, num_envs: int, seed: int, vector: str = "sync",
                 env_kwargs: dict | None = None, on_episode: Callable[[Episode], None] | None = None,
                 ray_workers: int = 2, ray_address: str | None = None) -> VecEnvSampler:
    """The sampler `kind` names: "local" (`VecEnvSampler`, this process) or "ray" (`RaySampler`, `ray_workers` Ray
    actors on the cluster at `ray_address`, or a local Ray instance when None)."""
    if kind == "ray":
        from mmalign.robotics.ray_sampler import RaySampler

        return RaySampler(env_id, num_envs, seed, vector, env_kwargs, on_episode, workers=ray_workers,
                          address=ray_address)
    if kind != "local":
        raise ValueError(f"sampler {kind!r} is not one of ['local', 'ray']")
    return VecEnvSampler(env_id, num_envs, seed, vector, env_kwargs, on_episode)

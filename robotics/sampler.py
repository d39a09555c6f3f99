"""Collect `Rollout`s from a gymnasium 1.x vector env, with episode ends and autoreset steps made explicit.

gymnasium 1.x vector envs autoreset on the step *after* an episode ends (`AutoresetMode.NEXT_STEP`): that step
ignores the action and returns the reset observation with reward 0. It is not a transition, so its mask is
False. A row of a rollout is one env's stream of steps, possibly across episodes:

- `extras["terminated"][b, t]`: the episode ended by termination after step t (successor value 0);
- `extras["truncated"][b, t]`: it was cut by a time limit; the successor is the final observation that
  `step` returned, and `extras["bootstrap_values"][b, t]` = V(final obs) (Pardo et al. 2018, time limits);
- the last column bootstraps from V(next obs) as well, because its successor lies outside the rollout.

Finished episodes (obs, actions, env rewards, successes) go to `on_episode`, e.g. an `EpisodeStore` for
preference queries. `Rollout.outputs` holds one `Trajectory` per row, what a reward function reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import Tensor

from mmalign.rollout import Rollout


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


class Trajectory(NamedTuple):
    """One row of a rollout, as reward functions see it: obs (T, obs_dim), env_actions (T, act_dim) as the env ran
    them (clipped to the action box), env_rewards (T,), mask (T,) real steps."""

    obs: Tensor
    env_actions: Tensor
    env_rewards: Tensor
    mask: Tensor


@dataclass
class _Partial:
    obs: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    rewards: list = field(default_factory=list)
    success: list = field(default_factory=list)


def make_vec_env(env_id: str, num_envs: int, seed: int = 0, **kwargs) -> gym.vector.VectorEnv:
    """A synchronous vector env of `num_envs` copies of `env_id` (NEXT_STEP autoreset), reset with `seed`."""
    import mmalign.envs  # noqa: F401  (registers the mmalign/ ids)

    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", **kwargs)
    if env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP) != gym.vector.AutoresetMode.NEXT_STEP:
        raise ValueError(f"{env_id}: VecEnvSampler expects NEXT_STEP autoreset, got {env.metadata['autoreset_mode']}.")
    env.reset(seed=seed)
    return env


class VecEnvSampler:
    """Steps a vector env with a policy's `act`, keeping the envs' episodes going across `collect` calls.

    Args:
        env: a gymnasium 1.x vector env with NEXT_STEP autoreset (`make_vec_env`).
        on_episode: called with each finished `Episode`.
        reward_fn: optional per-step reward replacing the env's in `Rollout.rewards`:
            fn(obs (B, T, obs_dim), env_actions (B, T, act_dim)) -> (B, T); the env reward stays in state.
    """

    def __init__(self, env: gym.vector.VectorEnv, on_episode: Callable[[Episode], None] | None = None,
                 reward_fn: Callable[[Tensor, Tensor], Tensor] | None = None):
        self.env, self.on_episode, self.reward_fn = env, on_episode, reward_fn
        self.n = env.num_envs
        self.obs, _ = env.reset()
        self.prev_done = np.zeros(self.n, dtype=bool)
        self.partial = [_Partial() for _ in range(self.n)]
        self.env_steps = 0
        self.finished: list[Episode] = []

    def restart(self, seed: int) -> None:
        """Reset every env with `seed` and drop the unfinished episodes: the envs' state is then a function of the
        seed alone, which is how a checkpoint keeps it (`RobotTask.checkpoint_state`)."""
        self.obs, _ = self.env.reset(seed=seed)
        self.prev_done[:] = False
        self.partial = [_Partial() for _ in range(self.n)]

    def collect(self, policy, steps: int) -> Rollout:
        """Run `steps` vector steps. Returns a Rollout with B = num_envs rows and T = steps columns.

        state: obs (B, T, obs_dim) float32, actions (B, T, act_dim) raw samples (what log-probs score),
        env_actions (B, T, act_dim) the samples clipped to the action box (what the env ran, what episodes and so
        preference segments hold, so what a learned reward must be fed), next_obs (B, T, obs_dim) (the
        final observation at an episode end), env_rewards (B, T), success (B, T) bool.
        rewards: (B, T) env rewards, or `reward_fn`'s. extras: terminated, truncated (B, T) bool,
        bootstrap_values (B, T).
        """
        keys = ("obs", "act", "sent", "logp", "next", "rew", "term", "trunc", "mask", "succ")
        n, cols = self.n, {k: [] for k in keys}
        for _ in range(steps):
            obs = torch.as_tensor(self.obs, dtype=torch.float32)
            action, logp, _ = policy.act(obs)
            sent = action.clamp(-1, 1).numpy()
            next_obs, reward, term, trunc, info = self.env.step(sent)
            real = ~self.prev_done  # the step after an episode end is gymnasium's autoreset step: no transition
            succ = np.asarray(info.get("success", np.zeros(n, bool)), dtype=bool) & real
            self._track(real, self.obs, sent, reward, succ, term | trunc)
            for k, v in zip(cols, (self.obs, action.numpy(), sent, logp.numpy(), next_obs, reward, term & real,
                                   trunc & real, real, succ)):
                cols[k].append(np.asarray(v))
            self.prev_done = (term | trunc) & real
            self.obs = next_obs
            self.env_steps += int(real.sum())
        return self._build(policy, {k: np.stack(v, axis=1) for k, v in cols.items()})

    def _track(self, real, obs, action, reward, success, done) -> None:
        for i in np.flatnonzero(real):
            p = self.partial[i]
            p.obs.append(obs[i].copy())
            p.actions.append(action[i].copy())
            p.rewards.append(float(reward[i]))
            p.success.append(bool(success[i]))
            if done[i]:
                ep = Episode(np.array(p.obs, np.float32), np.array(p.actions, np.float32),
                             np.array(p.rewards, np.float32), np.array(p.success))
                self.finished.append(ep)
                if self.on_episode is not None:
                    self.on_episode(ep)
                self.partial[i] = _Partial()

    def _build(self, policy, c: dict[str, np.ndarray]) -> Rollout:
        t = {k: torch.as_tensor(v) for k, v in c.items()}
        obs, next_obs = t["obs"].float(), t["next"].float()
        with torch.no_grad():
            # V of every successor; gae reads it only where truncated and in the last column
            value = getattr(policy, "state_value", None)
            bootstrap = value(next_obs) if value is not None else torch.zeros(next_obs.shape[:2])
        env_rewards = t["rew"].float() * t["mask"]
        sent = t["sent"].float()
        rewards = env_rewards if self.reward_fn is None else self.reward_fn(obs, sent) * t["mask"]
        mask = t["mask"].bool()
        return Rollout(
            group=torch.zeros(self.n, dtype=torch.long), logprobs=t["logp"].float(), mask=mask,
            outputs=[Trajectory(*row) for row in zip(obs, sent, env_rewards, mask)],
            state={"obs": obs, "actions": t["act"].float(), "env_actions": sent, "next_obs": next_obs,
                   "env_rewards": env_rewards, "success": t["succ"].bool()},
            rewards=rewards,
            extras={"terminated": t["term"].bool(), "truncated": t["trunc"].bool(), "bootstrap_values": bootstrap},
        )

    def pop_finished(self) -> list[Episode]:
        """Episodes finished since the last call."""
        out, self.finished = self.finished, []
        return out

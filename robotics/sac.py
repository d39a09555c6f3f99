"""Soft actor-critic (Haarnoja et al. 2018) with a relabelable replay buffer: PEBBLE's learner (Lee et al. 2021).

PEBBLE trains SAC on a learned reward and relabels every stored transition whenever the reward model changes
(`ReplayBuffer.relabel`). The actor is a tanh-squashed Gaussian; its log-prob includes the tanh Jacobian
(Haarnoja et al. 2018, Eq. 21). Transitions come from `VecEnvSampler` rollouts: autoreset steps are skipped,
and only termination (not truncation) zeroes the successor value.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmalign.checkpoint import load_optimizer_state, optimizer_state
from mmalign.config import check_numbers
from mmalign.robotics.policy import mlp
from mmalign.rollout import Rollout


@dataclass
class SACConfig:
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden widths of actor and critics (B-Pref Meta-World: 3 x 256)."""
    lr: float = 3e-4
    """Adam learning rate of actor, critics and temperature."""
    batch_size: int = 256
    """Transitions per update."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    init_alpha: float = 0.1
    """Initial entropy temperature."""
    buffer_size: int = 100_000
    """Replay capacity (transitions)."""
    learning_starts: int = 1000
    """Env steps of uniform random actions before updates start."""
    updates_per_step: float = 1.0
    """Gradient updates per env step."""

    def __post_init__(self) -> None:
        check_numbers(self, "hidden", "batch_size", "buffer_size", ge=1)
        check_numbers(self, "lr", "init_alpha", "updates_per_step", gt=0)
        check_numbers(self, "learning_starts", ge=0)
        check_numbers(self, "gamma", ge=0, le=1)
        check_numbers(self, "tau", gt=0, le=1)


class ReplayBuffer:
    """A ring buffer of transitions (s, a, s', terminated) whose rewards can be recomputed at any time."""

    def __init__(self, obs_dim: int, act_dim: int, capacity: int):
        self.obs = torch.zeros(capacity, obs_dim)
        self.actions = torch.zeros(capacity, act_dim)
        self.next_obs = torch.zeros(capacity, obs_dim)
        self.terminated = torch.zeros(capacity)
        self.rewards = torch.zeros(capacity)
        self.capacity, self.pos, self.size = capacity, 0, 0

    def __len__(self) -> int:
        return self.size

    def add_rollout(self, rollout: Rollout, reward_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> None:
        """Append the real steps (mask) of a sampler rollout; rewards from `reward_fn` or the env."""
        m = rollout.mask
        s, a, s2 = rollout.state["obs"][m], rollout.state["actions"][m], rollout.state["next_obs"][m]
        r = reward_fn(s, a) if reward_fn is not None else rollout.state["env_rewards"][m]
        done = rollout.extras["terminated"][m].float()
        for i in range(len(s)):  # a few rows per call; keeps the ring arithmetic simple
            j = self.pos
            self.obs[j], self.actions[j], self.next_obs[j], self.terminated[j], self.rewards[j] = (
                s[i], a[i], s2[i], done[i], r[i])
            self.pos, self.size = (j + 1) % self.capacity, min(self.size + 1, self.capacity)

    @torch.no_grad()
    def relabel(self, reward_fn: Callable[[Tensor, Tensor], Tensor], chunk: int = 8192) -> None:
        """PEBBLE's relabelling: rewards[i] = reward_fn(s_i, a_i) for every stored transition."""
        for i in range(0, self.size, chunk):
            self.rewards[i:i + chunk] = reward_fn(self.obs[i:i + chunk], self.actions[i:i + chunk])

    def state_dict(self) -> dict:
        """The stored transitions and the ring position (checkpoints)."""
        fields = ("obs", "actions", "next_obs", "terminated", "rewards")
        return {**{k: getattr(self, k)[: self.size] for k in fields}, "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        for k in ("obs", "actions", "next_obs", "terminated", "rewards"):
            getattr(self, k)[: state["size"]] = state[k]
        self.pos, self.size = state["pos"], state["size"]

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        idx = torch.randint(0, self.size, (n,), generator=generator)
        return {"obs": self.obs[idx], "actions": self.actions[idx], "next_obs": self.next_obs[idx],
                "terminated": self.terminated[idx], "rewards": self.rewards[idx]}


class SquashedGaussianActor(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int]):
        super().__init__()
        self.trunk = mlp([obs_dim, *hidden, 2 * act_dim], activation=nn.ReLU)

    def forward(self, obs: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """(N, obs_dim) -> action in [-1, 1] (N, act_dim), log pi(a|s) (N,) with the tanh correction."""
        mean, log_std = self.trunk(obs).chunk(2, -1)
        std = log_std.clamp(-5, 2).exp()
        u = mean if deterministic else mean + std * torch.randn_like(mean)
        logp = torch.distributions.Normal(mean, std).log_prob(u).sum(-1)
        logp = logp - (2 * (np.log(2) - u - F.softplus(-2 * u))).sum(-1)  # log |d tanh(u) / du|, stable form
        return torch.tanh(u), logp


class SAC:
    """The agent: `act` for the sampler, `update` for one gradient step on a replay batch.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        cfg: SAC settings.
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: SACConfig):
        self.cfg = cfg
        self.actor = SquashedGaussianActor(obs_dim, act_dim, cfg.hidden)
        self.critics = nn.ModuleList(mlp([obs_dim + act_dim, *cfg.hidden, 1], nn.ReLU) for _ in range(2))
        self.targets = copy.deepcopy(self.critics).requires_grad_(False)
        self.log_alpha = torch.tensor(float(np.log(cfg.init_alpha)), requires_grad=True)
        self.target_entropy = -float(act_dim)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.critic_opt = torch.optim.Adam(self.critics.parameters(), lr=cfg.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.lr)
        self.random_actions = True  # uniform actions until learning starts

    def parameters(self):
        return [*self.actor.parameters(), *self.critics.parameters()]

    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """(N, obs_dim) -> action (N, act_dim), log-prob (N,), zeros (N,) (no state value)."""
        if self.random_actions and not deterministic:
            a = torch.rand(obs.shape[0], self.actor.trunk[-1].out_features // 2) * 2 - 1
            return a, torch.zeros(len(a)), torch.zeros(len(a))
        a, logp = self.actor(obs, deterministic)
        return a, logp, torch.zeros(len(a))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic action for numpy observations (videos, evaluation)."""
        return self.act(torch.as_tensor(obs, dtype=torch.float32), deterministic=True)[0].numpy()

    def q(self, critics: nn.ModuleList, obs: Tensor, act: Tensor) -> Tensor:
        x = torch.cat([obs, act], -1)
        return torch.min(critics[0](x), critics[1](x)).squeeze(-1)

    def update(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """One SAC step: critics (Eq. 5), actor (Eq. 7), temperature (Eq. 18), then Polyak targets."""
        cfg, alpha = self.cfg, self.log_alpha.exp().detach()
        obs, act = batch["obs"], batch["actions"]
        with torch.no_grad():
            a2, logp2 = self.actor(batch["next_obs"])
            soft_v = self.q(self.targets, batch["next_obs"], a2) - alpha * logp2
            target = batch["rewards"] + cfg.gamma * (1 - batch["terminated"]) * soft_v
        x = torch.cat([obs, act], -1)
        q_loss = sum(F.mse_loss(c(x).squeeze(-1), target) for c in self.critics)
        self.critic_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        self.critic_opt.step()
        a, logp = self.actor(obs)
        pi_loss = (alpha * logp - self.q(self.critics, obs, a)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        pi_loss.backward()
        self.actor_opt.step()
        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        with torch.no_grad():
            for p, tp in zip(self.critics.parameters(), self.targets.parameters()):
                tp.lerp_(p, cfg.tau)
        return {"q_loss": float(q_loss), "pi_loss": float(pi_loss), "alpha": float(alpha)}

    def state_dict(self) -> dict:
        """Networks, temperature and optimizers (checkpoints)."""
        return {"actor": self.actor.state_dict(), "critics": self.critics.state_dict(),
                "targets": self.targets.state_dict(), "log_alpha": self.log_alpha.detach().clone(),
                "optimizers": {k: optimizer_state(getattr(self, f"{k}_opt")) for k in ("actor", "critic", "alpha")}}

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critics.load_state_dict(state["critics"])
        self.targets.load_state_dict(state["targets"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        for k in ("actor", "critic", "alpha"):
            load_optimizer_state(getattr(self, f"{k}_opt"), state["optimizers"][k])

    def reset_critics(self) -> None:
        """PEBBLE resets the critics after unsupervised pre-training (their values belong to the old reward)."""
        for c in self.critics:
            for m in c:
                if isinstance(m, nn.Linear):
                    m.reset_parameters()
        self.targets.load_state_dict(self.critics.state_dict())

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
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmalign.checkpoint import load_optimizer_state, optimizer_state
from mmalign.config import check_numbers
from mmalign.robotics.policy import mlp, rowwise
from mmalign.rollout import Rollout

if TYPE_CHECKING:
    from mmalign.robotics.env_runner import EnvNoise


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
    """A ring buffer of transitions (s, a, s', terminated) whose rewards can be recomputed at any time, held on
    `device` (where the SAC updates read it)."""

    FIELDS = ("obs", "actions", "next_obs", "terminated", "rewards")

    def __init__(self, obs_dim: int, act_dim: int, capacity: int, device: torch.device | str = "cpu"):
        self.obs = torch.zeros(capacity, obs_dim, device=device)
        self.actions = torch.zeros(capacity, act_dim, device=device)
        self.next_obs = torch.zeros(capacity, obs_dim, device=device)
        self.terminated = torch.zeros(capacity, device=device)
        self.rewards = torch.zeros(capacity, device=device)
        self.capacity, self.pos, self.size = capacity, 0, 0

    def __len__(self) -> int:
        return self.size

    def add_rollout(self, rollout: Rollout, reward_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> None:
        """Append the real steps (mask) of a sampler rollout; rewards from `reward_fn` (called with the buffer's
        device tensors) or the env."""
        m, dev = rollout.mask, self.obs.device
        s, a, s2 = (rollout.state[k][m].to(dev) for k in ("obs", "actions", "next_obs"))
        r = reward_fn(s, a) if reward_fn is not None else rollout.state["env_rewards"][m].to(dev)
        k = len(s)
        keep = slice(max(0, k - self.capacity), k)  # a rollout longer than the ring: its newest steps
        idx = ((self.pos + torch.arange(k)) % self.capacity)[keep].to(dev)
        for name, v in zip(self.FIELDS, (s, a, s2, rollout.extras["terminated"][m].float().to(dev), r)):
            getattr(self, name)[idx] = v[keep]
        self.pos, self.size = (self.pos + k) % self.capacity, min(self.size + k, self.capacity)

    @torch.no_grad()
    def relabel(self, reward_fn: Callable[[Tensor, Tensor], Tensor], chunk: int = 8192) -> None:
        """PEBBLE's relabelling: rewards[i] = reward_fn(s_i, a_i) for every stored transition."""
        for i in range(0, self.size, chunk):
            self.rewards[i:i + chunk] = reward_fn(self.obs[i:i + chunk], self.actions[i:i + chunk])

    def state_dict(self) -> dict:
        """The stored transitions and the ring position (checkpoints)."""
        return {**{k: getattr(self, k)[: self.size] for k in self.FIELDS}, "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        for k in self.FIELDS:
            getattr(self, k)[: state["size"]] = state[k]
        self.pos, self.size = state["pos"], state["size"]

    def sample(self, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        # drawn on the CPU: the same seed picks the same transitions whatever device holds them
        idx = torch.randint(0, self.size, (n,), generator=generator).to(self.obs.device)
        return {"obs": self.obs[idx], "actions": self.actions[idx], "next_obs": self.next_obs[idx],
                "terminated": self.terminated[idx], "rewards": self.rewards[idx]}


class SquashedGaussianActor(nn.Module):
    """tanh(u), u ~ N(mu(s), sigma(s)); `act` also serves the samplers (uniform actions while `random_actions`)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int]):
        super().__init__()
        self.trunk = mlp([obs_dim, *hidden, 2 * act_dim], activation=nn.ReLU)
        self.act_dim, self.random_actions = act_dim, True  # uniform actions until learning starts

    def forward(self, obs: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """(N, obs_dim) -> action in [-1, 1] (N, act_dim), log pi(a|s) (N,) with the tanh correction."""
        mean, log_std = self.trunk(obs).chunk(2, -1)
        return self._squash(mean, log_std, None if deterministic else torch.randn_like(mean))

    @staticmethod
    def _squash(mean: Tensor, log_std: Tensor, eps: Tensor | None) -> tuple[Tensor, Tensor]:
        std = log_std.clamp(-5, 2).exp()
        u = mean if eps is None else mean + std * eps
        logp = torch.distributions.Normal(mean, std).log_prob(u).sum(-1)
        logp = logp - (2 * (np.log(2) - u - F.softplus(-2 * u))).sum(-1)  # log |d tanh(u) / du|, stable form
        return torch.tanh(u), logp

    @torch.no_grad()
    def act(self, obs: Tensor, noise: EnvNoise | None = None, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """CPU observations (N, obs_dim) -> action (N, act_dim), log-prob (N,) on the CPU, each row computed alone
        (`policy.rowwise`) with its env's noise (`EnvNoise`; None = the global torch generator)."""
        n, dev = obs.shape[0], next(self.parameters()).device
        if self.random_actions and not deterministic:
            u = noise.uniform(self.act_dim) if noise is not None else torch.rand(n, self.act_dim)
            return u * 2 - 1, torch.zeros(n)
        mean, log_std = rowwise(self.trunk, obs.to(dev)).chunk(2, -1)
        eps = None
        if not deterministic:
            eps = (noise.normal(self.act_dim) if noise is not None else torch.randn(n, self.act_dim)).to(dev)
        action, logp = self._squash(mean, log_std, eps)
        return action.cpu(), logp.cpu()

    def for_workers(self) -> SquashedGaussianActor:
        """A CPU copy that acts: what a Ray sampler sends its workers."""
        return copy.deepcopy(self).cpu()


class SAC:
    """The agent: `act` for the sampler, `update` for one gradient step on a replay batch.

    Args:
        obs_dim: observation size.
        act_dim: action size.
        cfg: SAC settings.
        device: where the networks train.
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: SACConfig, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.actor = SquashedGaussianActor(obs_dim, act_dim, cfg.hidden).to(device)
        self.critics = nn.ModuleList(mlp([obs_dim + act_dim, *cfg.hidden, 1], nn.ReLU) for _ in range(2)).to(device)
        self.targets = copy.deepcopy(self.critics).requires_grad_(False)
        self.log_alpha = torch.tensor(float(np.log(cfg.init_alpha)), device=device, requires_grad=True)
        self.target_entropy = -float(act_dim)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.critic_opt = torch.optim.Adam(self.critics.parameters(), lr=cfg.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.lr)

    @property
    def random_actions(self) -> bool:
        return self.actor.random_actions

    @random_actions.setter
    def random_actions(self, value: bool) -> None:
        self.actor.random_actions = value

    def parameters(self):
        return [*self.actor.parameters(), *self.critics.parameters()]

    def act(self, obs: Tensor, noise: EnvNoise | None = None, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        return self.actor.act(obs, noise, deterministic)

    def for_workers(self) -> SquashedGaussianActor:
        return self.actor.for_workers()

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
        return {"q_loss": q_loss.item(), "pi_loss": pi_loss.item(), "alpha": alpha.item()}

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

"""Gaussian robot policy on the adapter contract (mmalign.rollout), with a critic for PPO.

A step is one environment step. The policy is a diagonal Gaussian N(mu(s), diag(sigma^2)) over the raw
(unsquashed) action; the environment clips it to its box, and the log-prob is that of the raw sample, summed
over action dimensions (as CleanRL and Stable-Baselines3 do). `Rollout.state` holds what re-scoring needs:
`obs` (B, T, obs_dim) and `actions` (B, T, act_dim), the raw samples.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from mmalign.rollout import Rollout

if TYPE_CHECKING:
    from mmalign.robotics.env_runner import EnvNoise


LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def gaussian_log_prob(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """log N(x | mean, diag(exp(log_std)^2)), summed over the last dimension: (..., d) -> (...). Written out instead
    of through `torch.distributions.Normal`, whose construction (argument checks, broadcasting, exp then log of the
    std) costs more than the density on a small batch, on every env step and every minibatch."""
    return standardized_log_prob((x - mean) / log_std.exp(), log_std)


def standardized_log_prob(z: Tensor, log_std: Tensor) -> Tensor:
    """`gaussian_log_prob` of x = mean + exp(log_std) * z, from z (a sampled action's noise)."""
    return (-0.5 * z**2 - log_std - LOG_SQRT_2PI).sum(-1)


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.Tanh, out_gain: float = 1.0) -> nn.Sequential:
    """Linear layers of `sizes` with `activation` between them; orthogonal init (PPO implementation details)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        lin = nn.Linear(a, b)
        nn.init.orthogonal_(lin.weight, out_gain if last else np.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers += [lin] if last else [lin, activation()]
    return nn.Sequential(*layers)


def rowwise(net: nn.Sequential, x: Tensor) -> Tensor:
    """`net(x)` with each row computed alone: every Linear as an elementwise product summed over its inputs. A matrix
    multiply's blocking depends on the batch size, so a row's output would change in the last bits with the rows
    beside it; here it does not, and envs split over workers act exactly as in one batch (`env_runner.py`)."""
    for layer in net:
        x = (x.unsqueeze(-2) * layer.weight).sum(-1) + layer.bias if isinstance(layer, nn.Linear) else layer(x)
    return x


class GaussianActorCritic(nn.Module):
    """Actor mu(s) with a state-independent log-std, and a separate critic V(s).

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden: hidden layer widths of both networks.
        log_std_init: initial log-std of every action dimension.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (64, 64), log_std_init: float = -0.5):
        super().__init__()
        self.sizes = {"obs_dim": obs_dim, "act_dim": act_dim, "hidden": list(hidden), "log_std_init": log_std_init}
        self.actor = mlp([obs_dim, *hidden, act_dim], out_gain=0.01)
        self.critic = mlp([obs_dim, *hidden, 1], out_gain=1.0)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))

    def log_prob(self, obs: Tensor, actions: Tensor) -> Tensor:
        """log pi(actions | obs), summed over action dimensions: (..., obs_dim), (..., act_dim) -> (...)."""
        return gaussian_log_prob(actions, self.actor(obs), self.log_std)

    def entropy(self, obs: Tensor) -> Tensor:
        """Entropy of the action distribution at `obs` (..., obs_dim) -> (...): sum over action dimensions of
        1/2 + log sqrt(2 pi) + log sigma, the same at every state (the std is state-independent)."""
        return (0.5 + LOG_SQRT_2PI + self.log_std).sum().expand(obs.shape[:-1])

    def value(self, obs: Tensor) -> Tensor:
        """V(obs): (..., obs_dim) -> (...)."""
        return self.critic(obs).squeeze(-1)


class GaussianPolicy:
    """The adapter: samples env steps through a sampler (`VecEnvSampler`, `RaySampler`) and re-scores them (Policy,
    HasValue, HasEntropy).

    `sample(contexts, num_samples)` collects `num_samples` steps from each of the sampler's envs: B = num_envs rows,
    T = num_samples columns, all of group 0 (the env is the one context).

    Args:
        net: the actor-critic.
        sampler: the sampler that `sample` drives (optional for re-scoring only).
    """

    def __init__(self, net: GaussianActorCritic, sampler=None):
        self.net, self.sampler = net, sampler

    def parameters(self) -> Iterable[nn.Parameter]:
        return self.net.parameters()

    def named_parameters(self):
        return self.net.named_parameters()

    @torch.no_grad()
    def act(self, obs: Tensor, noise: EnvNoise | None = None, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """One step for CPU observations (N, obs_dim): raw action mu + sigma * eps (N, act_dim) and its log-prob (N,),
        on the CPU (the envs' side), computed row by row (`rowwise`) on the network's device.

        Args:
            noise: each env's eps (`EnvNoise`); None = the global torch generator.
            deterministic: the mean action.
        """
        obs = obs.to(self.device)
        mean, log_std = rowwise(self.net.actor, obs), self.net.log_std
        if deterministic:
            return mean.cpu(), standardized_log_prob(torch.zeros_like(mean), log_std).cpu()
        eps = (noise.normal(mean.shape[-1]) if noise is not None else torch.randn(mean.shape)).to(self.device)
        return (mean + log_std.exp() * eps).cpu(), standardized_log_prob(eps, log_std).cpu()

    def for_workers(self) -> GaussianPolicy:
        """A CPU copy that acts (no sampler): what a Ray sampler sends its workers each iteration."""
        return GaussianPolicy(copy.deepcopy(self.net).cpu())

    @torch.no_grad()
    def state_value(self, obs: Tensor) -> Tensor:
        """V(obs) without grad: (..., obs_dim) -> (...) on the CPU; the sampler's bootstrap values."""
        return self.net.value(obs.to(self.device)).cpu()

    @property
    def device(self) -> torch.device:
        return self.net.log_std.device

    def save_pretrained(self, path: str | Path) -> None:
        """The actor-critic's weights (`policy.safetensors`) and sizes (`config.json`), for `load_pretrained`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()},
                  path / "policy.safetensors")
        (path / "config.json").write_text(json.dumps(self.net.sizes))

    def sample(self, contexts: Sequence, num_samples: int) -> Rollout:
        """Collect `num_samples` steps per env (continuing the envs' episodes); see `VecEnvSampler.collect`."""
        if self.sampler is None:
            raise ValueError("GaussianPolicy.sample needs a VecEnvSampler; pass sampler=... when building it.")
        return self.sampler.collect(self, num_samples)

    def logprobs(self, rollout: Rollout) -> Tensor:
        """(B, T) log N(a_t | mu(s_t), sigma), summed over action dimensions, with grad."""
        return self.net.log_prob(rollout.state["obs"].to(self.device), rollout.state["actions"].to(self.device))

    def values(self, rollout: Rollout) -> Tensor:
        """(B, T) V(s_t), with grad."""
        return self.net.value(rollout.state["obs"].to(self.device))

    def entropy(self, rollout: Rollout) -> Tensor:
        """(B, T) entropy of the action distribution at each step, with grad."""
        return self.net.entropy(rollout.state["obs"].to(self.device))

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic (mean) action for one or a batch of numpy observations, clipped to [-1, 1]."""
        action, _ = self.act(torch.as_tensor(obs, dtype=torch.float32), deterministic=True)
        return action.clamp(-1, 1).numpy()


def load_pretrained(path: str | Path) -> GaussianPolicy:
    """The policy `GaussianPolicy.save_pretrained` wrote (for acting: no sampler attached)."""
    path = Path(path)
    net = GaussianActorCritic(**json.loads((path / "config.json").read_text()))
    net.load_state_dict(load_file(path / "policy.safetensors"))
    return GaussianPolicy(net)

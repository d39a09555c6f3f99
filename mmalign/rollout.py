"""The adapter contract: a `Rollout` batch and the `Policy` protocol (docs/architecture.md, "The contract").

An adapter samples a batch of trajectories and can re-score exactly what it sampled under its current
weights. Everything an algorithm core needs is in `Rollout`; everything domain-specific (token ids, latent
chains, observations) stays in `Rollout.state`, which the cores never read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn


def last_step(mask: Tensor) -> Tensor:
    """(B,) index of each row's last real step."""
    idx = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), idx, -1).amax(1).clamp(min=0)


def on_last_step(values: Tensor, mask: Tensor) -> Tensor:
    """(B, T) zeros with each row's value of `values` (B,) on its last real step (where a sequence reward goes
    among per-step ones)."""
    steps = torch.zeros(mask.shape, dtype=values.dtype, device=values.device)
    return steps.scatter(1, last_step(mask).to(values.device)[:, None], values[:, None])


@dataclass
class Rollout:
    """A batch of B sampled trajectories of at most T steps.

    Attributes:
        group: (B,) long, index of the context each sample belongs to (for group-relative advantages).
        logprobs: (B, T) float, per-step log-probs under the sampling policy, detached.
        mask: (B, T) bool, True on real steps (completion tokens, denoising steps, env steps).
        outputs: B items a reward function reads (str, image, video, episode).
        state: adapter-owned tensors with leading dimension B, needed to re-score exactly.
        rewards: (B,) or (B, T) float, filled in by the trainer after scoring.
        extras: per-sample tensors with leading dimension B added by algorithms (advantages, returns, ...).
    """

    group: Tensor
    logprobs: Tensor
    mask: Tensor
    outputs: list = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    rewards: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        b = self.group.shape[0]
        if self.logprobs.shape != self.mask.shape or self.logprobs.shape[0] != b:
            raise ValueError(
                f"Rollout shapes disagree: group {tuple(self.group.shape)}, logprobs {tuple(self.logprobs.shape)}, "
                f"mask {tuple(self.mask.shape)}; logprobs and mask must both be (B, T) with B = len(group)."
            )
        if self.outputs and len(self.outputs) != b:
            raise ValueError(f"Rollout has {len(self.outputs)} outputs for {b} samples.")

    def __len__(self) -> int:
        return self.group.shape[0]

    def __getitem__(self, idx: Tensor | slice | Sequence[int]) -> Rollout:
        """Select samples (minibatching). Tensors with leading dimension B are indexed, other state is shared."""
        if isinstance(idx, slice):
            idx = torch.arange(len(self))[idx]
        idx = torch.as_tensor(idx, dtype=torch.long)
        b = len(self)

        def rows(v: Tensor) -> Tensor:  # index_select: the same rows as v[idx], with less dispatch per call
            return v.index_select(0, idx.to(v.device))

        def take(v: Any) -> Any:
            if isinstance(v, Tensor) and v.dim() > 0 and v.shape[0] == b:
                return rows(v)
            if isinstance(v, list) and len(v) == b:
                return [v[i] for i in idx.tolist()]
            return v

        return Rollout(
            group=rows(self.group),
            logprobs=rows(self.logprobs),
            mask=rows(self.mask),
            outputs=[self.outputs[i] for i in idx.tolist()] if self.outputs else [],
            state={k: take(v) for k, v in self.state.items()},
            rewards=None if self.rewards is None else rows(self.rewards),
            extras={k: rows(v) for k, v in self.extras.items()},
        )

    def to(self, device: torch.device | str) -> Rollout:
        """Move every tensor (state included) to `device`."""

        def move(v: Any) -> Any:
            return v.to(device) if isinstance(v, Tensor) else v

        return dataclasses.replace(
            self,
            group=self.group.to(device),
            logprobs=self.logprobs.to(device),
            mask=self.mask.to(device),
            state={k: move(v) for k, v in self.state.items()},
            rewards=move(self.rewards),
            extras={k: v.to(device) for k, v in self.extras.items()},
        )


@runtime_checkable
class Policy(Protocol):
    """What every adapter implements. Each adapter's docstring says what a step is and how its log-prob is reduced."""

    def sample(self, contexts: Sequence, num_samples: int) -> Rollout:
        """Sample `num_samples` trajectories per context; `Rollout.group[i]` indexes `contexts`. (A policy acting in
        environments instead continues each of its envs for `num_samples` steps: one row per env, of the env's
        context.)"""
        ...

    def logprobs(self, rollout: Rollout) -> Tensor:
        """(B, T) per-step log-probs of the rollout's steps under the current weights, with grad."""
        ...

    def parameters(self) -> Iterable[nn.Parameter]: ...


@runtime_checkable
class HasReference(Protocol):
    """Optional: log-probs under a frozen reference (a frozen copy, or the policy with LoRA disabled)."""

    def ref_logprobs(self, rollout: Rollout) -> Tensor:
        """(B, T) reference log-probs, no grad."""
        ...


@runtime_checkable
class HasValue(Protocol):
    """Optional: a critic for PPO."""

    def values(self, rollout: Rollout) -> Tensor:
        """(B, T) value estimates V(s_t), with grad. Bootstrap values for truncated episodes go in `state`."""
        ...


@runtime_checkable
class HasEntropy(Protocol):
    """Optional: per-step entropy of the current policy."""

    def entropy(self, rollout: Rollout) -> Tensor:
        """(B, T) per-step entropy, with grad."""
        ...


RewardFn = Callable[..., Sequence[float] | Tensor]
"""`fn(contexts, outputs, **kwargs) -> B floats`; `contexts[i]` is the context of `outputs[i]`."""

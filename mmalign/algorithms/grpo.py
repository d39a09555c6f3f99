"""GRPO (Shao et al. 2024) and its variants over any adapter: group-relative advantages + clipped surrogate.

Variants are fields chosen once in `GRPOConfig`: Dr. GRPO is `scale_rewards="none", loss_agg="fixed"`, DAPO's
clip-higher is `clip_high=0.28`, Lite PPO is `scale_rewards="batch"`, RLOO is `estimator="rloo"`, GRPO-S puts
per-sample difficulty weights in `rollout.extras["advantage_scale"]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mmalign.advantages import group_advantages, rloo_advantages, scale_advantages, zero_std_fraction
from mmalign.algorithms import Algorithm
from mmalign.losses import AGGREGATIONS, aggregate, clipped_surrogate, kl_estimate
from mmalign.rollout import Policy, Rollout


@dataclass
class GRPOConfig:
    estimator: str = "grpo"
    """Advantage estimator: "grpo" (group mean, scaled per `scale_rewards`) or "rloo" (leave-one-out)."""
    scale_rewards: str = "group"
    """Divide centred rewards by the "group" std (GRPO), the "batch" std (Lite PPO) or "none" (Dr. GRPO)."""
    clip_low: float = 0.2
    """Clip range below 1 of the importance ratio."""
    clip_high: float = 0.2
    """Clip range above 1 of the importance ratio (DAPO clip-higher: 0.28)."""
    beta: float = 0.0
    """KL-to-reference coefficient in the loss; 0 skips the reference forward pass entirely."""
    kl_estimator: str = "k3"
    """KL estimator for the loss term: "k1" or "k3"."""
    loss_agg: str = "token-mean"
    """Step aggregation: "token-mean" (DAPO), "seq-mean" (original GRPO) or "fixed" (Dr. GRPO)."""
    fixed_length: int = 0
    """Normalising length of "fixed" aggregation; 0 = the rollout's T."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient (needs an adapter with `entropy`)."""

    def __post_init__(self) -> None:
        checks = {
            "estimator": self.estimator in ("grpo", "rloo"),
            "scale_rewards": self.scale_rewards in ("group", "batch", "none"),
            "loss_agg": self.loss_agg in AGGREGATIONS,
            "kl_estimator": self.kl_estimator in ("k1", "k3"),
            "clip_low": 0 < self.clip_low < 1,
            "clip_high": self.clip_high > 0,
            "beta": self.beta >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"GRPOConfig: invalid {bad[0]}={getattr(self, bad[0])!r}; see the field's docstring.")


def grpo_prepare(policy: Policy, rollout: Rollout, cfg: GRPOConfig, state: None = None) -> dict[str, float]:
    """Steps 3 of the loop: compute advantages (and reference log-probs when beta > 0) into `rollout.extras`."""
    rewards = rollout.rewards
    if rewards is None or rewards.dim() != 1:
        raise ValueError("GRPO needs one scalar reward per sample: rollout.rewards of shape (B,).")
    if cfg.estimator == "rloo":
        adv = rloo_advantages(rewards, rollout.group)
    else:
        adv = group_advantages(rewards, rollout.group, cfg.scale_rewards)
    if "advantage_scale" in rollout.extras:
        adv = scale_advantages(adv, rollout.extras["advantage_scale"])
    rollout.extras["advantages"] = adv
    if cfg.beta > 0:
        with torch.no_grad():
            rollout.extras["ref_logprobs"] = policy.ref_logprobs(rollout).detach()
    return {"frac_reward_zero_std": zero_std_fraction(rewards, rollout.group)}


def grpo_loss(policy: Policy, batch: Rollout, cfg: GRPOConfig, denom: Tensor | None = None) -> tuple[Tensor, dict]:
    """Step 4: re-score the minibatch and return the GRPO loss (Shao et al. 2024, Eq. 3) and detached metrics."""
    logp = policy.logprobs(batch)
    surr = clipped_surrogate(logp, batch.logprobs, batch.extras["advantages"], cfg.clip_low, cfg.clip_high)
    per_step = surr.loss
    metrics = {}
    if cfg.beta > 0:
        kl = kl_estimate(logp, batch.extras["ref_logprobs"], cfg.kl_estimator)
        per_step = per_step + cfg.beta * kl
        metrics["kl"] = aggregate(kl.detach(), batch.mask)
    if cfg.entropy_coef > 0:
        ent = policy.entropy(batch)
        per_step = per_step - cfg.entropy_coef * ent
        metrics["entropy"] = aggregate(ent.detach(), batch.mask)
    loss = aggregate(per_step, batch.mask, cfg.loss_agg, denom, cfg.fixed_length or None)
    metrics["clip_frac"] = aggregate(surr.clipped.float(), batch.mask)
    metrics["ratio"] = aggregate(surr.ratio.detach(), batch.mask)
    return loss, metrics


GRPO = Algorithm(GRPOConfig, grpo_prepare, grpo_loss)

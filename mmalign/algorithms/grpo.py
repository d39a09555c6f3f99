"""GRPO (Shao et al. 2024) and its variants over any adapter: group-relative advantages + clipped surrogate.

Variants are fields chosen once in `GRPOConfig`: Dr. GRPO is `scale_rewards="none", loss_agg="fixed"`, DAPO's
clip-higher is `clip_high=0.28`, Lite PPO is `scale_rewards="batch"`, RLOO is `estimator="rloo"`, GRPO-S puts
per-sample difficulty weights in `rollout.extras["advantage_scale"]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mmalign.advantages import group_advantages, rloo_advantages, scale_advantages, zero_std_fraction
from mmalign.algorithms import Algorithm, rollout_correction
from mmalign.config import ConfigError, check_choice, check_numbers
from mmalign.losses import AGGREGATIONS, aggregate, clipped_surrogate, kl_estimate
from mmalign.rollout import Policy, Rollout

if TYPE_CHECKING:
    from mmalign.run_config import TrainerConfig


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
    tis_cap: float = 2.0
    """Truncated importance sampling cap C for rollouts whose sampler's log-probs differ from the trainer's (the
    text adapter's `generation.backend: vllm`): each step's policy loss is weighted by min(exp(logp_train -
    logp_sampler), C) (`mmalign.algorithms.rollout_correction`); 0 turns the correction off."""

    def __post_init__(self) -> None:
        check_choice(self, "estimator", ("grpo", "rloo"))
        check_choice(self, "scale_rewards", ("group", "batch", "none"))
        check_choice(self, "loss_agg", AGGREGATIONS)
        check_choice(self, "kl_estimator", ("k1", "k3"))
        check_numbers(self, "clip_low", gt=0, lt=1)
        check_numbers(self, "clip_high", gt=0)
        check_numbers(self, "beta", "fixed_length", "entropy_coef", "tis_cap", ge=0)

    def check_trainer(self, trainer: TrainerConfig) -> None:
        """Refuse loop settings GRPO cannot learn from (called when a `RunConfig` is built).

        Advantages are relative to the group of samples of one context (Shao et al. 2024, Eq. 3; RLOO, Ahmadian et
        al. 2024, Eq. 5, averages the n - 1 others): a group of one sample has advantage 0 (RLOO: no other sample),
        so the loss and its gradient would be 0 at every step.
        """
        if trainer.num_samples < 2:
            raise ConfigError(
                f"is {trainer.num_samples}, but GRPO ({self.estimator}) compares the samples of each context with "
                "each other: one sample gets advantage 0 and nothing trains. Set trainer.num_samples to 2 or more "
                "(GRPO uses 4-16), or use algorithm: ppo, which learns from single samples.", "trainer.num_samples")


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
    metrics = rollout_correction(rollout, cfg.tis_cap)  # TIS weights when the sampler is not the trainer (vLLM)
    return {"frac_reward_zero_std": zero_std_fraction(rewards, rollout.group), **metrics}


def grpo_loss(policy: Policy, batch: Rollout, cfg: GRPOConfig, denom: Tensor | None = None) -> tuple[Tensor, dict]:
    """Step 4: re-score the minibatch and return the GRPO loss (Shao et al. 2024, Eq. 3) and detached metrics."""
    logp = policy.logprobs(batch)
    surr = clipped_surrogate(logp, batch.logprobs, batch.extras["advantages"], cfg.clip_low, cfg.clip_high)
    per_step = surr.loss * batch.extras.get("is_weights", 1.0)  # TIS weights of a vLLM-sampled rollout
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


GRPO = Algorithm(GRPOConfig, grpo_prepare, grpo_loss, scales_advantages=True)

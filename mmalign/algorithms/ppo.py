"""PPO with GAE (Schulman et al. 2017) over any adapter with a critic (the `HasValue` protocol).

Per-step rewards come from `rollout.rewards`: (B, T) as is, or (B,) placed on each row's last real step (text
and image rollouts). Episode ends are read from `rollout.extras["terminated"]` / `["truncated"]` (bool (B, T)),
default: each row terminates on its last real step; truncated steps bootstrap from
`rollout.extras["bootstrap_values"]` (B, T), which the adapter fills at sampling time.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mmalign.advantages import gae, whiten
from mmalign.algorithms import Algorithm, rollout_correction
from mmalign.config import check_choice, check_numbers
from mmalign.losses import AGGREGATIONS, aggregate, clipped_surrogate, kl_estimate
from mmalign.rollout import Policy, Rollout, last_step, on_last_step


@dataclass
class PPOConfig:
    gamma: float = 0.99
    """Discount factor."""
    lam: float = 0.95
    """GAE lambda."""
    clip_low: float = 0.2
    """Clip range below 1 of the importance ratio."""
    clip_high: float = 0.2
    """Clip range above 1 of the importance ratio."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    vf_clip: float = 0.0
    """Clip the value update to +-vf_clip around the old values; 0 disables."""
    entropy_coef: float = 0.0
    """Entropy bonus coefficient (needs an adapter with `entropy`)."""
    tis_cap: float = 2.0
    """Truncated importance sampling cap C for rollouts whose sampler's log-probs differ from the trainer's (the
    text adapter's `generation.backend: vllm`): each step's policy loss is weighted by min(exp(logp_train -
    logp_sampler), C) (`mmalign.algorithms.rollout_correction`); 0 turns the correction off."""
    kl_coef: float = 0.0
    """Per-step k1 KL-to-reference penalty folded into the reward (Ziegler et al. 2019, Eq. 2)."""
    whiten_advantages: bool = True
    """Normalise advantages over the batch's real steps."""
    loss_agg: str = "token-mean"
    """Step aggregation: "token-mean", "seq-mean" or "fixed"."""
    fixed_length: int = 0
    """Normaliser of "fixed" aggregation (0 = the rollout's T)."""

    def __post_init__(self) -> None:
        check_numbers(self, "gamma", "lam", ge=0, le=1)
        check_numbers(self, "fixed_length", ge=0)
        check_choice(self, "loss_agg", AGGREGATIONS)
        check_numbers(self, "clip_low", gt=0, lt=1)
        check_numbers(self, "clip_high", gt=0)
        check_numbers(self, "vf_coef", "vf_clip", "entropy_coef", "kl_coef", "tis_cap", ge=0)


def step_rewards(rollout: Rollout) -> Tensor:
    """(B, T) per-step rewards; a (B,) reward is put on each row's last real step."""
    r = rollout.rewards
    if r.dim() == 2:
        return r.float()
    return on_last_step(r.to(rollout.logprobs), rollout.mask)


def ppo_prepare(policy: Policy, rollout: Rollout, cfg: PPOConfig, state: None = None) -> dict[str, float]:
    """Step 3: values, (KL-shaped) rewards, GAE advantages and returns into `rollout.extras`."""
    mask = rollout.mask.bool()
    with torch.no_grad():
        values = policy.values(rollout).detach().float() * mask
        rewards = step_rewards(rollout)
        metrics = {}
        if cfg.kl_coef > 0:
            kl = kl_estimate(rollout.logprobs, policy.ref_logprobs(rollout), "k1")
            rewards = rewards - cfg.kl_coef * kl * mask
            metrics["kl"] = float(aggregate(kl, mask, "seq-mean") * mask.shape[1])
    ex = rollout.extras
    terminated = ex.get("terminated")
    if terminated is None:
        terminated = torch.zeros_like(mask).scatter(1, last_step(mask)[:, None], True)
    truncated = ex.get("truncated", torch.zeros_like(mask))
    bootstrap = ex.get("bootstrap_values", torch.zeros_like(values))
    adv, returns = gae(rewards, values, bootstrap, terminated, truncated, mask, cfg.gamma, cfg.lam)
    ex["advantages"] = whiten(adv, mask) if cfg.whiten_advantages else adv
    ex["returns"], ex["old_values"] = returns, values
    metrics["value_mean"] = float(values[mask].mean())
    return {**metrics, **rollout_correction(rollout, cfg.tis_cap)}


def ppo_loss(policy: Policy, batch: Rollout, cfg: PPOConfig, denom: Tensor | None = None) -> tuple[Tensor, dict]:
    """Step 4: clipped policy loss + (clipped) value loss - entropy bonus, aggregated over real steps."""
    logp = policy.logprobs(batch)
    values = policy.values(batch).float()
    ex = batch.extras
    surr = clipped_surrogate(logp, batch.logprobs, ex["advantages"], cfg.clip_low, cfg.clip_high)
    v_loss = (values - ex["returns"]) ** 2
    if cfg.vf_clip > 0:
        v_clipped = ex["old_values"] + (values - ex["old_values"]).clamp(-cfg.vf_clip, cfg.vf_clip)
        v_loss = torch.maximum(v_loss, (v_clipped - ex["returns"]) ** 2)
    pg = surr.loss * ex["is_weights"] if "is_weights" in ex else surr.loss  # TIS weights of a vLLM-sampled rollout
    per_step = pg + cfg.vf_coef * 0.5 * v_loss
    metrics = {}
    if cfg.entropy_coef > 0:
        ent = policy.entropy(batch)
        per_step = per_step - cfg.entropy_coef * ent
        metrics["entropy"] = aggregate(ent.detach(), batch.mask)
    loss = aggregate(per_step, batch.mask, cfg.loss_agg, denom, cfg.fixed_length or None)
    metrics["clip_frac"] = aggregate(surr.clipped.float(), batch.mask)
    metrics["value_loss"] = aggregate(v_loss.detach(), batch.mask)
    return loss, metrics


PPO = Algorithm(PPOConfig, ppo_prepare, ppo_loss)

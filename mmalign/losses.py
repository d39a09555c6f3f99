"""Policy-gradient losses: pure per-step functions plus one aggregation over steps.

Per-step functions return (B, T) tensors; `aggregate` turns them into a scalar with an explicit normaliser, so
the trainer can make gradient accumulation and multi-process training sum to the loss of one large batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

AGGREGATIONS = ("token-mean", "seq-mean", "fixed")


class Surrogate(NamedTuple):
    loss: Tensor  # (B, T) per-step loss to minimise
    ratio: Tensor  # (B, T) importance ratio pi / pi_old
    clipped: Tensor  # (B, T) bool, the clip was active


def clipped_surrogate(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, clip_low: float = 0.2, clip_high: float = 0.2
) -> Surrogate:
    """PPO clipped surrogate (Schulman et al. 2017, Eq. 7) with DAPO's decoupled clip range (Yu et al. 2025, Eq. 10).

    loss_t = -min(rho_t A, clip(rho_t, 1 - clip_low, 1 + clip_high) A), rho_t = exp(logp_t - old_logp_t).

    Args:
        logprobs: (B, T) current log-probs, with grad.
        old_logprobs: (B, T) behaviour log-probs.
        advantages: (B,) per-sample or (B, T) per-step advantages.
        clip_low: epsilon below 1.
        clip_high: epsilon above 1 (DAPO clip-higher uses 0.28).
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None]
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip_low, 1.0 + clip_high) * advantages
    return Surrogate(-torch.minimum(unclipped, clipped), ratio, clipped < unclipped)


class ISWeights(NamedTuple):
    weight: Tensor  # (B, T) truncated importance weight, detached
    clipped: Tensor  # (B, T) bool, the cap was active


def truncated_is_weights(logprobs: Tensor, rollout_logprobs: Tensor, cap: float) -> ISWeights:
    """Truncated importance sampling (TIS; Yao et al. 2025, "Your efficient RL framework secretly brings you off-policy
    RL training") for a sampler whose log-probs differ from the trainer's (a vLLM engine: other kernels, precision):

    w_t = min(exp(logp_t - rollout_logp_t), C), detached; it multiplies the per-step policy-gradient loss.

    Args:
        logprobs: (B, T) the trainer's log-probs of the sampled steps under the sampling weights.
        rollout_logprobs: (B, T) the sampler's log-probs of the same steps.
        cap: C > 0, the truncation.
    """
    ratio = torch.exp((logprobs - rollout_logprobs).detach().float())
    return ISWeights(ratio.clamp(max=cap), ratio > cap)


def kl_estimate(logprobs: Tensor, ref_logprobs: Tensor, kind: str = "k3") -> Tensor:
    """Per-step estimate of KL(pi || pi_ref) from samples of pi (Schulman 2020, "Approximating KL divergence").

    k1 = log pi - log pi_ref (unbiased, can be negative); k3 = exp(-k1) - 1 + k1 (unbiased, >= 0, low variance).

    Args:
        logprobs: (B, T) policy log-probs of the sampled steps.
        ref_logprobs: (B, T) reference log-probs of the same steps.
        kind: "k1" or "k3".
    """
    log_ratio = logprobs - ref_logprobs
    if kind == "k1":
        return log_ratio
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl estimator must be 'k1' or 'k3', got {kind!r}.")


def agg_units(mask: Tensor, mode: str, fixed_length: int | None = None) -> Tensor:
    """How many units a batch contributes to the normaliser of `aggregate`: tokens, sequences or B x fixed length."""
    if mode == "token-mean":
        return mask.sum().clamp(min=1)
    if mode == "seq-mean":
        return torch.tensor(float(mask.shape[0]), device=mask.device)
    if mode == "fixed":
        return torch.tensor(float(mask.shape[0] * (fixed_length or mask.shape[1])), device=mask.device)
    raise ValueError(f"loss aggregation must be one of {AGGREGATIONS}, got {mode!r}.")


def aggregate(x: Tensor, mask: Tensor, mode: str = "token-mean", denom: Tensor | float | None = None,
              fixed_length: int | None = None) -> Tensor:
    """Reduce a per-step (B, T) tensor to a scalar over the masked steps.

    - "token-mean": sum over all real steps / number of real steps (DAPO, Eq. 12);
    - "seq-mean": mean over sequences of each sequence's step-mean (GRPO, Eq. 3; length-biased);
    - "fixed": sum over real steps / (B x fixed_length) (Dr. GRPO's constant normaliser).

    Args:
        x: (B, T) per-step values.
        mask: (B, T) real steps.
        mode: one of `AGGREGATIONS`.
        denom: normaliser to use instead of this batch's own units (`agg_units`); pass the count over a whole
            optimizer step (all minibatches, all processes) so that accumulation matches one large batch.
        fixed_length: the constant length of "fixed" (default T).
    """
    m = mask.to(x.dtype)
    if mode == "seq-mean":
        num = ((x * m).sum(1) / m.sum(1).clamp(min=1)).sum()
    else:
        num = (x * m).sum()
    return num / (agg_units(mask, mode, fixed_length) if denom is None else denom)

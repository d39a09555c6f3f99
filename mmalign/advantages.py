"""Advantage estimators: pure functions over reward tensors.

Group-relative estimators take per-sample rewards (B,) and the context index of each sample (B,), as in
`Rollout.group`. GAE takes per-step rewards and values (B, T).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _group_stats(values: Tensor, group: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample group sum, count and Bessel-corrected std (0 for groups of one), each (B,)."""
    _, inverse = torch.unique(group, return_inverse=True)
    n_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    values = values.float()
    total = torch.zeros(n_groups, dtype=values.dtype, device=values.device).index_add_(0, inverse, values)
    count = torch.zeros_like(total).index_add_(0, inverse, torch.ones_like(values))
    mean = total / count
    sq = torch.zeros_like(total).index_add_(0, inverse, (values - mean[inverse]) ** 2)
    std = (sq / (count - 1).clamp(min=1)).sqrt()
    return total[inverse], count[inverse], std[inverse]


def group_advantages(rewards: Tensor, group: Tensor, scale: str = "group", eps: float = 1e-4) -> Tensor:
    """Group-relative advantages (GRPO, Shao et al. 2024, Eq. 3 and its variants).

    A_i = (r_i - mean_{g(i)} r) / (std + eps), where std is
      - "group": the Bessel-corrected std of the sample's group (GRPO),
      - "batch": the std of the whole batch (Lite PPO: group mean, batch std),
      - "none": no division (Dr. GRPO, Liu et al. 2025, Sec. 3.1).

    Args:
        rewards: (B,) scalar reward per sample.
        group: (B,) context index per sample.
        scale: "group", "batch" or "none".
        eps: added to the std, as TRL does (1e-4).

    Returns:
        (B,) advantages.
    """
    total, count, std = _group_stats(rewards, group)
    centred = rewards.float() - total / count
    if scale == "group":
        return centred / (std + eps)
    if scale == "batch":
        return centred / (rewards.float().std() + eps) if rewards.numel() > 1 else centred
    if scale == "none":
        return centred
    raise ValueError(f"scale must be 'group', 'batch' or 'none', got {scale!r}.")


def rloo_advantages(rewards: Tensor, group: Tensor) -> Tensor:
    """Leave-one-out baseline (RLOO, Ahmadian et al. 2024, Eq. 5): A_i = r_i - mean_{j != i, g(j) = g(i)} r_j.

    Args:
        rewards: (B,) reward per sample; every group needs at least two samples.
        group: (B,) context index per sample.

    Returns:
        (B,) advantages.
    """
    total, count, _ = _group_stats(rewards, group)
    if bool((count < 2).any()):
        raise ValueError("RLOO needs at least 2 samples per context; raise num_samples.")
    return rewards.float() - (total - rewards.float()) / (count - 1)


def zero_std_fraction(rewards: Tensor, group: Tensor) -> float:
    """Fraction of groups whose rewards are all equal: those carry no group-relative learning signal."""
    _, inverse = torch.unique(group, return_inverse=True)
    _, _, std = _group_stats(rewards, group)
    first = torch.zeros(int(inverse.max()) + 1, dtype=torch.long, device=group.device)
    first.scatter_(0, inverse.flip(0), torch.arange(len(group), device=group.device).flip(0))
    return float((std[first] == 0).float().mean())


def difficulty_weights(similarity: Tensor, group: Tensor) -> Tensor:
    """GRPO-S data-hardness coefficient (Cheng et al. 2026, DR-IRL): alpha^D_i = sigma(1 - W_i) / mean_g sigma(1 - W).

    Args:
        similarity: (B,) similarity W_i in [0, 1] of each sample to its demonstration (1 = easy).
        group: (B,) context index per sample.

    Returns:
        (B,) weights averaging 1 within each group; multiply advantages by them (`scale_advantages`).
    """
    hard = torch.sigmoid(1.0 - similarity.float())
    total, count, _ = _group_stats(hard, group)
    return hard / (total / count)


def responsiveness_weights(gaps: Tensor, category: Tensor, tau: float = float("inf")) -> Tensor:
    """GRPO-S model-responsiveness coefficient (Cheng et al. 2026, DR-IRL): alpha^M_j = sigma(Rbar_j) / mean_k
    sigma(Rbar_k), where Rbar_j is category j's mean reward gap (shadow reward of the demonstration minus that of the
    sample) over the samples whose squared distance to the category mean is at most `tau` (outliers dropped; a
    category whose samples are all outliers keeps its plain mean). The mean in the denominator runs over the
    categories of the batch, each counted once, so a category the model answers far from its demonstrations weighs
    more than 1.

    Args:
        gaps: (B,) reward gap of each sample.
        category: (B,) category index of each sample.
        tau: outlier threshold on (gap - category mean)^2; inf keeps every sample.

    Returns:
        (B,) alpha^M of each sample's category.
    """
    gaps = gaps.float()
    _, inverse = torch.unique(category, return_inverse=True)
    mean = gaps.new_zeros(int(inverse.max()) + 1).index_add_(0, inverse, gaps)
    mean = mean / torch.zeros_like(mean).index_add_(0, inverse, torch.ones_like(gaps))
    keep = ((gaps - mean[inverse]) ** 2 <= tau).float()
    kept = torch.zeros_like(mean).index_add_(0, inverse, keep)
    trimmed = torch.zeros_like(mean).index_add_(0, inverse, gaps * keep) / kept.clamp(min=1)
    rbar = torch.where(kept > 0, trimmed, mean)
    weight = torch.sigmoid(rbar)
    return (weight / weight.mean())[inverse]


def scale_advantages(advantages: Tensor, *weights: Tensor) -> Tensor:
    """Per-sample scaling hook (GRPO-S: A_i * alpha^D_i * alpha^M_{g(i)}, an AND-gate product of coefficients)."""
    for w in weights:
        advantages = advantages * w
    return advantages


def gae(
    rewards: Tensor,
    values: Tensor,
    bootstrap: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    mask: Tensor | None = None,
    gamma: float = 0.99,
    lam: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, Eq. 16) with termination vs truncation.

    Row b is a stream of steps, possibly several episodes. The value of the successor of step t is
    values[t + 1] if the episode goes on, 0 if it terminated, and bootstrap[t] if it was truncated or t is the
    last column (the successor lies outside the rollout). Masked steps (padding, gymnasium's autoreset step
    after an episode end) get advantage 0 and do not carry the recursion.

    Args:
        rewards: (B, T) reward of each step.
        values: (B, T) V(s_t).
        bootstrap: (B, T) V of the successor state, read only at truncated steps and in the last column.
        terminated: (B, T) bool, the episode ended by termination after step t.
        truncated: (B, T) bool, the episode ended by a time limit after step t.
        mask: (B, T) bool, real steps; None = all.
        gamma: discount.
        lam: GAE lambda.

    Returns:
        (advantages, returns), each (B, T); returns = advantages + values.
    """
    rewards, values, bootstrap = rewards.float(), values.float(), bootstrap.float()
    terminated, truncated = terminated.bool(), truncated.bool()
    mask = torch.ones_like(terminated) if mask is None else mask.bool()
    next_values = torch.cat([values[:, 1:], bootstrap[:, -1:]], dim=1)
    next_values = torch.where(truncated, bootstrap, next_values)
    next_values = torch.where(terminated, torch.zeros_like(next_values), next_values)
    delta = rewards + gamma * next_values - values
    decay = gamma * lam * (~(terminated | truncated)).float()  # gamma * lam, 0 where the episode ends
    steps = zip(delta.T.unbind(), decay.T.unbind(), mask.T.float().unbind())  # columns, sliced once
    running, adv = torch.zeros_like(rewards[:, 0]), []
    for d, k, m in reversed(list(steps)):
        running = (d + k * running) * m
        adv.append(running)
    adv = torch.stack(adv[::-1], dim=1)
    return adv, (adv + values) * mask


def whiten(x: Tensor, mask: Tensor | None = None, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Normalise x to unit variance (and zero mean if shift_mean) over its masked entries; masked-out stay 0."""
    m = torch.ones_like(x, dtype=torch.bool) if mask is None else mask.bool()
    vals = x[m]
    mean = vals.mean()
    var = ((vals - mean) ** 2).mean()
    out = (x - mean) if shift_mean else x
    out = out * torch.rsqrt(var + eps)
    return out * m

"""Reward-model training for any model that scores: `score_fn(items) -> (B,)` or (B, C) with grad.

Items are texts, trajectory segments or images; pairs are (chosen, rejected) items. One loop (`fit`) serves three
reward models:

- Bradley-Terry (Ouyang et al. 2022, Eq. 1): `train_reward_model`; the robotics package trains its segment
  ensembles with the same functions.
- BRME, a Bayesian reward-model ensemble (Yan et al. 2024, arXiv 2409.15360): K Gaussian heads on one trunk, the
  scorer's 2K outputs read by `gaussian_heads`; `train_brme`, scored with `mmalign.preference.brme_reward`.
- RLBFF binary principle models (Wang et al. 2025, arXiv 2509.21319): one logit that an item (prompt, response,
  principle) satisfies its principle, trained as entailment with binary cross-entropy: `train_principle_model`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mmalign.config import check_numbers
from mmalign.preference import bradley_terry_loss, gaussian_preference_loss

ScoreFn = Callable[[Sequence], Tensor]


@dataclass
class RewardModelConfig:
    lr: float = 1e-4
    """AdamW learning rate."""
    epochs: int = 1
    """Passes over the pairs."""
    batch_size: int = 8
    """Pairs per optimizer step."""
    margin: float = 0.0
    """Bradley-Terry margin (Llama-2 style): the chosen reward must exceed the rejected one by this much."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm; 0 disables."""
    seed: int = 0
    """Seed of the pair shuffling."""


BatchLoss = Callable[[list[int]], tuple[Tensor, dict[str, float]]]


def optimizer_step(loss: Tensor, optimizer: torch.optim.Optimizer, max_grad_norm: float) -> None:
    """Back-propagate `loss` and take one step, clipping the global gradient norm when it is > 0."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], max_grad_norm)
    optimizer.step()


def fit(params, num_items: int, batch_loss: BatchLoss, cfg: RewardModelConfig) -> list[dict]:
    """AdamW over `cfg.epochs` seeded shuffles of `num_items` items; `batch_loss(indices) -> (loss, metrics)`.

    Returns:
        The metrics of every step, with "loss".
    """
    optimizer = torch.optim.AdamW(list(params), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = random.Random(cfg.seed)
    history = []
    for _ in range(cfg.epochs):
        order = list(range(num_items))
        rng.shuffle(order)
        for i in range(0, num_items, cfg.batch_size):
            loss, metrics = batch_loss(order[i:i + cfg.batch_size])
            optimizer_step(loss, optimizer, cfg.max_grad_norm)
            history.append({"loss": float(loss.detach()), **metrics})
    return history


def reward_model_update(score_fn: ScoreFn, chosen: Sequence, rejected: Sequence, optimizer: torch.optim.Optimizer,
                        cfg: RewardModelConfig, labels: Tensor | None = None) -> dict[str, float]:
    """One optimizer step of the Bradley-Terry loss on a batch of pairs; `labels` (B,) in [0, 1] are soft."""
    loss, metrics = bt_batch_loss(score_fn, chosen, rejected, cfg, labels)
    optimizer_step(loss, optimizer, cfg.max_grad_norm)
    return {"loss": float(loss.detach()), **metrics}


def bt_batch_loss(score_fn: ScoreFn, chosen: Sequence, rejected: Sequence, cfg: RewardModelConfig,
                  labels: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """Mean Bradley-Terry loss of a batch of pairs and the fraction ranked right."""
    rc, rr = score_fn(chosen), score_fn(rejected)
    loss = bradley_terry_loss(rc, rr, cfg.margin or None, labels).mean()
    return loss, {"accuracy": float((rc > rr).float().mean())}


def train_reward_model(score_fn: ScoreFn, params, pairs: Sequence[tuple], cfg: RewardModelConfig) -> list[dict]:
    """Train on (chosen, rejected) or (chosen, rejected, label) pairs; returns per-step metrics."""

    def batch_loss(idx: list[int]):
        batch = [pairs[j] for j in idx]
        labels = torch.tensor([p[2] for p in batch], dtype=torch.float32) if len(batch[0]) > 2 else None
        return bt_batch_loss(score_fn, [p[0] for p in batch], [p[1] for p in batch], cfg, labels)

    return fit(params, len(pairs), batch_loss, cfg)


# ---------------------------------------------------------------------------------------------------------------
# BRME: K Gaussian heads


@dataclass
class BRMEConfig:
    """The Bayesian reward-model ensemble (Yan et al. 2024, arXiv 2409.15360) on top of `RewardModelConfig`."""

    heads: int = 4
    """K Gaussian heads (the scorer has 2K outputs: K means, then K pre-softplus scales)."""
    lam: float = 0.5
    """Weight of the nominal reward against the worst head: lam * nominal + (1 - lam) * min (Eq. 2)."""
    sigma0: float = 1.0
    """Prior scale the KL term pulls each head's std towards."""
    beta: float = 0.01
    """Weight of that KL term; 0 lets std collapse on separable pairs."""
    bootstrap: bool = True
    """Each head weighs each pair by its own Poisson(1) draw (a bootstrap), so heads see different data."""

    def __post_init__(self) -> None:
        check_numbers(self, "heads", ge=1)
        check_numbers(self, "lam", ge=0, le=1)
        check_numbers(self, "sigma0", gt=0)
        check_numbers(self, "beta", ge=0)


def gaussian_heads(outputs: Tensor) -> tuple[Tensor, Tensor]:
    """Split (B, 2K) scorer outputs into K means and K stds = softplus(.) + 1e-3, each (B, K)."""
    if outputs.dim() != 2 or outputs.shape[1] % 2:
        raise ValueError(f"Gaussian heads need (B, 2K) outputs (K means, K scales), got {tuple(outputs.shape)}.")
    means, raw = outputs.chunk(2, dim=1)
    return means, F.softplus(raw) + 1e-3


def train_brme(score_fn: ScoreFn, params, pairs: Sequence[tuple], cfg: RewardModelConfig,
               brme: BRMEConfig) -> list[dict]:
    """Train K Gaussian heads on (chosen, rejected) pairs with `gaussian_preference_loss`, bootstrapped per head."""
    gen = torch.Generator().manual_seed(cfg.seed)
    ones = torch.ones(len(pairs), brme.heads)
    weights = torch.poisson(ones, generator=gen) if brme.bootstrap else ones  # (N, K)

    def batch_loss(idx: list[int]):
        (mc, sc), (mr, sr) = (gaussian_heads(score_fn([pairs[j][i] for j in idx])) for i in (0, 1))
        losses = gaussian_preference_loss(mc, sc, mr, sr, brme.sigma0, brme.beta)  # (B, K)
        w = weights[idx].to(losses.device)
        loss = (w * losses).sum() / w.sum().clamp(min=1.0)
        return loss, {"accuracy": float((mc > mr).float().mean()), "std": float(torch.cat([sc, sr]).detach().mean())}

    return fit(params, len(pairs), batch_loss, cfg)


# ---------------------------------------------------------------------------------------------------------------
# RLBFF: binary principle models


def train_principle_model(score_fn: ScoreFn, params, examples: Sequence[tuple], cfg: RewardModelConfig) -> list[dict]:
    """Train a one-logit scorer on (item, label) examples, label 1 when the item's response satisfies its principle
    (RLBFF's entailment task, binary cross-entropy)."""

    def batch_loss(idx: list[int]):
        logits = score_fn([examples[j][0] for j in idx])
        labels = torch.tensor([float(examples[j][1]) for j in idx], device=logits.device)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        return loss, {"accuracy": float(((logits > 0).float() == labels).float().mean())}

    return fit(params, len(examples), batch_loss, cfg)


@torch.no_grad()
def pair_accuracy(score_fn: ScoreFn, pairs: Sequence[tuple], batch_size: int = 64) -> float:
    """Fraction of pairs whose chosen item scores above the rejected one."""
    hits = 0
    for i in range(0, len(pairs), batch_size):
        batch = pairs[i:i + batch_size]
        hits += int((score_fn([p[0] for p in batch]) > score_fn([p[1] for p in batch])).sum())
    return hits / max(1, len(pairs))


def text_scorer(model, tokenizer, max_length: int = 512) -> ScoreFn:
    """Score (prompt, response) string pairs with a sequence classifier, with grad: (B,) for num_labels=1, else
    (B, num_labels) (e.g. BRME's K means and K scales)."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id

    def score(items: Sequence[tuple[str, str]]) -> Tensor:
        enc = tokenizer([p for p, _ in items], [r for _, r in items], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt").to(next(model.parameters()).device)
        logits = model(**enc).logits.float()
        return logits[:, 0] if logits.shape[1] == 1 else logits

    return score

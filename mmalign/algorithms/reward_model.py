"""Reward-model training with the Bradley-Terry loss (Ouyang et al. 2022, Eq. 1), for any model that scores.

`score_fn(items) -> (B,)` maps a batch of items (texts, trajectory segments, images) to scalar rewards with grad;
pairs are (chosen, rejected) items. The robotics package trains its segment ensembles with the same functions.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mmalign.preference import bradley_terry_loss

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


def reward_model_update(score_fn: ScoreFn, chosen: Sequence, rejected: Sequence, optimizer: torch.optim.Optimizer,
                        cfg: RewardModelConfig, labels: Tensor | None = None) -> dict[str, float]:
    """One optimizer step of the Bradley-Terry loss on a batch of pairs; `labels` (B,) in [0, 1] are soft."""
    rc, rr = score_fn(chosen), score_fn(rejected)
    loss = bradley_terry_loss(rc, rr, cfg.margin or None, labels).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if cfg.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
    optimizer.step()
    return {"loss": float(loss.detach()), "accuracy": float((rc > rr).float().mean())}


def train_reward_model(score_fn: ScoreFn, params, pairs: Sequence[tuple], cfg: RewardModelConfig) -> list[dict]:
    """Train on (chosen, rejected) or (chosen, rejected, label) pairs; returns per-step metrics."""
    optimizer = torch.optim.AdamW(list(params), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = random.Random(cfg.seed)
    history = []
    for _ in range(cfg.epochs):
        order = list(range(len(pairs)))
        rng.shuffle(order)
        for i in range(0, len(order), cfg.batch_size):
            batch = [pairs[j] for j in order[i:i + cfg.batch_size]]
            labels = torch.tensor([p[2] for p in batch], dtype=torch.float32) if len(batch[0]) > 2 else None
            history.append(reward_model_update(score_fn, [p[0] for p in batch], [p[1] for p in batch],
                                               optimizer, cfg, labels))
    return history


@torch.no_grad()
def pair_accuracy(score_fn: ScoreFn, pairs: Sequence[tuple], batch_size: int = 64) -> float:
    """Fraction of pairs whose chosen item scores above the rejected one."""
    hits = 0
    for i in range(0, len(pairs), batch_size):
        batch = pairs[i:i + batch_size]
        hits += int((score_fn([p[0] for p in batch]) > score_fn([p[1] for p in batch])).sum())
    return hits / max(1, len(pairs))


def text_scorer(model, tokenizer, max_length: int = 512) -> ScoreFn:
    """Score (prompt, response) string pairs with a sequence classifier (num_labels=1), with grad."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id

    def score(items: Sequence[tuple[str, str]]) -> Tensor:
        enc = tokenizer([p for p, _ in items], [r for _, r in items], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt").to(next(model.parameters()).device)
        return model(**enc).logits[:, 0].float()

    return score

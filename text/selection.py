"""BLEUBERI's data selection: keep the prompts the base policy finds hardest (Chang et al. 2025, Sec. 3).

BLEUBERI (`training/create_training_data.py`, `make_grpo_data`) samples the base model on every prompt, scores
each output against the references (BLEU by default), and keeps the `k` lowest-scoring prompts ("hard"); "easy"
keeps the highest, "medium" the middle slice, "random" a seeded sample. `SelectionSettings` makes it part of a text
config (`task_args.selection`): the task scores its training rows with the base policy before training and keeps `k`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mmalign.config import ConfigError, check_choice, check_numbers
from mmalign.data import write_jsonl
from mmalign.rollout import RewardFn
from mmalign.task import check_rewards, reward_name

__all__ = ["SELECTION_MODES", "SelectionSettings", "score_rows", "select_rows", "write_jsonl"]

SELECTION_MODES = ("hard", "easy", "medium", "random", "lim", "isa")


@dataclass(frozen=True)
class SelectionSettings:
    """Train on `k` of the training rows, picked by the base policy's reward on each (`score_rows`, `select_rows`).

    Every mode but "lim" and "isa" scores the rows with the base policy (so each run logs its subset's base reward);
    "lim" reads the scores of a recorded GRPO pass instead, "isa" the entropy each row adds to the embedded data.
    Held-out rows are never scored or kept.
    """

    k: int = 0
    """Training rows to keep; 0 = no selection, train on all of them."""
    mode: str = "hard"
    """"hard" (lowest base reward), "easy" (highest), "medium" (the middle slice), "random" (a seeded sample), or
    "lim" (LIMR: the highest learning impact scores of a GRPO pass's `trajectories`, `mmalign.text.limr`), or "isa"
    (the rows that add the most entropy to the base model's embedding of the data, `mmalign.text.isa`)."""
    num_samples: int = 1
    """Base-policy outputs scored per row; their rewards are averaged."""
    greedy: bool = False
    """Score greedy completions (then num_samples must be 1) instead of samples at the policy's temperature."""
    seed: int = 0
    """Seeds the scoring samples (on RNG streams of their own) and the "random" mode."""
    trajectories: str = ""
    """For mode "lim": the reward_trajectories.json of a pass run with `task_args.record_rewards: true`."""
    components: int = 2
    """For mode "isa": Gaussians in the mixture fitted to the embeddings (the paper's two)."""
    dims: int = 8
    """For mode "isa": PCA dimensions the embeddings are reduced to before the fit."""

    def __post_init__(self) -> None:
        check_numbers(self, "k", ge=0)
        check_numbers(self, "num_samples", ge=1)
        check_numbers(self, "components", ge=1)
        check_numbers(self, "dims", ge=1)
        check_choice(self, "mode", SELECTION_MODES)
        if (self.mode == "lim") != bool(self.trajectories):
            raise ConfigError("mode lim ranks rows by a GRPO pass's reward trajectories and needs `trajectories` (its "
                              "reward_trajectories.json); the other modes score with the base policy and take none.",
                              "trajectories")
        if self.greedy and self.num_samples > 1:
            raise ConfigError(f"is {self.num_samples}, but greedy decoding gives one output per row; set "
                              "num_samples: 1 or greedy: false.", "num_samples")


def score_rows(
    sample_fn: Callable[[Sequence, int], object],
    rows: Sequence,
    reward_fn: RewardFn,
    num_samples: int = 1,
    batch_size: int = 8,
) -> list[float]:
    """Mean reward of `num_samples` policy outputs for each row.

    Args:
        sample_fn: `sample_fn(contexts, num_samples)` returning an object with `.outputs`, a list of
            len(contexts) * num_samples outputs ordered context-major (all samples of context 0 first), as
            `Policy.sample` does.
        rows: the dataset rows (contexts).
        reward_fn: `fn(contexts, outputs) -> floats`, e.g. `BleuReward()`.
        num_samples: outputs per row; their rewards are averaged.
        batch_size: rows per `sample_fn` call.

    Returns:
        One score per row, in row order.
    """
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be >= 1, got {num_samples} and {batch_size}.")
    scores: list[float] = []
    for start in range(0, len(rows), batch_size):
        batch = list(rows[start : start + batch_size])
        with torch.no_grad():
            outputs = list(sample_fn(batch, num_samples).outputs)
        if len(outputs) != len(batch) * num_samples:
            raise ValueError(
                f"sample_fn returned {len(outputs)} outputs for {len(batch)} contexts x {num_samples} samples; "
                f"expected {len(batch) * num_samples}, ordered context-major."
            )
        contexts = [row for row in batch for _ in range(num_samples)]
        values = check_rewards(reward_fn(contexts, outputs), len(outputs), reward_name(reward_fn))
        scores += values.view(len(batch), num_samples).mean(dim=1).tolist()
    return scores


def select_rows(rows: Sequence, scores: Sequence[float], k: int, mode: str = "hard", seed: int = 0) -> list:
    """Keep `k` rows by score.

    Args:
        rows: the dataset rows.
        scores: one score per row (e.g. from `score_rows`).
        k: how many rows to keep, 0 <= k <= len(rows).
        mode: "hard" (lowest scores, lowest first), "easy", "lim" and "isa" (highest, highest first), "medium" (the
            k rows in the middle of the ascending order, ascending) or "random" (a sample seeded by `seed`, in row
            order).
        seed: seed for "random".

    Returns:
        The kept rows. Ties keep row order (stable sort).
    """
    if mode not in SELECTION_MODES:
        raise ValueError(f"unknown selection mode {mode!r}; use one of {list(SELECTION_MODES)}.")
    if len(scores) != len(rows):
        raise ValueError(f"got {len(scores)} scores for {len(rows)} rows; pass one score per row.")
    if not 0 <= k <= len(rows):
        raise ValueError(f"k must be between 0 and the number of rows ({len(rows)}), got {k}.")
    bad = [i for i, s in enumerate(scores) if not math.isfinite(s)]
    if bad:
        raise ValueError(f"scores at rows {bad[:8]} are not finite; fix the reward before selecting.")
    if mode == "random":
        return [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), k))]
    ascending = sorted(range(len(rows)), key=lambda i: scores[i])
    if mode == "hard":
        chosen = ascending[:k]
    elif mode in ("easy", "lim", "isa"):
        chosen = sorted(range(len(rows)), key=lambda i: -scores[i])[:k]
    else:
        start = (len(rows) - k) // 2
        chosen = ascending[start : start + k]
    return [rows[i] for i in chosen]

"""Query selection (B-Pref `feed_type`; Lee et al. 2021, Sec. 4): which candidate pairs a teacher is asked about.

Candidates are `large_batch` x n sampled pairs; a rule keeps n of them:

- "uniform" (0): the first n (candidates are already uniform);
- "disagreement" (1): largest std over ensemble members of P(a > b);
- "entropy" (2): largest mean over members of the entropy of P(a > b);
- "kcenter" (3): greedy k-center on the flattened (obs, action) steps of both segments (Sener & Savarese 2018);
- "kcenter_disagreement" (4), "kcenter_entropy" (5): k-center among the top n x large_batch / 2 by the score.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mmalign.robotics.reward_ensemble import RewardEnsemble
from mmalign.robotics.segments import Segments

SELECTIONS = ("uniform", "disagreement", "entropy", "kcenter", "kcenter_disagreement", "kcenter_entropy")


def disagreement(probs: Tensor) -> Tensor:
    """(M, N) member probabilities -> (N,) their std over members."""
    return probs.std(0) if probs.shape[0] > 1 else torch.zeros(probs.shape[1])


def entropy(probs: Tensor) -> Tensor:
    """(M, N) member probabilities -> (N,) mean over members of the binary entropy H(P)."""
    p = probs.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log()).mean(0)


def kcenter(features: Tensor, n: int, selected: Tensor | None = None) -> Tensor:
    """Greedy k-center: repeatedly take the point farthest from everything chosen so far.

    Args:
        features: (N, D) candidate features.
        n: how many to choose.
        selected: (K, D) features already labelled (farthest from these too); None = start from candidate 0.

    Returns:
        (n,) indices into `features`.
    """
    if selected is not None and len(selected):
        dist = torch.cdist(features, selected).min(1).values
        chosen = []
    else:
        chosen = [0]
        dist = torch.cdist(features, features[:1]).squeeze(1)
    while len(chosen) < n:
        i = int(dist.argmax())
        chosen.append(i)
        dist = torch.minimum(dist, torch.cdist(features, features[i:i + 1]).squeeze(1))
    return torch.tensor(chosen[:n])


def select_queries(rule: str, a: Segments, b: Segments, n: int, ensemble: RewardEnsemble | None = None,
                   labelled: tuple[Segments, Segments] | None = None) -> Tensor:
    """Indices (n,) of the candidate pairs (a_i, b_i) to ask about under `rule` (one of `SELECTIONS`)."""
    if rule not in SELECTIONS:
        raise ValueError(f"unknown query selection {rule!r}; choose one of {SELECTIONS}.")
    n = min(n, len(a))
    if rule == "uniform":
        return torch.arange(n)
    if rule == "kcenter":
        return kcenter(_pair_features(a, b), n, _labelled_features(labelled))
    if ensemble is None:
        raise ValueError(f"query selection {rule!r} needs the reward ensemble.")
    probs = ensemble.probs(a, b)
    score = disagreement(probs) if rule.endswith("disagreement") else entropy(probs)
    if not rule.startswith("kcenter"):
        return score.topk(n).indices
    top = score.topk(max(n, len(a) // 2)).indices
    return top[kcenter(_pair_features(a[top], b[top]), n, _labelled_features(labelled))]


def _pair_features(a: Segments, b: Segments) -> Tensor:
    return torch.cat([a.features(), b.features()], 1)


def _labelled_features(labelled: tuple[Segments, Segments] | None) -> Tensor | None:
    return None if labelled is None or not len(labelled[0]) else _pair_features(*labelled)

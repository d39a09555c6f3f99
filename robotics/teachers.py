"""B-Pref scripted teachers (Lee et al. 2021, "B-Pref", Sec. 3.2; `reward_model.py:get_label` of rll-research/BPref).

A teacher labels a pair of segments from their ground-truth rewards. The label convention here is the shared
preference core's: `labels[i]` is the probability that segment a_i is preferred to b_i (1, 0, or 0.5 for
"equally preferable"), so pairs feed `bradley_terry_loss(r(a), r(b), label=labels)` directly.

Knobs, applied in B-Pref's order:

1. skip (eps_skip): drop pairs where both undiscounted returns are below `thres_skip` (neither shows the task);
2. equal (eps_equal): pairs whose undiscounted returns differ by less than `thres_equal` get label 0.5;
3. myopic (gamma): step t of an H-step segment weighs gamma^(H-1-t), so recent steps count more;
4. stochastic (beta > 0): P(a > b) = exp(beta R_a) / (exp(beta R_a) + exp(beta R_b)) (Bradley-Terry), sampled;
   beta <= 0 is the rational teacher: a wins iff R_a > R_b;
5. mistake (eps_mistake): each label flips with this probability.

B-Pref sets the thresholds from the data before every feedback round (`train_PEBBLE.py`: the mean true return of
the last 10 training episodes): margin = mean episode return x H / episode length, thres_skip = eps_skip x margin,
thres_equal = eps_equal x margin (`calibrate`). B-Pref's rewards are non-negative; where the margin is negative
(mmalign's tasks pay -distance) eps_skip x margin would lie *above* the mean segment return and skip most pairs, so
here thres_skip = margin - (1 - eps_skip) |margin| (the same value for margin >= 0: skip pairs whose better segment
falls short of the mean by (1 - eps_skip) |margin|) and thres_equal = eps_equal |margin|.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from mmalign.config import check_numbers


@dataclass
class TeacherConfig:
    beta: float = -1.0
    """Bradley-Terry rationality; <= 0 = perfectly rational (deterministic) labels."""
    gamma: float = 1.0
    """Myopia discount over the segment's steps (1 = not myopic)."""
    eps_mistake: float = 0.0
    """Probability of flipping each label."""
    eps_skip: float = 0.0
    """Skip threshold as a fraction of the return margin; 0 = never skip."""
    eps_equal: float = 0.0
    """"Equally preferable" threshold as a fraction of the return margin; 0 = never equal."""

    def __post_init__(self) -> None:
        check_numbers(self, "gamma", gt=0, le=1)
        check_numbers(self, "eps_mistake", "eps_skip", "eps_equal", ge=0, le=1)


TEACHERS: dict[str, TeacherConfig] = {
    "oracle": TeacherConfig(),
    "mistake": TeacherConfig(eps_mistake=0.1),
    "noisy": TeacherConfig(beta=1.0),
    "skip": TeacherConfig(eps_skip=0.1),
    "myopic": TeacherConfig(gamma=0.9),
    "equal": TeacherConfig(eps_equal=0.1),
}
"""B-Pref's named teachers (Table 1 of the paper): Oracle, Mistake, Noisy, Skip, Myopic, Equal."""


class Labels(NamedTuple):
    keep: Tensor  # (N',) long, indices of the pairs that were answered (not skipped)
    labels: Tensor  # (N',) float, P(a preferred over b): 1, 0, 0.5 (equal) or a sampled 0/1 (noisy)


def teacher_config(name: str, **overrides: float) -> TeacherConfig:
    """A named preset with some knobs changed, e.g. `teacher_config("mistake", eps_mistake=0.2)`."""
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher {name!r}; choose one of {sorted(TEACHERS)}.")
    return replace(TEACHERS[name], **overrides)


class ScriptedTeacher:
    """Labels segment pairs from ground-truth per-step rewards.

    Args:
        cfg: the knobs.
        seed: seed of the stochastic and mistake draws.
        thres_skip: absolute skip threshold (set it, or `calibrate`).
        thres_equal: absolute "equal" threshold (set it, or `calibrate`).
    """

    def __init__(self, cfg: TeacherConfig, seed: int = 0, thres_skip: float = 0.0, thres_equal: float = 0.0):
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(seed)
        self.thres_skip, self.thres_equal = thres_skip, thres_equal

    def calibrate(self, episode_returns: np.ndarray, segment_length: int, episode_length: int) -> None:
        """B-Pref's thresholds: margin = mean episode return * H / L; thres = eps * margin (for a negative margin,
        thres_skip = margin - (1 - eps_skip) |margin|: see the module docstring)."""
        margin = float(np.mean(episode_returns)) * segment_length / episode_length
        self.thres_skip = margin - (1 - self.cfg.eps_skip) * abs(margin)
        self.thres_equal = self.cfg.eps_equal * abs(margin)

    def discounted_returns(self, rewards: Tensor) -> Tensor:
        """(N, H) -> (N,) sum_t gamma^(H-1-t) r_t (the myopic teacher's return)."""
        h = rewards.shape[1]
        weights = self.cfg.gamma ** torch.arange(h - 1, -1, -1, dtype=rewards.dtype)
        return (rewards * weights).sum(1)

    def __call__(self, rewards_a: Tensor, rewards_b: Tensor) -> Labels:
        """Label pairs of segments given their ground-truth rewards (N, H) each."""
        cfg = self.cfg
        keep = torch.arange(rewards_a.shape[0])
        ra, rb = rewards_a.sum(1).float(), rewards_b.sum(1).float()
        if cfg.eps_skip > 0:  # 1. skip when neither segment's return clears the threshold
            keep = keep[torch.maximum(ra, rb) > self.thres_skip]
            ra, rb = ra[keep], rb[keep]
        equal = (ra - rb).abs() < self.thres_equal if cfg.eps_equal > 0 else torch.zeros_like(ra, dtype=torch.bool)
        da = self.discounted_returns(rewards_a[keep].float())  # 3. myopia
        db = self.discounted_returns(rewards_b[keep].float())
        if cfg.beta > 0:  # 4. Bradley-Terry teacher: P(a > b) = sigmoid(beta (R_a - R_b))
            p = torch.sigmoid(cfg.beta * (da - db))
            labels = torch.bernoulli(p, generator=self.generator)
        else:
            labels = (da > db).float()
        flip = torch.rand(labels.shape, generator=self.generator) < cfg.eps_mistake  # 5. mistakes
        labels = torch.where(flip, 1 - labels, labels)
        labels = torch.where(equal, torch.full_like(labels, 0.5), labels)  # 2. equal preference
        return Labels(keep, labels)

"""Cross-task Preference Alignment (CPA) of PEARL (Liu et al., ICML 2024, arXiv 2306.03615), with POT.

Zero-shot transfer of preference labels from labelled source-task segments to unlabelled target-task segments:

1. Represent every segment by a vector (`segment_features`) and build one distance matrix *within* each task
   (`intra_task_cost`): C_s (ns, ns) over the source segments, C_t (nt, nt) over the target segments, each scaled
   to [0, 1]. No distance between a source and a target segment is ever needed, so the tasks may differ.
2. Solve Gromov-Wasserstein optimal transport between the two metric spaces (`gw_plan`, PEARL's CPA step):
   T* = argmin_T sum_{k,l,i,j} (C_s[k,l] - C_t[i,j])^2 T[k,i] T[l,j], T 1 = p, T^T 1 = q (uniform p, q).
   The exact solver (conditional gradient) gives a near-permutation; the entropic one a soft plan.
3. A target pair (i, j) gets the transport-weighted combination of source labels (PEARL's CPA label,
   z(y_i, y_j) = sum_{k,l} T[k,i] T[l,j] z(x_k, x_l), as reconstructed in the ICLR-2024 reviews), divided by the
   transport mass that lands on labelled source pairs (`transfer_labels`):

       z_t(i, j) = sum_{k,l} T[k,i] T[l,j] M[k,l] Z[k,l] / sum_{k,l} T[k,i] T[l,j] M[k,l]

   with Z[k,l] the source label P(x_k preferred to x_l) and M[k,l] = 1 where (k, l) or (l, k) is labelled. When every
   source pair is labelled the denominator is the pair's marginals q_i q_j, so an identity coupling (T = I / n)
   gives back the source labels exactly and every label is a convex combination of source labels, in [0, 1].
   Whether the ICML text normalises is not verified (reference notes B4); without it labels are O(1 / n^2).

Several source tasks are combined by solving one GW problem per source and averaging their labels weighted by
their labelled mass; a few real target labels, when given, replace the transferred label of their pairs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

import numpy as np
import ot

from mmalign.config import check_choice, check_numbers
from mmalign.envs.layout import OBS_LAYOUT

Representation = Literal["flat", "relative"]


@dataclass
class CPAConfig:
    """How CPA builds costs and solves the transport."""

    representation: str = "relative"
    """Segment vector: "flat" = every step's (obs, action) flattened; "relative" = every step's goal-relative
    geometry (obj - goal, ee - obj, ee velocity, action), see `segment_features`."""
    standardise: bool = True
    """Z-score each feature dimension within the task before distances (normalisation per task)."""
    method: str = "exact"
    """"exact": ot.gromov.gromov_wasserstein (conditional gradient); "entropic": entropic_gromov_wasserstein."""
    epsilon: float = 1e-3
    """Entropic regularisation on [0, 1]-scaled costs: at n = 100, 1e-2 washes the plan out to near-uniform and 1e-3
    keeps it sharp (tests/test_robotics_pearl.py)."""
    max_iter: int = 1000
    """Outer iterations of the GW solver."""

    def __post_init__(self) -> None:
        check_choice(self, "representation", get_args(Representation))
        check_choice(self, "method", ("exact", "entropic"))
        check_numbers(self, "epsilon", gt=0)  # 1e-3 keeps the plan sharp on [0, 1] costs
        check_numbers(self, "max_iter", ge=1)


class CPAResult(NamedTuple):
    """Transferred labels of the target pairs.

    Attributes:
        labels: (P,) P(target segment a preferred to b), in [0, 1].
        mass: (P,) fraction of the pair's transport mass on labelled source pairs, in [0, 1] (0 = no information,
            the label is then 0.5).
        plans: one (ns, nt) GW plan per source task.
    """

    labels: np.ndarray
    mass: np.ndarray
    plans: list[np.ndarray]


METAWORLD_OBS_DIM = 39
"""Meta-World v3 observation: hand xyz, gripper, object 1 pos + quat, object 2 pos + quat (0:18), the previous
frame's 18 (18:36), goal xyz (36:39)."""


def segment_features(obs: np.ndarray, actions: np.ndarray, representation: Representation = "relative") -> np.ndarray:
    """One vector per segment, the trajectory representation that CPA's distances read.

    Args:
        obs: (N, H, 10) observations in the shared layout of `mmalign.envs.layout`, or (N, H, 39) Meta-World ones.
        actions: (N, H, A) actions.
        representation: "flat": concat(obs, action) of every step; "relative" (planar): per step
            (obj_pos - goal, ee_pos - obj_pos, ee_vel, action), i.e. where the interaction point stands relative to
            its goal and the tip relative to the interaction point. Reach has no object (obj_pos = 0); there the
            interaction point is the tip, so obj - goal becomes ee - goal and ee - obj is 0. "relative"
            (Meta-World, which does not say which point the goal is for): per step (hand - goal, obj - goal,
            hand - obj, hand - previous hand, gripper, action).

    Returns:
        (N, H * d) float64 features (planar: d = 12 for "flat", 8 for "relative"; Meta-World: 43 / 17).
    """
    obs, actions = np.asarray(obs, np.float64), np.asarray(actions, np.float64)
    if representation == "flat":
        return np.concatenate([obs, actions], -1).reshape(len(obs), -1)
    if representation != "relative":
        raise ValueError(f"unknown representation {representation!r}; choose 'flat' or 'relative'.")
    if obs.shape[-1] == METAWORLD_OBS_DIM:
        hand, grip, obj, prev, goal = obs[..., 0:3], obs[..., 3:4], obs[..., 4:7], obs[..., 18:21], obs[..., 36:39]
        steps = np.concatenate([hand - goal, obj - goal, hand - obj, hand - prev, grip, actions], -1)
        return steps.reshape(len(obs), -1)
    if obs.shape[-1] != max(s.stop for s in OBS_LAYOUT.values()):
        raise ValueError(f"'relative' features read planar (10) or Meta-World (39) observations, got {obs.shape[-1]}; "
                         "use representation='flat' for other envs.")
    ee, obj, goal = (obs[..., OBS_LAYOUT[k]] for k in ("ee_pos", "obj_pos", "goal"))
    no_object = np.all(obj == 0, axis=(-1, -2), keepdims=True)  # (N, 1, 1): reach segments
    point = np.where(no_object, ee, obj)
    steps = np.concatenate([point - goal, ee - point, obs[..., OBS_LAYOUT["ee_vel"]], actions], -1)
    return steps.reshape(len(obs), -1)


def intra_task_cost(features: np.ndarray, standardise: bool = True) -> np.ndarray:
    """Euclidean distances between the segments of one task, scaled to max 1.

    Args:
        features: (N, D) segment vectors of one task.
        standardise: z-score every dimension over the N segments first (per-task normalisation).

    Returns:
        (N, N) symmetric cost with zero diagonal, in [0, 1].
    """
    x = np.asarray(features, np.float64)
    if standardise:
        x = (x - x.mean(0)) / (x.std(0) + 1e-8)
    cost = ot.dist(x, x, metric="euclidean")
    np.fill_diagonal(cost, 0.0)
    return cost / max(cost.max(), 1e-12)


def gw_plan(cost_s: np.ndarray, cost_t: np.ndarray, cfg: CPAConfig | None = None) -> np.ndarray:
    """Gromov-Wasserstein coupling between two sets of segments (PEARL's CPA optimal transport).

    Args:
        cost_s: (ns, ns) intra-source cost, in [0, 1].
        cost_t: (nt, nt) intra-target cost, in [0, 1].
        cfg: solver settings; uniform marginals p = 1/ns, q = 1/nt.

    Returns:
        (ns, nt) plan T with T 1 = p and T^T 1 = q.
    """
    cfg = cfg or CPAConfig()
    p, q = ot.unif(len(cost_s)), ot.unif(len(cost_t))
    if cfg.method == "exact":
        return ot.gromov.gromov_wasserstein(cost_s, cost_t, p, q, "square_loss", max_iter=cfg.max_iter)
    if cfg.method != "entropic":
        raise ValueError(f"unknown method {cfg.method!r}; choose 'exact' or 'entropic'.")
    with warnings.catch_warnings():  # small epsilon: Sinkhorn's inner loop may stop at its cap, harmlessly
        warnings.simplefilter("ignore", UserWarning)
        return ot.gromov.entropic_gromov_wasserstein(cost_s, cost_t, p, q, "square_loss", epsilon=cfg.epsilon,
                                                     max_iter=cfg.max_iter)


def label_matrix(n: int, idx_a: np.ndarray, idx_b: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Source labels as a matrix, both orientations filled in.

    Args:
        n: number of source segments.
        idx_a: (P,) index of each pair's first segment.
        idx_b: (P,) index of its second segment.
        labels: (P,) P(a preferred to b) in [0, 1].

    Returns:
        Z (n, n) with Z[a, b] = label and Z[b, a] = 1 - label (0.5 elsewhere), and M (n, n) with 1 on labelled
        entries. A pair labelled twice keeps the mean of its labels.
    """
    z, m = np.zeros((n, n)), np.zeros((n, n))
    y = np.asarray(labels, np.float64)
    np.add.at(z, (idx_a, idx_b), y)
    np.add.at(z, (idx_b, idx_a), 1.0 - y)
    np.add.at(m, (idx_a, idx_b), 1.0)
    np.add.at(m, (idx_b, idx_a), 1.0)
    labelled = m > 0
    z = np.where(labelled, z / np.maximum(m, 1), 0.5)
    return z, labelled.astype(np.float64)


def transfer_labels(plan: np.ndarray, z: np.ndarray, m: np.ndarray, idx_a: np.ndarray, idx_b: np.ndarray,
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Target labels as the plan-weighted source labels, normalised by the labelled mass (module docstring).

    Args:
        plan: (ns, nt) transport plan T.
        z: (ns, ns) source labels from `label_matrix`.
        m: (ns, ns) labelled mask from `label_matrix`.
        idx_a: (P,) first target segment of each pair.
        idx_b: (P,) second target segment.

    Returns:
        labels (P,) in [0, 1] (0.5 where no labelled mass reaches the pair) and mass (P,): labelled transport mass
        divided by the pair's marginals q_a q_b, in [0, 1].
    """
    ta, tb = plan[:, idx_a], plan[:, idx_b]  # (ns, P)
    num = np.einsum("kp,kl,lp->p", ta, m * z, tb)  # sum_{k,l} T[k,a] T[l,b] M[k,l] Z[k,l]
    den = np.einsum("kp,kl,lp->p", ta, m, tb)  # sum_{k,l} T[k,a] T[l,b] M[k,l]
    marg = ta.sum(0) * tb.sum(0)  # q_a q_b
    labels = np.where(den > 1e-12, num / np.maximum(den, 1e-300), 0.5)
    return np.clip(labels, 0.0, 1.0), np.clip(den / np.maximum(marg, 1e-300), 0.0, 1.0)


@dataclass
class SourceTask:
    """A labelled source task for CPA.

    Attributes:
        features: (ns, D) segment vectors (`segment_features`).
        idx_a: (P,) first segment of each labelled pair.
        idx_b: (P,) second segment.
        labels: (P,) P(a preferred to b).
    """

    features: np.ndarray
    idx_a: np.ndarray
    idx_b: np.ndarray
    labels: np.ndarray


def cross_task_labels(sources: Sequence[SourceTask], target_features: np.ndarray, idx_a: np.ndarray,
                      idx_b: np.ndarray, cfg: CPAConfig | None = None,
                      target_labels: tuple[np.ndarray, np.ndarray] | None = None) -> CPAResult:
    """CPA: labels for unlabelled target pairs from one or several labelled source tasks.

    Args:
        sources: labelled source tasks; one GW problem each.
        target_features: (nt, D') target segment vectors (D' may differ from the sources' D).
        idx_a: (P,) first target segment of each pair to label.
        idx_b: (P,) second target segment.
        cfg: cost and solver settings.
        target_labels: optional (pair positions (K,) into idx_a / idx_b, real labels (K,)): a few real target labels
            that replace the transferred ones at those pairs (their mass is set to 1).

    Returns:
        CPAResult; with several sources the labels are their mass-weighted mean.
    """
    cfg = cfg or CPAConfig()
    cost_t = intra_task_cost(target_features, cfg.standardise)
    num, den, plans = np.zeros(len(idx_a)), np.zeros(len(idx_a)), []
    for src in sources:
        plan = gw_plan(intra_task_cost(src.features, cfg.standardise), cost_t, cfg)
        z, m = label_matrix(len(src.features), src.idx_a, src.idx_b, src.labels)
        labels, mass = transfer_labels(plan, z, m, idx_a, idx_b)
        num, den = num + mass * labels, den + mass
        plans.append(plan)
    labels = np.where(den > 0, num / np.maximum(den, 1e-300), 0.5)
    mass = den / max(len(sources), 1)
    if target_labels is not None:
        pos, real = target_labels
        labels[pos], mass[pos] = np.asarray(real, np.float64), 1.0
    return CPAResult(np.clip(labels, 0.0, 1.0), mass, plans)


def all_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every unordered pair (a < b) of n segments: two (n (n - 1) / 2,) index arrays."""
    a, b = np.triu_indices(n, k=1)
    return a, b


def nearest_neighbour_labels(source: SourceTask, target_features: np.ndarray, idx_a: np.ndarray,
                             idx_b: np.ndarray) -> np.ndarray:
    """Baseline: copy the label of the nearest source pair in the shared feature space (no OT).

    Each target segment is matched to its Euclidean-nearest source segment (features of both tasks standardised
    with the source's statistics), then the target pair takes the matched source pair's label (0.5 if unlabelled
    or if both ends match the same source segment).

    Args:
        source: labelled source task; its features must live in the same space as `target_features`.
        target_features: (nt, D) target segment vectors.
        idx_a: (P,) first target segment of each pair.
        idx_b: (P,) second target segment.

    Returns:
        (P,) labels in [0, 1].
    """
    mu, sd = source.features.mean(0), source.features.std(0) + 1e-8
    nn = ot.dist((target_features - mu) / sd, (source.features - mu) / sd).argmin(1)  # (nt,)
    z, m = label_matrix(len(source.features), source.idx_a, source.idx_b, source.labels)
    ka, kb = nn[idx_a], nn[idx_b]
    return np.where(m[ka, kb] > 0, z[ka, kb], 0.5)

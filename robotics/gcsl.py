"""Goal-conditioned supervised learning with the temporal data augmentation of Ghugare, Geist, Berseth, Eysenbach,
"Closing the Gap between TD Learning and Supervised Learning -- A Generalisation Point of View" (ICLR 2024), and a
goal-conditioned IQL baseline on the same data.

- GCSL / OCBC (Sec. 3, Eq. 7): sample a state-action (s_t, a_t) of trajectory i and a goal g = s_{t'} from its
  future, t' ~ U{t+1, ..., T}, and maximise log pi(a_t | s_t, g). The policy is a Gaussian mean with a fixed std,
  so the loss is ||pi(s_t, g) - a_t||^2 (as IQL's actor, `mmalign.robotics.iql`).
- Temporal augmentation (Sec. 5, Fig. 2): cluster the goal space with k-means; with probability `augment_prob`
  take the original goal's cluster, draw a waypoint w = s_{j,k} uniformly among the dataset's states in that
  cluster (any trajectory j, k < T) and replace g by g~ = s_{j,k'}, k' ~ U{k+1, ..., T}, from w's future. The action
  a_t still leads towards w, and from w trajectory j reaches g~, so (s_t, a_t, g~) pairs a start with a goal that
  no single trajectory joins.
- Goal-conditioned IQL: transitions (s || g, a, r, s' || g) with hindsight goals (a future state with probability
  1 - `random_goal_prob`, else any dataset state), r = 0 and done when the next tip position lies within `tol` of g,
  r = -1 otherwise; trained by `mmalign.robotics.iql.train_iql`.

Data layout (`mmalign.robotics.stitching.collect_routes`): states (E, T + 1, S) with the tip position in columns
0:2, actions (E, T, A). Goals are tip positions (2,).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mmalign.config import check_numbers
from mmalign.robotics.iql import DeterministicActor, IQLConfig, train_iql

GOAL = slice(0, 2)
"""Columns of a state that a goal names (the tip position)."""


@dataclass
class GCSLConfig:
    """GCSL settings, with or without the temporal augmentation."""

    hidden: tuple[int, ...] = (64, 64)
    """Hidden sizes of the policy MLP."""
    lr: float = 1e-3
    """Adam learning rate."""
    batch_size: int = 256
    """(s, a, g) samples per step."""
    steps: int = 3000
    """Gradient steps."""
    augment: bool = False
    """Apply the temporal augmentation."""
    augment_prob: float = 0.8
    """Probability that a sample's goal is replaced by an augmented one."""
    clusters: int = 4
    """k of the k-means on the dataset's goals (tip positions). Few, large clusters: a goal must fall in the cluster
    where routes meet for the augmentation to cross to another route (4 and 0.8 were the best of {4, 6} x {0.5, 0.8}
    on the stitching split, docs/robotics.md)."""
    seed: int = 0
    """Seed of the initialisation, the clustering and the sampling."""

    def __post_init__(self) -> None:
        check_numbers(self, "hidden", "batch_size", "steps", "clusters", ge=1)
        check_numbers(self, "lr", gt=0)
        check_numbers(self, "augment_prob", ge=0, le=1)
        check_numbers(self, "seed", ge=0)


def future_index(t: np.ndarray, horizon: int, rng: np.random.Generator) -> np.ndarray:
    """Hindsight goal times: t' ~ U{t+1, ..., horizon} for each t (states have rows 0..horizon)."""
    t = np.asarray(t)
    if np.any(t >= horizon) or np.any(t < 0):
        raise ValueError(f"times must lie in [0, {horizon}) to have a future; got {t.min()}..{t.max()}.")
    return t + 1 + (rng.uniform(size=t.shape) * (horizon - t)).astype(np.int64)


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding.

    Args:
        x: (N, D) points.
        k: clusters (at most N).
        rng: seeds the initial centres.
        iters: Lloyd iterations (stops early once the labels no longer change).

    Returns:
        centres (k, D) and labels (N,) int64.
    """
    if not 1 <= k <= len(x):
        raise ValueError(f"k = {k} clusters for {len(x)} points; choose 1 <= k <= number of points.")
    centres = [x[rng.integers(len(x))]]
    for _ in range(k - 1):  # k-means++: the next centre with probability proportional to the squared distance
        d2 = np.min(((x[:, None] - np.asarray(centres)[None]) ** 2).sum(-1), 1)
        centres.append(x[rng.choice(len(x), p=d2 / d2.sum())] if d2.sum() > 0 else x[rng.integers(len(x))])
    c, labels = np.asarray(centres, dtype=np.float64), np.full(len(x), -1)
    for _ in range(iters):
        new = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            if np.any(labels == j):
                c[j] = x[labels == j].mean(0)
    return c, labels


class TemporalAugmenter:
    """Samples augmented goals (module docstring) for one dataset.

    Args:
        labels: (E, T + 1) cluster of every state's goal part.
    """

    def __init__(self, labels: np.ndarray):
        self.labels, self.horizon = labels, labels.shape[1] - 1
        ep, t = np.nonzero(np.ones_like(labels[:, :-1], dtype=bool))  # waypoints need a future: k < T
        order = np.argsort(labels[ep, t], kind="stable")
        self.way_ep, self.way_t = ep[order], t[order]
        counts = np.bincount(labels[ep, t], minlength=int(labels.max()) + 1)
        self.counts, self.offsets = counts, np.concatenate([[0], np.cumsum(counts)[:-1]])

    def __call__(self, goal_ep: np.ndarray, goal_t: np.ndarray, rng: np.random.Generator,
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(episode, time) of an augmented goal for each original goal (episode, time); an original goal whose
        cluster holds no state with a future is kept."""
        c = self.labels[goal_ep, goal_t]
        n = self.counts[c]
        pick = self.offsets[c] + (rng.uniform(size=c.shape) * n).astype(np.int64)
        pick = np.minimum(pick, len(self.way_ep) - 1)
        way_ep, way_t = self.way_ep[pick], self.way_t[pick]
        new_t = future_index(way_t, self.horizon, rng)
        keep = n == 0
        return np.where(keep, goal_ep, way_ep), np.where(keep, goal_t, new_t)


def sample_batch(states: np.ndarray, n: int, rng: np.random.Generator, augmenter: TemporalAugmenter | None = None,
                 augment_prob: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(episode, time, goal (n, 2)) of `n` GCSL samples: uniform (episode, t < T), hindsight goal from its future,
    replaced by an augmented goal with probability `augment_prob`."""
    horizon = states.shape[1] - 1
    ep, t = rng.integers(0, len(states), n), rng.integers(0, horizon, n)
    g_ep, g_t = ep, future_index(t, horizon, rng)
    if augmenter is not None and augment_prob > 0:
        a_ep, a_t = augmenter(g_ep, g_t, rng)
        use = rng.uniform(size=n) < augment_prob
        g_ep, g_t = np.where(use, a_ep, g_ep), np.where(use, a_t, g_t)
    return ep, t, states[g_ep, g_t, GOAL]


def gcsl_loss(actor: DeterministicActor, states: torch.Tensor, goals: torch.Tensor, actions: torch.Tensor,
              ) -> torch.Tensor:
    """-log pi(a | s, g) of the fixed-std Gaussian policy, up to constants: mean of ||pi(s, g) - a||^2 (Eq. 7)."""
    return (actor(torch.cat([states, goals], -1)) - actions).pow(2).sum(-1).mean()


def train_gcsl(data: dict[str, np.ndarray], cfg: GCSLConfig | None = None) -> DeterministicActor:
    """Train GCSL (with the temporal augmentation when `cfg.augment`) on states (E, T + 1, S) and actions
    (E, T, A); returns the policy, which reads concat(state, goal)."""
    cfg = cfg or GCSLConfig()
    states, actions = data["states"], data["actions"]
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    augmenter = None
    if cfg.augment:
        goals = states[..., GOAL].reshape(-1, 2)
        augmenter = TemporalAugmenter(kmeans(goals, cfg.clusters, rng)[1].reshape(states.shape[:2]))
    actor = DeterministicActor(states.shape[-1] + 2, actions.shape[-1], cfg.hidden)
    opt = torch.optim.Adam(actor.parameters(), cfg.lr)
    f = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    for _ in range(cfg.steps):
        ep, t, g = sample_batch(states, cfg.batch_size, rng, augmenter, cfg.augment_prob)
        loss = gcsl_loss(actor, f(states[ep, t]), f(g), f(actions[ep, t]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return actor


def goal_transitions(data: dict[str, np.ndarray], relabels: int = 4, random_goal_prob: float = 0.3,
                     tol: float = 0.025, seed: int = 0) -> dict[str, torch.Tensor]:
    """Goal-conditioned transitions for IQL: each (s_t, a_t, s_{t+1}) `relabels` times with a hindsight goal.

    Args:
        data: states (E, T + 1, S), actions (E, T, A).
        relabels: goals per transition.
        random_goal_prob: probability of a goal drawn from all dataset states instead of the trajectory's future.
        tol: reach radius (m) of the reward.
        seed: seed of the goal draws.

    Returns:
        obs, act, rew, next_obs, done (as `mmalign.robotics.iql.transitions`), obs = concat(state, goal).
    """
    if relabels < 1 or not 0 <= random_goal_prob <= 1 or tol <= 0:
        raise ValueError(f"need relabels >= 1, 0 <= random_goal_prob <= 1 and tol > 0; got {relabels}, "
                         f"{random_goal_prob}, {tol}.")
    states, actions = data["states"], data["actions"]
    rng = np.random.default_rng(seed)
    e, horizon = len(states), states.shape[1] - 1
    ep, t = (np.repeat(x.ravel(), relabels) for x in np.meshgrid(np.arange(e), np.arange(horizon), indexing="ij"))
    g_ep, g_t = ep.copy(), future_index(t, horizon, rng)
    rand = rng.uniform(size=len(ep)) < random_goal_prob
    g_ep[rand], g_t[rand] = rng.integers(0, e, rand.sum()), rng.integers(0, horizon + 1, rand.sum())
    goal, nxt = states[g_ep, g_t, GOAL], states[ep, t + 1]
    reached = np.linalg.norm(nxt[:, GOAL] - goal, axis=-1) < tol
    f = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
    return {"obs": f(np.concatenate([states[ep, t], goal], -1)), "act": f(actions[ep, t]),
            "rew": f(reached.astype(np.float32) - 1.0), "next_obs": f(np.concatenate([nxt, goal], -1)),
            "done": f(reached)}


def train_goal_iql(data: dict[str, np.ndarray], cfg: IQLConfig | None = None, relabels: int = 4,
                   random_goal_prob: float = 0.3, tol: float = 0.025) -> DeterministicActor:
    """IQL (`mmalign.robotics.iql.train_iql`) on `goal_transitions`; the policy reads concat(state, goal)."""
    cfg = cfg or IQLConfig()
    return train_iql(goal_transitions(data, relabels, random_goal_prob, tol, cfg.seed), cfg)[0]


def as_policy(actor: DeterministicActor):
    """The (state, goal) -> action callable of `mmalign.robotics.stitching.evaluate_pairs`."""
    return lambda state, goal: actor.act(np.concatenate([state, goal]).astype(np.float32))

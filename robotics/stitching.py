"""A stitching test on the planar reach-wall task (Ghugare et al., ICLR 2024, Sec. 5: datasets whose test
(start, goal) pairs never occur together in one trajectory).

Five regions of the table, discs of radius `REGION_RADIUS` (m), on either side of the reach-wall task's wall
(y = 0, open only in the doorway |x| < 5 cm round M; `mmalign.envs.reach_wall`)::

    C (-0.15, 0.15)       D (0.15, 0.15)
    =========== M (0, 0) ===========
    A (-0.15, -0.15)      B (0.15, -0.15)

The data holds two routes that cross in the doorway, A -> M -> D and B -> M -> C: a noisy scripted reach controller
steers the tip to a point of M, then to a point of the last region. Seen pairs: (A, D) and (B, C). The unseen pairs
(A, C) and (B, D) are each the first half of one route joined to the second half of the other at M, so a policy must
stitch them; heading straight for the goal runs into the wall. Evaluation rolls a goal-conditioned policy out in the
MuJoCo env from a start in the first region to a goal in the last; success = ``info["success"]``, the tip within
2.5 cm of the goal, at any step.

Policies here read (state, goal): state = tip position and velocity (4,), goal = a tip position (2,).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mmalign.envs.layout import OBS_LAYOUT
from mmalign.envs.scripted import GAIN

REGIONS: dict[str, tuple[float, float]] = {"A": (-0.15, -0.15), "B": (0.15, -0.15), "M": (0.0, 0.0),
                                           "C": (-0.15, 0.15), "D": (0.15, 0.15)}
"""Region name -> centre (m)."""
REGION_RADIUS = 0.03
"""Starts, waypoints and goals are uniform in a disc of this radius (m) round their region's centre."""
ENV_ID = "mmalign/ReachWall-v0"
"""The env of the data and of the evaluation."""
ROUTES = (("A", "M", "D"), ("B", "M", "C"))
"""The routes the data holds."""
SEEN_PAIRS = (("A", "D"), ("B", "C"))
"""(start, goal) regions that share a trajectory."""
UNSEEN_PAIRS = (("A", "C"), ("B", "D"))
"""(start, goal) regions that never share one: reaching them needs stitching at M."""
SWITCH_DIST = 0.02
"""The scripted controller heads for the last region once the tip is this close (m) to its M waypoint."""

Policy = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(state (4,), goal (2,)) -> action (2,)."""


def state_of(obs: np.ndarray) -> np.ndarray:
    """The goal-conditioned state (tip position and velocity, (..., 4)) of planar observations (..., 10)."""
    return np.concatenate([obs[..., OBS_LAYOUT["ee_pos"]], obs[..., OBS_LAYOUT["ee_vel"]]], -1)


def sample_in(region: str, rng: np.random.Generator) -> np.ndarray:
    """A uniform point (2,) of a region's disc."""
    if region not in REGIONS:
        raise ValueError(f"unknown region {region!r}; choose one of {list(REGIONS)}.")
    r, a = REGION_RADIUS * np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
    return np.asarray(REGIONS[region]) + r * np.array([np.cos(a), np.sin(a)])


def collect_routes(episodes_per_route: int = 100, noise_std: float = 0.3, steps: int = 30, seed: int = 0,
                   ) -> dict[str, np.ndarray]:
    """Roll the noisy waypoint controller along each route of `ROUTES` in the MuJoCo reach-wall env.

    Args:
        episodes_per_route: trajectories per route.
        noise_std: std of the Gaussian noise added to each action component (before clipping to [-1, 1]).
        steps: steps per trajectory (the controller arrives in about 25).
        seed: seeds the regions' points, the noise and the resets.

    Returns:
        dict with states (E, steps + 1, 4) (the last row is the state after the last action), actions
        (E, steps, 2) float32 and route (E,) int64 (index into `ROUTES`).
    """
    from mmalign.robotics.offline_data import make_env

    env, rng = make_env(ENV_ID, steps), np.random.default_rng(seed)
    states, actions, route = [], [], []
    for r, (start, mid, end) in enumerate(ROUTES):
        for _ in range(episodes_per_route):
            way, goal = sample_in(mid, rng), sample_in(end, rng)
            obs, _ = env.reset(seed=int(rng.integers(2**31)), options={"ee_start": sample_in(start, rng),
                                                                       "goal": goal})
            s, a, target = [state_of(obs)], [], way
            for _ in range(steps):
                if target is way and np.linalg.norm(s[-1][:2] - way) < SWITCH_DIST:
                    target = goal
                act = np.clip(GAIN * (target - s[-1][:2]) + rng.normal(0, noise_std, 2), -1, 1).astype(np.float32)
                obs, *_ = env.step(act)
                s.append(state_of(obs))
                a.append(act)
            states.append(s)
            actions.append(a)
            route.append(r)
    env.close()
    return {"states": np.asarray(states, np.float32), "actions": np.asarray(actions, np.float32),
            "route": np.asarray(route, np.int64)}


def evaluate_pairs(policy: Policy, pairs: tuple[tuple[str, str], ...] = UNSEEN_PAIRS, episodes: int = 20,
                   steps: int = 60, seed: int = 10_000) -> dict[str, float]:
    """Success rate of a goal-conditioned policy on (start, goal) region pairs in the MuJoCo reach-wall env.

    Args:
        policy: (state, goal) -> action.
        pairs: (start region, goal region) pairs; each gets `episodes` episodes.
        episodes: episodes per pair (start, goal and reset seed drawn from `seed`).
        steps: episode length.
        seed: seed of the draws, apart from the training seeds.

    Returns:
        dict: "<start>-><goal>" -> success rate per pair, and "success" (mean over all episodes).
    """
    from mmalign.robotics.offline_data import make_env

    env, rng, out = make_env(ENV_ID, steps), np.random.default_rng(seed), {}
    for start, end in pairs:
        ok = []
        for _ in range(episodes):
            goal = sample_in(end, rng)
            obs, _ = env.reset(seed=int(rng.integers(2**31)), options={"ee_start": sample_in(start, rng),
                                                                       "goal": goal})
            hit, done = False, False
            while not done and not hit:
                obs, _, term, trunc, info = env.step(policy(state_of(obs), goal))
                hit, done = info["success"], term or trunc
            ok.append(hit)
        out[f"{start}->{end}"] = float(np.mean(ok))
    env.close()
    out["success"] = float(np.mean([out[f"{s}->{e}"] for s, e in pairs]))
    return out

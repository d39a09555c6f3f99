"""Scripted controllers for the planar tasks: stateless functions of the observation.

Each controller reads only the shared observation (``layout.OBS_LAYOUT``) and the fixed scene
geometry in ``layout``, so it works on stored observations too. They steer the tip with a
proportional law through a few waypoints chosen from where the tip is relative to the object.

Usage::

    policy = scripted_policy(env.unwrapped.task, noise_std=0.1, seed=0)  # or scripted_action("push", obs)
    obs, _ = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(policy(obs))

``scripted_policy`` also hands out Meta-World's own scripted policies for its ``-v3`` tasks. This
module imports no MuJoCo.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .layout import BLOCK_HALF, CONTROL_DT, EE_RADIUS, MAX_SPEED, OBS_LAYOUT, ORBIT_RADIUS, TASKS

GAIN = 1.0 / (MAX_SPEED * CONTROL_DT) / 2
"""Proportional gain (action per metre): halves the distance to a waypoint each step when unsaturated."""


def _split(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    obs = np.asarray(obs, dtype=np.float64)
    return obs[OBS_LAYOUT["ee_pos"]], obs[OBS_LAYOUT["obj_pos"]], obs[OBS_LAYOUT["goal"]]


def _toward(ee: np.ndarray, target: np.ndarray, gain: float = GAIN) -> np.ndarray:
    return np.clip(gain * (target - ee), -1.0, 1.0)


def reach_action(obs: np.ndarray) -> np.ndarray:
    """Straight to the goal."""
    ee, _, goal = _split(obs)
    return _toward(ee, goal)


def push_action(obs: np.ndarray) -> np.ndarray:
    """Go round the block to the side away from the goal, then push it along the block-goal line."""
    ee, block, goal = _split(obs)
    u = goal - block
    dist = np.linalg.norm(u)
    u = u / max(dist, 1e-9)
    n = np.array([-u[1], u[0]])
    along, lateral = float((ee - block) @ u), float((ee - block) @ n)
    clear = BLOCK_HALF * np.sqrt(2) + EE_RADIUS + 0.01  # distance at which the tip misses the block
    if along < -0.03 and abs(lateral) < 0.015:  # behind and in line: push, steering back onto the line
        return np.clip(min(1.0, GAIN * dist) * u - GAIN * lateral * n, -1.0, 1.0)
    side = 1.0 if lateral >= 0 else -1.0
    if along < -clear:  # behind, off the line: to the pre-push point
        return _toward(ee, block - (clear + 0.005) * u)
    if abs(lateral) > clear:  # beside: to the corner behind the block on this side
        return _toward(ee, block + side * (clear + 0.005) * n - (clear + 0.005) * u)
    return _toward(ee, block + along * u + side * (clear + 0.015) * n)  # in front: step aside


def button_press_action(obs: np.ndarray) -> np.ndarray:
    """Line up in front of the button, then push it in past its travel."""
    ee, face, goal = _split(obs)
    pressing = ee[1] > face[1] - EE_RADIUS - 0.01
    if abs(ee[0] - face[0]) > (0.02 if pressing else 0.008):  # wider band once on the button
        return _toward(ee, np.array([face[0], min(ee[1], face[1] - EE_RADIUS - 0.03)]))
    return _toward(ee, np.array([face[0], goal[1]]))


def drawer_open_action(obs: np.ndarray) -> np.ndarray:
    """Go below and right of the handle, up beside it, left into its pocket, then pull."""
    ee, pocket, goal = _split(obs)
    rel = ee - pocket
    lane = pocket + np.array([0.075, 0.0])
    if abs(rel[0]) < 0.02 and abs(rel[1]) < 0.02:  # hooked: pull past the goal, keep centred in x
        return _toward(ee, np.array([pocket[0], ee[1] + (goal[1] - pocket[1]) - 0.01]))
    if abs(rel[1]) < 0.01 and 0.0 < rel[0] < 0.09:  # in the lane right of the pocket: slide in
        return _toward(ee, pocket)
    if rel[0] > 0.06:  # right of the handle: up to the lane
        return _toward(ee, lane)
    return _toward(ee, np.array([lane[0], min(ee[1], pocket[1] - 0.06)]))  # stay below the handle's bar


def orbit_action(obs: np.ndarray, speed: float = 0.8) -> np.ndarray:
    """Orbit task (``orbit.py``): the counter-clockwise tangent at `speed` x max, plus a pull onto the circle."""
    ee, _, centre = _split(obs)
    rel = ee - centre
    dist = float(np.linalg.norm(rel))
    if dist < 1e-6:
        return np.array([1.0, 0.0])
    u = rel / dist
    return np.clip(speed * np.array([-u[1], u[0]]) + GAIN * (ORBIT_RADIUS - dist) * u, -1.0, 1.0)


CONTROLLERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "reach": reach_action,
    "push": push_action,
    "button-press": button_press_action,
    "drawer-open": drawer_open_action,
    "orbit": orbit_action,
}
"""Scripted controller per task name of ``layout.TASKS``, and of the orbit task (``orbit.py``)."""


def scripted_action(task: str, obs: np.ndarray) -> np.ndarray:
    """The scripted controller's action for one observation.

    Args:
        task: One of ``layout.TASKS`` (``env.unwrapped.task`` names it).
        obs: Observation (``layout.OBS_DIM``,).

    Returns:
        Action (2,) float32 in [-1, 1].
    """
    if task not in CONTROLLERS:
        raise ValueError(f"no scripted controller for task {task!r}; choose one of {list(TASKS)}")
    return CONTROLLERS[task](obs).astype(np.float32)


class ScriptedPolicy:
    """A scripted controller with optional Gaussian action noise (for diverse teacher data).

    Args:
        task: One of ``layout.TASKS``.
        noise_std: Standard deviation of the noise added to each action component before clipping.
        seed: Seed of the noise generator.
    """

    def __init__(self, task: str, noise_std: float = 0.0, seed: int | None = None) -> None:
        if task not in CONTROLLERS:
            raise ValueError(f"no scripted controller for task {task!r}; choose one of {list(TASKS)}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.task, self.noise_std = task, noise_std
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Action (2,) float32 for one observation."""
        action = CONTROLLERS[self.task](obs)
        if self.noise_std > 0:
            action = action + self.rng.normal(0.0, self.noise_std, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


def scripted_policy(task: str, noise_std: float = 0.0, seed: int | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The scripted policy of a task of this family or of Meta-World.

    Args:
        task: ``env.unwrapped.task``: one of ``layout.TASKS`` or a Meta-World v3 name (``"push-v3"``).
        noise_std: Standard deviation of Gaussian noise added to each action component before clipping.
        seed: Seed of the noise generator.

    Returns:
        A callable mapping one observation to one float32 action.
    """
    if task.endswith("-v3"):
        from .metaworld_env import MetaWorldScriptedPolicy

        return MetaWorldScriptedPolicy(task, noise_std, seed)
    return ScriptedPolicy(task, noise_std, seed)

"""Planar manipulation tasks on MuJoCo that share one robot and one observation layout.

A gantry moves a pusher tip over a table (see ``assets.py``); the action is the tip's desired
velocity. The four tasks differ only in the object and the goal: reach a point, push a block to
a point, press a button in a wall, pull a drawer open by its L-shaped handle. Observations follow
``layout.OBS_LAYOUT``; rewards are dense and ground truth (for scripted teachers and evaluation):

    reward = -goal_dist - 0.5 * reach_dist + success

with ``goal_dist`` the distance from the object's interaction point (the tip, for reach) to the
goal, ``reach_dist`` the distance from the tip to that point, and ``success`` whether ``goal_dist``
is below ``layout.SUCCESS_TOL[task]``. Episodes never terminate; the registered ids truncate them
with ``TimeLimit``. Everything random at reset comes from ``self.np_random``, so ``reset(seed=s)``
followed by the same actions reproduces an episode bit for bit.
"""

from __future__ import annotations

import atexit
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from ._gl import close_at_exit
from .actions import finite_action
from .assets import scene_xml
from .layout import (
    ACTION_DIM,
    CONTROL_DT,
    DRAWER_GOAL,
    MAX_SPEED,
    OBS_DIM,
    OBS_LAYOUT,
    POCKET_Y,
    SUCCESS_TOL,
    WALL_Y,
)

OBS_HIGH = np.full(OBS_DIM, 0.5, dtype=np.float32)
"""Bounds of the observation space: 0.5 m on positions, 2 m/s on velocities."""
OBS_HIGH[OBS_LAYOUT["ee_vel"]] = OBS_HIGH[OBS_LAYOUT["obj_vel"]] = 2.0


class PlanarManipEnv(gym.Env[np.ndarray, np.ndarray]):
    """Base class: the shared robot, stepping, observation, reward and rendering.

    Subclasses set ``task`` and implement ``_reset_task``, which places the object and returns
    the goal.

    Args:
        render_mode: None or ``"rgb_array"``.
        width: Rendered image width in pixels (at most 640).
        height: Rendered image height in pixels (at most 640).
        camera: Name of the MJCF camera to render from: ``"overview"`` (oblique, default) or ``"top"``.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": round(1 / CONTROL_DT)}
    task: str = ""

    def __init__(
        self, render_mode: str | None = None, width: int = 64, height: int = 64, camera: str = "overview"
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.model = mujoco.MjModel.from_xml_string(scene_xml(self.task))
        self.data = mujoco.MjData(self.model)
        self.frame_skip = round(CONTROL_DT / self.model.opt.timestep)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self.observation_space = gym.spaces.Box(-OBS_HIGH, OBS_HIGH, dtype=np.float32)
        self.render_mode, self.width, self.height, self.camera = render_mode, width, height, camera
        self._renderer: mujoco.Renderer | None = None
        self._ee_site = self.model.site("ee").id
        self._goal_site = self.model.site("goal").id
        self._obj_site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, "object")
        self._ee_qpos = [self.model.jnt_qposadr[self.model.joint(n).id] for n in ("ee_x", "ee_y")]
        self.goal = np.zeros(2)

    # -- gymnasium API --------------------------------------------------------------------------

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Resets robot, object and goal from ``self.np_random`` (reseeded when ``seed`` is given).

        ``options`` may place the tip (``"ee_start"``, (2,) metres) and the goal (``"goal"``, (2,) metres; a free
        point only for reach, whose goal is where the tip must go) instead of drawing them; the draws still happen,
        so the rest of the episode's randomness is unchanged.
        """
        super().reset(seed=seed)
        options = options or {}
        if unknown := set(options) - {"ee_start", "goal"}:
            raise ValueError(f"unknown reset options {sorted(unknown)}; this env reads 'ee_start' and 'goal'.")
        mujoco.mj_resetData(self.model, self.data)
        start = np.array([self.np_random.uniform(-0.05, 0.05), self.np_random.uniform(-0.2, -0.15)])
        start = np.asarray(options.get("ee_start", start), dtype=float).reshape(2)
        self.data.qpos[self._ee_qpos] = start
        self.goal = self._reset_task(start)
        if "goal" in options:
            self.goal = np.asarray(options["goal"], dtype=float).reshape(2)
        self.model.site_pos[self._goal_site, :2] = self.goal
        mujoco.mj_forward(self.model, self.data)
        return self._get_obs(), self._get_info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Applies the tip velocity ``action * MAX_SPEED`` for ``CONTROL_DT`` seconds.

        Raises:
            ValueError: the action has a NaN or infinite entry (MuJoCo would silently zero the controls).
        """
        self._apply(action)
        info = self._get_info()
        reward = -info["goal_dist"] - 0.5 * info["reach_dist"] + float(info["success"])
        return self._get_obs(), float(reward), False, False, info

    def render(self) -> np.ndarray | None:
        """An RGB frame (height, width, 3) uint8 from ``self.camera``; None without ``render_mode``."""
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.height, self.width)
            self._exit_hook = close_at_exit(self._renderer)
        self._renderer.update_scene(self.data, camera=self.camera)
        return self._renderer.render()

    def close(self) -> None:
        """Frees the offscreen renderer."""
        if self._renderer is not None:
            atexit.unregister(self._exit_hook)
            self._renderer.close()
            self._renderer = None

    # -- task interface -------------------------------------------------------------------------

    def _reset_task(self, ee_start: np.ndarray) -> np.ndarray:
        """Places the task's object (model and ``self.data.qpos``) and returns the goal (2,)."""
        raise NotImplementedError

    # -- helpers --------------------------------------------------------------------------------

    def _apply(self, action: np.ndarray) -> None:
        """Checks the action (ACTION_DIM,), clips it to [-1, 1] and runs the simulation for one control step."""
        self.data.ctrl[:] = np.clip(finite_action(self, action).reshape(ACTION_DIM), -1.0, 1.0) * MAX_SPEED
        mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)

    def _site_state(self, site: int) -> tuple[np.ndarray, np.ndarray]:
        """Planar position and linear velocity (2,) each of a site."""
        vel = np.zeros(6)
        mujoco.mj_objectVelocity(self.model, self.data, mujoco.mjtObj.mjOBJ_SITE, site, vel, 0)
        return self.data.site_xpos[site, :2].copy(), vel[3:5]

    def _get_obs(self) -> np.ndarray:
        ee_pos, ee_vel = self._site_state(self._ee_site)
        obj_pos, obj_vel = self._site_state(self._obj_site) if self._obj_site >= 0 else (np.zeros(2), np.zeros(2))
        return np.concatenate([ee_pos, ee_vel, obj_pos, obj_vel, self.goal]).astype(np.float32)

    def _get_info(self) -> dict[str, Any]:
        ee = self.data.site_xpos[self._ee_site, :2]
        obj = self.data.site_xpos[self._obj_site, :2] if self._obj_site >= 0 else ee
        goal_dist = float(np.linalg.norm(obj - self.goal))
        return {
            "success": bool(goal_dist < SUCCESS_TOL[self.task]),
            "goal_dist": goal_dist,
            "reach_dist": float(np.linalg.norm(ee - obj)),
        }

    def _sample_away(
        self, low: tuple[float, float], high: tuple[float, float], avoid: np.ndarray, min_dist: float
    ) -> np.ndarray:
        """A uniform point in the box [low, high] at least ``min_dist`` from ``avoid`` (rejection sampling)."""
        while True:
            point = self.np_random.uniform(low, high)
            if np.linalg.norm(point - avoid) >= min_dist:
                return point


class ReachEnv(PlanarManipEnv):
    """Move the tip to the goal (obs ``obj_pos`` and ``obj_vel`` are zeros)."""

    task = "reach"

    def _reset_task(self, ee_start: np.ndarray) -> np.ndarray:
        return self._sample_away((-0.2, -0.2), (0.2, 0.18), ee_start, min_dist=0.15)


class PushEnv(PlanarManipEnv):
    """Push a block (it slides, it does not turn) until its centre is on the goal."""

    task = "push"

    def _reset_task(self, ee_start: np.ndarray) -> np.ndarray:
        block = self.np_random.uniform((-0.12, -0.06), (0.12, 0.06))
        adr = [self.model.jnt_qposadr[self.model.joint(n).id] for n in ("block_x", "block_y")]
        self.data.qpos[adr] = block
        return self._sample_away((-0.15, -0.1), (0.15, 0.14), block, min_dist=0.1)


class ButtonPressEnv(PlanarManipEnv):
    """Press a spring-loaded button in the far wall at least 2 cm in (its goal: fully pressed)."""

    task = "button-press"

    def _reset_task(self, ee_start: np.ndarray) -> np.ndarray:
        x = self.np_random.uniform(-0.15, 0.15)
        self.model.body_pos[self.model.body("button").id, 0] = x
        return np.array([x, WALL_Y])  # the button's face, at rest at WALL_Y - BUTTON_TRAVEL, fully pressed


class DrawerOpenEnv(PlanarManipEnv):
    """Pull a drawer out of its cabinet by hooking the tip into its L-shaped handle."""

    task = "drawer-open"

    def _reset_task(self, ee_start: np.ndarray) -> np.ndarray:
        x = self.np_random.uniform(-0.12, 0.1)
        self.model.body_pos[self.model.body("drawer").id, 0] = x
        return np.array([x, POCKET_Y - DRAWER_GOAL])  # the handle pocket when opened by DRAWER_GOAL

"""Orbit: a planar task whose reward differs in kind from the four of `planar.py` (an unrelated target for PEARL).

Same robot, scene (the reach scene) and observation layout (``layout.OBS_LAYOUT``, ``obj_pos`` / ``obj_vel`` zeros,
``goal`` the centre), but the objective is a *motion*, not a place: circle the centre counter-clockwise on a circle
of radius ``layout.ORBIT_RADIUS``. The dense ground-truth reward is

    reward = v_tan / MAX_SPEED - |d - R| / R

with d the tip's distance to the centre, v_tan the tip's velocity along the counter-clockwise tangent, and
R = ``layout.ORBIT_RADIUS``. Standing still anywhere earns at most 0 (on the circle) and -1 at the centre, where
reach's reward is highest; running round the circle at full speed earns about +1 per step. ``info["success"]`` is
True once the tip has swept a full counter-clockwise turn (2 pi, net) around the centre while within ``R / 2`` of the
circle.
Its scripted controller is ``scripted.orbit_action``; the registered id is ``mmalign/Orbit-v0`` (100 steps).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .layout import MAX_SPEED, ORBIT_RADIUS
from .planar import PlanarManipEnv


class OrbitEnv(PlanarManipEnv):
    """Run round the goal point counter-clockwise at radius ``layout.ORBIT_RADIUS`` (see the module docstring)."""

    task = "orbit"

    def _reset_task(self, ee_start: np.ndarray) -> np.ndarray:
        self._swept = 0.0
        self._angle: float | None = None
        return self._sample_away((-0.1, -0.08), (0.1, 0.1), ee_start, min_dist=0.12)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """One control step; the reward is the module docstring's, from the new state.

        Raises:
            ValueError: the action has a NaN or infinite entry.
        """
        self._apply(action)
        info = self._get_info()
        reward = info["tangential_speed"] / MAX_SPEED - abs(info["radius"] - ORBIT_RADIUS) / ORBIT_RADIUS
        return self._get_obs(), float(reward), False, False, info

    def _get_info(self) -> dict[str, Any]:
        ee, vel = self._site_state(self._ee_site)
        rel = ee - self.goal
        dist = float(np.linalg.norm(rel))
        tangent = np.array([-rel[1], rel[0]]) / max(dist, 1e-9)
        angle = float(np.arctan2(rel[1], rel[0]))
        on_circle = abs(dist - ORBIT_RADIUS) < ORBIT_RADIUS / 2
        if getattr(self, "_angle", None) is not None and on_circle:
            self._swept += (angle - self._angle + np.pi) % (2 * np.pi) - np.pi  # wrapped to [-pi, pi)
        self._angle = angle if on_circle else None
        return {"success": bool(self._swept >= 2 * np.pi), "radius": dist,
                "tangential_speed": float(vel @ tangent), "swept": float(self._swept)}


"""Reach behind a wall: the reach task with a wall across the table at y = 0, open only in a doorway |x| <
``layout.DOOR_HALF`` (5 cm) at its middle.

Same robot, observation layout, reward and success (``layout.SUCCESS_TOL["reach-wall"]``, 2.5 cm) as reach. A tip
below the wall reaches a goal above it only through the doorway, so heading straight for the goal fails unless the
straight line crosses the doorway. The goal is drawn anywhere on the table away from the wall; the stitching test
(``mmalign.robotics.stitching``) places the tip and the goal through ``reset(options=...)``. The registered id is
``mmalign/ReachWall-v0`` (100 steps).
"""

from __future__ import annotations

import numpy as np

from .planar import ReachEnv


class ReachWallEnv(ReachEnv):
    """Move the tip to the goal round a wall with a doorway (see the module docstring)."""

    task = "reach-wall"

    def _reset_task(self, ee_start: np.ndarray) -> np.ndarray:
        while True:
            goal = super()._reset_task(ee_start)
            if abs(goal[1]) > 0.04:  # not in the wall
                return goal

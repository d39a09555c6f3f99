"""Shared observation layout and scene geometry of the planar manipulation tasks.

Every task (reach, push, button press, drawer open) uses the same robot and the same flat
``float32`` observation of ``OBS_DIM`` entries, so that a reward model or a trajectory feature
learnt on one task reads another task's trajectories the same way (cross-task preference
transfer). The layout, with positions and velocities in metres and metres per second in the
table plane (x to the right, y away from the camera):

===========  =======  ==============================================================
slice        name     meaning
===========  =======  ==============================================================
``[0:2]``    ee_pos   end-effector (pusher tip) position
``[2:4]``    ee_vel   end-effector velocity
``[4:6]``    obj_pos  the object's interaction point: block centre, button face,
                      drawer-handle pocket; zeros for reach (no object)
``[6:8]``    obj_vel  velocity of that point; zeros for reach
``[8:10]``   goal     where ``obj_pos`` (the end effector for reach) must go
===========  =======  ==============================================================

This module imports nothing heavy: scripted controllers and reward models can use it without
MuJoCo.
"""

from __future__ import annotations

OBS_DIM = 10
"""Length of the observation vector."""

OBS_LAYOUT: dict[str, slice] = {
    "ee_pos": slice(0, 2),
    "ee_vel": slice(2, 4),
    "obj_pos": slice(4, 6),
    "obj_vel": slice(6, 8),
    "goal": slice(8, 10),
}
"""Named slices of the observation vector."""

ACTION_DIM = 2
"""Action: desired end-effector velocity (x, y) in [-1, 1], scaled by ``MAX_SPEED``."""

MAX_SPEED = 0.5
"""End-effector speed (m/s) that an action component of 1 commands."""

CONTROL_DT = 0.05
"""Seconds of simulation per env step (20 Hz control)."""

WORKSPACE = 0.25
"""The end effector moves in [-WORKSPACE, WORKSPACE] along x and y."""

EE_RADIUS = 0.015
"""Radius of the end effector's collision capsule."""

BLOCK_HALF = 0.025
"""Half side of the push task's block."""

WALL_Y = 0.2
"""y of the far wall's face (button task) and of the closed drawer's front face (drawer task)."""

POCKET_Y = 0.1575
"""y of the closed drawer's handle pocket, the drawer task's interaction point."""

BUTTON_TRAVEL = 0.03
"""How far the button can be pressed in (its goal is fully pressed)."""

DRAWER_TRAVEL = 0.14
"""How far the drawer can be pulled out."""

DRAWER_GOAL = 0.12
"""Opening (m) at which the drawer's goal lies; success within ``SUCCESS_TOL['drawer-open']``."""

DOOR_HALF = 0.05
"""Half width (m) of the doorway in the reach-wall task's wall (``reach_wall.py``): the tip passes |x| < DOOR_HALF."""

ORBIT_RADIUS = 0.08
"""Radius (m) of the circle the orbit task (``orbit.py``, not one of ``TASKS``) runs round its goal point."""

TASKS: tuple[str, ...] = ("reach", "push", "button-press", "drawer-open")
"""Task names of the planar family, in id order."""

SUCCESS_TOL: dict[str, float] = {"reach": 0.025, "push": 0.03, "button-press": 0.01, "drawer-open": 0.025,
                                 "reach-wall": 0.025}
"""Success when the distance between ``obj_pos`` (end effector for reach) and ``goal`` is below this."""

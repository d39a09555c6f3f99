"""MJCF models of the planar manipulation tasks, as Python strings.

One robot for all tasks: a gantry (a rail that slides along y) carrying a tool (slides along x
on the rail) whose tip, a vertical capsule, is the end effector. Two velocity servos drive the
two slides. The tip, the block, the button and the drawer all sit at one height, so contacts
happen in the table plane.

Collision bits: the tip has contype 1 and conaffinity 1; moving objects contype 2 and conaffinity 1
(they touch the tip, not each other); fixed furniture contype 4 and conaffinity 1 (it stops the
tip, and lets a drawer slide into its cabinet). The table and the gantry are visual only.

Each task adds a site named ``object`` (the interaction point in the observation) unless it has
no object, and every scene has a site named ``goal``.
"""

from __future__ import annotations

from .layout import (
    BLOCK_HALF,
    BUTTON_TRAVEL,
    DOOR_HALF,
    DRAWER_TRAVEL,
    EE_RADIUS,
    MAX_SPEED,
    POCKET_Y,
    WALL_Y,
    WORKSPACE,
)

_MOVING = 'contype="2" conaffinity="1"'
_FIXED = 'contype="4" conaffinity="1"'

_HEADER = """
<mujoco model="mmalign_planar_{task}">
  <compiler angle="radian"/>
  <option timestep="0.005" integrator="implicitfast"/>
  <visual>
    <global offwidth="640" offheight="640"/>
    <quality shadowsize="0"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5"/>
  </visual>
  <default>
    <geom contype="0" conaffinity="0" friction="0.4 0.005 0.0001"/>
    <site rgba="0 0 0 0"/>
  </default>
  <worldbody>
    <light pos="0 -0.2 1.0" dir="0 0.2 -1" directional="true" diffuse="0.4 0.4 0.4"/>
    <camera name="overview" pos="0 -0.52 0.86" xyaxes="1 0 0 0 0.866 0.5" fovy="42"/>
    <camera name="top" pos="0 0.02 0.9" xyaxes="1 0 0 0 1 0" fovy="40"/>
    <geom name="floor" type="plane" size="2 2 0.1" pos="0 0 -0.02" rgba="0.35 0.37 0.4 1"/>
    <geom name="table" type="box" size="0.32 0.32 0.01" pos="0 0.02 -0.01" rgba="0.78 0.74 0.66 1"/>
"""

_ROBOT = f"""
    <body name="gantry">
      <joint name="ee_y" type="slide" axis="0 1 0" limited="true" range="-{WORKSPACE} {WORKSPACE}"/>
      <geom name="rail" type="box" size="0.3 0.012 0.008" pos="0 0 0.1" rgba="0.25 0.25 0.3 1" mass="1.0"/>
      <body name="tool">
        <joint name="ee_x" type="slide" axis="1 0 0" limited="true" range="-{WORKSPACE} {WORKSPACE}"/>
        <geom name="tip" type="capsule" fromto="0 0 {EE_RADIUS} 0 0 0.045" size="{EE_RADIUS}"
              contype="1" conaffinity="1" rgba="0.9 0.2 0.1 1" mass="0.3"/>
        <geom name="rod" type="cylinder" fromto="0 0 0.06 0 0 0.1" size="0.01" rgba="0.6 0.15 0.1 1" mass="0.01"/>
        <site name="ee" pos="0 0 0.025"/>
      </body>
    </body>
"""

_FOOTER = f"""
    <site name="goal" type="cylinder" size="0.025 0.001" pos="0 0 0.001" rgba="0.1 0.75 0.25 0.7"/>
  </worldbody>
  <actuator>
    <velocity name="vx" joint="ee_x" kv="40" ctrllimited="true" ctrlrange="-{MAX_SPEED} {MAX_SPEED}"/>
    <velocity name="vy" joint="ee_y" kv="40" ctrllimited="true" ctrlrange="-{MAX_SPEED} {MAX_SPEED}"/>
  </actuator>
</mujoco>
"""

_BLOCK = f"""
    <body name="block" pos="0 0 {BLOCK_HALF}">
      <joint name="block_x" type="slide" axis="1 0 0" limited="true" range="-0.24 0.24" damping="5"/>
      <joint name="block_y" type="slide" axis="0 1 0" limited="true" range="-0.24 0.24" damping="5"/>
      <geom name="block" type="box" size="{BLOCK_HALF} {BLOCK_HALF} {BLOCK_HALF}" mass="0.2" {_MOVING}
            rgba="0.2 0.4 0.85 1"/>
      <site name="object"/>
    </body>
"""

# The wall's front face is at y = WALL_Y = 0.2; the button's cap protrudes BUTTON_TRAVEL in front of it.
_BUTTON = f"""
    <geom name="wall" type="box" size="0.3 0.03 0.04" pos="0 0.23 0.04" {_FIXED} rgba="0.55 0.5 0.45 1"/>
    <body name="button" pos="0 {WALL_Y - BUTTON_TRAVEL / 2} 0.025">
      <joint name="button" type="slide" axis="0 1 0" limited="true" range="0 {BUTTON_TRAVEL}"
             stiffness="20" springref="0" damping="0.5"/>
      <geom name="button" type="box" size="0.025 {BUTTON_TRAVEL / 2} 0.015" mass="0.05" {_MOVING}
            rgba="0.85 0.15 0.15 1"/>
      <site name="object" pos="0 -{BUTTON_TRAVEL / 2} 0"/>
    </body>
"""

# Closed, the drawer front spans y in [0.18, 0.2]. The handle is an L: a post from the front and a
# bar along +x, leaving a pocket (x in [-0.029, 0.035], y in [0.135, 0.18], centre POCKET_Y) open to the right; the
# end effector enters it from the right and pulls the bar towards -y.
_DRAWER = f"""
    <geom name="cabinet" type="box" size="0.3 0.08 0.04" pos="0 0.28 0.04" {_FIXED} rgba="0.55 0.5 0.45 1"/>
    <body name="drawer">
      <joint name="drawer" type="slide" axis="0 -1 0" limited="true" range="0 {DRAWER_TRAVEL}" damping="4"/>
      <geom name="front" type="box" size="0.07 0.01 0.035" pos="0 0.19 0.035" mass="0.3" {_MOVING}
            rgba="0.45 0.3 0.2 1"/>
      <geom name="tray" type="box" size="0.065 0.075 0.025" pos="0 0.275 0.025" mass="0.2" rgba="0.6 0.45 0.3 1"/>
      <geom name="post" type="box" size="0.006 0.0225 0.01" pos="-0.035 0.1575 0.025" {_MOVING}
            rgba="0.15 0.15 0.15 1"/>
      <geom name="bar" type="box" size="0.038 0.006 0.01" pos="-0.003 0.129 0.025" {_MOVING}
            rgba="0.15 0.15 0.15 1"/>
      <site name="object" pos="0 {POCKET_Y} 0.025"/>
    </body>
"""

# Reach with a wall across the table at y = 0, open only in a doorway |x| < DOOR_HALF (``reach_wall.py``).
_DOORWAY_WALL = f"""
    <geom name="wall_left" type="box" size="{(WORKSPACE + EE_RADIUS - DOOR_HALF) / 2 + 0.01} 0.01 0.03"
          pos="-{(WORKSPACE + EE_RADIUS + DOOR_HALF) / 2 + 0.01} 0 0.03" {_FIXED} rgba="0.55 0.5 0.45 1"/>
    <geom name="wall_right" type="box" size="{(WORKSPACE + EE_RADIUS - DOOR_HALF) / 2 + 0.01} 0.01 0.03"
          pos="{(WORKSPACE + EE_RADIUS + DOOR_HALF) / 2 + 0.01} 0 0.03" {_FIXED} rgba="0.55 0.5 0.45 1"/>
"""

_TASK_BODIES = {"reach": "", "push": _BLOCK, "button-press": _BUTTON, "drawer-open": _DRAWER, "orbit": "",
                "reach-wall": _DOORWAY_WALL}


def scene_xml(task: str) -> str:
    """The MJCF model of one task.

    Args:
        task: One of ``layout.TASKS``, ``"orbit"`` (the reach scene; ``orbit.OrbitEnv``) or ``"reach-wall"`` (reach
            with a doorway wall; ``reach_wall.ReachWallEnv``).

    Returns:
        The model as an XML string, for ``mujoco.MjModel.from_xml_string``.
    """
    if task not in _TASK_BODIES:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(_TASK_BODIES)}")
    return _HEADER.format(task=task) + _ROBOT + _TASK_BODIES[task] + _FOOTER

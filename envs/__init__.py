"""mmalign.envs: MuJoCo manipulation tasks for preference-based RL, registered with gymnasium.

Importing this package registers the ids below; MuJoCo (and Meta-World) load only when an env
is made. One robot, four tasks, one observation layout (``layout.OBS_LAYOUT``)::

    import gymnasium as gym
    import mmalign.envs
    from mmalign.envs import scripted_policy

    env = gym.make("mmalign/Push-v0", render_mode="rgb_array")      # 100 steps per episode
    policy = scripted_policy(env.unwrapped.task)
    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(policy(obs))  # info["success"]: bool
    frame = env.render()                                             # (64, 64, 3) uint8

A fifth task with a reward of another kind, ``mmalign/Orbit-v0`` (run round the goal point; ``orbit.py``), and reach
behind a wall with one doorway, ``mmalign/ReachWall-v0`` (``reach_wall.py``; the stitching test of
``mmalign.robotics.stitching``). The planar envs' ``reset(options={"ee_start": ..., "goal": ...})`` places the tip
(and reach's goal).

Meta-World v3 tasks behind the same interface (``pip install metaworld``)::

    env = gym.make("mmalign/MetaWorld-v3", task="drawer-open-v3")    # any v3 task; 500 steps
    env = gym.make("mmalign/MetaWorldDrawerOpen-v3")                 # the four that mirror ours

``seeding.SeededResets`` seeds every reset of one env by (run seed, env index, reset count), so a vector env's
autoresets replay the same episodes however the envs are grouped (``mmalign.robotics.env_runner``).

Every env here raises a ``ValueError`` naming the env and the entries when an action has a NaN or an
infinite entry (MuJoCo would silently zero the controls, Meta-World would return its last stable observation).

Rendering is offscreen; the backend follows ``MUJOCO_GL`` (``egl`` on a GPU, ``osmesa`` on a CPU),
which defaults to ``osmesa`` on a Linux machine without a display.
"""

from __future__ import annotations

import gymnasium as gym

from ._gl import set_default_gl_backend
from .layout import ACTION_DIM, OBS_DIM, OBS_LAYOUT, SUCCESS_TOL, TASKS
from .scripted import ScriptedPolicy, scripted_action, scripted_policy

set_default_gl_backend()  # before the envs import mujoco, which reads MUJOCO_GL once

MAX_EPISODE_STEPS = 100
"""Episode length of the planar tasks (5 s at 20 Hz)."""

METAWORLD_MAX_EPISODE_STEPS = 500
"""Episode length of the Meta-World tasks (their own ``max_path_length``)."""

ENV_IDS: dict[str, str] = {
    "reach": "mmalign/Reach-v0",
    "push": "mmalign/Push-v0",
    "button-press": "mmalign/ButtonPress-v0",
    "drawer-open": "mmalign/DrawerOpen-v0",
}
"""Registered id of each planar task."""

_CLASSES = {"reach": "ReachEnv", "push": "PushEnv", "button-press": "ButtonPressEnv", "drawer-open": "DrawerOpenEnv"}

REACH_WALL_ID = "mmalign/ReachWall-v0"
"""Reach behind a wall with one doorway (``reach_wall.py``): the stitching test of ``mmalign.robotics.stitching``."""

ORBIT_ID = "mmalign/Orbit-v0"
"""The orbit task (``orbit.py``): same robot and layout, a reward of another kind (circle the goal point)."""

METAWORLD_IDS: dict[str, str] = {
    "reach-v3": "mmalign/MetaWorldReach-v3",
    "push-v3": "mmalign/MetaWorldPush-v3",
    "button-press-v3": "mmalign/MetaWorldButtonPress-v3",
    "drawer-open-v3": "mmalign/MetaWorldDrawerOpen-v3",
}
"""Registered ids of the Meta-World tasks that mirror the planar family; ``mmalign/MetaWorld-v3``
takes any v3 task as ``task=...``."""


def _register(env_id: str, entry_point: str, max_episode_steps: int, **kwargs: str) -> None:
    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_episode_steps, kwargs=kwargs)


for _task, _env_id in ENV_IDS.items():
    _register(_env_id, f"mmalign.envs.planar:{_CLASSES[_task]}", MAX_EPISODE_STEPS)
_register(ORBIT_ID, "mmalign.envs.orbit:OrbitEnv", MAX_EPISODE_STEPS)
_register(REACH_WALL_ID, "mmalign.envs.reach_wall:ReachWallEnv", MAX_EPISODE_STEPS)
_MW_ENTRY = "mmalign.envs.metaworld_env:MetaWorldEnv"
_register("mmalign/MetaWorld-v3", _MW_ENTRY, METAWORLD_MAX_EPISODE_STEPS)
for _task, _env_id in METAWORLD_IDS.items():
    _register(_env_id, _MW_ENTRY, METAWORLD_MAX_EPISODE_STEPS, task=_task)

__all__ = [
    "ACTION_DIM",
    "ENV_IDS",
    "MAX_EPISODE_STEPS",
    "METAWORLD_IDS",
    "METAWORLD_MAX_EPISODE_STEPS",
    "OBS_DIM",
    "OBS_LAYOUT",
    "ORBIT_ID",
    "REACH_WALL_ID",
    "SUCCESS_TOL",
    "TASKS",
    "ScriptedPolicy",
    "scripted_action",
    "scripted_policy",
]

"""Meta-World v3 tasks behind the same interface as the planar tasks.

``MetaWorldEnv`` wraps one Meta-World v3 task (names end in ``-v3``, e.g. ``"drawer-open-v3"``):

- the goal is observable and re-sampled at every reset from the env's generator, so that
  ``reset(seed=s)`` followed by the same actions reproduces an episode bit for bit (Meta-World's
  own ``reset`` ignores its ``seed`` argument; this wrapper reseeds the task's generator);
- observations are ``float32`` (39,) in an unbounded Box (Meta-World's own bounds are tighter
  than its observations);
- ``info["success"]`` is a bool; the reward is Meta-World's dense v2 reward (0 to 10);
- episodes last at most Meta-World's ``max_path_length`` (500) steps: a longer ``max_episode_steps``
  makes Meta-World raise at step 501;
- ``render()`` rotates the corner cameras' frames by 180 degrees: their MJCF frames point the image's
  up vector at the floor and its right vector to the viewer's left (a camera turned about its view
  axis), so a mere vertical flip would give a mirror image.

Meta-World is optional: ``pip install metaworld``. Version 3.1.1 pins ``mujoco==3.3.0``; with another
MuJoCo its envs fail to build, and constructing a ``MetaWorldEnv`` raises an ``ImportError`` that says so.
"""

from __future__ import annotations

import atexit
import re
from collections.abc import Callable
from importlib import metadata
from types import ModuleType
from typing import Any

import gymnasium as gym
import numpy as np

from ._gl import close_at_exit, set_default_gl_backend
from .actions import finite_action

UPSIDE_DOWN_CAMERAS = frozenset({"corner", "corner2", "corner3", "corner4"})
"""Meta-World cameras whose frames come out rotated by 180 degrees."""


def import_metaworld() -> ModuleType:
    """Imports ``metaworld``, checking that the installed MuJoCo is the one it pins.

    Returns:
        The ``metaworld`` module.

    Raises:
        ImportError: metaworld is missing, or it pins a MuJoCo version other than the installed one.
    """
    set_default_gl_backend()
    try:
        import metaworld
    except ImportError as err:
        raise ImportError("Meta-World tasks need the metaworld package: pip install metaworld") from err
    pins = [re.match(r"mujoco\s*==\s*([\w.]+)", req) for req in metadata.requires("metaworld") or []]
    pinned = next((pin.group(1) for pin in pins if pin), None)
    installed = metadata.version("mujoco")
    if pinned is not None and pinned != installed:
        raise ImportError(
            f"metaworld {metadata.version('metaworld')} needs mujoco=={pinned} but mujoco {installed} is installed "
            f"(its envs fail to build): pip install 'mujoco=={pinned}' or a metaworld release for mujoco {installed}"
        )
    return metaworld


class MetaWorldEnv(gym.Env[np.ndarray, np.ndarray]):
    """One Meta-World v3 task with an observable goal that is re-sampled at every reset.

    Args:
        task: Meta-World v3 task name, e.g. ``"push-v3"``.
        render_mode: None or ``"rgb_array"``.
        width: Rendered image width in pixels.
        height: Rendered image height in pixels.
        camera: Meta-World camera name (``"corner2"``, ``"topview"``, ``"behindGripper"``, ...).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str = "reach-v3",
        render_mode: str | None = None,
        width: int = 64,
        height: int = 64,
        camera: str = "corner2",
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        import_metaworld()
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        if task not in ALL_V3_ENVIRONMENTS:
            raise ValueError(f"unknown Meta-World task {task!r}; v3 tasks: {sorted(ALL_V3_ENVIRONMENTS)}")
        env = ALL_V3_ENVIRONMENTS[task](render_mode=render_mode, camera_name=camera, width=width, height=height)
        # As Meta-World's own goal-observable classes do, but sampling a fresh goal from env.np_random per reset.
        env._partially_observable = False
        env.__dict__.pop("sawyer_observation_space", None)  # cached with zero goal bounds, which clip the goal
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env._set_task_called = True
        self.mw_env, self.task, self.camera, self.render_mode = env, task, camera, render_mode
        self._exit_hook: Callable[[], None] | None = None
        self.action_space = env.action_space
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, env.observation_space.shape, np.float32)
        self.max_path_length = env.max_path_length

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Resets the task; a ``seed`` reseeds the generator of hand, object and goal positions."""
        super().reset(seed=seed)
        if seed is not None:
            self.mw_env.seed(seed)
        obs, info = self.mw_env.reset()
        return obs.astype(np.float32), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """One Meta-World step; ``info["success"]`` as a bool.

        Raises:
            ValueError: the action has a NaN or infinite entry (Meta-World would return its last stable
                observation with reward 0).
        """
        obs, reward, terminated, truncated, info = self.mw_env.step(finite_action(self, action).astype(np.float32))
        info = {**info, "success": bool(info["success"])}
        return obs.astype(np.float32), float(reward), bool(terminated), bool(truncated), info

    def render(self) -> np.ndarray | None:
        """An RGB frame (height, width, 3) uint8, upright; None without ``render_mode``."""
        frame = self.mw_env.render()
        if self._exit_hook is None and frame is not None:  # Meta-World's renderer exists now
            self._exit_hook = close_at_exit(self.mw_env)
        if frame is None or self.camera not in UPSIDE_DOWN_CAMERAS:
            return frame
        return np.ascontiguousarray(frame[::-1, ::-1])

    def close(self) -> None:
        """Closes Meta-World's renderer."""
        if self._exit_hook is not None:
            atexit.unregister(self._exit_hook)
            self._exit_hook = None
        self.mw_env.close()


class MetaWorldScriptedPolicy:
    """Meta-World's own scripted policy for a task, called like ``scripted.ScriptedPolicy``.

    Args:
        task: Meta-World v3 task name.
        noise_std: Standard deviation of Gaussian noise added to each action component before clipping.
        seed: Seed of the noise generator.
    """

    def __init__(self, task: str, noise_std: float = 0.0, seed: int | None = None) -> None:
        import_metaworld()
        from metaworld.policies import ENV_POLICY_MAP

        if task not in ENV_POLICY_MAP:
            raise ValueError(f"no Meta-World scripted policy for {task!r}")
        self.task, self.noise_std, self.policy = task, noise_std, ENV_POLICY_MAP[task]()
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Action (4,) float32 for one observation."""
        action = np.asarray(self.policy.get_action(np.asarray(obs, dtype=np.float64)), dtype=np.float64)
        if self.noise_std > 0:
            action = action + self.rng.normal(0.0, self.noise_std, size=action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

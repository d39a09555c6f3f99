"""The check every env here runs on an action before it reaches the simulator."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def finite_action(env: gym.Env, action: np.ndarray) -> np.ndarray:
    """The action as a float64 array, after checking that every entry is finite.

    MuJoCo replaces a non-finite control by zero (with one C warning) and Meta-World returns its last stable
    observation with reward 0, so a diverged policy would otherwise look like one that stands still.

    Args:
        env: The env the action is for (named in the error).
        action: (action_dim,) the action.

    Returns:
        (action_dim,) float64 copy of the action.

    Raises:
        ValueError: an entry is NaN or infinite; the message names the env, the entries and their values.
    """
    action = np.array(action, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(action))
    if bad.size:
        name = type(env).__name__ + (f" ({env.spec.id})" if env.spec is not None else "")
        raise ValueError(
            f"{name}: the action has non-finite entries at index {bad.tolist()} "
            f"(values {action.ravel()[bad].tolist()}, action {action.tolist()}); actions must be finite, "
            "in [-1, 1]: a NaN usually means the policy's parameters or inputs diverged."
        )
    return action

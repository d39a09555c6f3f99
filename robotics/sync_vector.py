"""A leaner `gym.vector.SyncVectorEnv` for envs with Box observations and actions (the robot tasks' envs).

gymnasium's synchronous vector env spends a fifth of a small MuJoCo env's stepping time around the envs: the actions
split through the generic `iterate`, the observations joined through `concatenate` and then deep-copied, and each
info merged key by key and env by env (`VectorEnv._add_info` allocates two arrays per key per env). `BoxSyncVectorEnv`
steps the same envs the same way (NEXT_STEP autoreset) and returns the same arrays and infos, with plain numpy: rows
of the action array, one `np.stack`, and each info key gathered into one array. Infos it cannot merge that way (keys
missing in some envs, nested dicts, arrays, values of different types) go through gymnasium's merge.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

SCALARS = (bool, int, float)
"""Info values gymnasium batches into an array of their own type (with numpy scalars)."""


class BoxSyncVectorEnv(gym.vector.SyncVectorEnv):
    """`gym.vector.SyncVectorEnv` whose `step` is leaner for Box spaces under NEXT_STEP autoreset; other spaces and
    modes step through gymnasium's own `step`."""

    def __init__(self, env_fns, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP):
        super().__init__(env_fns, autoreset_mode=autoreset_mode)
        self.lean = (self.autoreset_mode == gym.vector.AutoresetMode.NEXT_STEP and self.copy
                     and isinstance(self.single_observation_space, gym.spaces.Box)
                     and isinstance(self.single_action_space, gym.spaces.Box))

    def step(self, actions: np.ndarray):
        """One step of every env (the reset of those whose episode ended on the previous step)."""
        if not self.lean:
            return super().step(actions)
        infos = []
        for i, env in enumerate(self.envs):
            if self._autoreset_envs[i]:
                self._env_obs[i], info = env.reset()
                self._rewards[i], self._terminations[i], self._truncations[i] = 0.0, False, False
            else:
                self._env_obs[i], self._rewards[i], self._terminations[i], self._truncations[i], info = env.step(
                    actions[i])
            infos.append(info)
        self._observations = np.stack(self._env_obs, out=self._observations)
        self._autoreset_envs = np.logical_or(self._terminations, self._truncations)
        return (self._observations.copy(), self._rewards.copy(), self._terminations.copy(),
                self._truncations.copy(), self._merge(infos))

    def _merge(self, infos: list[dict[str, Any]]) -> dict[str, Any]:
        """The vector info of the envs' `infos`, as gymnasium's `_add_info` builds it: each key's values in an array
        of the first value's type, and `_key`, the mask of the envs that have it."""
        keys = infos[0].keys()
        same = all(info.keys() == keys for info in infos)
        if not same or not all(_scalar(v) and all(type(info[k]) is type(v) for info in infos)
                               for k, v in infos[0].items()):
            out: dict[str, Any] = {}
            for i, info in enumerate(infos):
                out = self._add_info(out, info, i)
            return out
        out = {}
        for k, v in infos[0].items():
            out[k] = np.array([info[k] for info in infos], dtype=type(v))
            out[f"_{k}"] = np.ones(self.num_envs, dtype=np.bool_)
        return out


def _scalar(value: Any) -> bool:
    return type(value) in SCALARS or isinstance(value, np.number)

"""Offline trajectory datasets of mixed quality for the planar tasks, on disk as .npz, for PEARL-style transfer.

Format (one ``.npz`` per task, written by `save_dataset`, read by `load_dataset`):

============  ==================  ===========================================================================
array         shape, dtype        meaning
============  ==================  ===========================================================================
observations  (E, L, 10) float32  shared layout of `mmalign.envs.layout`, padded with zeros after ``lengths``
actions       (E, L, 2) float32   actions sent to the env
rewards       (E, L) float32      ground-truth env reward: for scripted teachers and evaluation only, never for
                                  the zero-shot learner
success       (E, L) bool         ``info["success"]`` per step
lengths       (E,) int64          episode boundaries: episode e is steps [0, lengths[e])
policy        (E,) int64          index into ``policies`` of the behaviour policy that collected episode e
meta          () str (JSON)       {"format": 1, "task", "env_id", "policies": [names], "seed"}
============  ==================  ===========================================================================

Behaviour policies (`POLICIES`): the scripted controller of `mmalign.envs.scripted` with Gaussian action noise of
std 0.1 / 0.5 / 1.0 ("expert", "medium", "poor"), and uniform random actions ("random").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
POLICIES: dict[str, float | None] = {"expert": 0.1, "medium": 0.5, "poor": 1.0, "random": None}
"""Behaviour policy name -> scripted-controller noise std (None = uniform random actions)."""


@dataclass
class OfflineDataset:
    """Episodes of one task (see the module docstring for the fields' shapes)."""

    task: str
    env_id: str
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    success: np.ndarray
    lengths: np.ndarray
    policy: np.ndarray
    policies: list[str]
    seed: int = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def episode_success(self) -> np.ndarray:
        """(E,) bool: whether the episode succeeded at any step."""
        return self.success.any(1)

    def sample_segments(self, n: int, length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """`n` segments of `length` steps: uniform episode, uniform start inside it.

        Returns:
            dict with obs (n, length, 10), actions (n, length, 2), rewards (n, length) (ground truth, for
            evaluation), episode (n,), start (n,).
        """
        ep = rng.integers(0, len(self), n)
        start = rng.integers(0, np.maximum(self.lengths[ep] - length, 0) + 1)
        idx = start[:, None] + np.arange(length)  # (n, length)
        take = lambda x: x[ep[:, None], idx]  # noqa: E731
        return {"obs": take(self.observations), "actions": take(self.actions), "rewards": take(self.rewards),
                "episode": ep, "start": start}


def collect_dataset(env_id: str, episodes_per_policy: int = 25, policies: tuple[str, ...] = tuple(POLICIES),
                    seed: int = 0) -> OfflineDataset:
    """Roll out each behaviour policy for `episodes_per_policy` episodes of a registered planar task.

    Args:
        env_id: e.g. "mmalign/Push-v0".
        episodes_per_policy: episodes per behaviour policy.
        policies: names from `POLICIES`.
        seed: reset seeds are seed, seed + 1, ...; noise seeds derive from it.

    Returns:
        The dataset (about 0.05 s per 100-step episode on one CPU core).
    """
    import gymnasium as gym
    import mmalign.envs  # noqa: F401  (registers the ids)
    from mmalign.envs.scripted import scripted_policy

    env = gym.make(env_id)
    task = env.unwrapped.task
    rng = np.random.default_rng(seed)
    eps: list[dict[str, np.ndarray]] = []
    pid: list[int] = []
    for p, name in enumerate(policies):
        noise = POLICIES[name]
        act = scripted_policy(task, noise, seed + 1000 * p) if noise is not None else None
        for _ in range(episodes_per_policy):
            eps.append(_rollout(env, act, rng, seed + len(eps)))
            pid.append(p)
    env.close()
    return OfflineDataset(task, env_id, *_pad(eps), np.array(pid), list(policies), seed)


def _rollout(env, policy, rng: np.random.Generator, reset_seed: int) -> dict[str, np.ndarray]:
    obs, _ = env.reset(seed=reset_seed)
    out: dict[str, list] = {"observations": [], "actions": [], "rewards": [], "success": []}
    done = False
    while not done:
        a = policy(obs) if policy is not None else rng.uniform(-1, 1, 2).astype(np.float32)
        nxt, r, term, trunc, info = env.step(a)
        for k, v in zip(out, (obs, a, r, bool(info["success"]))):
            out[k].append(v)
        obs, done = nxt, term or trunc
    return {k: np.asarray(v) for k, v in out.items()}


def _pad(eps: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, ...]:
    lengths = np.array([len(e["rewards"]) for e in eps], dtype=np.int64)
    lmax = int(lengths.max())
    spec = {"observations": np.float32, "actions": np.float32, "rewards": np.float32, "success": bool}
    arrays = []
    for k, dt in spec.items():
        a = np.zeros((len(eps), lmax, *eps[0][k].shape[1:]), dtype=dt)
        for i, e in enumerate(eps):
            a[i, :lengths[i]] = e[k]
        arrays.append(a)
    return (*arrays, lengths)


def save_dataset(ds: OfflineDataset, path: str | Path) -> Path:
    """Write `ds` to a compressed .npz in the documented format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT_VERSION, "task": ds.task, "env_id": ds.env_id, "policies": ds.policies, "seed": ds.seed}
    np.savez_compressed(path, observations=ds.observations, actions=ds.actions, rewards=ds.rewards,
                        success=ds.success, lengths=ds.lengths, policy=ds.policy, meta=np.array(json.dumps(meta)))
    return path


def load_dataset(path: str | Path) -> OfflineDataset:
    """Read a dataset written by `save_dataset`; a missing array or another format version is an error."""
    data = np.load(Path(path))
    need = {"observations", "actions", "rewards", "success", "lengths", "policy", "meta"}
    if missing := need - set(data.files):
        raise ValueError(f"{path}: missing arrays {sorted(missing)}; expected {sorted(need)}.")
    meta = json.loads(str(data["meta"]))
    if meta.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: dataset format {meta.get('format')}, this loader reads {FORMAT_VERSION}.")
    return OfflineDataset(meta["task"], meta["env_id"], data["observations"], data["actions"], data["rewards"],
                          data["success"], data["lengths"], data["policy"], meta["policies"], meta["seed"])

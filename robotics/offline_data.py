"""Offline trajectory datasets of mixed quality, on disk as .npz, for PEARL-style transfer.

Tasks: the planar family (``"reach"``, ... or ``"mmalign/Reach-v0"``), the orbit task (``"orbit"``) and any
Meta-World v3 task (``"button-press-v3"``: Meta-World's own scripted policies, observations (39,), actions (4,)).

Format (one ``.npz`` per task, written by `save_dataset`, read by `load_dataset`):

============  ==================  ===========================================================================
array         shape, dtype        meaning
============  ==================  ===========================================================================
observations  (E, L, D) float32   the env's observations (planar: D = 10, layout of `mmalign.envs.layout`;
                                  Meta-World: D = 39), padded with zeros after ``lengths``
actions       (E, L, A) float32   actions sent to the env (planar: A = 2; Meta-World: A = 4)
rewards       (E, L) float32      ground-truth env reward: for scripted teachers and evaluation only, never for
                                  the zero-shot learner
success       (E, L) bool         ``info["success"]`` per step
lengths       (E,) int64          episode boundaries: episode e is steps [0, lengths[e])
policy        (E,) int64          index into ``policies`` of the behaviour policy that collected episode e
meta          () str (JSON)       {"format": 1, "task", "env_id", "policies": [names], "seed", "made_with"}
============  ==================  ===========================================================================

``made_with`` (`dataset_record`) is the request that collected the dataset: task, episodes per policy, policies,
seed and episode length. A cached dataset is reused only for the same request (`check_dataset`); files written before
the record existed have none and are refused for reuse.

Behaviour policies (`POLICIES`): the scripted controller of `mmalign.envs.scripted` (Meta-World's
``metaworld.policies`` for its tasks) with Gaussian action noise of std 0.1 / 0.5 / 1.0 ("expert", "medium", "poor"),
and uniform random actions ("random").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmalign.cache import CacheError, differences, made_with

FORMAT_VERSION = 1
POLICIES: dict[str, float | None] = {"expert": 0.1, "medium": 0.5, "poor": 1.0, "random": None}
"""Behaviour policy name -> scripted-controller noise std (None = uniform random actions)."""

PLANAR_IDS = {"reach": "mmalign/Reach-v0", "push": "mmalign/Push-v0", "button-press": "mmalign/ButtonPress-v0",
              "drawer-open": "mmalign/DrawerOpen-v0", "orbit": "mmalign/Orbit-v0"}
"""Task name -> registered id of the planar tasks (the four of one reward form, and orbit)."""


def make_env(task: str, max_episode_steps: int | None = None):
    """A gymnasium env for a task name, a registered id, or a Meta-World v3 task.

    Args:
        task: a key of `PLANAR_IDS`, an id such as ``"mmalign/Push-v0"``, or a Meta-World name ending in ``-v3``.
        max_episode_steps: episode length; None = the id's own (planar 100, Meta-World 500).

    Returns:
        The env (its ``unwrapped.task`` names the scripted controller).
    """
    import gymnasium as gym

    import mmalign.envs  # noqa: F401  (registers the ids)

    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    if task.endswith("-v3"):
        return gym.make("mmalign/MetaWorld-v3", task=task, **kwargs)
    env_id = PLANAR_IDS.get(task, task)
    if env_id not in gym.registry:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(PLANAR_IDS)}, a registered mmalign/ id, or a "
                         "Meta-World v3 task such as 'button-press-v3'.")
    return gym.make(env_id, **kwargs)


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
    made_with: dict | None = None
    """The request that collected it (`dataset_record`); None for a file written before the record existed."""
    path: str | None = None
    """The file it was read from (`load_dataset`), for messages."""

    def __len__(self) -> int:
        return len(self.lengths)

    def episode_success(self) -> np.ndarray:
        """(E,) bool: whether the episode succeeded at any step."""
        return self.success.any(1)

    def sample_segments(self, n: int, length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """`n` segments of `length` steps: uniform episode, uniform start inside it.

        Returns:
            dict with obs (n, length, D), actions (n, length, A), rewards (n, length) (ground truth, for
            evaluation), episode (n,), start (n,).
        """
        if length > int(self.lengths.min()):
            raise ValueError(f"segment length {length} exceeds the shortest episode ({int(self.lengths.min())} "
                             "steps); use shorter segments or longer episodes.")
        ep = rng.integers(0, len(self), n)
        start = rng.integers(0, np.maximum(self.lengths[ep] - length, 0) + 1)
        idx = start[:, None] + np.arange(length)  # (n, length)
        take = lambda x: x[ep[:, None], idx]  # noqa: E731
        return {"obs": take(self.observations), "actions": take(self.actions), "rewards": take(self.rewards),
                "episode": ep, "start": start}


def dataset_record(task: str, episodes_per_policy: int, policies: tuple[str, ...] = tuple(POLICIES), seed: int = 0,
                   max_episode_steps: int | None = None) -> dict:
    """The "made with" record of a dataset request (the arguments of `collect_dataset`), with the task as its
    registered id and the episode length resolved (None = the id's own), so equal requests give equal records."""
    import gymnasium as gym

    import mmalign.envs  # noqa: F401  (registers the ids)

    env_id = "mmalign/MetaWorld-v3" if task.endswith("-v3") else PLANAR_IDS.get(task, task)
    steps = max_episode_steps if max_episode_steps is not None else gym.spec(env_id).max_episode_steps
    return made_with(task=PLANAR_IDS.get(task, task), episodes_per_policy=episodes_per_policy, policies=policies,
                     seed=seed, max_episode_steps=steps)


def check_dataset(ds: OfflineDataset, record: dict) -> OfflineDataset:
    """`ds` if it was collected by the request `record` (`dataset_record`).

    Raises:
        CacheError: it was collected otherwise (naming the fields that differ), or it has no record.
    """
    where = f"the dataset of {ds.task!r}" + (f" in {ds.path}" if ds.path else "")
    fix = ("delete it to collect it again with these settings, or keep datasets of other settings in another folder "
           "(data_dir=).")
    if ds.made_with is None:
        raise CacheError(f"{where} has no record of the settings that collected it, so it may not match this "
                         f"run's ({record}): {fix}")
    if diff := differences(ds.made_with, record):
        raise CacheError(f"{where} was collected with other settings than this run asks ({'; '.join(diff)}): {fix}")
    return ds


def collect_dataset(env_id: str, episodes_per_policy: int = 25, policies: tuple[str, ...] = tuple(POLICIES),
                    seed: int = 0, max_episode_steps: int | None = None) -> OfflineDataset:
    """Roll out each behaviour policy for `episodes_per_policy` episodes of a task.

    Args:
        env_id: a registered id ("mmalign/Push-v0"), a planar task name ("push", "orbit") or a Meta-World v3 task
            ("button-press-v3"); see `make_env`.
        episodes_per_policy: episodes per behaviour policy.
        policies: names from `POLICIES`.
        seed: reset seeds are seed, seed + 1, ...; noise seeds derive from it.
        max_episode_steps: episode length; None = the env's own (planar 100, Meta-World 500).

    Returns:
        The dataset (about 0.05 s per 100-step planar episode, ~0.1 s per 100 Meta-World steps, one CPU core).
    """
    from mmalign.envs.scripted import scripted_policy

    if unknown := set(policies) - set(POLICIES):
        raise ValueError(f"unknown behaviour policies {sorted(unknown)}; choose from {list(POLICIES)}.")
    env = make_env(env_id, max_episode_steps)
    record = dataset_record(env_id, episodes_per_policy, policies, seed, max_episode_steps)
    env_id = env.spec.id if env.spec is not None else env_id
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
    return OfflineDataset(task, env_id, *_pad(eps), np.array(pid), list(policies), seed, record)


def _rollout(env, policy, rng: np.random.Generator, reset_seed: int) -> dict[str, np.ndarray]:
    obs, _ = env.reset(seed=reset_seed)
    out: dict[str, list] = {"observations": [], "actions": [], "rewards": [], "success": []}
    done = False
    while not done:
        a = policy(obs) if policy is not None else rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
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
    meta = {"format": FORMAT_VERSION, "task": ds.task, "env_id": ds.env_id, "policies": ds.policies, "seed": ds.seed,
            "made_with": ds.made_with}
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
                          data["success"], data["lengths"], data["policy"], meta["policies"], meta["seed"],
                          meta.get("made_with"), str(path))

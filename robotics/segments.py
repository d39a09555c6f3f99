"""Trajectory segments for preference queries: sampled from finished episodes (online) or episodes on disk.

A segment is H consecutive steps of one episode: observations, actions and the ground-truth env reward (read
only by scripted teachers and for evaluation). B-Pref's default H is 50 (Lee et al. 2021, `segment: 50`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmalign.robotics.sampler import Episode


@dataclass
class Segments:
    """N segments of H steps. obs (N, H, obs_dim), actions (N, H, act_dim), rewards (N, H) ground truth."""

    obs: Tensor
    actions: Tensor
    rewards: Tensor

    def __len__(self) -> int:
        return self.obs.shape[0]

    def __getitem__(self, idx) -> Segments:
        idx = torch.as_tensor(idx, dtype=torch.long) if not isinstance(idx, slice) else idx
        return Segments(self.obs[idx], self.actions[idx], self.rewards[idx])

    @property
    def length(self) -> int:
        return self.obs.shape[1]

    def features(self) -> Tensor:
        """(N, H * (obs_dim + act_dim)) flattened steps, the k-center distance space of B-Pref."""
        return torch.cat([self.obs, self.actions], -1).flatten(1)

    @staticmethod
    def cat(parts: Sequence[Segments]) -> Segments:
        return Segments(*(torch.cat([getattr(p, k) for p in parts]) for k in ("obs", "actions", "rewards")))


class EpisodeStore:
    """A bounded FIFO of finished episodes that segments are sampled from (B-Pref keeps `max_size` episodes).

    Args:
        max_episodes: how many of the newest episodes to keep; 0 = all.
    """

    def __init__(self, max_episodes: int = 0):
        self.max_episodes = max_episodes
        self.episodes: list[Episode] = []

    def __len__(self) -> int:
        return len(self.episodes)

    def add(self, episode: Episode) -> None:
        self.episodes.append(episode)
        if self.max_episodes and len(self.episodes) > self.max_episodes:
            self.episodes.pop(0)

    def sample(self, n: int, length: int, generator: np.random.Generator) -> Segments:
        """`n` segments of `length` steps: a uniform episode among those long enough, then a uniform start."""
        return sample_segments(self.episodes, n, length, generator)

    def state_dict(self) -> dict[str, Tensor]:
        """The episodes as tensors: every field's steps concatenated, plus each episode's length."""
        eps = self.episodes
        return {"lengths": torch.tensor([len(e.rewards) for e in eps], dtype=torch.long),
                **{k: torch.as_tensor(np.concatenate([getattr(e, k) for e in eps])) if eps else torch.zeros(0)
                   for k in ("obs", "actions", "rewards", "success")}}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the episodes `state_dict` captured."""
        bounds = np.cumsum([0, *state["lengths"].tolist()])
        fields = {k: state[k].numpy() for k in ("obs", "actions", "rewards", "success")}
        self.episodes = [Episode(*(fields[k][s:e] for k in ("obs", "actions", "rewards", "success")))
                         for s, e in zip(bounds[:-1], bounds[1:])]

    def save(self, path: str | Path) -> Path:
        """Write the episodes to an .npz file (one padded array per field plus lengths)."""
        return save_episodes(self.episodes, path)

    @classmethod
    def load(cls, path: str | Path, max_episodes: int = 0) -> EpisodeStore:
        store = cls(max_episodes)
        for ep in load_episodes(path):
            store.add(ep)
        return store


def sample_segments(episodes: Sequence[Episode], n: int, length: int, generator: np.random.Generator) -> Segments:
    """`n` segments of `length` steps, each from a uniformly chosen episode with at least `length` steps."""
    pool = [e for e in episodes if len(e.rewards) >= length]
    if not pool:
        raise ValueError(f"no episode has {length} steps (of {len(episodes)}); collect more or shorten segments.")
    obs, act, rew = [], [], []
    for i in generator.integers(0, len(pool), size=n):
        ep = pool[i]
        s = int(generator.integers(0, len(ep.rewards) - length + 1))
        obs.append(ep.obs[s:s + length])
        act.append(ep.actions[s:s + length])
        rew.append(ep.rewards[s:s + length])
    return Segments(*(torch.as_tensor(np.stack(x), dtype=torch.float32) for x in (obs, act, rew)))


def save_episodes(episodes: Sequence[Episode], path: str | Path) -> Path:
    """Episodes to .npz: obs (E, Lmax, d), actions, rewards, success padded with zeros, lengths (E,)."""
    path = Path(path)
    lengths = np.array([len(e.rewards) for e in episodes])
    lmax = int(lengths.max())

    def pad(key: str) -> np.ndarray:
        first = getattr(episodes[0], key)
        out = np.zeros((len(episodes), lmax, *first.shape[1:]), dtype=first.dtype)
        for i, e in enumerate(episodes):
            out[i, :len(e.rewards)] = getattr(e, key)
        return out

    np.savez_compressed(path, lengths=lengths, **{k: pad(k) for k in ("obs", "actions", "rewards", "success")})
    return path


def load_episodes(path: str | Path) -> list[Episode]:
    """Episodes written by `save_episodes`; a file lacking a field is an error naming it."""
    data = np.load(Path(path))
    missing = {"obs", "actions", "rewards", "lengths"} - set(data.files)
    if missing:
        raise ValueError(f"{path}: missing arrays {sorted(missing)}; expected obs, actions, rewards, lengths.")
    out = []
    for i, n in enumerate(data["lengths"]):
        succ = data["success"][i, :n] if "success" in data.files else np.zeros(n, bool)
        out.append(Episode(data["obs"][i, :n], data["actions"][i, :n], data["rewards"][i, :n], succ))
    return out


def temporal_crop(a: Segments, b: Segments, min_len: int, max_len: int, generator: torch.Generator) -> tuple:
    """SURF's temporal cropping (Park et al. 2022, Sec. 3.2): one length H' in [min_len, max_len] per call, and an
    independent start in each segment of every pair; the pair keeps its label.

    Returns:
        (a', b'), each Segments with H' steps.
    """
    h = a.length
    if not 1 <= min_len <= max_len <= h:
        raise ValueError(f"temporal_crop needs 1 <= min_len <= max_len <= {h}, got {min_len}, {max_len}.")
    new = int(torch.randint(min_len, max_len + 1, (1,), generator=generator))

    def crop(s: Segments) -> Segments:
        start = torch.randint(0, h - new + 1, (len(s),), generator=generator)
        idx = start[:, None] + torch.arange(new)  # (N, H')
        take = lambda x: torch.gather(x, 1, idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand(  # noqa: E731
            -1, -1, *x.shape[2:]))
        return Segments(take(s.obs), take(s.actions), take(s.rewards))

    return crop(a), crop(b)

"""A diffusion policy behind a decoding-time method, with the interface evaluation uses: one image per context from
given noise.

`ImageDecoder(policy, n=16, reward=fn, rlg_scale=w)` is best-of-16 (`mmalign.decoding.search.best_of_n`) over
RL-guided samples (`rlg.generate`: base + w (tuned - base) through `mmalign.decoding.combine.guided`); n = 1 without
a reward is plain sampling, and without w the policy alone. `task.evaluate(decoder)` scores it on the held-out prompts
with the noise a trained policy gets: candidate j of an image is drawn from `noise(j)`, and candidate 0 from the
noise plain sampling uses, so best-of-1 is plain sampling and best-of-N ranks N draws that include it.
`decoder.cost` sums denoiser rows (one batch row through the denoiser: CFG's two halves and RL guidance's two models
each count), images drawn and returned, and seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from mmalign.decoding.search import best_of_n
from mmalign.diffusion.policy import DiffusionPolicy
from mmalign.diffusion.rlg import generate

CANDIDATE_SEED_STRIDE = 100_000
"""Seed offset between the noise of successive candidates of one image (far beyond any chunk's start)."""

Noise = Callable[[int], tuple[Tensor, Tensor]]
"""`noise(j)`: (initial latents (B, C, h, w), step noise (T, B, C, h, w)) of candidate j of B contexts."""


@dataclass
class ImageCost:
    """What a decoder spent: denoiser rows (a batch of B rows counts B), images drawn (candidates), images returned,
    seconds."""

    denoiser_rows: int = 0
    drawn: int = 0
    images: int = 0
    seconds: float = 0.0

    def report(self) -> dict[str, float]:
        """The cost per returned image."""
        per = max(1, self.images)
        return {"cost/denoiser_rows_per_image": self.denoiser_rows / per, "cost/drawn_per_image": self.drawn / per,
                "cost/seconds_per_image": self.seconds / per}


class Candidates(NamedTuple):
    """Sampled images in `best_of_n`'s order (context-major) and a (B * n, T) mask of their denoising steps."""

    outputs: list[np.ndarray]
    mask: Tensor


class SeededSampler:
    """`policy` as a policy for `best_of_n`: sample j of every context is drawn from `noise(j)`, RL-guided with
    weight `rlg_scale` when set (`rlg.generate`)."""

    def __init__(self, policy: DiffusionPolicy, noise: Noise, rlg_scale: float | None = None):
        self.policy, self.noise, self.rlg_scale = policy, noise, rlg_scale

    def sample(self, contexts: Sequence, num_samples: int) -> Candidates:
        drawn = [generate(self.policy, contexts, rlg_scale=self.rlg_scale, noise=self.noise(j))[0]
                 for j in range(num_samples)]
        outputs = [drawn[j][i] for i in range(len(contexts)) for j in range(num_samples)]
        return Candidates(outputs, torch.ones(len(outputs), self.policy.num_steps))


class ImageDecoder:
    """`policy` (a `DiffusionPolicy`) decoded by best-of-`n` under `reward`, optionally RL-guided.

    Args:
        policy: the model sampled (for RL guidance the fine-tuned one, with a reference: its base).
        n: candidates per image; 1 = plain sampling.
        reward: `fn(contexts, images) -> floats` ranking the candidates (needed when n > 1).
        rlg_scale: RL guidance weight w (`rlg.generate`); None samples the policy alone.
    """

    def __init__(self, policy: DiffusionPolicy, n: int = 1, reward: Callable | None = None,
                 rlg_scale: float | None = None):
        if n < 1:
            raise ValueError(f"best-of-N needs n >= 1, got {n}.")
        if n > 1 and reward is None:
            raise ValueError(f"best-of-{n} ranks images by a reward; give one (e.g. the task's weighted rewards).")
        self.policy, self.n, self.reward, self.rlg_scale = policy, n, reward, rlg_scale
        self.cost = ImageCost()

    def report(self) -> dict[str, float]:
        """The cost per returned image (`mmalign eval --decode` prints it beside the metrics)."""
        return self.cost.report()

    def images(self, contexts: Sequence, noise: Noise) -> list[np.ndarray]:
        """One image per context: the best under the reward of `n` candidates, candidate j drawn from `noise(j)`."""
        start, rows = time.perf_counter(), self.policy.net_calls
        sampler = SeededSampler(self.policy, noise, self.rlg_scale)
        if self.reward is None:
            out = sampler.sample(contexts, 1).outputs
        else:
            out = best_of_n(sampler, contexts, self.reward, self.n)[0]
        c = self.cost
        c.denoiser_rows += self.policy.net_calls - rows
        c.drawn += len(contexts) * self.n
        c.images += len(out)
        c.seconds += time.perf_counter() - start
        return out


METHODS = ("bon", "rlg")
"""`mmalign eval CONFIG --decode METHOD` on a diffusion task."""


@dataclass
class ImageDecodeSettings:
    """`--decode-arg` knobs of the diffusion methods."""

    n: int = 4
    """bon: candidates per image, ranked by the task's weighted rewards."""
    w: float = 1.0
    """rlg: the guidance weight, base + w (tuned - base)."""


def task_image_decoder(task, method: str, options: Sequence[str]) -> ImageDecoder:
    """An `ImageDecoder` over a diffusion task's policy from the CLI's `--decode METHOD --decode-arg KEY=VALUE ...`:
    best-of-N under the task's weighted rewards, or RL guidance."""
    from mmalign.config import apply_overrides, from_dict
    from mmalign.rewards import weighted_sum

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} for a diffusion task; choose one of {list(METHODS)} (RL guidance "
                         "with best-of-N together: bench/diffusion_decoding.py).")
    s = from_dict(ImageDecodeSettings, apply_overrides({}, list(options)))
    if method == "rlg":
        return ImageDecoder(task.policy, rlg_scale=s.w)

    return ImageDecoder(task.policy, s.n, weighted_sum(task.rewards))

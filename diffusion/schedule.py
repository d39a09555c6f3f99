"""Schedules of the denoising-step policy: the T-step sampling schedule read from a diffusers scheduler, the
noised sample and target of the denoising objective at a training timestep (pre-training, Diffusion-DPO), which
denoising steps train (timestep masks, the B2-DiffuRL backward progressive schedule), and how rewards become
advantages (B2 sibling selection, DDPO's per-prompt reward statistics).
"""

from __future__ import annotations

import copy
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def schedule_tensors(scheduler, num_steps: int, family: str) -> dict[str, Tensor]:
    """The T-step sampling schedule of a diffusers scheduler, read from a copy (its `set_timesteps` mutates it).

    Returns:
        "timesteps" (T,) the denoiser's time input; flow family: "sigmas" (T+1,); ddim family: "alphas_cumprod"
        (N,) over the N training timesteps, "alpha_t" and "alpha_prev" (T,) at each step and the one after it.
    """
    s = copy.deepcopy(scheduler)
    s.set_timesteps(num_steps)
    out = {"timesteps": s.timesteps.float().clone()}
    if family == "flow":
        out["sigmas"] = s.sigmas.float().clone()
        return out
    ac = s.alphas_cumprod.float()
    t = s.timesteps.long()
    prev = t - s.config.num_train_timesteps // num_steps
    final = torch.as_tensor(float(s.final_alpha_cumprod))
    out.update(alphas_cumprod=ac.clone(), alpha_t=ac[t].clone(),
               alpha_prev=torch.where(prev >= 0, ac[prev.clamp(min=0)], final))
    return out


def training_pair(x0: Tensor, eps: Tensor, t: Tensor, alphas_cumprod: Tensor | None = None, v_target: bool = False,
                  num_train_timesteps: int = 1000) -> tuple[Tensor, Tensor, Tensor]:
    """The denoising objective at training timestep indices t (B,) in [0, N): (x_t, regression target, denoiser time).

    - DDPM (`alphas_cumprod` given, a = alphas_cumprod[t]): x_t = sqrt(a) x0 + sqrt(1 - a) eps (Ho et al. 2020, Eq. 4),
      target eps, or v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022, Sec. 4); time t.
    - Flow matching (`alphas_cumprod` None): sigma = (t + 1) / N, x_t = (1 - sigma) x0 + sigma eps, target the
      velocity eps - x0 (rectified flow as in SD3, Esser et al. 2024, Eq. 3 and 6); time sigma N (diffusers'
      `FlowMatchEulerDiscreteScheduler` timesteps).
    """
    shape = (-1, *[1] * (x0.dim() - 1))
    if alphas_cumprod is None:
        sigma = (t.float() + 1) / num_train_timesteps
        s = sigma.view(shape)
        return (1 - s) * x0 + s * eps, eps - x0, sigma * num_train_timesteps
    a = alphas_cumprod[t].view(shape)
    target = a.sqrt() * eps - (1 - a).sqrt() * x0 if v_target else eps
    return a.sqrt() * x0 + (1 - a).sqrt() * eps, target, t.float()


def timestep_mask(b: int, t: int, start: int = 0, fraction: float = 1.0, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu", end: int = 0) -> Tensor:
    """(B, T) bool mask of trained steps: steps [start, end), of which a random `fraction` per sample (DDPO's
    `timestep_fraction`: timesteps shuffled independently per sample, the first int(n * fraction) kept).

    Args:
        b: batch size B.
        t: steps per trajectory T.
        start: first step that may train (B2's branch point; 0 = all).
        fraction: in (0, 1]; at least one step per sample is kept.
        end: one past the last step that may train (0 = T).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"timestep_fraction must lie in (0, 1], got {fraction}.")
    end = end or t
    if not 0 <= start < end <= t:
        raise ValueError(f"the trained steps [start, end) must satisfy 0 <= start < end <= {t}, got [{start}, {end}).")
    mask = torch.zeros(b, t, dtype=torch.bool)
    n = end - start
    keep = max(1, int(n * fraction))
    if keep == n:
        mask[:, start:end] = True
    else:
        order = torch.rand(b, n, generator=generator).argsort(1)[:, :keep] + start
        mask.scatter_(1, order, True)
    return mask.to(device)


@dataclass
class B2Schedule:
    """B2-DiffuRL's backward progressive training (Hu et al. 2025, Sec. 3.2; `run_process.sh` of the reference code).

    The split point, counted as *remaining* steps, moves from `split_left` to `split_right` (= all steps) over
    `stages` equal stages: split(i) = left + floor(i (right - left + 1) / stages). Trajectories branch at step index
    T - split(i); the trained interval runs from there to the final step.
    """

    num_steps: int = 20
    """Denoising steps T."""
    split_left: int = 14
    """Remaining steps at the first stage (trains the last 14 of 20 steps)."""
    split_right: int = 20
    """Remaining steps at the last stage (T: every step trains)."""
    stages: int = 100
    """Training stages (iterations) over which the split point moves."""
    branches: int = 5
    """Clones per trunk (B2's split_time)."""

    def __post_init__(self) -> None:
        if not 1 <= self.split_left <= self.split_right <= self.num_steps:
            raise ValueError(f"need 1 <= split_left <= split_right <= num_steps, got {self.split_left}, "
                             f"{self.split_right}, {self.num_steps}.")

    def split_step(self, stage: int) -> int:
        """Remaining steps at the branch point at `stage` (clamped to the last stage)."""
        interval = self.split_right - self.split_left + 1
        stage = min(stage, self.stages - 1)
        return min(self.split_right, self.split_left + math.floor(stage * interval / self.stages))

    def branch_step(self, stage: int) -> int:
        """Step index at which trajectories branch (and training starts) at `stage`."""
        return self.num_steps - self.split_step(stage)


def b2_select(scores: Tensor, branch: Tensor, pos_threshold: float = 0.5, neg_threshold: float = -0.5) -> Tensor:
    """Per sibling group keep the best sample if its score >= pos_threshold and the worst if < neg_threshold
    (B2-DiffuRL `run_select.py`).

    Args:
        scores: (B,) normalised rewards.
        branch: (B,) sibling-group id of each sample.

    Returns:
        (B,) bool, the kept samples (at most two per group).
    """
    keep = torch.zeros_like(scores, dtype=torch.bool)
    for g in branch.unique():
        idx = (branch == g).nonzero().squeeze(1)
        s = scores[idx]
        best, worst = idx[s.argmax()], idx[s.argmin()]
        if scores[best] >= pos_threshold:
            keep[best] = True
        if scores[worst] < neg_threshold:
            keep[worst] = True
    return keep


class PerPromptStats:
    """Per-prompt reward normalisation with a history (DDPO's `PerPromptStatTracker`, B2's history scores).

    Each prompt keeps the reward lists of its last `history` calls (current one included). A prompt with fewer
    than `min_count` values in its history is normalised with the current batch's mean and std instead. It is run
    state of the DDPO / B2 algorithms (`algorithms.reward_stats`): the Trainer makes one per run and keeps it in
    its checkpoints (`state_dict`), so a resumed run normalises as the uninterrupted one.
    """

    def __init__(self, history: int = 8, min_count: int = 0, eps: float = 1e-6):
        self.history, self.min_count, self.eps = history, min_count, eps
        self.buffers: dict[str, deque] = {}

    def __call__(self, prompts: Sequence[str], rewards: Tensor) -> Tensor:
        """(B,) rewards of samples with these prompts -> (B,) normalised scores (r - mean) / (std + eps)."""
        r = rewards.detach().float().cpu()
        out = torch.empty_like(r)
        batch_mean, batch_std = r.mean(), r.std() if len(r) > 1 else torch.tensor(1.0)
        for p in dict.fromkeys(prompts):
            idx = torch.tensor([i for i, q in enumerate(prompts) if q == p])
            buf = self.buffers.setdefault(p, deque(maxlen=self.history))
            buf.append(r[idx])
            hist = torch.cat(list(buf))
            if len(hist) < max(2, self.min_count):
                mean, std = batch_mean, batch_std
            else:
                mean, std = hist.mean(), hist.std()
            out[idx] = (r[idx] - mean) / (std + self.eps)
        return out.to(rewards.device)

    def state_dict(self) -> dict[str, list[list[float]]]:
        """The histories as JSON: prompt -> its reward lists, oldest first."""
        return {p: [r.tolist() for r in buf] for p, buf in self.buffers.items()}

    def load_state_dict(self, state: dict[str, list[list[float]]]) -> None:
        """Restore what `state_dict` returned (the last `history` lists of each prompt are kept)."""
        self.buffers = {p: deque((torch.tensor(r, dtype=torch.float32) for r in lists), maxlen=self.history)
                        for p, lists in state.items()}

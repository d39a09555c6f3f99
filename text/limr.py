"""LIMR's learning impact measurement (Li et al. 2025, "LIMR: Less is More for RL Scaling", Sec. 2.2): score each
training sample by how closely its reward trajectory over a GRPO pass follows the model's average learning curve.

With r_i^k the (normalised) reward of sample i in epoch k of the pass and rbar^k = mean_i r_i^k the average curve,

    s_i = 1 - sum_k (r_i^k - rbar^k)^2 / sum_k (1 - rbar^k)^2                                   (LIMR Eq. 2)

so a sample that learns as the model learns scores near 1 and one whose reward stays flat or moves against the
curve scores low. Rewards are min-max normalised over the whole pass (the paper's rewards are 0/1 accuracies; BLEU
is not), which leaves the ranking of the scores unchanged: an affine map scales every numerator and the common
denominator alike. LIMR keeps the samples above a threshold; here the `k` highest (`task_args.selection` with
`mode: lim`), so the subset has the size of the random arm it is compared with.

A pass records with `task_args.record_rewards: true`: the text task keeps, for each training prompt, the mean reward
of its samples at each visit (one visit per epoch, as the trainer draws a permutation per pass over the data) and
writes them to `reward_trajectories.json` in the run folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from mmalign.config import ConfigError
from mmalign.text.policy import prompt_text


class RewardTrajectories:
    """Per training prompt, the mean reward of its samples at each visit of a run, in visit order."""

    def __init__(self) -> None:
        self.visits: dict[str, list[float]] = {}

    def add(self, contexts: Sequence, group: Tensor, rewards: Tensor) -> None:
        """One iteration: `contexts` (its contexts), `group` (B,) each sample's context index, `rewards` (B,)."""
        for j, context in enumerate(contexts):
            mine = rewards[group == j]
            if len(mine):
                self.visits.setdefault(prompt_text(context), []).append(float(mine.float().mean()))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"visits": self.visits}, indent=1))


def load_trajectories(path: str | Path) -> dict[str, list[float]]:
    """{prompt: [reward at visit 1, 2, ...]} from a `reward_trajectories.json`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} is not a file: give the reward_trajectories.json that a GRPO pass with "
                          "task_args.record_rewards: true wrote in its run folder.",
                          "task_args.selection.trajectories")
    return json.loads(path.read_text())["visits"]


def lim_scores(trajectories: dict[str, list[float]]) -> dict[str, float]:
    """LIMR Eq. 2 for every prompt over the K epochs every prompt completed (its first K visits)."""
    epochs = min(len(v) for v in trajectories.values())
    if epochs < 2:
        raise ConfigError(f"the pass visited some prompt only {epochs} time(s); a learning curve needs at least 2 "
                          "epochs: train the pass for more steps.", "task_args.selection.trajectories")
    r = torch.tensor([v[:epochs] for v in trajectories.values()], dtype=torch.float64)  # (N, K)
    low, high = r.min(), r.max()
    r = (r - low) / (high - low) if high > low else torch.zeros_like(r)
    mean = r.mean(0)  # rbar^k, the model's average learning curve
    scores = 1 - ((r - mean) ** 2).sum(1) / ((1 - mean) ** 2).sum().clamp(min=1e-12)
    return dict(zip(trajectories, scores.tolist()))

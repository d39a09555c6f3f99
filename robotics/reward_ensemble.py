"""An ensemble of Bradley-Terry reward models over segments, trained through the shared preference core.

Each member is a Markovian reward r_hat(s, a) (an MLP with tanh output, B-Pref: 3 x 256 hidden, 3 members); a
segment's score is the sum of its step rewards, and P(a > b) = sigmoid(R_hat(a) - R_hat(b)) (Christiano et al.
2017, Eq. 1). Every member trains with `mmalign.algorithms.reward_model.reward_model_update` on its own
shuffled order of the labelled pairs; SURF's pseudo-labels (Park et al. 2022, Eq. 4) and temporal cropping
(Sec. 3.2) are options. The ensemble mean is the RL reward (`step_reward`).

The ensemble lives on one device (`device`); segments and labels may stay on the CPU: each batch moves there, and
rewards and probabilities come back on the device of their inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from mmalign.algorithms.reward_model import RewardModelConfig, reward_model_update
from mmalign.config import ConfigError, check_numbers
from mmalign.robotics.policy import mlp
from mmalign.robotics.segments import Segments, temporal_crop


@dataclass
class RewardEnsembleConfig:
    members: int = 3
    """Ensemble size (B-Pref: 3)."""
    hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    """Hidden widths of each member (B-Pref: [256, 256, 256])."""
    lr: float = 3e-4
    """Adam learning rate (B-Pref `reward_lr`)."""
    batch_size: int = 128
    """Pairs per optimizer step."""
    epochs: int = 50
    """Passes over the labelled pairs per reward update (B-Pref `reward_update`)."""
    surf_threshold: float = 0.0
    """SURF: pseudo-label unlabelled pairs whose predicted max(P, 1 - P) exceeds this (paper: 0.99); 0 = off."""
    surf_ratio: int = 4
    """SURF: unlabelled pairs per labelled pair in a batch (paper `mu`: 4)."""
    crop_min: int = 0
    """SURF temporal cropping: shortest crop; 0 = no cropping (paper: H - 5 with H + 5 segments)."""
    crop_max: int = 0
    """SURF temporal cropping: longest crop (<= segment length)."""
    normalize_inputs: bool = True
    """Standardise each (obs, action) input dimension by the mean and std of the labelled steps, refreshed at every
    `fit` (std floored at `min_std`). Without it a planar task's positions (metres, spread ~0.1) reach the MLP
    so compressed that it cannot resolve the last few centimetres to a goal: the learned reward goes flat there."""
    min_std: float = 1e-2
    """Floor of the input std (constant dimensions, e.g. Reach's object slots, stay near 0 instead of exploding)."""

    def __post_init__(self) -> None:
        check_numbers(self, "members", "hidden", "batch_size", "epochs", ge=1)
        check_numbers(self, "lr", "min_std", gt=0)
        check_numbers(self, "surf_threshold", ge=0, le=1)
        check_numbers(self, "surf_ratio", "crop_min", "crop_max", ge=0)
        if self.crop_min > self.crop_max:
            raise ConfigError(f"must be <= crop_max ({self.crop_max}) to crop (SURF), or 0 not to crop; got "
                              f"{self.crop_min}.", "crop_min")


class RewardEnsemble(nn.Module):
    """M reward MLPs r_m(s, a) in [-1, 1].

    Args:
        obs_dim: observation size.
        act_dim: action size.
        cfg: ensemble settings.
        device: where the members live and train.
    """

    def __init__(self, obs_dim: int, act_dim: int, cfg: RewardEnsembleConfig, device: torch.device | str = "cpu"):
        super().__init__()
        self.cfg = cfg
        self.nets = nn.ModuleList(
            nn.Sequential(mlp([obs_dim + act_dim, *cfg.hidden, 1], activation=nn.LeakyReLU), nn.Tanh())
            for _ in range(cfg.members))
        self.register_buffer("input_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("input_std", torch.ones(obs_dim + act_dim))
        self.to(device)
        self.optimizers = [torch.optim.Adam(n.parameters(), lr=cfg.lr) for n in self.nets]

    def inputs(self, obs: Tensor, actions: Tensor) -> Tensor:
        """(..., obs_dim), (..., act_dim) -> (..., obs_dim + act_dim) standardised network input, on the ensemble's
        device."""
        x = torch.cat([obs, actions], -1).to(self.input_mean.device)
        return (x - self.input_mean) / self.input_std

    @torch.no_grad()
    def set_normalizer(self, *segments: Segments) -> None:
        """Input mean and std (floored at `cfg.min_std`) over every step of `segments`."""
        x = torch.cat([torch.cat([s.obs, s.actions], -1).flatten(0, -2) for s in segments])
        self.input_mean.copy_(x.mean(0))
        self.input_std.copy_(x.std(0).clamp(min=self.cfg.min_std))

    def member_rewards(self, obs: Tensor, actions: Tensor) -> Tensor:
        """(..., obs_dim), (..., act_dim) -> (M, ...) per-member step rewards."""
        x = self.inputs(obs, actions)
        return torch.stack([n(x).squeeze(-1) for n in self.nets])

    @torch.no_grad()
    def step_reward(self, obs: Tensor, actions: Tensor) -> Tensor:
        """The RL reward: ensemble-mean r_hat(s, a), (..., obs_dim), (..., act_dim) -> (...) on obs' device."""
        return self.member_rewards(obs, actions).mean(0).to(obs.device)

    def scorer(self, m: int):
        """Member m as the core's `score_fn`: Segments (N, H, .) -> (N,) segment return, with grad."""
        return lambda seg: self.nets[m](self.inputs(seg.obs, seg.actions)).squeeze(-1).sum(1)

    @torch.no_grad()
    def probs(self, a: Segments, b: Segments) -> Tensor:
        """(M, N) each member's P(a_i > b_i) = sigmoid(R_m(a_i) - R_m(b_i)), on the segments' device."""
        ra = self.member_rewards(a.obs, a.actions).sum(-1)
        rb = self.member_rewards(b.obs, b.actions).sum(-1)
        return torch.sigmoid(ra - rb).to(a.obs.device)

    @torch.no_grad()
    def accuracy(self, a: Segments, b: Segments, labels: Tensor) -> float:
        """Fraction of pairs with a hard label (0 or 1) that the ensemble mean ranks the same way."""
        hard = labels != 0.5
        pred = (self.probs(a, b).mean(0) > 0.5).float()
        return float((pred[hard] == labels[hard]).float().mean()) if hard.any() else float("nan")

    def fit(self, a: Segments, b: Segments, labels: Tensor, unlabelled: tuple[Segments, Segments] | None = None,
            seed: int = 0) -> dict[str, float]:
        """Train every member for `cfg.epochs` passes over the labelled pairs (a_i, b_i, P(a_i > b_i)).

        Args:
            a: (N, H, .) first segments.
            b: (N, H, .) second segments.
            labels: (N,) probability that a_i is preferred (0, 1 or 0.5).
            unlabelled: SURF's unlabelled pairs, pseudo-labelled where a member is confident.
            seed: seed of the shuffling and cropping.

        Returns:
            metrics: mean loss and accuracy of the last epoch, pseudo-label count.
        """
        cfg, g = self.cfg, torch.Generator().manual_seed(seed)
        core = RewardModelConfig(lr=cfg.lr, max_grad_norm=0.0)
        out: dict[str, float] = {"pseudo_labels": 0.0}
        if cfg.normalize_inputs:
            self.set_normalizer(a, b)
        for epoch in range(cfg.epochs):
            last = epoch == cfg.epochs - 1
            hist = []
            for m in range(len(self.nets)):
                order = torch.randperm(len(labels), generator=g)  # each member: its own order (B-Pref)
                for idx in order.split(cfg.batch_size):
                    ba, bb, y = a[idx], b[idx], labels[idx].to(self.input_mean.device)
                    if unlabelled is not None and cfg.surf_threshold > 0:
                        ba, bb, y, n_pseudo = self._with_pseudo(m, ba, bb, y, unlabelled, g)
                        out["pseudo_labels"] += n_pseudo if last else 0
                    if cfg.crop_min:
                        ba, bb = temporal_crop(ba, bb, cfg.crop_min, cfg.crop_max, g)
                    hist.append(reward_model_update(self.scorer(m), ba, bb, self.optimizers[m], core, y))
            if last:
                out["loss"] = sum(h["loss"] for h in hist) / len(hist)
        return out

    def _with_pseudo(self, m: int, a: Segments, b: Segments, y: Tensor, unlabelled, g) -> tuple:
        """Append SURF pseudo-labelled pairs: hard labels where member m's confidence exceeds the threshold."""
        ua, ub = unlabelled
        pick = torch.randint(0, len(ua), (len(y) * self.cfg.surf_ratio,), generator=g)
        ua, ub = ua[pick], ub[pick]
        with torch.no_grad():
            p = torch.sigmoid(self.scorer(m)(ua) - self.scorer(m)(ub)).to(ua.obs.device)
        sure = torch.maximum(p, 1 - p) > self.cfg.surf_threshold
        if not sure.any():
            return a, b, y, 0
        ua, ub = ua[sure.nonzero().flatten()], ub[sure.nonzero().flatten()]
        return (Segments.cat([a, ua]), Segments.cat([b, ub]), torch.cat([y, (p[sure] > 0.5).float().to(y.device)]),
                int(sure.sum()))

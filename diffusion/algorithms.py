"""Diffusion-specific advantage preparation on top of the shared clipped-surrogate loss (`grpo_loss`).

- DDPO (Black et al. 2023, Sec. 4.3): PPO-clip over denoising steps, no critic, advantages from per-prompt
  reward statistics with a history (`PerPromptStats`), clipped to +-adv_clip.
- B2-DiffuRL (Hu et al. 2025): rewards normalised per prompt with a short history, then per sibling group the
  best (>= pos_threshold) and worst (< neg_threshold) kept, the others masked out; or GRPO group advantages over
  the siblings (`mode="grpo"`).

Each is a config dataclass plus `prepare(policy, rollout, cfg, stats)`; the loss is the shared `grpo_loss`. The
per-prompt statistics are the algorithm's run state (`reward_stats`): the Trainer makes them once per run and keeps
them in its checkpoints, the policy never holds them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmalign.advantages import group_advantages, zero_std_fraction
from mmalign.algorithms import Algorithm
from mmalign.algorithms.grpo import grpo_loss
from mmalign.config import check_choice, check_numbers
from mmalign.diffusion.schedule import PerPromptStats, b2_select
from mmalign.losses import AGGREGATIONS
from mmalign.rollout import Rollout


@dataclass
class DDPOConfig:
    history: int = 16
    """Reward lists kept per prompt (DDPO buffer; B2: 8 stages)."""
    min_count: int = 16
    """Below this many values in a prompt's history, normalise with the batch's statistics."""
    adv_clip: float = 5.0
    """Advantages are clipped to +-adv_clip (DDPO adv_clip_max)."""
    clip_low: float = 1e-4
    """Clip range below 1 (DDPO: 1e-4 with mean-reduced log-probs)."""
    clip_high: float = 1e-4
    """Clip range above 1."""
    beta: float = 0.0
    """KL-to-reference coefficient (needs a reference)."""
    kl_estimator: str = "k3"
    """KL estimator, "k1" or "k3"."""
    loss_agg: str = "token-mean"
    """Step aggregation (see GRPOConfig)."""
    fixed_length: int = 0
    """Normaliser of "fixed" aggregation."""
    entropy_coef: float = 0.0
    """Unused (the Gaussian step entropy does not depend on the weights); kept for `grpo_loss`."""

    def __post_init__(self) -> None:
        check_choice(self, "kl_estimator", ("k1", "k3"))
        check_choice(self, "loss_agg", AGGREGATIONS)
        check_numbers(self, "history", ge=1)
        check_numbers(self, "min_count", "beta", "fixed_length", "entropy_coef", ge=0)
        check_numbers(self, "adv_clip", "clip_high", gt=0)
        check_numbers(self, "clip_low", gt=0, lt=1)


@dataclass
class B2Config(DDPOConfig):
    mode: str = "select"
    """"select": keep the best / worst sibling per group (B2-DiffuRL); "grpo": group advantages over siblings."""
    pos_threshold: float = 0.5
    """Keep a group's best sample when its normalised score is at least this."""
    neg_threshold: float = -0.5
    """Keep a group's worst sample when its normalised score is below this."""
    history: int = 8
    """Past stages kept per prompt for normalisation (B2 history_cnt)."""
    min_count: int = 0
    """Normalise with batch statistics below this many values."""
    clip_low: float = 0.1
    """B2-DiffuRL's clip range."""
    clip_high: float = 0.1
    """B2-DiffuRL's clip range."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice(self, "mode", ("select", "grpo"))


def reward_stats(cfg: DDPOConfig) -> PerPromptStats:
    """The run state of DDPO / B2: an empty per-prompt reward history of the configured length."""
    return PerPromptStats(cfg.history, cfg.min_count)


def _prompts(rollout: Rollout) -> list[str]:
    if "prompts" not in rollout.state:
        raise ValueError("per-prompt statistics need rollout.state['prompts'] (the diffusion policy fills it).")
    return rollout.state["prompts"]


def _ref(policy, rollout: Rollout, cfg: DDPOConfig) -> None:
    if cfg.beta > 0:
        with torch.no_grad():
            rollout.extras["ref_logprobs"] = policy.ref_logprobs(rollout).detach()


def ddpo_prepare(policy, rollout: Rollout, cfg: DDPOConfig, stats: PerPromptStats) -> dict[str, float]:
    """DDPO advantages: per-prompt normalised rewards (`stats` takes this batch into its history), clipped
    (ddpo-pytorch `train.py`)."""
    adv = stats(_prompts(rollout), rollout.rewards)
    rollout.extras["advantages"] = adv.clamp(-cfg.adv_clip, cfg.adv_clip)
    _ref(policy, rollout, cfg)
    return {"frac_reward_zero_std": zero_std_fraction(rollout.rewards, rollout.group)}


def b2_prepare(policy, rollout: Rollout, cfg: B2Config, stats: PerPromptStats) -> dict[str, float]:
    """B2-DiffuRL advantages (`run_select.py` / `run_train.py`); unselected samples leave the mask. `mode="select"`
    normalises with (and updates) `stats`; `mode="grpo"` does not read them."""
    branch = rollout.state["branch"]
    if cfg.mode == "grpo":
        adv = group_advantages(rollout.rewards, branch)
        kept = torch.ones_like(adv, dtype=torch.bool)
    else:
        scores = stats(_prompts(rollout), rollout.rewards)
        kept = b2_select(scores, branch, cfg.pos_threshold, cfg.neg_threshold)
        adv = scores * kept
    rollout.extras["advantages"] = adv.clamp(-cfg.adv_clip, cfg.adv_clip)
    rollout.mask = rollout.mask & kept[:, None]
    _ref(policy, rollout, cfg)
    return {"frac_kept": float(kept.float().mean())}


DDPO = Algorithm(DDPOConfig, ddpo_prepare, grpo_loss, reward_stats)
B2 = Algorithm(B2Config, b2_prepare, grpo_loss, reward_stats)
"""Entries of the trainer's ALGORITHMS table; configs `DDPOConfig`, `B2Config`."""

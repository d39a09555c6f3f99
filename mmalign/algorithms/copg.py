"""Online Contrastive Policy Gradient (CoPG, Flet-Berliac et al. 2024) on sampled groups.

Each context's k samples are scored by the reward; with regularised rewards R_i = r_i - beta log(pi(y_i) / pi_ref(y_i))
the loss of a group is 1 / (k - 1) sum_{i>j} (R_i - R_j)^2 (`mmalign.preference.copg_loss`): a policy gradient in
which each sample's baseline is the others' regularised reward, with no importance weights, clipping or critic. The
same loss trains offline on ranked responses (`preference.loss: copg`); this is its online form (Cohere's RLHF
polishing used 2 samples per prompt).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mmalign import preference as P
from mmalign.algorithms import Algorithm
from mmalign.config import ConfigError, check_numbers
from mmalign.rollout import Policy, Rollout


@dataclass
class CoPGConfig:
    beta: float = 0.1
    """KL strength of the regularised reward (> 0)."""
    loss_agg: str = "seq-mean"
    """Fixed: the loss is per context group, normalised by the sequences of the whole minibatch."""
    fixed_length: int = 0
    """Unused (the trainer reads it with `loss_agg`)."""

    def __post_init__(self) -> None:
        check_numbers(self, "beta", gt=0)
        if self.loss_agg != "seq-mean":
            raise ConfigError(f"must be 'seq-mean' for CoPG (a loss per group of sequences), got {self.loss_agg!r}.",
                              "loss_agg")

    def check_trainer(self, trainer) -> None:
        """CoPG contrasts the samples of a context: groups of 2 or more, each whole inside one loss call."""
        if trainer.num_samples < 2:
            raise ConfigError(f"is {trainer.num_samples}, but CoPG contrasts the samples of each context with each "
                              "other; set trainer.num_samples to 2 or more.", "trainer.num_samples")
        if trainer.minibatches != 1 or trainer.micro_batch_size:
            raise ConfigError("CoPG's loss pairs the samples of a context, so a minibatch must hold whole groups: "
                              "set trainer.minibatches=1 and trainer.micro_batch_size=0.", "trainer.minibatches")


def copg_prepare(policy: Policy, rollout: Rollout, cfg: CoPGConfig, state: None = None) -> dict[str, float]:
    """Step 3: the reference's log-probs of every sample."""
    if rollout.rewards is None or rollout.rewards.dim() != 1:
        raise ValueError("CoPG needs one scalar reward per sample: rollout.rewards of shape (B,).")
    with torch.no_grad():
        rollout.extras["ref_logprobs"] = policy.ref_logprobs(rollout).detach()
    return {}


def copg_group_loss(policy: Policy, batch: Rollout, cfg: CoPGConfig, denom: Tensor | None = None
                    ) -> tuple[Tensor, dict]:
    """Step 4: CoPG's group loss, summed over the groups of the batch x k / the minibatch's sequence count (`denom`),
    i.e. the mean over the minibatch's groups."""
    order = torch.argsort(batch.group, stable=True)
    counts = torch.bincount(batch.group[order]).tolist()
    k = max(counts)
    if any(c not in (0, k) for c in counts):
        raise ValueError(f"CoPG needs the same number of samples in every group of a batch, got {counts}.")
    mask = batch.mask
    seq = (policy.logprobs(batch) * mask).sum(-1)[order].view(-1, k)
    ref = (batch.extras["ref_logprobs"] * mask).sum(-1)[order].view(-1, k)
    rewards = batch.rewards[order].view(-1, k).to(seq)
    per_group = P.copg_loss(rewards, seq, ref, cfg.beta)
    n = len(batch) if denom is None else denom
    return per_group.sum() * k / n, {"kl": (seq - ref).detach().mean()}


COPG = Algorithm(CoPGConfig, copg_prepare, copg_group_loss)

"""NLPO's action mask (Ramamurthy et al. 2023, "Is Reinforcement Learning (Not) for Natural Language Processing?",
Sec. 3.2, Alg. 1): PPO whose policy samples only from the top-p nucleus of a *masking policy*.

The masking policy pi_psi is a copy of the policy pi_theta, synchronised every `sync_every` iterations (Alg. 1,
"update pi_psi <- pi_theta every mu iterations"). At each step the tokens outside pi_psi's top-p nucleus get logit
-inf in pi_theta, so the policy samples from, and PPO re-scores, the renormalised masked distribution

    pi_theta^mask(a | s) = pi_theta(a | s) 1[a in V_p(pi_psi(. | s))] / sum_{a' in V_p} pi_theta(a' | s),

with V_p(q) the smallest set of most likely tokens of q whose mass reaches p (the most likely token always in it).
Sampling and re-scoring apply the same mask, so re-scored log-probs equal the sampled ones. The KL reference is
not masked. `task_args.nlpo: {top_p: 0.9, sync_every: 10}` turns it on for `algorithm: ppo`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mmalign.config import check_numbers
from mmalign.decoding.combine import lockstep


@dataclass(frozen=True)
class NLPOSettings:
    """`task_args.nlpo`: the masking policy's nucleus and how often it copies the policy; top_p 0 = off (PPO)."""

    top_p: float = 0.0
    """Nucleus mass p of the masking policy (RL4LMs' `top_mask`, 0.9 in the paper); 0 turns the mask off."""
    sync_every: int = 10
    """Copy the policy's weights into the masking policy every this many iterations (the paper's mu)."""

    def __post_init__(self) -> None:
        check_numbers(self, "top_p", ge=0, le=1)
        check_numbers(self, "sync_every", ge=1)


def nucleus_mask(logits: Tensor, top_p: float) -> Tensor:
    """(..., V) bool: the tokens of softmax(logits)'s top-p nucleus, the smallest most-likely set whose mass reaches
    `top_p`. A token is kept when the mass of the tokens more likely than it is below `top_p`, so the most likely
    token is always kept and top_p = 1 keeps every token."""
    probs = torch.softmax(logits.float(), -1)
    sorted_p, order = probs.sort(-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p  # mass of the more likely tokens
    keep_sorted = before < top_p
    keep_sorted[..., 0] = True
    return torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)


def masked_logits(logits: Tensor, mask_logits: Tensor, top_p: float) -> Tensor:
    """fp32 `logits` with -inf outside the nucleus of softmax(`mask_logits`) (scale `mask_logits` by the
    temperature first; -inf stays -inf under any later scaling of `logits`)."""
    return logits.float().masked_fill(~nucleus_mask(mask_logits, top_p), float("-inf"))


class NucleusMaskedLM:
    """The policy's LM and the masking LM run in lockstep as one model for `mmalign.generate.sample_tokens` (each
    keeps its own KV cache): the logits returned are the policy's, -inf outside the masking LM's top-p nucleus at
    `temperature`. The policy's temperature scaling is applied afterwards by the sampler and does not move -inf."""

    def __init__(self, model: torch.nn.Module, mask_model: torch.nn.Module, top_p: float, temperature: float = 1.0):
        self.model, self.mask_model, self.top_p, self.temperature = model, mask_model, top_p, temperature

    def __call__(self, **inputs):
        return lockstep((self.model, self.mask_model), inputs,
                        lambda step: masked_logits(step[0], step[1].float() / self.temperature, self.top_p))

"""One guided prediction for every method that mixes models at each step.

    guided = anchor + sum_i w_i (a_i - b_i)          (b_i = 0 when absent)

- RL guidance (Jin et al. 2025, eq. 5): anchor = base, a = tuned, b = base: base + w (tuned - base).
- RAST (small-model transfer): anchor = logits of the large model, a / b = logits of the small RL-tuned / base
  model: logits_L + lambda (logits_S,RL - logits_S,base), over a shared vocabulary.
- GenARM (Xu et al. 2025, eq. 6): log pi(y_t) = log pi_base(y_t) + (1 / beta) sum_j w_j log pi_ARM_j(y_t) + const:
  anchor = base logits (the constant drops out of the softmax), a = ARM log-probs, weight w_j / beta.

A zero weight drops its term, so every weight 0 gives back the anchor exactly, and with it the anchor model's
samples for the same seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mmalign.generate import CACHE_ARG


def guided(anchor: Tensor, terms: Sequence[tuple[float, Tensor, Tensor | None]]) -> Tensor:
    """anchor + sum_i w_i (a_i - b_i) in fp32, over `terms` (w, a, b or None); zero weights are skipped."""
    out = anchor.float()
    for w, a, b in terms:
        if w:
            out = out + w * (a.float() - (0.0 if b is None else b.float()))
    return out


@dataclass
class Source:
    """A model in a guided combination: its weight, the model whose output is added, the one subtracted (or None),
    and whether its logits enter as log-probs (GenARM's reward models) or as raw logits (RAST)."""

    weight: float
    model: torch.nn.Module
    minus: torch.nn.Module | None = None
    logprobs: bool = False


class _Out:
    def __init__(self, logits: Tensor, caches: list):
        self.logits = logits
        setattr(self, CACHE_ARG, caches)


def lockstep(models: Sequence, inputs: dict, combine) -> _Out:
    """One decode step of causal LMs run in lockstep as one model for `mmalign.generate.sample_tokens`: each model
    keeps its own KV cache (a list of them travels in the cache slot), and the step's logits are
    `combine([last-position logits of each model])`."""
    caches = inputs.pop(CACHE_ARG, None) or [None] * len(models)
    outs = [m(**inputs, **({CACHE_ARG: c} if c is not None else {})) for m, c in zip(models, caches)]
    return _Out(combine([o.logits[:, -1:] for o in outs]), [getattr(o, CACHE_ARG) for o in outs])


class GuidedLM:
    """Causal LMs over one vocabulary run in lockstep as one model for `mmalign.generate.sample_tokens`: each keeps
    its own KV cache, and the logits returned are `guided(anchor, sources)`.

    Args:
        anchor: the model decoded from (the large model for RAST, the frozen base for GenARM).
        sources: `Source`s; a zero-weight source is never run.
    """

    def __init__(self, anchor: torch.nn.Module, sources: Sequence[Source] = ()):
        self.sources = [s for s in sources if s.weight]
        self.models = [anchor] + [m for s in self.sources for m in (s.model, s.minus) if m is not None]
        self.calls = 0

    def __call__(self, **inputs) -> _Out:
        self.calls += len(self.models)
        return lockstep(self.models, inputs, self._combine)

    def _combine(self, step_logits: list[Tensor]) -> Tensor:
        logits = iter(step_logits)
        anchor, terms = next(logits), []
        for s in self.sources:
            a = next(logits)
            b = next(logits) if s.minus is not None else None
            terms.append((s.weight, torch.log_softmax(a.float(), -1) if s.logprobs else a,
                          None if b is None else torch.log_softmax(b.float(), -1) if s.logprobs else b))
        return guided(anchor, terms)

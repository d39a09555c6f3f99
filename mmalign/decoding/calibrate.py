"""InfAlign's calibrate-and-transform reward, CTRL (Balashankar et al. 2025, sec. 4).

Calibration (eq. 8): the reward of y for prompt x becomes its quantile among the reference policy's samples,
    C(x, y) = P_{z ~ pi_ref(x)}[r(x, z) < r(x, y)] + 1/2 P_{z ~ pi_ref(x)}[r(x, z) = r(x, y)],
estimated from m reference samples per prompt; on the reference's own samples it is uniform on [0, 1].
Transformation: Phi(C), with the exponential Phi(u) = exp(t u) for best-of-N (t > 0) and worst-of-N (t < 0)
decoding, and log(u) for the standard win rate (sec. 4.2). The transformed reward goes into GRPO as any reward:

    rewards: [{name: ctrl, reward: {name: bleu}, samples: 8, transform: exp, t: 4}]

draws `samples` reference outputs for each prompt the first time it is scored (the text task samples its policy
with the reference model, seeded by the prompt, so a resumed run draws the same ones).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from mmalign.task import check_rewards, reward_name

TRANSFORMS = ("identity", "exp", "log")


def calibrate(rewards: Tensor, reference: Tensor) -> Tensor:
    """Mid-rank quantile of each of `rewards` (B,) among its prompt's `reference` rewards (B, m): (B,) in [0, 1]."""
    below = (reference < rewards[:, None]).float().mean(1)
    equal = (reference == rewards[:, None]).float().mean(1)
    return below + 0.5 * equal


def transform(u: Tensor, kind: str = "exp", t: float = 1.0) -> Tensor:
    """Phi(u): "identity", "exp" (exp(t u), best-of-N with t > 0) or "log" (log u, clamped away from 0)."""
    if kind == "identity":
        return u
    if kind == "exp":
        return torch.exp(t * u)
    if kind == "log":
        return torch.log(u.clamp_min(1e-6))
    raise ValueError(f"unknown CTRL transform {kind!r}; use one of {', '.join(TRANSFORMS)}.")


def _key(context) -> str:
    return context if isinstance(context, str) else context["prompt"]


class CalibratedReward:
    """A reward wrapped by CTRL: calibrated against reference samples per prompt, then transformed.

    Args:
        reward: the base reward `fn(contexts, outputs, **kw) -> B floats`.
        reference_outputs: {prompt: the reference policy's m sampled outputs for it}, known in advance; prompts
            without them are sampled by the sampler given to `bind`.
        kind, t: the transformation (see `transform`).
        samples: reference outputs the bound sampler draws per prompt.
    """

    def __init__(self, reward: Callable, reference_outputs: Mapping[str, Sequence[str]] | None = None,
                 kind: str = "exp", t: float = 1.0, samples: int = 8):
        if kind not in TRANSFORMS:
            raise ValueError(f"unknown CTRL transform {kind!r}; use one of {', '.join(TRANSFORMS)}.")
        if not math.isfinite(t):
            raise ValueError(f"CTRL's t must be finite, got {t}.")
        if samples < 1:
            raise ValueError(f"CTRL needs at least one reference sample per prompt, got samples={samples}.")
        self.reward, self.kind, self.t, self.samples = reward, kind, t, samples
        self.name = f"ctrl_{reward_name(reward)}"
        self._reference: dict[str, Tensor] = {}
        self._outputs = dict(reference_outputs or {})
        self._sampler: Callable | None = None

    def attach(self, policy) -> None:
        """Sample the reference outputs of prompts without given ones from `policy.prompt_sampler(reference=True)`,
        `sample(context, m) -> m outputs` (`mmalign.task.PolicyBound`; the text policy has it)."""
        self._sampler = policy.prompt_sampler(reference=True)

    def reference_rewards(self, context) -> Tensor:
        """The base reward of the reference samples of `context`'s prompt, scored once and kept."""
        key = _key(context)
        if key not in self._reference:
            if key not in self._outputs and self._sampler is not None:
                self._outputs[key] = list(self._sampler(context, self.samples))
            if key not in self._outputs:
                raise KeyError(f"CTRL has no reference samples for prompt {key[:60]!r}: give them, or attach "
                               "the policy whose reference samples them (the text task does).")
            outs = list(self._outputs[key])
            self._reference[key] = check_rewards(self.reward([context] * len(outs), outs), len(outs), self.name)
        return self._reference[key]

    def __call__(self, contexts: Sequence, outputs: Sequence, **kw) -> list[float]:
        r = check_rewards(self.reward(contexts, outputs, **kw), len(outputs), self.name)
        ref = torch.stack([self.reference_rewards(c) for c in contexts])
        return transform(calibrate(r, ref), self.kind, self.t).tolist()


def ctrl(reward: str | Mapping, samples: int = 8, transform: str = "exp", t: float = 1.0) -> CalibratedReward:
    """The `ctrl` reward of configs: `reward` (a reward spec) calibrated and transformed."""
    from mmalign.rewards import resolve_reward

    return CalibratedReward(resolve_reward(reward)[1], None, transform, t, samples)

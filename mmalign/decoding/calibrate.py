"""InfAlign's calibrate-and-transform reward, CTRL (Balashankar et al. 2025, sec. 4).

Calibration (eq. 8): the reward of y for prompt x becomes its quantile among the reference policy's samples,
    C(x, y) = P_{z ~ pi_ref(x)}[r(x, z) < r(x, y)] + 1/2 P_{z ~ pi_ref(x)}[r(x, z) = r(x, y)],
estimated from m reference samples per prompt; on the reference's own samples it is uniform on [0, 1].
Transformation: Phi(C), with the exponential Phi(u) = exp(t u) for best-of-N (t > 0) and worst-of-N (t < 0)
decoding, and log(u) for the standard win rate (sec. 4.2). The transformed reward goes into GRPO as any reward.
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
        reference_outputs: {prompt: the reference policy's m sampled outputs for it}.
        kind, t: the transformation (see `transform`).
    """

    def __init__(self, reward: Callable, reference_outputs: Mapping[str, Sequence[str]], kind: str = "exp",
                 t: float = 1.0):
        if kind not in TRANSFORMS:
            raise ValueError(f"unknown CTRL transform {kind!r}; use one of {', '.join(TRANSFORMS)}.")
        if not math.isfinite(t):
            raise ValueError(f"CTRL's t must be finite, got {t}.")
        self.reward, self.kind, self.t = reward, kind, t
        self.name = f"ctrl_{reward_name(reward)}"
        self._reference: dict[str, Tensor] = {}
        self._outputs = dict(reference_outputs)

    def reference_rewards(self, context) -> Tensor:
        """The base reward of the reference samples of `context`'s prompt, scored once and kept."""
        key = _key(context)
        if key not in self._reference:
            if key not in self._outputs:
                raise KeyError(f"CTRL has no reference samples for prompt {key[:60]!r}; sample the reference "
                               "policy on every training prompt first.")
            outs = list(self._outputs[key])
            self._reference[key] = check_rewards(self.reward([context] * len(outs), outs), len(outs), self.name)
        return self._reference[key]

    def __call__(self, contexts: Sequence, outputs: Sequence, **kw) -> list[float]:
        r = check_rewards(self.reward(contexts, outputs, **kw), len(outputs), self.name)
        ref = torch.stack([self.reference_rewards(c) for c in contexts])
        return transform(calibrate(r, ref), self.kind, self.t).tolist()

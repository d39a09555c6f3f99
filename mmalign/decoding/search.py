"""Best-of-N for any policy (text, image, video): N samples per prompt, the one the reward ranks first (N = 1 is
plain sampling). The token-level searches of a text policy (DeAL, Transfer Q*) are `mmalign.text.search`.

It returns the chosen outputs and a `Cost` (model forwards, generated tokens), the price beside the reward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from mmalign.task import check_rewards


@dataclass
class Cost:
    """What a decoder spent: model forwards (a prefill or a decode step of a batch counts once) and tokens
    generated, lookahead and rollout tokens included."""

    model_calls: int = 0
    tokens: int = 0


def best_of_n(policy, contexts: Sequence, reward: Callable, n: int) -> tuple[list[str], Cost]:
    """The highest-reward of `n` samples per context (ties: the first drawn)."""
    if n < 1:
        raise ValueError(f"best-of-N needs n >= 1, got {n}.")
    rollout = policy.sample(contexts, n)
    rows = [c for c in contexts for _ in range(n)]
    r = check_rewards(reward(rows, rollout.outputs), len(rows), "reward").view(len(contexts), n)
    best = r.argmax(1) + torch.arange(len(contexts)) * n
    steps = rollout.mask.shape[1]
    return [rollout.outputs[i] for i in best.tolist()], Cost(steps, int(rollout.mask.sum()))

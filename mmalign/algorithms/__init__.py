"""Algorithms: each is a config dataclass plus functions, bundled as an `Algorithm` and named in `ALGORITHMS`.

Online algorithms have `prepare(policy, rollout, cfg, state) -> metrics` (advantages, reference log-probs, values
into `rollout.extras`) and `loss(policy, batch, cfg, denom) -> (loss, metrics)`. Offline ones have no `prepare`;
their `loss(policy, rows, cfg, denom)` reads dataset rows.

Run state that outlives an iteration (DDPO's per-prompt reward statistics) belongs to the algorithm, never to the
policy: `Algorithm.state(cfg)` makes it once per run, the Trainer hands it to every `prepare` and keeps its
`state_dict()` (JSON) in each checkpoint, restoring it with `load_state_dict` on resume. Algorithms without run
state have no factory and get `state=None`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from mmalign.losses import aggregate, truncated_is_weights

if TYPE_CHECKING:
    from mmalign.rollout import Rollout


class Algorithm(NamedTuple):
    config: type
    """The settings dataclass (the YAML section named after the algorithm)."""
    prepare: Callable | None
    """Step 3 of the loop, or None for an offline algorithm."""
    loss: Callable
    """Step 4: the loss of one micro-batch."""
    state: Callable | None = None
    """`state(cfg)`: the run state `prepare` reads and updates, made once per run; None when there is none."""
    scales_advantages: bool = False
    """`prepare` multiplies the advantages by `rollout.extras["advantage_scale"]` when a task fills it (GRPO-S)."""


def rollout_correction(rollout: Rollout, cap: float) -> dict[str, float]:
    """When the sampler's log-probs differ from the trainer's (`rollout.extras["rollout_logprobs"]`, e.g. a vLLM
    engine's, beside `rollout.logprobs`, the trainer's re-score of the same steps), put the truncated importance
    weights (`mmalign.losses.truncated_is_weights`, cap C = `cap`) in `rollout.extras["is_weights"]`, where the
    policy-gradient losses read them, and return their mean, the capped fraction and the mean |log-prob gap| over
    real steps. A rollout without sampler log-probs, or `cap` 0, is left as it is."""
    if cap <= 0 or "rollout_logprobs" not in rollout.extras:
        return {}
    sampler, mask = rollout.extras["rollout_logprobs"], rollout.mask
    w = truncated_is_weights(rollout.logprobs, sampler, cap)
    rollout.extras["is_weights"] = w.weight
    return {"tis_weight": float(aggregate(w.weight, mask)), "tis_clip_frac": float(aggregate(w.clipped.float(), mask)),
            "rollout_logprob_gap": float(aggregate((rollout.logprobs - sampler).abs().float(), mask))}


ALGORITHMS = {
    "grpo": "mmalign.algorithms.grpo:GRPO",
    "ppo": "mmalign.algorithms.ppo:PPO",
    "copg": "mmalign.algorithms.copg:COPG",
    "preference": "mmalign.algorithms.offline:PREFERENCE",
    "ddpo": "mmalign.diffusion.algorithms:DDPO",
    "b2": "mmalign.diffusion.algorithms:B2",
}
"""Algorithm names usable in configs; anything else is a "package.module:NAME" string naming an `Algorithm`."""

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
from typing import NamedTuple


class Algorithm(NamedTuple):
    config: type
    """The settings dataclass (the YAML section named after the algorithm)."""
    prepare: Callable | None
    """Step 3 of the loop, or None for an offline algorithm."""
    loss: Callable
    """Step 4: the loss of one micro-batch."""
    state: Callable | None = None
    """`state(cfg)`: the run state `prepare` reads and updates, made once per run; None when there is none."""


ALGORITHMS = {
    "grpo": "mmalign.algorithms.grpo:GRPO",
    "ppo": "mmalign.algorithms.ppo:PPO",
    "copg": "mmalign.algorithms.copg:COPG",
    "preference": "mmalign.algorithms.offline:PREFERENCE",
    "ddpo": "mmalign.diffusion.algorithms:DDPO",
    "b2": "mmalign.diffusion.algorithms:B2",
}
"""Algorithm names usable in configs; anything else is a "package.module:NAME" string naming an `Algorithm`."""

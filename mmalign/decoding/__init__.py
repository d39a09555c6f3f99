"""Decoding-time alignment: steer a frozen model at inference instead of (or besides) training it.

- `combine.py`: one guided prediction, anchor + sum_i w_i (a_i - b_i), for every method that mixes models per step:
  RL guidance for diffusion (base + w (tuned - base)), RAST (large + lambda (small RL - small base)), GenARM
  (base + (w / beta) log pi_ARM); `GuidedLM` runs the models of a text combination in lockstep, each on its own KV
  cache, so the shared decoder samples from the combined logits.
- `search.py`: decoders that search under rewards: best-of-N, DeAL's lookahead search, Transfer Q*'s value-guided
  sampling; each counts its cost (model calls, generated tokens).
- `calibrate.py`: InfAlign's calibrate-and-transform reward (CTRL), a reward wrapper for any GRPO run.
"""

from mmalign.decoding.calibrate import CalibratedReward, calibrate, transform
from mmalign.decoding.combine import GuidedLM, Source, guided
from mmalign.decoding.search import Cost, best_of_n, lookahead_decode, value_guided_decode

__all__ = ["CalibratedReward", "Cost", "GuidedLM", "Source", "best_of_n", "calibrate", "guided", "lookahead_decode",
           "transform", "value_guided_decode"]

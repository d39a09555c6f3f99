"""Decoding-time alignment: steer a frozen model at inference instead of (or besides) training it.

- `combine.py`: one guided prediction, anchor + sum_i w_i (a_i - b_i), for every method that mixes models per step:
  RL guidance for diffusion (base + w (tuned - base)), RAST (large + lambda (small RL - small base)), GenARM
  (base + (w / beta) log pi_ARM); `GuidedLM` runs the models of a text combination in lockstep, each on its own KV
  cache, so the shared decoder samples from the combined logits.
- `search.py`: best-of-N under a reward for any policy, with its cost (model calls, generated tokens), and InfAlign's
  evaluation, the best-of-N win rate of a policy against its reference with its KL from it. The token-level
  searches (DeAL, Transfer Q*) and the `Decoder` behind `--decode` live beside the text adapter
  (`mmalign.text.search`, `mmalign.text.decoder`).
- `calibrate.py`: InfAlign's calibrate-and-transform reward (CTRL), a reward wrapper for any GRPO run.
"""

from mmalign.decoding.calibrate import CalibratedReward, calibrate, transform
from mmalign.decoding.combine import GuidedLM, Source, guided
from mmalign.decoding.search import Cost, best_of_n, bon_win_rate, bon_wins, sequence_kl

__all__ = ["CalibratedReward", "Cost", "GuidedLM", "Source", "best_of_n", "bon_win_rate", "bon_wins", "calibrate",
           "guided", "sequence_kl", "transform"]

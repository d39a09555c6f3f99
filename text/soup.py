"""SALSA's reference soup (Chegini et al. 2024, "SALSA: Soup-based Alignment Learning for Stronger Adaptation in
RLHF", Sec. 3): the KL reference is not the frozen initial policy but the weight-space average of independently
fine-tuned models of one base, theta_ref = sum_i w_i theta_i with sum_i w_i = 1 (uniform: the paper's soup of two
SFT models, alpha = 0.5). Averaging is per tensor, in fp32, over models of one architecture (same keys and shapes).

`task_args.reference_soup: [folder_a, folder_b]` (save_pretrained folders, e.g. two runs' `final/`) makes the text
policy's KL reference this soup; the policy itself starts from `task_args.model`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from mmalign.config import ConfigError


def soup_weights(n: int, weights: Sequence[float] = ()) -> list[float]:
    """The mixing weights of `n` models: `weights` normalised to sum 1, or uniform 1/n when none are given."""
    if not weights:
        return [1.0 / n] * n
    if len(weights) != n or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"gives {list(weights)} for {n} models: one non-negative weight per model, not all 0 "
                          "(or none, for the uniform soup).", "task_args.reference_soup_weights")
    return [w / sum(weights) for w in weights]


def soup_state_dict(states: Sequence[Mapping[str, Tensor]], weights: Sequence[float] = ()) -> dict[str, Tensor]:
    """sum_i w_i theta_i of state dicts with the same keys and shapes, each tensor averaged in fp32 and returned in
    the first state's dtype.

    Raises:
        ConfigError: naming the first model whose keys or shapes differ from the first's (not one base's fine-tunes).
    """
    w = soup_weights(len(states), weights)
    first = states[0]
    for i, state in enumerate(states[1:], 1):
        if state.keys() != first.keys():
            diff = sorted(set(state) ^ set(first))[:4]
            raise ConfigError(f"model {i} has other weights than model 0 ({diff} ...): a soup averages fine-tunes of "
                              "one base model, with the same architecture.", "task_args.reference_soup")
        bad = [k for k in first if state[k].shape != first[k].shape]
        if bad:
            raise ConfigError(f"model {i}'s {bad[0]} has shape {tuple(state[bad[0]].shape)}, model 0's "
                              f"{tuple(first[bad[0]].shape)}: a soup averages models of one architecture.",
                              "task_args.reference_soup")
    return {k: sum(wi * s[k].float() for wi, s in zip(w, states)).to(first[k].dtype) for k in first}

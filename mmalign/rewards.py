"""Rewards from config specs: plain callables `fn(contexts, outputs, **kwargs) -> B floats`, named, weighted and
combined.

`contexts[i]` is the dataset row that produced `outputs[i]`. `resolve_reward` builds one reward from a
YAML-friendly spec through the `REWARDS` registry (names -> "package.module:attr" strings, imported only when a
spec names them) or a "package.module:attr" string, never `eval`; `combine_rewards` weights several rewards and
validates every value with `mmalign.task.check_rewards`. Bad specs and bad reward values raise
`mmalign.task.RewardError`. The text rewards themselves (BLEU, chrF, exact match, ...) are in
`mmalign.text.rewards`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor

from mmalign.config import did_you_mean, resolve
from mmalign.rollout import RewardFn
from mmalign.task import RewardError, check_rewards, reward_name

# ---------------------------------------------------------------------------------------------------------------
# Validation and combination


class CombinedReward:
    """Several reward functions with weights: returns (total (B,), {name: unweighted (B,)}).

    Args:
        fns: reward functions, as {name: fn} or a list (named with `reward_name`).
        weights: one weight per function; all 1.0 when omitted.
    """

    def __init__(self, fns: Mapping[str, RewardFn] | Sequence[RewardFn], weights: Sequence[float] | None = None):
        if isinstance(fns, Mapping):
            names, fns = list(fns), list(fns.values())
        else:
            fns = list(fns)
            names = [reward_name(f) for f in fns]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise RewardError(f"two reward functions are both named {dupes}; pass a dict {{name: fn}} instead.")
        if not fns:
            raise RewardError("combine_rewards needs at least one reward function.")
        weights = [1.0] * len(fns) if weights is None else [float(w) for w in weights]
        if len(weights) != len(fns):
            raise RewardError(f"got {len(weights)} weights for {len(fns)} reward functions {names}.")
        self.names, self.fns, self.weights = names, fns, weights

    def __call__(self, contexts: Sequence, outputs: Sequence, **kwargs: Any) -> tuple[Tensor, dict[str, Tensor]]:
        per_fn = {
            name: check_rewards(fn(contexts, outputs, **kwargs), len(outputs), name)
            for name, fn in zip(self.names, self.fns, strict=True)
        }
        total = sum(w * v for w, v in zip(self.weights, per_fn.values(), strict=True))
        return total, per_fn


def weighted_sum(rewards: Sequence[tuple[str, RewardFn, float]]) -> Callable[[Sequence, Sequence], list[float]]:
    """A task's `(name, fn, weight)` rewards as one reward function: each output's weighted sum (what searches,
    best-of-N and row selection rank by)."""
    combined = CombinedReward({name: fn for name, fn, _ in rewards}, [w for _, _, w in rewards])
    return lambda contexts, outputs: combined(contexts, outputs)[0].tolist()


def combine_rewards(
    fns: Mapping[str, RewardFn] | Sequence[RewardFn], weights: Sequence[float] | None = None
) -> CombinedReward:
    """Weighted sum of reward functions; see `CombinedReward`."""
    return CombinedReward(fns, weights)


# ---------------------------------------------------------------------------------------------------------------
# Building rewards from config specs

REWARDS: dict[str, str | Callable[..., RewardFn]] = {
    "bleu": "mmalign.text.rewards:BleuReward",
    "chrf": "mmalign.text.rewards:ChrfReward",
    "exact_match": "mmalign.text.rewards:ExactMatchReward",
    "regex": "mmalign.text.rewards:RegexReward",
    "format": "mmalign.text.rewards:think_answer_format_reward",
    "reward_model": "mmalign.text.rewards:SequenceClassifierReward",
    "bt_rm": "mmalign.text.reward_models:bt_reward_model",
    "brme": "mmalign.text.reward_models:brme_reward_model",
    "principles": "mmalign.text.reward_models:PrincipleReward",
    "principle_pass": "mmalign.text.reward_models:PrincipleCheck",
    "ctrl": "mmalign.decoding.calibrate:ctrl",
    "shadow_rm": "mmalign.text.grpo_s:ShadowRewards",
    "seq2seq_rm": "mmalign.text.seq2seq_rm:Seq2SeqRewardModel",
    "mpo_judge": "mmalign.text.mpo:MPOReward",
}
"""Reward names usable in configs -> factories taking the spec's other keys as keyword arguments, each given as
a "package.module:attr" string (imported when a spec names it) or as the factory itself."""

_SPEC_KEYS = ("name", "fn", "weight", "label")


def reward_spec(spec: str | Mapping[str, Any]) -> dict:
    """A reward spec as a new dict: a name "bleu" becomes {"name": "bleu"}.

    Raises:
        RewardError: the spec is neither a name nor a mapping, or its weight is not a finite number.
    """
    if isinstance(spec, str):
        return {"name": spec}
    if not isinstance(spec, Mapping):
        raise RewardError(f"a reward spec is a name or a mapping such as {{name: bleu, weight: 1.0}}, got {spec!r}.")
    weight = spec.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise RewardError(f"reward {spec.get('name', spec.get('fn'))!r}: weight must be a finite number, got "
                          f"{weight!r}.")
    return dict(spec)


def check_options(factory: Callable[..., Any], kwargs: dict, what: str) -> None:
    """Check that `factory(**kwargs)` binds, without calling it; a bad keyword is named with the accepted ones."""
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as e:
        try:
            accepted = [p for p in inspect.signature(factory).parameters if p != "self"]
        except (TypeError, ValueError):
            accepted = []
        raise RewardError(f"reward {what}: bad options {sorted(kwargs)} ({e}); it accepts {accepted}.") from e


def build_reward(factory: Callable[..., Any], kwargs: dict, what: str) -> RewardFn:
    """Call `factory(**kwargs)`, turning a bad keyword into a message that lists the accepted ones."""
    check_options(factory, kwargs, what)
    return factory(**kwargs)


def check_reward_spec(
    spec: str | Mapping[str, Any], registry: Mapping[str, str | Callable] | None = None
) -> dict:
    """A reward spec (`reward_spec`) checked without building anything: exactly one of a "name" of `registry`
    (default `REWARDS`) with options its factory accepts, or an "fn" (imported only when the reward is built).

    Raises:
        RewardError: naming the problem.
    """
    registry = REWARDS if registry is None else registry
    spec = reward_spec(spec)
    if ("name" in spec) == ("fn" in spec):
        raise RewardError(
            f"a reward spec needs exactly one of 'name' (one of {sorted(registry)}) or 'fn' "
            f"('package.module:attr'); got {spec}."
        )
    name = spec.get("name")
    if name is not None:
        if name not in registry:
            raise RewardError(
                f"unknown reward {name!r}; use one of {sorted(registry)} or {{'fn': 'package.module:attr'}}"
                f"{did_you_mean(name, registry)}."
            )
        check_options(_factory(registry[name]), _options(spec), repr(name))
    return spec


def _factory(entry: str | Callable[..., RewardFn]) -> Callable[..., RewardFn]:
    """A registry entry's factory: a "package.module:attr" string imported now, or the factory itself."""
    return resolve(entry) if isinstance(entry, str) else entry


def _options(spec: dict) -> dict:
    """The keys of a spec that are its reward's options."""
    return {k: v for k, v in spec.items() if k not in _SPEC_KEYS}


def resolve_reward(spec: str | Mapping[str, Any]) -> tuple[str, RewardFn, float]:
    """Build a reward function from a YAML-friendly spec.

    Specs: "bleu"; {"name": "bleu", "smoothing": "add-one", "weight": 1.0} (a `REWARDS` entry; keys other than
    "weight" and "label" are its options); {"fn": "package.module:attr", ...} (a reward function used as is, or a
    factory / class called with the other keys).

    Returns:
        (label, fn, weight): label is the spec's "label", else its "name", else the function's own name; weight is
        the spec's "weight" (default 1.0).
    """
    spec = check_reward_spec(spec)
    kwargs = _options(spec)
    if "name" in spec:
        fn = _factory(REWARDS[spec["name"]])(**kwargs)
    else:
        target = resolve(spec["fn"])
        if not callable(target):
            raise RewardError(f"reward {spec['fn']!r} is a {type(target).__name__}, not a callable.")
        fn = build_reward(target, kwargs, repr(spec["fn"])) if kwargs or inspect.isclass(target) else target
    label = spec.get("label") or spec.get("name") or reward_name(fn)
    return str(label), fn, float(spec.get("weight", 1.0))

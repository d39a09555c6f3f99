"""PEARL end to end: CPA labels -> reward model -> IQL on the relabelled target dataset -> target-task success.

    python -m mmalign.robotics.pearl --source reach --target button-press --methods cpa-rrl random-rrl --seeds 0
    mmalign train configs/robotics/pearl_planar.yaml          # the comparison as a run (pearl_run.py)

Pipeline of `run_pearl(source, target, method, seed)`:

1. Mixed-quality offline datasets of both tasks (`collect_dataset`, expert / medium / poor / random behaviour).
2. n segments of H steps per task; every source pair labelled by ground-truth return (the oracle scripted teacher).
3. Labels of the target pairs, by `method` ("<labels>-<model>", model "rrl" or "bt"):
   "cpa": CPA-transferred (zero target labels); "random": uniform 0/1 labels (same pipeline); "oracle": the target's
   own ground-truth preferences (upper reference); "few": only `few_labels` real target labels (the reward model
   trains on those alone); "cpa-few": CPA labels with `few_labels` real target labels mixed in (PEARL's few-label
   setting).
4. Reward model on the target pairs: RRL (Gaussian, `fit_reward` with stochastic=True) or plain BT.
5. The whole target dataset relabelled with the model's mean reward, z-scored (same for every method), and IQL
   (`mmalign.robotics.iql`) trained on it offline.
6. The IQL policy rolled out on the target task: success rate and mean ground-truth return.

Tasks are planar ("reach", "push", "button-press", "drawer-open", "orbit") or Meta-World v3 ("button-press-v3", ...);
see `mmalign.robotics.offline_data.make_env`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from mmalign.config import ConfigError, check_numbers
from mmalign.device import resolve_device
from mmalign.robotics.cpa import CPAConfig, SourceTask, all_pairs, cross_task_labels, segment_features
from mmalign.robotics.iql import IQLConfig, evaluate, train_iql, transitions
from mmalign.robotics.offline_data import OfflineDataset, check_dataset, collect_dataset, dataset_record
from mmalign.robotics.rrl import RRLConfig, fit_reward

LABELS = ("oracle", "cpa", "cpa-few", "few", "random")
"""Where the target labels come from (see the module docstring)."""
METHODS = tuple(f"{lab}-{model}" for lab in LABELS for model in ("rrl", "bt"))
"""Every method name: "<labels>-<reward model>"."""


@dataclass
class PearlConfig:
    """Budget of one run (defaults: about a minute per method on one CPU core for the planar tasks)."""

    episodes_per_policy: int = 25
    """Dataset size per task: 4 behaviour policies x this many episodes."""
    max_episode_steps: int | None = None
    """Episode length of the datasets and the evaluation; None = the env's own (planar 100, Meta-World 500)."""
    segments: int = 100
    """Segments per task for CPA (all n (n - 1) / 2 target pairs are labelled)."""
    segment_length: int = 25
    """Steps per segment (H)."""
    reward_pairs: int = 2000
    """Target pairs (sampled from all pairs) the reward model trains on."""
    few_labels: int = 50
    """Real target labels of the "few" and "cpa-few" methods."""
    label_flips: float = 0.0
    """Fraction of the target labels flipped (a -> 1 - a) after they are made: extra noise on top of CPA's, to
    measure RRL's robustness (docs/pearl.md, label-noise sweep)."""
    cpa: CPAConfig = field(default_factory=CPAConfig)
    """CPA cost and solver settings."""
    rrl: RRLConfig = field(default_factory=lambda: RRLConfig(epochs=20))
    """Reward-model settings (`stochastic` is set by the method)."""
    iql: IQLConfig = field(default_factory=lambda: IQLConfig(steps=5000))
    """IQL settings."""
    eval_episodes: int = 10
    """Evaluation episodes of the IQL actor (reset seeds 10000, 10001, ...)."""

    def __post_init__(self) -> None:
        check_numbers(self, "episodes_per_policy", "segment_length", "reward_pairs", "eval_episodes", ge=1)
        if self.max_episode_steps is not None:
            check_numbers(self, "max_episode_steps", ge=1)
        check_numbers(self, "segments", ge=2)
        check_numbers(self, "few_labels", ge=1, le=self.segments * (self.segments - 1) // 2)  # the target pairs
        check_numbers(self, "label_flips", ge=0, le=1)


def check_method(method: str, key: str = "") -> None:
    """Raise a ConfigError (keyed `key`) naming the known methods if `method` is not one."""
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose from {list(METHODS)}.", key)


def oracle_labels(ret_a: np.ndarray, ret_b: np.ndarray) -> np.ndarray:
    """The scripted teacher: 1 if a's true return is larger, 0 if smaller, 0.5 if equal."""
    return np.where(ret_a == ret_b, 0.5, (ret_a > ret_b).astype(float))


def _labels(kind: str, srcs: list[dict], t: dict, a: np.ndarray, b: np.ndarray, cfg: PearlConfig,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Target labels (P,) and, for "few", the positions of the pairs that have one (else None)."""
    rt = t["rewards"].sum(1)
    if kind == "oracle":
        return oracle_labels(rt[a], rt[b]), None
    if kind == "random":
        return rng.integers(0, 2, len(a)).astype(float), None
    few = rng.choice(len(a), cfg.few_labels, replace=False) if kind in ("few", "cpa-few") else None
    if kind == "few":
        return oracle_labels(rt[a], rt[b]), few
    rep = cfg.cpa.representation
    sources = []
    for s in srcs:
        rs = s["rewards"].sum(1)
        sources.append(SourceTask(segment_features(s["obs"], s["actions"], rep), a, b, oracle_labels(rs[a], rs[b])))
    real = None if few is None else (few, oracle_labels(rt[a[few]], rt[b[few]]))
    return cross_task_labels(sources, segment_features(t["obs"], t["actions"], rep), a, b, cfg.cpa, real).labels, None


def label_accuracy(labels: np.ndarray, ret_a: np.ndarray, ret_b: np.ndarray) -> float:
    """Agreement of soft labels with the true order on pairs of unequal return (0.5 counts as half)."""
    keep = ret_a != ret_b
    hard = np.where(labels[keep] > 0.5, 1.0, np.where(labels[keep] < 0.5, 0.0, 0.5))
    return float(np.mean(np.where(hard == 0.5, 0.5, hard == (ret_a > ret_b)[keep])))


def get_dataset(task: str, cfg: PearlConfig, data: dict[str, OfflineDataset]) -> OfflineDataset:
    """The task's dataset from the cache `data` if it was collected with `cfg`'s settings, collected (seed 0) on a
    miss.

    Raises:
        CacheError: the cached dataset was collected with other settings, or before datasets recorded them.
    """
    if task not in data:
        data[task] = collect_dataset(task, cfg.episodes_per_policy, seed=0, max_episode_steps=cfg.max_episode_steps)
    return check_dataset(data[task], dataset_record(task, cfg.episodes_per_policy, seed=0,
                                                    max_episode_steps=cfg.max_episode_steps))


def run_pearl(source: str | Sequence[str], target: str, method: str = "cpa-rrl", seed: int = 0,
              cfg: PearlConfig | None = None, data: dict | None = None, device: torch.device | str = "cpu",
              policy: bool = True) -> dict:
    """One zero-shot transfer run; see the module docstring.

    Args:
        source: source task name (labelled), or several (one GW problem each, CPA combines them).
        target: target task name (no labels used unless method is "oracle-*", "few-*" or "cpa-few-*").
        method: one of `METHODS`.
        seed: seeds the segments, the random labels, the reward model and IQL (datasets use seed 0).
        cfg: budget.
        data: optional {task: OfflineDataset} cache.
        device: where the reward model and IQL train (CPA and the rollouts run on the CPU).
        policy: train and evaluate IQL; False stops after the reward model (success and return are NaN).

    Returns:
        dict with success, return, label_accuracy (of the target labels the reward model trains on, vs the truth),
        reward_rank_corr (Spearman correlation of the learned vs true per-step reward on the target dataset),
        seconds.
    """
    check_method(method)
    cfg = cfg or PearlConfig()
    sources = [source] if isinstance(source, str) else list(source)
    t0 = time.time()
    data = data if data is not None else {}
    for task in (*sources, target):
        get_dataset(task, cfg, data)
    rng = np.random.default_rng(seed)
    srcs = [data[s].sample_segments(cfg.segments, cfg.segment_length, rng) for s in sources]
    t = data[target].sample_segments(cfg.segments, cfg.segment_length, rng)
    a, b = all_pairs(cfg.segments)
    kind, model_kind = method.rsplit("-", 1)
    labels, few = _labels(kind, srcs, t, a, b, cfg, rng)
    if cfg.label_flips:
        flip = np.random.default_rng([seed, 1]).random(len(labels)) < cfg.label_flips  # own stream: same pairs
        labels = np.where(flip, 1 - labels, labels)
    rt = t["rewards"].sum(1)
    if few is None:
        acc = label_accuracy(labels, rt[a], rt[b])
        pick = rng.choice(len(a), min(cfg.reward_pairs, len(a)), replace=False)
    else:  # as many optimiser steps as the other methods, over the few labelled pairs
        acc = label_accuracy(labels[few], rt[a[few]], rt[b[few]])
        pick = few[rng.integers(0, len(few), cfg.reward_pairs)]
    f = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    rcfg = RRLConfig(**{**asdict(cfg.rrl), "stochastic": model_kind == "rrl", "seed": seed})
    model, _ = fit_reward(f(t["obs"][a[pick]]), f(t["actions"][a[pick]]), f(t["obs"][b[pick]]),
                          f(t["actions"][b[pick]]), f(labels[pick]), rcfg, device)
    ds = data[target]
    rew = model.reward(f(ds.observations), f(ds.actions)).numpy()
    valid = np.arange(rew.shape[1])[None] < ds.lengths[:, None]
    rew = (rew - rew[valid].mean()) / (rew[valid].std() + 1e-8)
    corr = float(np.corrcoef(_rank(rew[valid]), _rank(ds.rewards[valid]))[0, 1])
    ev = {"success": float("nan"), "return": float("nan")}
    if policy:
        actor, _ = train_iql(transitions(ds.observations, ds.actions, rew, ds.lengths),
                             IQLConfig(**{**asdict(cfg.iql), "seed": seed}), device)
        ev = evaluate(actor, target, cfg.eval_episodes, max_episode_steps=cfg.max_episode_steps)
    return {"source": "+".join(sources), "target": target, "method": method, "seed": seed, "success": ev["success"],
            "return": ev["return"], "label_accuracy": acc, "reward_rank_corr": corr, "seconds": time.time() - t0}


def _rank(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x)).astype(float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", nargs="+", default=["reach"], help="source task(s)")
    parser.add_argument("--target", default="button-press")
    parser.add_argument("--methods", nargs="+", default=["cpa-rrl", "random-rrl"], choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--iql-steps", type=int, default=5000)
    parser.add_argument("--max-episode-steps", type=int, default=None)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--normalize-obs", action="store_true", help="standardise observations inside IQL "
                        "(Meta-World)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda: where the reward model and IQL train")
    parser.add_argument("--out", default=None, help="optional JSON file for the results")
    args = parser.parse_args()
    cfg = PearlConfig(iql=IQLConfig(steps=args.iql_steps, normalize_obs=args.normalize_obs),
                      max_episode_steps=args.max_episode_steps, eval_episodes=args.eval_episodes)
    data: dict = {}
    results = []
    for method in args.methods:
        for seed in args.seeds:
            res = run_pearl(args.source, args.target, method, seed, cfg, data, resolve_device(args.device))
            results.append(res)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()

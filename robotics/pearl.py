"""PEARL end to end: CPA labels -> reward model -> IQL on the relabelled target dataset -> target-task success.

    python -m mmalign.robotics.pearl --source reach --target button-press --methods cpa-rrl random-rrl --seeds 0

Pipeline of `run_pearl(source, target, method, seed)`:

1. Mixed-quality offline datasets of both tasks (`collect_dataset`, expert / medium / poor / random behaviour).
2. n segments of H steps per task; every source pair labelled by ground-truth return (the oracle scripted teacher).
3. Labels of the target pairs, by `method`:
   "cpa-rrl" / "cpa-bt": CPA-transferred (zero target labels); "random-rrl": uniform 0/1 labels (same pipeline);
   "oracle-rrl" / "oracle-bt": the target's own ground-truth preferences (upper reference).
4. Reward model on the target pairs: RRL (Gaussian, `fit_reward` with stochastic=True) or plain BT.
5. The whole target dataset relabelled with the model's mean reward, z-scored (same for every method), and IQL
   (`mmalign.robotics.iql`) trained on it offline.
6. The IQL policy rolled out on the target task: success rate and mean ground-truth return.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from mmalign.robotics.cpa import CPAConfig, SourceTask, all_pairs, cross_task_labels, segment_features
from mmalign.robotics.iql import IQLConfig, evaluate, train_iql, transitions
from mmalign.robotics.offline_data import collect_dataset
from mmalign.robotics.rrl import RRLConfig, fit_reward

TASKS = {"reach": "mmalign/Reach-v0", "push": "mmalign/Push-v0", "button-press": "mmalign/ButtonPress-v0",
         "drawer-open": "mmalign/DrawerOpen-v0"}
METHODS = ("cpa-rrl", "random-rrl", "oracle-rrl", "cpa-bt", "oracle-bt")


@dataclass
class PearlConfig:
    """Budget of one run (defaults: about a minute per method on one CPU core)."""

    episodes_per_policy: int = 25
    """Dataset size per task: 4 behaviour policies x this many 100-step episodes."""
    segments: int = 100
    """Segments per task for CPA (all n (n - 1) / 2 target pairs are labelled)."""
    segment_length: int = 25
    reward_pairs: int = 2000
    """Target pairs (sampled from all pairs) the reward model trains on."""
    cpa: CPAConfig = field(default_factory=CPAConfig)
    rrl: RRLConfig = field(default_factory=lambda: RRLConfig(epochs=20))
    iql: IQLConfig = field(default_factory=lambda: IQLConfig(steps=5000))
    eval_episodes: int = 10


def _labels(method: str, s: dict, t: dict, a: np.ndarray, b: np.ndarray, cfg: PearlConfig,
            rng: np.random.Generator) -> np.ndarray:
    kind = method.split("-")[0]
    if kind == "cpa":
        rs = s["rewards"].sum(1)
        src = SourceTask(segment_features(s["obs"], s["actions"], cfg.cpa.representation), a, b,
                         (rs[a] > rs[b]).astype(float))
        tf = segment_features(t["obs"], t["actions"], cfg.cpa.representation)
        return cross_task_labels([src], tf, a, b, cfg.cpa).labels
    if kind == "random":
        return rng.integers(0, 2, len(a)).astype(float)
    if kind == "oracle":
        rt = t["rewards"].sum(1)
        return np.where(rt[a] == rt[b], 0.5, (rt[a] > rt[b]).astype(float))
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def label_accuracy(labels: np.ndarray, ret_a: np.ndarray, ret_b: np.ndarray) -> float:
    """Agreement of soft labels with the true order on pairs of unequal return (0.5 counts as half)."""
    keep = ret_a != ret_b
    hard = np.where(labels[keep] > 0.5, 1.0, np.where(labels[keep] < 0.5, 0.0, 0.5))
    return float(np.mean(np.where(hard == 0.5, 0.5, hard == (ret_a > ret_b)[keep])))


def run_pearl(source: str, target: str, method: str = "cpa-rrl", seed: int = 0, cfg: PearlConfig | None = None,
              data: dict | None = None) -> dict:
    """One zero-shot transfer run; see the module docstring.

    Args:
        source: source task name (labelled), a key of `TASKS`.
        target: target task name (no labels used unless method is "oracle-*").
        method: one of `METHODS`.
        seed: seeds the segments, the random labels, the reward model and IQL (datasets use seed 0).
        cfg: budget.
        data: optional {task: OfflineDataset} cache.

    Returns:
        dict with success, return, label_accuracy (of the target labels vs the truth), reward_rank_corr (Spearman
        correlation of the learned vs true per-step reward on the target dataset), seconds.
    """
    cfg = cfg or PearlConfig()
    t0 = time.time()
    data = data if data is not None else {}
    for task in (source, target):
        if task not in data:
            data[task] = collect_dataset(TASKS[task], cfg.episodes_per_policy, seed=0)
    rng = np.random.default_rng(seed)
    s = data[source].sample_segments(cfg.segments, cfg.segment_length, rng)
    t = data[target].sample_segments(cfg.segments, cfg.segment_length, rng)
    a, b = all_pairs(cfg.segments)
    labels = _labels(method, s, t, a, b, cfg, rng)
    rt = t["rewards"].sum(1)
    acc = label_accuracy(labels, rt[a], rt[b])
    pick = rng.choice(len(a), min(cfg.reward_pairs, len(a)), replace=False)
    f = lambda x: torch.as_tensor(x, dtype=torch.float32)  # noqa: E731
    rcfg = RRLConfig(**{**asdict(cfg.rrl), "stochastic": method.endswith("rrl"), "seed": seed})
    model, _ = fit_reward(f(t["obs"][a[pick]]), f(t["actions"][a[pick]]), f(t["obs"][b[pick]]),
                          f(t["actions"][b[pick]]), f(labels[pick]), rcfg)
    ds = data[target]
    rew = model.reward(f(ds.observations), f(ds.actions)).numpy()
    valid = np.arange(rew.shape[1])[None] < ds.lengths[:, None]
    rew = (rew - rew[valid].mean()) / (rew[valid].std() + 1e-8)
    corr = float(np.corrcoef(_rank(rew[valid]), _rank(ds.rewards[valid]))[0, 1])
    actor, _ = train_iql(transitions(ds.observations, ds.actions, rew, ds.lengths),
                         IQLConfig(**{**asdict(cfg.iql), "seed": seed}))
    ev = evaluate(actor, TASKS[target], cfg.eval_episodes)
    return {"source": source, "target": target, "method": method, "seed": seed, "success": ev["success"],
            "return": ev["return"], "label_accuracy": acc, "reward_rank_corr": corr, "seconds": time.time() - t0}


def _rank(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x)).astype(float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="reach", choices=list(TASKS))
    parser.add_argument("--target", default="button-press", choices=list(TASKS))
    parser.add_argument("--methods", nargs="+", default=["cpa-rrl", "random-rrl"], choices=METHODS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--iql-steps", type=int, default=5000)
    parser.add_argument("--out", default=None, help="optional JSON file for the results")
    args = parser.parse_args()
    cfg = PearlConfig(iql=IQLConfig(steps=args.iql_steps))
    data: dict = {}
    results = []
    for method in args.methods:
        for seed in args.seeds:
            res = run_pearl(args.source, args.target, method, seed, cfg, data)
            results.append(res)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}), flush=True)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()

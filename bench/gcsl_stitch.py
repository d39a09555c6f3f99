"""Stitching on the MuJoCo reach task: GCSL, GCSL + temporal augmentation and goal-conditioned IQL on unseen pairs.

    python bench/gcsl_stitch.py --config bench/configs/gcsl_stitch.yaml --out docs/figures   # ~1 min, one core
    python bench/gcsl_stitch.py --config bench/configs/gcsl_stitch.yaml gcsl.steps=500         # key=value overrides

For each seed: collects the two routes A -> M -> D and B -> M -> C (`mmalign.robotics.stitching`), trains GCSL,
GCSL with the temporal augmentation and IQL (`mmalign.robotics.gcsl`), and rolls each policy out in the MuJoCo reach
env on the unseen pairs (A -> C, B -> D) and the seen ones (A -> D, B -> C). An untrained policy (the networks'
initialisation) is the floor. Prints per method the mean and min-max over seeds and the ratio to IQL's mean; writes
gcsl_stitch.json to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mmalign.config import check_nonempty, check_numbers, from_dict, load_config
from mmalign.robotics.gcsl import GCSLConfig, as_policy, train_gcsl, train_goal_iql
from mmalign.robotics.iql import DeterministicActor, IQLConfig
from mmalign.robotics.stitching import SEEN_PAIRS, UNSEEN_PAIRS, collect_routes, evaluate_pairs

METHODS = ("untrained", "gcsl", "gcsl+aug", "iql")


@dataclass
class DataSettings:
    """`mmalign.robotics.stitching.collect_routes` arguments."""

    episodes_per_route: int = 100
    noise_std: float = 0.3
    steps: int = 30


@dataclass
class EvalSettings:
    """`mmalign.robotics.stitching.evaluate_pairs` arguments."""

    episodes: int = 20
    steps: int = 60


@dataclass
class RelabelSettings:
    """`mmalign.robotics.gcsl.goal_transitions` arguments."""

    relabels: int = 4
    random_goal_prob: float = 0.3
    tol: float = 0.025


@dataclass
class StitchBench:
    """Settings of the stitching comparison (bench/configs/gcsl_stitch.yaml)."""

    seeds: list[int] = field(default_factory=lambda: [3, 4, 5])
    data: DataSettings = field(default_factory=DataSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    gcsl: GCSLConfig = field(default_factory=GCSLConfig)
    iql: IQLConfig = field(default_factory=IQLConfig)
    relabel: RelabelSettings = field(default_factory=RelabelSettings)

    def __post_init__(self) -> None:
        check_nonempty(self, "seeds")
        check_numbers(self, "seeds", ge=0)


def one_seed(cfg: StitchBench, seed: int) -> dict[str, dict[str, float]]:
    """Success of every method on the unseen and seen pairs for one seed."""
    data = collect_routes(cfg.data.episodes_per_route, cfg.data.noise_std, cfg.data.steps, seed)
    torch.manual_seed(seed)
    actors = {"untrained": DeterministicActor(6, 2, cfg.gcsl.hidden),
              "gcsl": train_gcsl(data, from_dict(GCSLConfig, {**vars(cfg.gcsl), "augment": False, "seed": seed})),
              "gcsl+aug": train_gcsl(data, from_dict(GCSLConfig, {**vars(cfg.gcsl), "augment": True, "seed": seed})),
              "iql": train_goal_iql(data, from_dict(IQLConfig, {**vars(cfg.iql), "seed": seed}),
                                    **vars(cfg.relabel))}
    out = {}
    for name, actor in actors.items():
        unseen = evaluate_pairs(as_policy(actor), UNSEEN_PAIRS, cfg.eval.episodes, cfg.eval.steps)
        seen = evaluate_pairs(as_policy(actor), SEEN_PAIRS, cfg.eval.episodes, cfg.eval.steps)
        out[name] = {**unseen, "seen": seen["success"]}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="bench/configs/gcsl_stitch.yaml")
    p.add_argument("--out", type=Path, default=None, help="folder for gcsl_stitch.json")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides of the config")
    args = p.parse_args()
    cfg = load_config(args.config, args.overrides, lambda d: from_dict(StitchBench, d))
    torch.set_num_threads(1)
    rows, t0 = {}, time.time()
    for seed in cfg.seeds:
        rows[seed] = one_seed(cfg, seed)
        print(f"[{time.time() - t0:5.0f}s] seed {seed}: "
              + ", ".join(f"{m} {r['success']:.2f}" for m, r in rows[seed].items()), flush=True)
    summary = {}
    for m in METHODS:
        summary[m] = {}
        for k in ("success", "A->C", "B->D", "seen"):
            v = np.array([rows[s][m][k] for s in cfg.seeds])
            summary[m][k] = {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())}
    base = summary["iql"]["success"]["mean"]
    print(f"\n    python bench/gcsl_stitch.py --config {args.config} {' '.join(args.overrides)}".rstrip())
    print(f"\nseeds {cfg.seeds}; success on unseen pairs (A->C, B->D) and seen pairs, mean [min, max] over seeds\n")
    print("| method | unseen success | A->C | B->D | seen success | unseen / IQL |\n|---|---|---|---|---|---|")
    cell = lambda d: f"{d['mean']:.2f} [{d['min']:.2f}, {d['max']:.2f}]"  # noqa: E731
    for m, s in summary.items():
        ratio = f"{s['success']['mean'] / base:.2f}x" if base > 0 else "-"
        print(f"| {m} | {cell(s['success'])} | {s['A->C']['mean']:.2f} | {s['B->D']['mean']:.2f} | "
              f"{cell(s['seen'])} | {ratio} |")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gcsl_stitch.json").write_text(json.dumps({"runs": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()

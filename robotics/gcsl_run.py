"""`mmalign train configs/robotics/gcsl_stitch.yaml`: the stitching comparison of GCSL, GCSL + temporal augmentation
and goal-conditioned IQL (`mmalign.robotics.gcsl`) on the reach-wall split (`mmalign.robotics.stitching`).

For every seed: collect the two routes (the data seed is the run seed), train each method, roll each policy out in
MuJoCo on the unseen pairs (A -> C, B -> D) and the seen ones (A -> D, B -> C). An untrained policy (the networks'
initialisation) is the floor. The run folder `<output_dir>/<name>/` holds config.yaml, metrics.jsonl (+ tb/: one
row per (method, seed)), results.json (every row; per method mean, min and max over seeds) and summary.md (the table
and the command). `--resume` skips the (method, seed) runs its metrics already hold.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mmalign import config
from mmalign.config import check_nonempty, check_numbers, from_dict, to_dict
from mmalign.robotics.gcsl import GCSLConfig, as_policy, train_gcsl, train_goal_iql
from mmalign.robotics.iql import DeterministicActor, IQLConfig
from mmalign.robotics.report import per_method
from mmalign.robotics.stitching import SEEN_PAIRS, UNSEEN_PAIRS, collect_routes, evaluate_pairs
from mmalign.runs import Run
from mmalign.tracking import json_safe, read_metrics

METHODS = ("untrained", "gcsl", "gcsl+aug", "iql")
"""Compared policies: the initialisation, GCSL, GCSL with the temporal augmentation, goal-conditioned IQL."""
METRICS = ("success", "success_A_C", "success_B_D", "seen_success")
"""Per row: unseen-pair success (both pairs, then each) and seen-pair success."""


@dataclass
class DataSettings:
    """`mmalign.robotics.stitching.collect_routes` arguments."""

    episodes_per_route: int = 100
    noise_std: float = 0.3
    steps: int = 30

    def __post_init__(self) -> None:
        check_numbers(self, "episodes_per_route", "steps", ge=1)
        check_numbers(self, "noise_std", ge=0)


@dataclass
class EvalSettings:
    """`mmalign.robotics.stitching.evaluate_pairs` arguments."""

    episodes: int = 20
    steps: int = 60

    def __post_init__(self) -> None:
        check_numbers(self, "episodes", "steps", ge=1)


@dataclass
class RelabelSettings:
    """`mmalign.robotics.gcsl.goal_transitions` arguments (IQL's goals and rewards)."""

    relabels: int = 4
    random_goal_prob: float = 0.3
    tol: float = 0.025

    def __post_init__(self) -> None:
        check_numbers(self, "relabels", ge=1)
        check_numbers(self, "random_goal_prob", ge=0, le=1)
        check_numbers(self, "tol", gt=0)


@dataclass
class GCSLRunConfig:
    """One stitching comparison: seeds, data, evaluation and each method's settings."""

    name: str = "gcsl_stitch"
    """Run name: outputs go to `<output_dir>/<name>/`."""
    output_dir: str = "runs"
    """Folder that holds run folders."""
    seeds: list[int] = field(default_factory=lambda: [3, 4, 5])
    """Seeds of the data, the networks and the sampling."""
    torch_threads: int = 1
    """torch CPU threads (small networks are fastest on one)."""
    data: DataSettings = field(default_factory=DataSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    gcsl: GCSLConfig = field(default_factory=GCSLConfig)
    """GCSL settings; `augment` is set per method (off for gcsl, on for gcsl+aug)."""
    iql: IQLConfig = field(default_factory=IQLConfig)
    relabel: RelabelSettings = field(default_factory=RelabelSettings)

    def __post_init__(self) -> None:
        check_nonempty(self, "seeds")
        check_numbers(self, "seeds", ge=0)
        check_numbers(self, "torch_threads", ge=1)


def load_config(path: str | Path, overrides: list[str] | None = None) -> GCSLRunConfig:
    """A YAML file (and dotted key=value overrides) as a validated `GCSLRunConfig`."""

    def build(data: dict) -> GCSLRunConfig:
        data.pop("loop", None)
        return from_dict(GCSLRunConfig, data)

    return config.load_config(path, overrides, build)


def actors(cfg: GCSLRunConfig, data: dict[str, np.ndarray], seed: int) -> dict[str, DeterministicActor]:
    """Every method's policy for one seed (in `METHODS` order)."""
    torch.manual_seed(seed)
    gcsl = {**to_dict(cfg.gcsl), "seed": seed}
    return {"untrained": DeterministicActor(data["states"].shape[-1] + 2, 2, cfg.gcsl.hidden),
            "gcsl": train_gcsl(data, from_dict(GCSLConfig, {**gcsl, "augment": False})),
            "gcsl+aug": train_gcsl(data, from_dict(GCSLConfig, {**gcsl, "augment": True})),
            "iql": train_goal_iql(data, from_dict(IQLConfig, {**to_dict(cfg.iql), "seed": seed}),
                                  **to_dict(cfg.relabel))}


def score(cfg: GCSLRunConfig, actor: DeterministicActor) -> dict[str, float]:
    """`METRICS` of one policy."""
    unseen = evaluate_pairs(as_policy(actor), UNSEEN_PAIRS, cfg.eval.episodes, cfg.eval.steps)
    seen = evaluate_pairs(as_policy(actor), SEEN_PAIRS, cfg.eval.episodes, cfg.eval.steps)
    return {"success": unseen["success"], "success_A_C": unseen["A->C"], "success_B_D": unseen["B->D"],
            "seen_success": seen["success"]}


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per method: mean, min and max over seeds of each of `METRICS`, and the number of seeds."""
    return per_method(rows, METRICS, {"mean": np.mean, "min": np.min, "max": np.max})


def summary_markdown(cfg: GCSLRunConfig, summary: dict, command: str) -> str:
    """The results table (mean [min, max] over seeds, ratio of unseen success to IQL's) with its command."""
    base = summary.get("iql", {}).get("success_mean", 0.0)
    cell = lambda s, k: f"{s[f'{k}_mean']:.2f} [{s[f'{k}_min']:.2f}, {s[f'{k}_max']:.2f}]"  # noqa: E731
    lines = ["# Stitching on reach-wall: GCSL, GCSL + temporal augmentation, IQL", "", f"    {command}", "",
             f"seeds {cfg.seeds}; success over {cfg.eval.episodes} episodes per (start, goal) pair, mean [min, max] "
             "over seeds; unseen pairs A->C, B->D; seen pairs A->D, B->C.", "",
             "| method | unseen success | A->C | B->D | seen success | unseen / IQL |", "|---|---|---|---|---|---|"]
    for m, s in summary.items():
        ratio = f"{s['success_mean'] / base:.2f}x" if base > 0 else "-"
        lines.append(f"| {m} | {cell(s, 'success')} | {s['success_A_C_mean']:.2f} | {s['success_B_D_mean']:.2f} | "
                     f"{cell(s, 'seen_success')} | {ratio} |")
    return "\n".join(lines) + "\n"


def train(cfg: GCSLRunConfig, command: str = "", resume: bool = False) -> Path:
    """Run the comparison into its run folder (module docstring) and return the folder."""
    run = Run(Path(cfg.output_dir) / cfg.name, to_dict(cfg), resume, fixed=tuple(to_dict(cfg)))
    torch.set_num_threads(cfg.torch_threads)
    rows = read_metrics(run.dir / "metrics.jsonl") if resume else []
    done = {(r["method"], r["seed"]) for r in rows}
    t0 = time.time()
    with run.tracker(len(rows) if resume else None) as tracker:
        for seed in cfg.seeds:
            if all((m, seed) in done for m in METHODS):
                continue
            data = collect_routes(cfg.data.episodes_per_route, cfg.data.noise_std, cfg.data.steps, seed)
            for method, actor in actors(cfg, data, seed).items():
                if (method, seed) in done:
                    continue
                row = {"method": method, "seed": seed, **score(cfg, actor)}
                rows.append(row)
                tracker.log(len(rows), row)
                print(f"[{time.time() - t0:5.0f}s] {method} seed {seed}: unseen {row['success']:.2f} seen "
                      f"{row['seen_success']:.2f}", flush=True)
    rows = [{k: v for k, v in r.items() if k != "step"} for r in rows]
    summary = summarise(rows)
    (run.dir / "results.json").write_text(json.dumps(json_safe({"runs": rows, "summary": summary}), indent=1,
                                                     allow_nan=False))
    (run.dir / "summary.md").write_text(summary_markdown(cfg, summary, command))
    return run.dir


def main(path: str, overrides: list[str], resume: bool = False) -> Path:
    """`mmalign train CONFIG [key=value ...] [--resume]` for a config with `loop: gcsl`."""
    return train(load_config(path, overrides), " ".join(["mmalign train", str(path), *overrides]), resume)

"""`mmalign train configs/robotics/pearl_*.yaml`: PEARL's comparison (oracle / CPA+RRL / CPA+BT / random / few labels).

For every seed and method, `mmalign.robotics.pearl.run_pearl` labels the target pairs, fits the reward model, trains
IQL on the relabelled target dataset and evaluates it on the target task. The run folder `<output_dir>/<name>/` holds:

- config.yaml: the resolved config;
- datasets/<task>.npz: the offline datasets (format of `mmalign.robotics.offline_data`);
- metrics.jsonl (+ tb/): one row per (method, seed), written as each run ends (`step` counts them);
- results.json: every row and, per method, mean and std over seeds of success, return, label accuracy and reward
  rank correlation;
- comparison.png: those per-method means with their spread and every seed as a dot;
- summary.md: the table and the command that made it.

`--resume` continues a comparison that was stopped, skipping the (method, seed) runs its metrics already hold.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mmalign import config
from mmalign.config import ConfigError, check_nonempty, check_numbers, from_dict, to_dict
from mmalign.device import check_device, resolve_device
from mmalign.robotics.offline_data import load_dataset, save_dataset
from mmalign.robotics.pearl import PearlConfig, check_method, get_dataset, run_pearl
from mmalign.robotics.report import per_method
from mmalign.runs import Run
from mmalign.tracking import json_safe, read_metrics

METRICS = ("success", "return", "label_accuracy", "reward_rank_corr")


@dataclass
class PearlRunConfig:
    """One PEARL comparison: tasks, methods, seeds and the per-run budget."""

    name: str = "pearl"
    """Run name: outputs go to `<output_dir>/<name>/`."""
    output_dir: str = "runs"
    """Folder that holds run folders."""
    source: list[str] = field(default_factory=lambda: ["reach"])
    """Labelled source task(s): planar names ("reach", ...) or Meta-World v3 names ("button-press-topdown-v3")."""
    target: str = "button-press"
    """Target task (unlabelled for the zero-shot methods)."""
    methods: list[str] = field(default_factory=lambda: ["oracle-rrl", "cpa-rrl", "cpa-bt", "random-rrl"])
    """Methods of `mmalign.robotics.pearl.METHODS`."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Seeds (segments, labels, reward model, IQL); datasets always use seed 0."""
    data_dir: str | None = None
    """Folder with <task>.npz datasets to reuse (collected and written there when missing); None = collect."""
    torch_threads: int = 1
    """torch CPU threads (small networks are fastest on one)."""
    device: str = "auto"
    """Where the reward models and IQL train: auto (CUDA when there is one), cpu or cuda (`mmalign.device`)."""
    pearl: PearlConfig = field(default_factory=PearlConfig)
    """Budget of each (method, seed) run."""

    def __post_init__(self) -> None:
        check_nonempty(self, "source", "methods", "seeds")
        for i, method in enumerate(self.methods):
            check_method(method, f"methods[{i}]")
        check_numbers(self, "seeds", ge=0)
        check_numbers(self, "torch_threads", ge=1)
        check_device(self)
        if self.target in self.source:
            raise ConfigError(f"{self.target!r} is also a source; zero-shot transfer needs another task.", "target")


def load_config(path: str | Path, overrides: list[str] | None = None) -> PearlRunConfig:
    """A YAML file (and dotted key=value overrides) as a validated `PearlRunConfig`."""

    def build(data: dict) -> PearlRunConfig:
        data.pop("loop", None)
        if isinstance(data.get("source"), str):
            data["source"] = [data["source"]]
        return from_dict(PearlRunConfig, data)

    return config.load_config(path, overrides, build)


def summarise(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per method: mean and std (population, over seeds) of each of `METRICS`, and the number of seeds."""
    return per_method(rows, METRICS, {"mean": np.mean, "std": np.std})


def plot_comparison(rows: list[dict], summary: dict, out: Path, title: str) -> Path:
    """Bars (mean +- std over seeds) and per-seed dots of success, return and label accuracy per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(summary)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), dpi=110)
    for ax, key in zip(axes, ("success", "return", "label_accuracy")):
        means = [summary[m][f"{key}_mean"] for m in methods]
        stds = [summary[m][f"{key}_std"] for m in methods]
        ax.bar(range(len(methods)), means, yerr=stds, capsize=3, color="#8fb3d9")
        for i, m in enumerate(methods):
            vals = [r[key] for r in rows if r["method"] == m]
            ax.plot(np.full(len(vals), i) + np.linspace(-0.15, 0.15, len(vals)), vals, "k.", ms=4)
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        ax.set_title(key)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def summary_markdown(cfg: PearlRunConfig, summary: dict, command: str) -> str:
    """The results table (mean +- std over seeds) with the command that made it."""
    lines = [f"# PEARL: {' + '.join(cfg.source)} -> {cfg.target}", "", f"    {command}", "",
             f"seeds {cfg.seeds}; success rate over {cfg.pearl.eval_episodes} evaluation episodes, mean true return; "
             "label acc. = accuracy of the target labels the reward model trains on vs the target's scripted "
             "teacher; reward corr. = Spearman correlation of learned and true per-step reward.", "",
             "| method | success | return | label acc. | reward corr. |", "|---|---|---|---|---|"]
    for m, s in summary.items():
        cells = [f"{s[f'{k}_mean']:.2f} ± {s[f'{k}_std']:.2f}" for k in METRICS]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def train(cfg: PearlRunConfig, command: str = "", resume: bool = False) -> Path:
    """Run the comparison into its run folder (module docstring) and return the folder. A new run refuses a folder
    that holds one; `resume` continues one, skipping the (method, seed) runs its metrics already hold."""
    run = Run(Path(cfg.output_dir) / cfg.name, to_dict(cfg), resume, fixed=tuple(to_dict(cfg)))
    torch.set_num_threads(cfg.torch_threads)
    device = resolve_device(cfg.device)
    data: dict = {}
    cache = Path(cfg.data_dir) if cfg.data_dir else None
    for task in (*cfg.source, cfg.target):
        if cache is not None and (cache / f"{task}.npz").exists():
            data[task] = load_dataset(cache / f"{task}.npz")
        get_dataset(task, cfg.pearl, data)
        if cache is not None:
            save_dataset(data[task], cache / f"{task}.npz")
        save_dataset(data[task], run.dir / "datasets" / f"{task}.npz")
    rows = read_metrics(run.dir / "metrics.jsonl") if resume else []
    done = {(r["method"], r["seed"]) for r in rows}
    t0 = time.time()
    with run.tracker(len(rows) if resume else None) as tracker:
        for seed in cfg.seeds:
            for method in cfg.methods:
                if (method, seed) in done:
                    continue
                row = run_pearl(cfg.source, cfg.target, method, seed, cfg.pearl, data, device)
                rows.append(row)
                tracker.log(len(rows), row)
                print(f"[{time.time() - t0:6.0f}s] {method} seed {seed}: success {row['success']:.2f} return "
                      f"{row['return']:.1f} label acc. {row['label_accuracy']:.3f}", flush=True)
    rows = [{k: v for k, v in r.items() if k != "step"} for r in rows]
    summary = summarise(rows)
    results = json_safe({"runs": rows, "summary": summary})
    (run.dir / "results.json").write_text(json.dumps(results, indent=1, allow_nan=False))
    title = f"PEARL {' + '.join(cfg.source)} -> {cfg.target} ({len(cfg.seeds)} seeds)"
    plot_comparison(rows, summary, run.dir / "comparison.png", title)
    (run.dir / "summary.md").write_text(summary_markdown(cfg, summary, command))
    return run.dir


def main(path: str, overrides: list[str], resume: bool = False) -> Path:
    """`mmalign train CONFIG [key=value ...] [--resume]` for a config with `loop: pearl`."""
    return train(load_config(path, overrides), " ".join(["mmalign train", str(path), *overrides]), resume)

"""Held-out accuracy of tiny VLM configs over seeds: per config and task, at every evaluation, mean (min-max).

    OMP_NUM_THREADS=1 python bench/vlm_ssl_arms.py --configs tiny_lmm_r1_two_stage tiny_lmm_r1_multimodal_only \
        --seeds 0 1 2 --out runs/vlm_arms

For each config (configs/vlm/NAME.yaml) and seed S the run trains with task_args.seed=S and trainer.seed=S (images,
split, model init, sampling) into OUT/NAME_sS; runs whose final/ folder exists are not trained again. Every
eval/acc/<task> of metrics.jsonl is tabulated (step 0 is before training) as a markdown table; OUT/results.json
keeps each run's figures. docs/vlm.md quotes these tables.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import torch

from mmalign.run_config import load_run_config
from mmalign.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "vlm"


def train(config: str, seed: int, out: Path, extra: list[str]) -> Path:
    """Train configs/vlm/`config`.yaml on `seed` into OUT/config_sSEED unless it is done; the run folder."""
    name = f"{config}_s{seed}"
    if (out / name / "final").is_dir():
        return out / name
    cfg = load_run_config(CONFIGS / f"{config}.yaml", [f"trainer.output_dir={out}", f"trainer.name={name}",
                                                       f"task_args.seed={seed}", f"trainer.seed={seed}", *extra])
    return Trainer(cfg).train()


def accuracies(run: Path) -> dict[str, dict[int, float]]:
    """{task: {step: held-out accuracy}} from a run's metrics.jsonl."""
    acc: dict[str, dict[int, float]] = defaultdict(dict)
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            if key.startswith("eval/acc/"):
                acc[key.removeprefix("eval/acc/")][row["step"]] = value
    return acc


def spread(values: list[float]) -> str:
    """"mean (min-max)" over seeds."""
    return f"{sum(values) / len(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def table(results: dict[str, list[dict]]) -> str:
    """Rows (config, task); columns: held-out accuracy at each evaluated step, then each seed's last figure."""
    steps = sorted({s for runs in results.values() for r in runs for acc in r.values() for s in acc})
    lines = ["| config | task | " + " | ".join(f"step {s}" for s in steps) + " | last, per seed |",
             "|---" * (len(steps) + 3) + "|"]
    for config, runs in results.items():
        for task in sorted({t for r in runs for t in r}):
            cells = [spread([r[task][s] for r in runs]) if all(s in r[task] for r in runs) else "" for s in steps]
            last = " / ".join(f"{r[task][max(r[task])]:.3f}" for r in runs)
            lines.append(f"| {config} | {task} | " + " | ".join(cells) + f" | {last} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", nargs="+", required=True, help="names of configs/vlm/*.yaml")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("runs/vlm_arms"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--overrides", nargs="*", default=[], help="dotted key=value overrides for every run")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = {c: [accuracies(train(c, s, args.out, args.overrides)) for s in args.seeds] for c in args.configs}
    (args.out / "results.json").write_text(json.dumps({"seeds": args.seeds, "runs": results}, indent=1))
    print(f"seeds {args.seeds}, overrides {args.overrides}\n" + table(results))


if __name__ == "__main__":
    main()

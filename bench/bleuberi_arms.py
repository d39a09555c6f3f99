"""BLEUBERI's selection comparison (Chang et al. 2025, Sec. 3): GRPO with BLEU on the hardest-k, a random-k and the
easiest-k training instructions by the base policy's BLEU, same k and steps, held-out BLEU and chrF, several seeds.

    OMP_NUM_THREADS=1 python bench/bleuberi_arms.py --seeds 0 1 2 --out runs/bleuberi_arms

Each (arm, seed) is one `mmalign train configs/text/bleuberi_<arm>.yaml trainer.seed=S task_args.selection.seed=S`:
the seed sets the base model's initial weights, the scoring samples, the random arm's draw and training's draws.
Prints one line per run and a markdown table (mean and sample std over seeds); writes results.json under --out.
`--report DIR [DIR ...]` tabulates the results.json of earlier invocations together, without training.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from mmalign.run_config import load_run_config
from mmalign.trainer import Trainer

ARMS = ("hard", "random", "easy")
METRICS = {"BLEU": "eval/reward/bleu", "chrF": "eval/metric/chrf"}


def run_arm(arm: str, seed: int, out: Path, overrides: list[str]) -> dict:
    """Train one arm at one seed; its selection statistics and its first and last held-out evaluations."""
    cfg = load_run_config(f"configs/text/bleuberi_{arm}.yaml", [
        f"trainer.seed={seed}", f"task_args.selection.seed={seed}", f"trainer.output_dir={out}",
        f"trainer.name={arm}_s{seed}", *overrides])
    start = time.perf_counter()
    trainer = Trainer(cfg)
    run_dir = trainer.train()
    return {"arm": arm, "seed": seed, "seconds": time.perf_counter() - start, "run": str(run_dir),
            **trainer.task.selection_stats, **curves(run_dir)}


def curves(run_dir: Path, window: int = 10) -> dict:
    """First and last held-out evaluations, and the training reward (sampled BLEU on the kept rows) of the first
    and last `window` steps."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if METRICS["BLEU"] in r]
    train = [r["reward"] for r in rows if "reward" in r and "eval/reward" not in r]
    return {"train first": sum(train[:window]) / window, "train last": sum(train[-window:]) / window,
            **{f"{m} {when}": evals[i][key] for m, key in METRICS.items() for when, i in (("base", 0), ("final", -1))}}


def spread(values: list[float]) -> str:
    """"mean ± std (v1 / v2 / ...)" over seeds."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f} ({' / '.join(f'{v:.3f}' for v in values)})"


def table(results: list[dict]) -> str:
    cols = ["base BLEU of the k rows", "train BLEU, first 10 steps", "last 10", "held-out BLEU before", "after",
            "held-out chrF before", "after"]
    keys = ["base_reward_kept", "train first", "train last", "BLEU base", "BLEU final", "chrF base", "chrF final"]
    lines = ["| arm | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for arm in dict.fromkeys(r["arm"] for r in results):
        runs = [r for r in results if r["arm"] == arm]
        lines.append(f"| {arm} | " + " | ".join(spread([r[k] for r in runs]) for k in keys) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("runs/bleuberi_arms"))
    p.add_argument("--threads", type=int, default=1, help="torch threads (seeds reproduce on one float path)")
    p.add_argument("--report", nargs="+", type=Path, metavar="DIR", help="tabulate DIR/results.json; train nothing")
    p.add_argument("overrides", nargs="*", help="config overrides for every run, e.g. trainer.steps=50")
    args = p.parse_args()
    if args.report:
        results = [{**r, **curves(out / f"{r['arm']}_s{r['seed']}")}
                   for out in args.report for r in json.loads((out / "results.json").read_text())]
        print(table(sorted(results, key=lambda r: r["seed"])))
        return
    torch.set_num_threads(args.threads)
    results = []
    for seed in args.seeds:
        for arm in args.arms:
            results.append(run_arm(arm, seed, args.out, args.overrides))
            print(json.dumps(results[-1]), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()

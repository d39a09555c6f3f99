"""LIMR (Li et al. 2025) on the tiny text task: GRPO on the k rows of highest learning impact score against the full
training set and a random subset of the same size, same steps and seed, held-out BLEU and chrF.

    OMP_NUM_THREADS=1 python bench/limr_arms.py --seeds 0 1 2 --out runs/limr

For each seed S: configs/text/limr_pass.yaml (trainer.seed=S) records every training prompt's reward trajectory
over 4 epochs into OUT/pass_sS/reward_trajectories.json; then configs/text/limr.yaml (selection by its LIM scores),
limr_random.yaml (selection.seed=S) and limr_full.yaml train from the same base model (the seed sets the initial
weights). Runs whose final/ folder exists are not trained again. Prints a markdown table (mean ± sample std over
seeds, then each seed); writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from bleuberi_arms import curves, spread
from salsa_soup import train

ARMS = {"lim": "limr", "random": "limr_random", "full": "limr_full"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("runs/limr"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out, results = args.out, []
    for seed in args.seeds:
        trajectories = train("configs/text/limr_pass.yaml", out, f"pass_s{seed}", [f"trainer.seed={seed}"])
        extra = {"lim": [f"task_args.selection.trajectories={trajectories}/reward_trajectories.json"],
                 "random": [f"task_args.selection.seed={seed}"], "full": []}
        for arm, config in ARMS.items():
            t0 = time.perf_counter()
            run = train(f"configs/text/{config}.yaml", out, f"{arm}_s{seed}", [f"trainer.seed={seed}", *extra[arm]])
            results.append({"arm": arm, "seed": seed, "seconds": time.perf_counter() - t0, **curves(run)})
            print(json.dumps(results[-1]), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    cols = {"train BLEU, first 10 steps": "train first", "last 10": "train last", "held-out BLEU before": "BLEU base",
            "after": "BLEU final", "held-out chrF before": "chrF base", "after ": "chrF final"}
    print("| arm | " + " | ".join(c.strip() for c in cols) + " |\n" + "|---" * (len(cols) + 1) + "|")
    for arm in ARMS:
        runs = [r for r in results if r["arm"] == arm]
        print(f"| {arm} | " + " | ".join(spread([r[k] for r in runs]) for k in cols.values()) + " |")


if __name__ == "__main__":
    main()

"""Data-scaling curve of alignment on the tiny text task (Khera et al. 2024, "Efficient Alignment of Large Language
Models via Data Sampling"): held-out BLEU and chrF after GRPO on a random k of the 362 training instructions, for
growing k, beside their information-based subset (ISA, `selection.mode: isa`) of the same k; same steps and seeds.

    OMP_NUM_THREADS=1 python bench/data_scaling.py --seeds 0 1 2 --out runs/data_scaling

Each (arm, k, seed) is configs/text/isa.yaml with `selection.k=K` (and `selection.mode=random` for the random arm;
k = 362 is the full set), `trainer.seed = selection.seed = S`, so all runs of one seed start from the same base
model. Runs whose final/ folder exists are not trained again, so a stopped sweep continues. Prints a markdown table
(mean ± sample std over seeds, then each seed) and the exponential-plateau fit the paper reports,
metric(f) = a - (a - b) exp(-c f) over the fraction f of the data, to the random arm's mean held-out BLEU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from bleuberi_arms import curves, spread
from salsa_soup import train

ROWS = 362
"""Training rows of the shipped instruction set (40 more are held out)."""


def plateau(f, a, b, c):
    """The exponential plateau a - (a - b) exp(-c f): b at f = 0, rising to a."""
    return a - (a - b) * np.exp(-c * f)


def fit_plateau(fractions: list[float], values: list[float]) -> str:
    """The plateau fit through (0, value before training) and the measured points, or why it failed."""
    from scipy.optimize import curve_fit

    try:
        (a, b, c), _ = curve_fit(plateau, fractions, values, p0=(max(values), min(values), 10.0), maxfev=20000)
    except RuntimeError as err:
        return f"no fit: {err}"
    return f"a = {a:.3f} (plateau), b = {b:.3f}, c = {c:.1f} (95 % of the rise by f = {np.log(20) / c:.2f})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--random-k", nargs="+", type=int, default=[18, 36, 90, 181, ROWS])
    p.add_argument("--isa-k", nargs="+", type=int, default=[18, 36, 90])
    p.add_argument("--out", type=Path, default=Path("runs/data_scaling"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    arms = [("random", k) for k in args.random_k] + [("isa", k) for k in args.isa_k]
    results = []
    for seed in args.seeds:
        for mode, k in arms:
            t0 = time.perf_counter()
            run = train("configs/text/isa.yaml", args.out, f"{mode}_k{k}_s{seed}", [
                f"trainer.seed={seed}", f"task_args.selection.seed={seed}", f"task_args.selection.k={k}",
                f"task_args.selection.mode={mode}"])
            results.append({"arm": mode, "k": k, "seed": seed, "seconds": time.perf_counter() - t0, **curves(run)})
            print(json.dumps(results[-1]), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    cols = {"held-out BLEU before": "BLEU base", "after": "BLEU final", "held-out chrF before": "chrF base",
            "after ": "chrF final"}
    print("| arm | k (fraction) | " + " | ".join(c.strip() for c in cols) + " |\n" + "|---" * (len(cols) + 2) + "|")
    for mode, k in arms:
        runs = [r for r in results if (r["arm"], r["k"]) == (mode, k)]
        print(f"| {mode} | {k} ({k / ROWS:.2f}) | " + " | ".join(spread([r[c] for r in runs]) for c in cols.values())
              + " |")
    random_k = sorted(args.random_k)
    mean = {k: statistics.mean(r["BLEU final"] for r in results if (r["arm"], r["k"]) == ("random", k))
            for k in random_k}
    before = statistics.mean(r["BLEU base"] for r in results)
    print("plateau fit, random arm, held-out BLEU:",
          fit_plateau([0.0] + [k / ROWS for k in random_k], [before] + [mean[k] for k in random_k]))


if __name__ == "__main__":
    main()

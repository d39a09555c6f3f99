"""PEARL's robustness claim, swept: CPA-transferred target labels with a further fraction flipped, RRL vs plain
Bradley-Terry on the same labels (`mmalign.robotics.pearl.run_pearl`, `PearlConfig.label_flips`).

    python bench/pearl_noise.py --flips 0 0.1 0.2 0.3 0.4 --seeds 0 1 2            # reward models only
    python bench/pearl_noise.py --flips 0 0.2 0.4 --seeds 0 1 2 --policy             # + IQL and rollouts

Per flip rate and seed, both reward models train on the same labels (same segments, same flips); the table gives the
labels' accuracy against the target's true order, and per model the Spearman correlation of its per-step reward with
the true reward over the whole target dataset (what IQL is then trained on), mean ± std over seeds, and how many
seeds RRL is ahead; with `--policy`, the IQL policy's success on the target task too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

from mmalign.device import resolve_device
from mmalign.robotics.pearl import PearlConfig, run_pearl


def spread(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", nargs="+", default=["reach"])
    parser.add_argument("--target", default="button-press")
    parser.add_argument("--labels", default="cpa", choices=["cpa", "oracle"], help="labels the flips are added to")
    parser.add_argument("--flips", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--policy", action="store_true", help="also train IQL and roll it out (about 1 min a run)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    data: dict = {}
    rows = []
    for flips in args.flips:
        cfg = replace(PearlConfig(), label_flips=flips)
        for seed in args.seeds:
            for model in ("rrl", "bt"):
                r = run_pearl(args.source, args.target, f"{args.labels}-{model}", seed, cfg, data,
                              resolve_device(args.device), policy=args.policy)
                rows.append({**r, "flips": flips, "model": model})
                print(f"# flips {flips} seed {seed} {model}: label accuracy {r['label_accuracy']:.3f} reward rank "
                      f"corr {r['reward_rank_corr']:.3f} success {r['success']:.2f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    print(f"\n`{' '.join(['python', *sys.argv])}`\n")
    cols = "| flips | label accuracy | RRL reward rank corr | BT reward rank corr | RRL ahead (seeds) |"
    print(cols + (" RRL success | BT success |" if args.policy else ""))
    print("|---" * (cols.count("|") - 1 + 2 * args.policy) + "|")
    for flips in args.flips:
        by = {m: sorted((r for r in rows if r["flips"] == flips and r["model"] == m), key=lambda r: r["seed"])
              for m in ("rrl", "bt")}
        ahead = sum(a["reward_rank_corr"] > b["reward_rank_corr"] for a, b in zip(by["rrl"], by["bt"]))
        line = (f"| {flips} | {spread([r['label_accuracy'] for r in by['rrl']])} "
                f"| {spread([r['reward_rank_corr'] for r in by['rrl']])} "
                f"| {spread([r['reward_rank_corr'] for r in by['bt']])} | {ahead}/{len(by['rrl'])} |")
        if args.policy:
            line += f" {spread([r['success'] for r in by['rrl']])} | {spread([r['success'] for r in by['bt']])} |"
        print(line)


if __name__ == "__main__":
    main()

"""Stitching on the MuJoCo reach-wall task: GCSL, GCSL + temporal augmentation and goal-conditioned IQL on unseen
(start, goal) pairs, as a table of ratios to IQL.

    python bench/gcsl_stitch.py --config configs/robotics/gcsl_stitch.yaml --out docs/figures   # ~1 min, one core
    python bench/gcsl_stitch.py --config configs/robotics/gcsl_stitch.yaml gcsl.steps=500       # key=value overrides

The runs of `mmalign train configs/robotics/gcsl_stitch.yaml` (`mmalign.robotics.gcsl_run`) without a run folder:
per seed, collect the routes, train every method, score it on the unseen and seen pairs; print the table (mean
[min, max] over seeds, unseen success / IQL's) and write gcsl_stitch.json to --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mmalign.robotics.gcsl_run import actors, load_config, score, summarise, summary_markdown
from mmalign.robotics.stitching import collect_routes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/robotics/gcsl_stitch.yaml")
    p.add_argument("--out", type=Path, default=None, help="folder for gcsl_stitch.json")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides of the config")
    args = p.parse_args()
    cfg = load_config(args.config, args.overrides)
    torch.set_num_threads(cfg.torch_threads)
    rows, t0 = [], time.time()
    for seed in cfg.seeds:
        data = collect_routes(cfg.data.episodes_per_route, cfg.data.noise_std, cfg.data.steps, seed)
        rows += [{"method": m, "seed": seed, **score(cfg, a)} for m, a in actors(cfg, data, seed).items()]
        print(f"[{time.time() - t0:5.0f}s] seed {seed}: "
              + ", ".join(f"{r['method']} {r['success']:.2f}" for r in rows if r["seed"] == seed), flush=True)
    summary = summarise(rows)
    command = " ".join(["python bench/gcsl_stitch.py --config", args.config, *args.overrides])
    print("\n" + summary_markdown(cfg, summary, command))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gcsl_stitch.json").write_text(json.dumps({"runs": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()

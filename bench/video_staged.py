"""Staged visual future rollouts against single-shot generation on the video task's held-out conditions.

Three arms, each over several evaluation seeds (the noise), on one set of weights (a run's checkpoint, or the
pre-trained model without `--checkpoint`):

- single: one clip per condition (F + 1 frames), as training evaluates;
- chain: `--stages` clips per condition, each started from the previous one's last frame, no selection;
- staged: the same chain, each stage the best of `--candidates` clips under the task's weighted rewards (the critic).

Reported per arm: the task's rewards (PFC: the critic itself, so selection raises it by construction) and the
OpenCV physics check the critic never sees (block jerk, largest jump, share of frames the block is found in), as
mean [min, max] over seeds, and seconds per condition.

    python bench/video_staged.py configs/video/push_pfc.yaml --checkpoint runs/video-pfc/checkpoints/step_000040 \
        --seeds 0 1 2 --stages 3 --candidates 3 --out runs/video_staged.jsonl

`--out` keeps every finished (arm, seed) as a JSON line, so a stopped run continues where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

KEYS = ("reward", "reward/pfc", "physics/jerk", "physics/jump", "physics/seen")


def arms(stages: int, candidates: int) -> dict[str, tuple[int, int]]:
    """Arm name -> (stages, candidates) of the task's `staged` settings."""
    return {"single": (0, 1), "chain": (stages, 1), "staged": (stages, candidates)}


def evaluate(task, stages: int, candidates: int, seed: int) -> dict[str, float]:
    """The task's held-out evaluation with these staged settings and evaluation noise seed; seconds per condition."""
    staged = dataclasses.replace(task.cfg.staged, stages=stages, candidates=candidates)
    task.cfg = dataclasses.replace(task.cfg, staged=staged, eval_seed=seed)
    start = time.perf_counter()
    with torch.no_grad():
        metrics = task.evaluate(task.policy)
    return {**metrics, "seconds / condition": (time.perf_counter() - start) / len(task.eval_contexts)}


def spread(values: list[float]) -> str:
    return f"{sum(values) / len(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("overrides", nargs="*", help="key=value settings of the config")
    p.add_argument("--checkpoint", help="a run's checkpoint folder; none = the pre-trained model")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--stages", type=int, default=3)
    p.add_argument("--candidates", type=int, default=3)
    p.add_argument("--out", type=Path, help="JSONL of finished (arm, seed) results, read back on a rerun")
    args = p.parse_args(argv)

    from mmalign.cli import build_task

    done = {}
    if args.out and args.out.exists():
        done = {(r["arm"], r["seed"]): r for r in map(json.loads, args.out.read_text().splitlines())}
    _, task = build_task(args.config, args.overrides, args.checkpoint)
    for arm, (stages, candidates) in arms(args.stages, args.candidates).items():
        for seed in args.seeds:
            if (arm, seed) in done:
                continue
            row = {"arm": arm, "seed": seed, **evaluate(task, stages, candidates, seed)}
            done[(arm, seed)] = row
            print(json.dumps(row), flush=True)
            if args.out:
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    keys = [*KEYS, "seconds / condition"]
    print(f"\npython bench/video_staged.py {' '.join(argv or [])}".rstrip())
    print("| arm (stages, candidates) | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for arm, (stages, candidates) in arms(args.stages, args.candidates).items():
        rows = [done[(arm, s)] for s in args.seeds if (arm, s) in done]
        cells = [spread([r[k] for r in rows]) if rows and k in rows[0] else "-" for k in keys]
        print(f"| {arm} ({stages}, {candidates}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])

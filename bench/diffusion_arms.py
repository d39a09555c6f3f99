"""Seeded runs of the embedded shapes task, arm by arm: the held-out strict alignment rate at every evaluation and the
train reward, as mean [min, max] over each arm's runs (docs/diffusion.md, "Measured (CPU)").

    python bench/diffusion_arms.py GRPO=runs/grpo-s0,runs/grpo-s1,runs/grpo-s2 \
        DDPO=runs/ddpo-s0,runs/ddpo-s1,runs/ddpo-s2

Each run folder needs its metrics.jsonl. The train reward is averaged over the first and the last 10 iterations;
the gain is the last evaluation's strict rate minus the first's (step 0, the pre-trained model).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RATE = "eval/alignment_rate"


def run_figures(folder: Path) -> dict[str, float]:
    """Held-out strict rate per evaluated step, its gain, the train reward at the start and the end, s / iteration."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    evals = {r["step"]: r[RATE] for r in rows if RATE in r}
    train = [r["reward"] for r in rows if "reward" in r and "time_step" in r]
    times = [r["time_step"] for r in rows if "time_step" in r]
    out = {f"held-out strict, step {s}": v for s, v in evals.items()}
    out["gain (last - step 0)"] = evals[max(evals)] - evals[min(evals)]
    if train:
        out["train reward, first 10 iterations"] = sum(train[:10]) / len(train[:10])
        out["train reward, last 10 iterations"] = sum(train[-10:]) / len(train[-10:])
        out["s / iteration"] = sum(times) / len(times)
    return out


def spread(values: list[float]) -> str:
    return f"{sum(values) / len(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def main(argv: list[str]) -> None:
    if not argv or any("=" not in a for a in argv):
        raise SystemExit("usage: diffusion_arms.py NAME=RUN[,RUN...] ...  (run folders with a metrics.jsonl)")
    arms = {a.split("=", 1)[0]: [Path(f) for f in a.split("=", 1)[1].split(",")] for a in argv}
    figures = {arm: [run_figures(f) for f in folders] for arm, folders in arms.items()}
    keys = list(dict.fromkeys(k for runs in figures.values() for f in runs for k in f))
    keys.sort(key=lambda k: (not k.startswith("held-out"), int(k.rsplit(" ", 1)[1]) if k.startswith("held") else 0))
    print("| metric | " + " | ".join(f"{arm} ({len(arms[arm])} runs)" for arm in arms) + " |\n|---|"
          + "---:|" * len(arms))
    for key in keys:
        cells = [spread(vals) if (vals := [f[key] for f in figures[arm] if key in f]) else "" for arm in arms]
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])

"""GRPO-S vs plain GRPO on shadow reward models (DR-IRL): held-out metrics of finished runs, overall and per
instruction category, as mean [min, max] over the runs of each arm.

    python bench/grpo_s_table.py runs/tiny_shadow_grpo-s{0,1,2} -- runs/tiny_grpo_s-s{0,1,2}

Each run folder needs its metrics.jsonl and eval_samples.jsonl (the last evaluation's held-out answers); the
per-category BLEU (add-one) is recomputed from those answers against the instruction set's references.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from mmalign.text.grpo_s import category_of
from mmalign.text.reward_models import data_rows
from mmalign.text.rewards import bleu

METRICS = ("eval/reward/shadow_rm", "eval/reward/bleu", "eval/reward/chrf")


def run_figures(folder: Path, rows: dict[str, dict]) -> dict[str, float]:
    """First and last evaluation's metrics, and the last one's BLEU per category."""
    evals = [r for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if METRICS[0] in r]
    out = {f"{k.split('/')[-1]} {tag}": e[k] for tag, e in (("start", evals[0]), ("end", evals[-1])) for k in METRICS}
    per_cat = defaultdict(list)
    for line in (folder / "eval_samples.jsonl").read_text().splitlines():
        s = json.loads(line)
        row = rows[s["prompt"]]
        per_cat[category_of(row)].append(bleu(s["output"], row["references"]))
    for cat, vals in per_cat.items():
        out[f"bleu end, {cat} ({len(vals)} prompts)"] = sum(vals) / len(vals)
    return out


def spread(values: list[float]) -> str:
    return f"{sum(values) / len(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def main(argv: list[str]) -> None:
    if "--" not in argv:
        raise SystemExit("usage: grpo_s_table.py BASELINE_RUN... -- GRPO_S_RUN...")
    cut = argv.index("--")
    train, held_out = data_rows()
    rows = {r["prompt"]: r for r in train + held_out}
    arms = {"GRPO": argv[:cut], "GRPO-S": argv[cut + 1:]}
    figures = {arm: [run_figures(Path(f), rows) for f in folders] for arm, folders in arms.items()}
    keys = sorted(figures["GRPO"][0], key=lambda k: ("," in k, k))
    print("| metric | " + " | ".join(arms) + " |\n|---|" + "---:|" * len(arms))
    for key in keys:
        cells = [spread([f[key] for f in figures[arm] if key in f]) for arm in arms]
        print(f"| {key} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])

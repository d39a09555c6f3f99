"""SALSA (Chegini et al. 2024) beside its baseline on the tiny text task: GRPO with a KL reference that is the weight
soup of two independent fine-tunes, against the frozen initial policy as reference, at the same beta.

    OMP_NUM_THREADS=1 python bench/salsa_soup.py --seeds 0 1 2 --out runs/salsa

1. base: configs/text/tiny_grpo.yaml (seed 0, 40 steps) -> OUT/base/final, the shared base model.
2. fine-tunes: configs/text/salsa_finetune.yaml from the base at seeds 1 and 2 (20 steps) -> OUT/ft_a, OUT/ft_b.
3. arms: configs/text/salsa_soup.yaml (reference = soup of ft_a and ft_b) and salsa_frozen.yaml (reference = ft_a),
   both starting from ft_a, at each of --seeds. Stages whose final/ folder exists are not trained again.
Prints one line per arm run and a markdown table (mean ± sample std over seeds); writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from bleuberi_arms import curves, spread

from mmalign.run_config import load_run_config
from mmalign.trainer import Trainer


def train(config: str, out: Path, name: str, overrides: list[str]) -> Path:
    """Train `config` into OUT/name unless its final/ folder is there; returns the run folder."""
    if (out / name / "final").is_dir():
        return out / name
    cfg = load_run_config(config, [f"trainer.output_dir={out}", f"trainer.name={name}", *overrides])
    return Trainer(cfg).train()


def kl_last(run_dir: Path, window: int = 10) -> float:
    """Mean KL-to-reference term of the last `window` steps."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    kl = [r["kl"] for r in rows if "kl" in r]
    return sum(kl[-window:]) / len(kl[-window:])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("runs/salsa"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out
    base = train("configs/text/tiny_grpo.yaml", out, "base", ["trainer.seed=0", "trainer.save_every=0"])
    fts = [train("configs/text/salsa_finetune.yaml", out, name, [f"task_args.model={base}/final", f"trainer.seed={s}"])
           for name, s in (("ft_a", 1), ("ft_b", 2))]
    start = [f"task_args.model={fts[0]}/final"]
    soup = [f"task_args.reference_soup=[{fts[0]}/final, {fts[1]}/final]"]
    results = []
    for seed in args.seeds:
        for arm, config, extra in (("soup", "salsa_soup", soup), ("frozen", "salsa_frozen", [])):
            t0 = time.perf_counter()
            run = train(f"configs/text/{config}.yaml", out, f"{arm}_s{seed}", [f"trainer.seed={seed}", *start, *extra])
            results.append({"arm": arm, "seed": seed, "seconds": time.perf_counter() - t0, "kl last": kl_last(run),
                            **curves(run)})
            print(json.dumps(results[-1]), flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    cols = {"train BLEU, first 10 steps": "train first", "last 10": "train last",
            "KL to its reference, last 10": "kl last", "held-out BLEU before": "BLEU base", "after": "BLEU final",
            "held-out chrF before": "chrF base", "after ": "chrF final"}
    print("| reference | " + " | ".join(c.strip() for c in cols) + " |\n" + "|---" * (len(cols) + 1) + "|")
    for arm in ("soup", "frozen"):
        runs = [r for r in results if r["arm"] == arm]
        print(f"| {arm} | " + " | ".join(spread([r[k] for r in runs]) for k in cols.values()) + " |")


if __name__ == "__main__":
    main()

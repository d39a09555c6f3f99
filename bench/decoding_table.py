"""Decoding-time alignment on held-out prompts: reward and cost of each method (docs/decoding.md).

    python bench/decoding_table.py configs/text/bleuberi_smollm2.yaml --seeds 0 1 2 --eval-size 24 \
        [--aligned RUN/final] [--arm ARM/final] [--small S_RL --small-base S_BASE --rast-lambda 1 2] \
        [--methods KEY ...]

The task's held-out rows are decoded by each method and scored by the task's rewards (the searches rank by the
weighted reward; a reward of weight 0, e.g. chrF, is a second metric they never see). Methods that combine models
run when their folders are given: Transfer Q* (`--aligned`, e.g. a GRPO run's final/), GenARM (`--arm`, a causal LM
trained with `preference.loss: arm`), RAST (`--small`, `--small-base`); `--aligned` also adds the aligned model's own
samples as a row. A LoRA run's final/ (an adapter) loads merged over the config's model. `--methods` keeps the rows
of those keys (sampling, greedy, aligned, bon4, bon16, deal, tq, genarm, small_base, small, rast; rast is a row per
`--rast-lambda`, small_base and small sample RAST's small models alone). Greedy decoding and DeAL draw nothing,
so they run once. `--out FILE` keeps each finished (method, seed) run in a JSONL file: a rerun skips those and the
table covers every run in the file. Prints one markdown table: mean (min-max over runs) of each reward, tokens and
seconds per prompt.
"""

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from mmalign.rewards import weighted_sum
from mmalign.run_config import load_run_config, task_class
from mmalign.text.decoder import Decoder, DecodeSettings
from mmalign.text.task import load_causal_lm


def methods(args) -> list[tuple[str, str, dict]]:
    """(label, method, knobs) of each row the arguments allow, in table order."""
    rows = {"sampling": ("sampling", "sample", {}), "greedy": ("greedy", "greedy", {})}
    if args.aligned:
        rows["aligned"] = ("GRPO-trained model (sampling)", "aligned", {"aligned": args.aligned})
    rows.update({"bon4": ("best-of-4", "bon", {"n": 4}), "bon16": ("best-of-16", "bon", {"n": 16}),
                 "deal": ("DeAL (k 4, depth 4)", "deal", {"k": 4, "depth": 4})})
    if args.aligned:
        budget = f"rollout {args.tq_rollout}" if args.tq_rollout else "rollout to the end"
        rows["tq"] = (f"Transfer Q* (k 4, alpha 10, {budget})", "tq",
                      {"aligned": args.aligned, "k": 4, "alpha": 10.0, "rollout": args.tq_rollout})
    if args.arm:
        rows["genarm"] = (f"GenARM (beta {args.beta:g})", "genarm", {"arm": [args.arm], "beta": args.beta})
    if args.small:
        if not args.small_base:
            raise SystemExit("--small needs --small-base: RAST adds the small RL model's logits minus its base's.")
        rows["small_base"] = ("small base model alone (sampling)", "aligned", {"aligned": args.small_base})
        rows["small"] = ("small RL model alone (sampling)", "aligned", {"aligned": args.small})
        rows["rast"] = [(f"RAST (lambda {w:g})", "rast", {"small": args.small, "small_base": args.small_base,
                                                         "weight": w}) for w in args.rast_lambda]
    unknown = set(args.methods) - set(rows)
    if unknown:
        raise SystemExit(f"--methods {' '.join(sorted(unknown))}: not a row these arguments allow; use some of "
                         f"{', '.join(rows)} (tq and aligned need --aligned, genarm --arm, small and rast --small).")
    picked = [row for key, row in rows.items() if not args.methods or key in args.methods]
    return [r for row in picked for r in (row if isinstance(row, list) else [row])]


DETERMINISTIC = ("greedy", "deal")
"""Methods that draw nothing: one run stands for every seed."""


def measure(task, decoder, seed: int, weights) -> dict[str, float]:
    """The held-out rewards of `decoder` at `seed`, with its tokens and seconds per prompt."""
    torch.manual_seed(seed)
    tokens, start = decoder.cost.tokens, time.perf_counter()
    scores = task.evaluate(decoder)
    n = len(task.eval_contexts)
    seconds = time.perf_counter() - start
    return {**{name: scores[f"reward/{name}"] for name in weights},
            "tokens / prompt": (decoder.cost.tokens - tokens) / n, "seconds / prompt": seconds / n}


def read_records(path: str) -> list[dict]:
    """The (label, seed, figures) records of earlier runs in the JSONL file `path` (none when absent)."""
    if not path or not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def keep(record: dict, records: list[dict], out: str | None) -> None:
    """Add a finished (label, seed) record, append it to the `--out` JSONL file, and say it on stderr."""
    records.append(record)
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")
    figures = ", ".join(f"{k} {v:.3f}" for k, v in record["figures"].items())
    print(f"# {record['label']} seed {record['seed']}: {figures}", file=sys.stderr, flush=True)


def print_table(records: list[dict], columns: list[str]) -> None:
    """One markdown row per label: mean (min-max over its seeds) of each column."""
    table = defaultdict(lambda: defaultdict(list))
    for r in records:
        for c in columns:
            table[r["label"]][c].append(r["figures"][c])
    print(f"\n`python {' '.join(sys.argv)}`\n")
    print("| method | runs | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 2) + "|")
    for label, figures in table.items():
        cells = [f"{sum(v) / len(v):.3f} ({min(v):.3f}-{max(v):.3f})" for v in (figures[c] for c in columns)]
        print(f"| {label} | {len(figures[columns[0]])} | " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--eval-size", type=int, default=24)
    p.add_argument("--aligned", default="")
    p.add_argument("--arm", default="")
    p.add_argument("--small", default="")
    p.add_argument("--small-base", default="")
    p.add_argument("--rast-lambda", type=float, nargs="+", default=[1.0], help="RAST's lambda, a row each")
    p.add_argument("--beta", type=float, default=1.0, help="GenARM's KL coefficient")
    p.add_argument("--tq-rollout", type=int, default=0, help="Transfer Q* rollout tokens; 0 = to the end")
    p.add_argument("--methods", nargs="*", default=[])
    p.add_argument("--out", default="", help="JSONL of finished (method, seed) runs: appended, skipped when rerun")
    args = p.parse_args()
    cfg = load_run_config(args.config, [*args.overrides, f"task_args.eval_size={args.eval_size}"])
    task = task_class(cfg.task)(cfg.task_args, "cpu")
    weights = {name: w for name, _, w in task.rewards}
    reward = weighted_sum(task.rewards)

    def load(spec):
        return load_causal_lm(spec, base=cfg.task_args.model)[0].eval()

    records = read_records(args.out)
    for label, method, knobs in methods(args):
        seeds = args.seeds[:1] if method in DETERMINISTIC else args.seeds
        todo = [s for s in seeds if not any(r["label"] == label and r["seed"] == s for r in records)]
        decoder = Decoder(task.policy, method, reward, DecodeSettings(**knobs), load) if todo else None
        for seed in todo:
            keep({"label": label, "seed": seed, "figures": measure(task, decoder, seed, weights)}, records, args.out)
    print_table(records, [*weights, "tokens / prompt", "seconds / prompt"])


if __name__ == "__main__":
    main()

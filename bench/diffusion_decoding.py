"""Decoding-time alignment of a diffusion model on held-out prompts: alignment and cost of each method
(docs/decoding.md).

    python bench/diffusion_decoding.py configs/diffusion/shapes_grpo.yaml [overrides] \
        --checkpoint RUN/checkpoints/step_N --seeds 0 1 2 [--rlg 0.5 1.5] [--methods KEY ...] [--out FILE]

Every row is the task's own held-out evaluation (`DiffusionTask.evaluate`: `eval_samples` images per held-out
prompt, seeded noise) of an `ImageDecoder` (`mmalign.diffusion.decoder`): plain sampling of the pre-trained model
(the policy's reference, `task_args.reference=copy`) and of the fine-tuned checkpoint, RL guidance
base + w (tuned - base) at each `--rlg` w, best-of-4 / best-of-16 over the pre-trained model and best-of-4 over the
fine-tuned one (`mmalign.decoding.search.best_of_n`). Best-of-N ranks the candidates by the task's weighted rewards;
a reward of weight 0 (e.g. `jpeg_compressibility`) is a second metric it never sees, and so is the share of
near-black (background) pixels, 0.72 in the drawn images. Seed s draws the noise of
eval_seed + 1000 s (seed 0: the task's own evaluation noise); candidate 0 of best-of-N is the image plain sampling
draws. `--methods` keeps the rows of those keys (base, grpo, rlg<w>, bon4, bon16, grpo_bon4). `--out FILE` keeps each
finished (method, seed) run in a JSONL file: a rerun skips those and the table covers every run in the file. Prints
one markdown table: mean (min-max over seeds) of the strict alignment rate, each reward, denoiser rows (one batch row
through the denoiser: CFG's two halves and RL guidance's two models each count), images drawn and seconds per image.
"""

import argparse
import contextlib

import numpy as np
from decoding_table import keep, print_table, read_records

from mmalign.cli import build_task
from mmalign.diffusion.decoder import ImageDecoder


def methods(args) -> list[tuple[str, str, dict]]:
    """(key, label, knobs) of each row, in table order; knobs: base (the pre-trained model), n, rlg_scale."""
    rows = [("base", "pre-trained model (sampling)", {"base": True}),
            ("grpo", "GRPO model (sampling)", {})]
    rows += [(f"rlg{w:g}", f"RL guidance w {w:g}", {"rlg_scale": w}) for w in args.rlg]
    rows += [("bon4", "best-of-4, pre-trained model", {"base": True, "n": 4}),
             ("bon16", "best-of-16, pre-trained model", {"base": True, "n": 16}),
             ("grpo_bon4", "best-of-4, GRPO model", {"n": 4})]
    unknown = set(args.methods) - {key for key, _, _ in rows}
    if unknown:
        raise SystemExit(f"--methods {' '.join(sorted(unknown))}: not a row; use some of "
                         f"{', '.join(key for key, _, _ in rows)}.")
    return [row for row in rows if not args.methods or row[0] in args.methods]


def dark_share(images) -> float:
    """Mean share of near-black pixels (brightest channel < 32): the background the drawn shapes sit on, 0.72 of
    the drawn training images; a haze the alignment check does not look at lowers it."""
    return float(np.mean([(np.asarray(im).max(-1) < 32).mean() for im in images]))


def measure(task, decoder: ImageDecoder, base: bool, seed: int, eval_seed: int) -> dict[str, float]:
    """The held-out figures of `decoder` (on the policy's reference model when `base`) at `seed`, with its cost per
    image."""
    task.cfg.eval_seed = eval_seed + 1000 * seed
    with task.policy.reference_mode() if base else contextlib.nullcontext():
        scores = task.evaluate(decoder)
    cost = decoder.cost.report()
    return {"strict rate": scores["alignment_rate"],
            **{name: scores[f"reward/{name}"] for name, _, _ in task.rewards},
            "dark share": dark_share([image for _, image in task.eval_records]),
            "denoiser rows / image": cost["cost/denoiser_rows_per_image"],
            "images drawn / image": cost["cost/drawn_per_image"],
            "seconds / image": cost["cost/seconds_per_image"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--checkpoint", required=True, help="the fine-tuned run's checkpoint (a step_N folder)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rlg", type=float, nargs="*", default=[0.5, 1.5], help="RL guidance weights w")
    p.add_argument("--methods", nargs="*", default=[])
    p.add_argument("--out", default="", help="JSONL of finished (method, seed) runs: appended, skipped when rerun")
    args = p.parse_args()
    _, task = build_task(args.config, [*args.overrides, "task_args.reference=copy"], args.checkpoint)
    eval_seed = task.cfg.eval_seed

    def reward(contexts, images):  # the task's weighted rewards; a weight-0 reward is never searched
        total = np.zeros(len(images))
        for _, fn, w in task.rewards:
            if w:
                total += w * np.asarray(fn(contexts, images), dtype=float)
        return total.tolist()

    records = read_records(args.out)
    for _, label, knobs in methods(args):
        for seed in args.seeds:
            if any(r["label"] == label and r["seed"] == seed for r in records):
                continue
            n = knobs.get("n", 1)
            decoder = ImageDecoder(task.policy, n, reward if n > 1 else None, knobs.get("rlg_scale"))
            keep({"label": label, "seed": seed,
                  "figures": measure(task, decoder, knobs.get("base", False), seed, eval_seed)}, records, args.out)
    print_table(records, list(records[0]["figures"]))


if __name__ == "__main__":
    main()

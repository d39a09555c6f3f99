"""Held-out BLEU of every direct preference loss, trained from one shipped config on the instruction set.

    python bench/preference_losses.py configs/text/tiny_grao.yaml --seeds 0 1 2     # minutes on one CPU core

For each loss of the `LOSSES` registry (and PRO with its SFT term) and each seed, trains the config with
`preference.loss` set to it and prints greedy held-out BLEU (the task's evaluation) at step 0 and every
`trainer.eval_every` steps, then a markdown table of the final values over seeds.
"""

from __future__ import annotations

import argparse
import tempfile

import torch

from mmalign.run_config import load_run_config
from mmalign.trainer import Trainer

LOSSES = {"dpo": [], "ipo": [], "robust": [], "tpo": [], "tpo-l": [], "pro": [],
          "pro-sft": ["preference.sft_weight=0.1"], "copg": [], "grao": []}
"""Rows of the table: a name and its overrides (every direct loss of the registry; `arm` trains a reward model)."""


def run(config: str, loss: str, seed: int, overrides: list[str]) -> list[float]:
    """Held-out BLEU at step 0 and after every `eval_every` steps."""
    with tempfile.TemporaryDirectory() as out:
        cfg = load_run_config(config, [f"preference.loss={loss.removesuffix('-sft')}", f"trainer.seed={seed}",
                                       f"trainer.output_dir={out}", *LOSSES[loss], *overrides])
        trainer = Trainer(cfg)
        every, curve = cfg.trainer.eval_every or cfg.trainer.steps, [trainer.task.evaluate(trainer.policy)["reward"]]
        for step in range(cfg.trainer.steps):
            trainer.step(step)
            if (step + 1) % every == 0:
                curve.append(trainer.task.evaluate(trainer.policy)["reward"])
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*", help="key=value, as `mmalign train` takes them")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    final: dict[str, list[tuple[float, float]]] = {}
    for loss in args.losses:
        for seed in args.seeds:
            curve = run(args.config, loss, seed, args.overrides)
            final.setdefault(loss, []).append((curve[0], curve[-1]))
            print(f"# {loss} seed {seed}: " + " ".join(f"{x:.3f}" for x in curve), flush=True)
    print("\n| loss | held-out BLEU before (seed order) | after (seed order) | after min / mean / max |")
    print("|---|---|---|---|")
    for loss, runs in final.items():
        after = [a for _, a in runs]
        print(f"| {loss} | {' '.join(f'{b:.3f}' for b, _ in runs)} | {' '.join(f'{a:.3f}' for a in after)} "
              f"| {min(after):.3f} / {sum(after) / len(after):.3f} / {max(after):.3f} |")


if __name__ == "__main__":
    main()

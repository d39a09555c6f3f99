"""Can the tiny model of a VLM config learn its SSL task at all? Supervised cross-entropy on the answer tokens.

    OMP_NUM_THREADS=1 python bench/vlm_supervised_check.py configs/vlm/tiny_masked_patch.yaml --seeds 0 1 2

The sanity check behind docs/vlm.md's tiny-scale notes: the config's task, images, split and random-init model,
trained by teacher forcing on the true answers (Adam, batches of `--batch` training questions; a jigsaw answer's
commas become spaces, as the RL config's 4-token replies have none) instead of by RL, with the greedy held-out
accuracy of the config's own evaluation every `--eval-every` steps. When this stays at chance, the model cannot
represent the task in that budget and no RL setting will make it learn; when it learns, RL is what fails.
"""

from __future__ import annotations

import argparse

import torch

from mmalign.run_config import load_run_config
from mmalign.vlm.task import SSLTask


def supervised_curve(config: str, seed: int, steps: int, batch: int, lr: float, eval_every: int,
                     overrides: list[str]) -> list[tuple[int, dict[str, float]]]:
    """[(step, {task: held-out accuracy})] of teacher-forced training from the config's initial model."""
    cfg = load_run_config(config, [f"task_args.seed={seed}", *overrides])
    task = SSLTask(cfg.task_args)
    policy, data = task.policy, task.train_contexts
    opt = torch.optim.Adam(policy.model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(steps + 1):
        if step % eval_every == 0:
            policy.model.eval()
            acc = {k.removeprefix("acc/"): v for k, v in task.evaluate(policy).items() if k.startswith("acc/")}
            curve.append((step, acc))
            print(step, {k: round(v, 3) for k, v in acc.items()}, flush=True)
        if step == steps:
            break
        policy.model.train()
        ctx = [data[int(i)] for i in torch.randint(len(data), (batch,), generator=g)]
        rollout = policy.rollout_from(ctx, [c["answer"].replace(",", " ") for c in ctx])
        loss = -(policy.logprobs(rollout) * rollout.mask).sum() / batch
        opt.zero_grad()
        loss.backward()
        opt.step()
    return curve


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("config")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--overrides", nargs="*", default=[], help="dotted key=value overrides of the config")
    args = p.parse_args()
    finals = {}
    for seed in args.seeds:
        print(f"seed {seed}")
        finals[seed] = supervised_curve(args.config, seed, args.steps, args.batch, args.lr, args.eval_every,
                                        args.overrides)[-1][1]
    for name in finals[args.seeds[0]]:
        v = [finals[s][name] for s in args.seeds]
        print(f"{name}: held-out accuracy after {args.steps} supervised steps {sum(v) / len(v):.3f} "
              f"({min(v):.3f}-{max(v):.3f}), seeds {args.seeds}")


if __name__ == "__main__":
    main()

"""InfAlign (Balashankar et al. 2025): the best-of-N win rate against the reference of a GRPO model trained on
CTRL(BLEU) and of one trained on plain BLEU, compared at the same KL from the reference.

    OMP_NUM_THREADS=1 python bench/infalign_winrate.py --seeds 0 1 2 --n 4 --rounds 8 --out runs/infalign_long

Each (arm, seed) is `mmalign train configs/text/infalign_<arm>.yaml trainer.seed=S` (the seed sets the initial model,
which is also the reference, and training's draws), a checkpoint every 2 steps. Then the initial model and every
checkpoint are evaluated on all held-out rows by `TextTask.bon_win_rate`: per row, `--rounds` times, N samples of the
policy and N of the reference, each side's best by plain BLEU, a win when the policy's beats the reference's (ties
half), and the policy's sequence KL from the reference from its own samples. Each run's (KL, win rate) points give its
curve; the table reads every curve at the same KLs (linear between checkpoints) and gives mean (min-max) over seeds.
Writes points.jsonl and winrate_vs_kl.png under --out. `--report DIR` tabulates an earlier --out without training;
`--toy` prints the t of exp(t u) that the paper's model with uniform calibrated rewards finds best for each N and KL.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ARMS = {"bleu": "plain BLEU", "ctrl": "CTRL(BLEU), exp(t u)"}
PLAIN = "task_args.rewards=[{name: bleu, smoothing: add-one}]"


def train(arm: str, seed: int, out: Path, steps: int) -> Path:
    from mmalign.run_config import load_run_config
    from mmalign.trainer import Trainer

    cfg = load_run_config(f"configs/text/infalign_{arm}.yaml", [
        f"trainer.seed={seed}", f"trainer.output_dir={out}", f"trainer.name={arm}_s{seed}",
        *([f"trainer.steps={steps}"] if steps else [])])
    return Trainer(cfg).train()


def evaluate(arm: str, seed: int, run_dir: Path, n: int, rounds: int) -> list[dict]:
    """(KL, win rate, BLEU) of the initial model and of every checkpoint of a run; both sides ranked by plain
    BLEU, whatever the arm trained on."""
    from mmalign.checkpoint import list_checkpoints
    from mmalign.cli import build_task

    config = f"configs/text/infalign_{arm}.yaml"
    overrides = [f"trainer.seed={seed}", "task_args.eval_size=0", PLAIN]
    points = []
    for ckpt in [None, *list_checkpoints(run_dir / "checkpoints")]:
        _, task = build_task(config, overrides, str(ckpt) if ckpt else None)
        step = int(ckpt.name.split("_")[1]) if ckpt else 0
        points.append({"arm": arm, "seed": seed, "step": step, **task.bon_win_rate(n, rounds, seed)})
        print(json.dumps(points[-1]), flush=True)
    return points


def at_kl(points: list[dict], kl: float) -> float | None:
    """A run's win rate at `kl`, linear between its checkpoints (ordered by KL); None outside the KLs it reached."""
    pts = sorted(points, key=lambda p: p["kl"])
    xs, ys = [p["kl"] for p in pts], [p["win_rate"] for p in pts]
    return float(np.interp(kl, xs, ys)) if xs[0] <= kl <= xs[-1] else None


def spread(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def table(points: list[dict], kls: list[float]) -> str:
    """Win rates at each of `kls` over the seeds whose runs of both arms reached it (paired), and the last step."""
    runs: dict[tuple, list] = {}
    for p in points:
        runs.setdefault((p["arm"], p["seed"]), []).append(p)
    head = " | ".join(f"{ARMS[a]} win rate" for a in ARMS)
    lines = [f"| KL (nats) | seeds | {head} | CTRL - plain, per seed |", "|---|---|" + "---|" * (len(ARMS) + 1)]
    seeds = sorted({s for _, s in runs})
    for kl in kls:
        got = {s: {a: at_kl(runs[a, s], kl) if (a, s) in runs else None for a in ARMS} for s in seeds}
        both = [s for s in seeds if None not in got[s].values()]
        if not both:
            continue
        cells = [spread([got[s][a] for s in both]) for a in ARMS]
        diffs = " / ".join(f"{got[s]['ctrl'] - got[s]['bleu']:+.3f}" for s in both)
        lines.append(f"| {kl:g} | {' '.join(map(str, both))} | " + " | ".join(cells) + f" | {diffs} |")
    lines += ["", "| arm | steps | KL at the last step | win rate at the last step | BLEU of a sample "
              "| best-of-N BLEU |", "|---|---|---|---|---|---|"]
    for a in ARMS:
        last = [max(runs[a, s], key=lambda p: p["step"]) for s in seeds if (a, s) in runs]
        if last:
            lines.append(f"| {ARMS[a]} | {last[0]['step']} | {spread([p['kl'] for p in last])} | "
                         f"{spread([p['win_rate'] for p in last])} | {spread([p['reward'] for p in last])} | "
                         f"{spread([p['best_reward'] for p in last])} |")
    return "\n".join(lines)


def plot(points: list[dict], path: Path, n: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, color in zip(ARMS, ("tab:blue", "tab:red")):
        for i, seed in enumerate(sorted({p["seed"] for p in points if p["arm"] == arm})):
            pts = sorted((p for p in points if p["arm"] == arm and p["seed"] == seed), key=lambda p: p["step"])
            ax.plot([p["kl"] for p in pts], [p["win_rate"] for p in pts], "o-", color=color, alpha=0.7, ms=3,
                    label=ARMS[arm] if i == 0 else None)
    ax.axhline(0.5, color="gray", lw=0.5)
    ax.set_xscale("symlog", linthresh=1.0)  # linear below 1 nat, logarithmic above
    ax.set_xlim(left=min(0.0, *(p["kl"] for p in points)))
    ax.set(xlabel="KL(policy || reference), nats per answer (symlog)",
           ylabel=f"best-of-{n} win rate against the reference",
           title="InfAlign, tiny text task: a line per seed, a point per checkpoint")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def toy_win_rate(n: int, t: float, kl: float, cells: int = 4000) -> float:
    """Best-of-n win rate at `kl` of the KL-regularised optimum for exp(t u) when the reference's calibrated reward u
    is uniform on [0, 1] (InfAlign, sec. 3-4): pi(u) ∝ exp(exp(t u) / beta), beta set by bisection to reach `kl`;
    on `cells` equal cells of [0, 1], win = sum_i P(pi's max in cell i) (P(ref's max below i) + 1/2 P(in i))."""
    u = (np.arange(cells) + 0.5) / cells

    def masses(log_beta: float) -> np.ndarray:
        a = np.exp(t * u - log_beta)
        q = np.exp(a - a.max())
        return q / q.sum()

    lo, hi = -10.0, 40.0  # log beta: the lower, the larger the KL
    for _ in range(80):
        mid = (lo + hi) / 2
        q = masses(mid)
        lo, hi = (mid, hi) if np.sum(q * np.log(np.maximum(q * cells, 1e-300))) > kl else (lo, mid)
    cdf = np.cumsum(masses(hi))
    mine = cdf ** n - np.concatenate([[0.0], cdf[:-1]]) ** n
    edges = np.arange(cells + 1) / cells
    below, inside = edges[:-1] ** n, edges[1:] ** n - edges[:-1] ** n
    return float(np.sum(mine * (below + 0.5 * inside)))


def toy(ns: list[int], kls: list[float], ts: list[float]) -> None:
    print("| N | KL | best t | its win rate | t = 10 | t = 1 |\n|---|---|---|---|---|---|")
    for n in ns:
        for kl in kls:
            wins = {t: toy_win_rate(n, t, kl) for t in ts}
            best = max(wins, key=wins.get)
            print(f"| {n} | {kl:g} | {best:g} | {wins[best]:.3f} | {wins[10]:.3f} | {wins[1]:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--n", type=int, default=4, help="best-of-N of the evaluation")
    parser.add_argument("--rounds", type=int, default=8, help="best-of-N draws per held-out row")
    parser.add_argument("--kls", type=float, nargs="+", default=[0.5, 1, 1.5, 2, 3, 4, 6, 8, 10],
                        help="KLs the table reads at")
    parser.add_argument("--out", default="runs/infalign")
    parser.add_argument("--steps", type=int, default=0, help="training steps of every arm (0: the configs')")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="evaluate the runs already under --out again (a fresh points.jsonl), training nothing")
    parser.add_argument("--also", nargs="+", default=[],
                        help="points.jsonl of earlier invocations: their runs of (arm, seed) not under --out join the "
                             "table and the plot")
    parser.add_argument("--report", action="store_true", help="tabulate --out's points.jsonl, training nothing")
    parser.add_argument("--toy", action="store_true", help="the uniform-calibration model's best t, nothing else")
    args = parser.parse_args()
    if args.toy:
        return toy([2, 4, 8], [0.5, 1, 2, 4], [1, 2, 4, 6, 8, 10, 15, 20, 30])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    points_file = out / "points.jsonl"
    if args.evaluate_only:
        points_file.unlink(missing_ok=True)
    if not args.report:
        for seed in args.seeds:
            for arm in args.arms:
                start = time.perf_counter()
                run_dir = out / f"{arm}_s{seed}" if args.evaluate_only else train(arm, seed, out, args.steps)
                points = evaluate(arm, seed, run_dir, args.n, args.rounds)
                with points_file.open("a") as f:
                    f.writelines(json.dumps(p) + "\n" for p in points)
                print(f"# {arm} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    points = [json.loads(line) for line in points_file.read_text().splitlines()]
    here = {(p["arm"], p["seed"]) for p in points}
    for path in args.also:
        points += [p for line in Path(path).read_text().splitlines()
                   if (p := json.loads(line)) and (p["arm"], p["seed"]) not in here]
    plot(points, out / "winrate_vs_kl.png", args.n)
    print(f"\n`{' '.join(sys.argv)}`\n\nbest-of-{args.n} win rate against the reference at the same KL, mean "
          f"(min-max) over seeds:\n")
    print(table(points, args.kls))


if __name__ == "__main__":
    main()

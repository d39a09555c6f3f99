"""PEARL CPA: accuracy of zero-shot transferred preference labels on the planar tasks, vs a nearest-neighbour baseline.

    python bench/pearl_transfer.py --out docs/figures     # about a minute on one CPU core
    python bench/pearl_transfer.py --tasks reach-v3 button-press-v3 drawer-close-v3 button-press-topdown-v3 \
        --max-episode-steps 150 --seeds 3 --no-entropic --tag metaworld                 # Meta-World v3
    python bench/pearl_transfer.py --pairs reach:orbit push:orbit button-press:orbit drawer-open:orbit orbit:reach \
        --seeds 3 --no-entropic --tag orbit                                            # an unrelated target

Collects (or reads from --data) one mixed-quality offline dataset per task (`mmalign.robotics.offline_data`), then,
for each ordered (source, target) task pair and seed: samples n segments of H steps per task, labels every source
pair by ground-truth return (the oracle scripted teacher), transfers labels to every target pair with CPA, and
scores them against the target's own oracle labels (pairs with equal returns left out; a 0.5 label counts as half).
Writes pearl_transfer[_<tag>].json and .png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mmalign.robotics.cpa import (
    CPAConfig,
    SourceTask,
    all_pairs,
    cross_task_labels,
    nearest_neighbour_labels,
    segment_features,
)
from mmalign.robotics.offline_data import collect_dataset, load_dataset, save_dataset

TASKS = ("reach", "push", "button-press", "drawer-open")
METHODS = {"cpa-exact-relative": CPAConfig(), "cpa-exact-flat": CPAConfig(representation="flat"),
           "cpa-entropic-relative": CPAConfig(method="entropic", max_iter=30)}


def accuracy(pred: np.ndarray, ret_a: np.ndarray, ret_b: np.ndarray) -> float:
    """Agreement of soft labels (P(a > b)) with the oracle on pairs of unequal return; 0.5 counts as half."""
    keep = ret_a != ret_b
    truth = (ret_a > ret_b)[keep]
    hard = np.where(pred[keep] > 0.5, 1.0, np.where(pred[keep] < 0.5, 0.0, 0.5))
    return float(np.mean(np.where(hard == 0.5, 0.5, hard == truth)))


def datasets(data_dir: Path | None, episodes: int, tasks: list[str], max_steps: int | None = None) -> dict:
    out = {}
    for task in tasks:
        path = data_dir / f"{task}.npz" if data_dir else None
        if path is not None and path.exists():
            out[task] = load_dataset(path)
            continue
        out[task] = collect_dataset(task, episodes, seed=0, max_episode_steps=max_steps)
        if path is not None:
            save_dataset(out[task], path)
    return out


def one_pair(src, tgt, n: int, h: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    s, t = src.sample_segments(n, h, rng), tgt.sample_segments(n, h, rng)
    a, b = all_pairs(n)
    rs, rt = s["rewards"].sum(1), t["rewards"].sum(1)
    res = {}
    for name, cfg in METHODS.items():
        source = SourceTask(segment_features(s["obs"], s["actions"], cfg.representation), a, b,
                            (rs[a] > rs[b]).astype(float))
        labels = cross_task_labels([source], segment_features(t["obs"], t["actions"], cfg.representation), a, b, cfg)
        res[name] = accuracy(labels.labels, rt[a], rt[b])
    source = SourceTask(segment_features(s["obs"], s["actions"]), a, b, (rs[a] > rs[b]).astype(float))
    res["nearest-neighbour"] = accuracy(nearest_neighbour_labels(source, segment_features(t["obs"], t["actions"]),
                                                                 a, b), rt[a], rt[b])
    return res


def multi_source(data: dict, sources: list[str], target: str, n: int, h: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    a, b = all_pairs(n)
    srcs = []
    for name in sources:
        s = data[name].sample_segments(n, h, rng)
        r = s["rewards"].sum(1)
        srcs.append(SourceTask(segment_features(s["obs"], s["actions"]), a, b, (r[a] > r[b]).astype(float)))
    t = data[target].sample_segments(n, h, rng)
    rt = t["rewards"].sum(1)
    return accuracy(cross_task_labels(srcs, segment_features(t["obs"], t["actions"]), a, b).labels, rt[a], rt[b])


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = list(results)
    methods = list(next(iter(results.values())))
    fig, ax = plt.subplots(figsize=(12, 4))
    width = 0.8 / len(methods)
    for i, m in enumerate(methods):
        mean = [np.mean(results[p][m]) for p in pairs]
        std = [np.std(results[p][m]) for p in pairs]
        ax.bar(np.arange(len(pairs)) + i * width, mean, width, yerr=std, label=m, capsize=2)
    ax.axhline(0.5, color="k", lw=0.8, ls="--")
    ax.set_xticks(np.arange(len(pairs)) + 0.4 - width / 2, pairs, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("transferred-label accuracy")
    ax.set_ylim(0.3, 1.0)
    ax.legend(fontsize=8, ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    parser.add_argument("--data", type=Path, default=None, help="folder of <task>.npz datasets (written if absent)")
    parser.add_argument("--episodes", type=int, default=25, help="episodes per behaviour policy when collecting")
    parser.add_argument("--segments", type=int, default=100)
    parser.add_argument("--length", type=int, default=25)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--no-entropic", action="store_true", help="skip the entropic solver (most of the time)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), help="every ordered pair of these tasks")
    parser.add_argument("--pairs", nargs="+", default=None, help="source:target pairs instead of --tasks")
    parser.add_argument("--max-episode-steps", type=int, default=None, help="episode length (Meta-World: 150)")
    parser.add_argument("--tag", default="", help="output names pearl_transfer_<tag>.json / .png")
    args = parser.parse_args()
    if args.no_entropic:
        METHODS.pop("cpa-entropic-relative")
    t0 = time.time()
    pairs = ([tuple(p.split(":")) for p in args.pairs] if args.pairs
             else [(s, t) for s in args.tasks for t in args.tasks if s != t])
    tasks = list(dict.fromkeys(x for p in pairs for x in p))
    data = datasets(args.data, args.episodes, tasks, args.max_episode_steps)
    results: dict[str, dict[str, list[float]]] = {}
    for src, tgt in pairs:
        runs = [one_pair(data[src], data[tgt], args.segments, args.length, s) for s in range(args.seeds)]
        results[f"{src}->{tgt}"] = {m: [r[m] for r in runs] for m in runs[0]}
        print(f"{src:>12} -> {tgt:<12}", "  ".join(f"{m} {np.mean(v):.3f}+-{np.std(v):.3f}"
                                                   for m, v in results[f"{src}->{tgt}"].items()), flush=True)
    multi = {}
    if {"reach", "push", "button-press"} <= set(data):
        multi["reach+push->button-press"] = [multi_source(data, ["reach", "push"], "button-press", args.segments,
                                                          args.length, s) for s in range(args.seeds)]
        v = multi["reach+push->button-press"]
        print(f"reach+push -> button-press cpa-exact-relative {np.mean(v):.3f}+-{np.std(v):.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) for k, v in vars(args).items() if k not in ("data", "out")}  # no machine paths
    summary = {"settings": settings, "pairs": results,
               "multi_source": multi, "seconds": time.time() - t0}
    stem = "pearl_transfer" + (f"_{args.tag}" if args.tag else "")
    (args.out / f"{stem}.json").write_text(json.dumps(summary, indent=1))
    plot(results, args.out / f"{stem}.png")
    print(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

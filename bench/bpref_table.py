"""B-Pref's table at our scale (Lee et al. 2021, "B-Pref", Table 2): success and feedback of an online preference
learner for each scripted teacher (`mmalign.robotics.teachers.TEACHERS`), over seeds.

    python bench/bpref_table.py --method prefppo --seeds 0 1 2 [--jobs 2]
    python bench/bpref_table.py --method pebble --teachers oracle mistake --seeds 0 1 2

Each (teacher, seed) is one `mmalign train` of the shipped config (configs/robotics/reach_prefppo.yaml or
reach_pebble.yaml) in a fresh process, with `feedback.teacher` set and the seed on the envs, labels and networks;
nothing else changes. The table gives, per teacher, the final evaluation (deterministic policy, ground truth):
success rate and return, mean ± std over seeds and per seed, the queries the teacher was asked (`feedback`; B-Pref
counts skipped queries too), the labels it answered, and the reward model's held-out accuracy. `--results FILE`
keeps every run's figures (JSON lines) and skips the runs it already holds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"prefppo": ROOT / "configs/robotics/reach_prefppo.yaml",
           "pebble": ROOT / "configs/robotics/reach_pebble.yaml"}
TEACHERS = ["oracle", "mistake", "noisy", "skip", "myopic", "equal"]


def overrides(method: str, teacher: str, seed: int, out: str) -> list[str]:
    if method == "prefppo":
        return [f"trainer.seed={seed}", f"task_args.seed={seed}", f"trainer.output_dir={out}", "trainer.name=run",
                "trainer.save_every=0", "task_args.video=false", f"task_args.feedback.teacher={teacher}"]
    return [f"seed={seed}", f"task.seed={seed}", f"output_dir={out}", "name=run", "task.video=false",
            f"task.feedback.teacher={teacher}", "device=cpu"]


def run(method: str, teacher: str, seed: int, extra: list[str]) -> dict:
    """One training run in a fresh process; its last evaluation row, with the labels answered and wall time."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "mmalign.cli", "train", str(CONFIGS[method]),
               *overrides(method, teacher, seed, out), *extra]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
        rows = [json.loads(line) for line in (Path(out) / "run" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "eval/success_rate" in r][-1]
    labels = max((r.get("reward_model/labels", 0) for r in rows), default=0)
    return {"method": method, "teacher": teacher, "seed": seed, "success": last["eval/success_rate"],
            "return": last["eval/return"], "feedback": last["eval/feedback"], "labels": labels,
            "rm_accuracy": last.get("eval/reward_model_accuracy", float("nan")), "env_steps": last["eval/env_steps"],
            "seconds": time.perf_counter() - start}


def spread(values: list[float], fmt: str) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):{fmt}} ± {sd:{fmt}}"


def table(results: list[dict]) -> None:
    print("| method | teacher | success (mean ± std) | success per seed | return (mean ± std) | feedback | labels "
          "answered | held-out RM accuracy |")
    print("|---|---|---|---|---|---|---|---|")
    for method in dict.fromkeys(r["method"] for r in results):
        for teacher in dict.fromkeys(r["teacher"] for r in results if r["method"] == method):
            rs = sorted((r for r in results if (r["method"], r["teacher"]) == (method, teacher)),
                        key=lambda r: r["seed"])
            per_seed = " / ".join(f"{r['success']:.2f}" for r in rs)
            print(f"| {method} | {teacher} | {spread([r['success'] for r in rs], '.2f')} | {per_seed} "
                  f"| {spread([r['return'] for r in rs], '.1f')} | {statistics.mean(r['feedback'] for r in rs):.0f} "
                  f"| {statistics.mean(r['labels'] for r in rs):.0f} "
                  f"| {spread([r['rm_accuracy'] for r in rs], '.3f')} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=sorted(CONFIGS), nargs="+", default=["prefppo"])
    parser.add_argument("--teachers", nargs="+", choices=TEACHERS, default=TEACHERS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (each on one torch thread)")
    parser.add_argument("--results", type=Path, default=None,
                        help="JSON lines of finished runs: each run is appended as it ends, runs already there are "
                             "not run again (a stopped sweep continues; sweeps split over machines merge)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides for every run")
    args = parser.parse_args()
    grid = [(m, t, s) for m in args.method for t in args.teachers for s in args.seeds]
    done = [json.loads(line) for line in args.results.read_text().splitlines()] if args.results and \
        args.results.exists() else []
    results = [r for r in done if (r["method"], r["teacher"], r["seed"]) in grid]
    todo = [job for job in grid if job not in {(r["method"], r["teacher"], r["seed"]) for r in results}]
    with ThreadPoolExecutor(args.jobs) as pool:
        for future in as_completed([pool.submit(run, *job, args.set) for job in todo]):
            r = future.result()
            print(f"# {r['method']} {r['teacher']} seed {r['seed']}: success {r['success']:.2f} return "
                  f"{r['return']:.1f} feedback {r['feedback']} labels {r['labels']} accuracy "
                  f"{r['rm_accuracy']:.3f} ({r['seconds']:.0f} s)", flush=True)
            results.append(r)
            if args.results:
                with args.results.open("a") as fh:
                    fh.write(json.dumps(r) + "\n")
    print(f"\n`{' '.join(['python', *sys.argv])}`\n")
    table(results)


if __name__ == "__main__":
    main()

"""The spread of the learning tests over seeds and torch thread counts (another CPU takes another float path).

    python bench/learning_spread.py tests/test_vlm_learning.py --seeds 0 1 2 3 4 --threads 1 2

runs the selected tests once per (seed, threads) in a fresh process and prints, per test and reported figure, the
value for every run with min / mean / max, and how many runs passed the test's own assertion. The docs pages quote
these tables; a learning test's bar sits below the worst run. `--logs A.log B.log` tabulates the runs that earlier
sweeps printed (say a 1-thread and a 2-thread sweep with different seeds) as one table, running nothing.
"""

import argparse
import re
import subprocess
import sys
import time
from collections import defaultdict

LINE = re.compile(r"^learning: (\S+) (.*)$")
OUTCOME = re.compile(r"^(PASSED|FAILED|ERROR) (\S+)")


def run(tests: list[str], seed: int, threads: int, extra: list[str]) -> tuple[dict, dict]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", f"--seed={seed}",
           f"--threads={threads}", *extra, *tests]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    figures, outcomes = {}, {}
    for line in out.splitlines():
        if m := LINE.match(line):
            figures[m[1]] = {k: float(v) for k, v in (kv.split("=") for kv in m[2].split())}
        elif m := OUTCOME.match(line):
            outcomes[m[2]] = m[1] == "PASSED"
    return figures, outcomes


class Spread:
    """Figures (in seed order) and outcomes per (test, threads)."""

    def __init__(self):
        self.values, self.passed, self.runs = defaultdict(list), defaultdict(int), defaultdict(int)

    def add(self, seed: int, threads: int, figures: dict, outcomes: dict) -> None:
        for test, ok in outcomes.items():
            self.runs[test, threads] += 1
            self.passed[test, threads] += ok
        for test, figs in figures.items():
            for name, v in figs.items():
                self.values[test, name, threads].append((seed, v))

    def table(self) -> None:
        print("| test | figure | threads | runs (seed order) | min | mean | max | passed |")
        print("|---|---|---|---|---|---|---|---|")
        for (test, name, threads), seeded in sorted(self.values.items()):
            v = [x for _, x in sorted(seeded)]
            runs_, ok = " ".join(f"{x:.3g}" for x in v), f"{self.passed[test, threads]}/{self.runs[test, threads]}"
            print(f"| {test.split('::', 1)[-1]} | {name} | {threads} | {runs_} | {min(v):.3g} "
                  f"| {sum(v) / len(v):.3g} | {max(v):.3g} | {ok} |")


RUN = re.compile(r"^# seed (\d+), threads (\d+):")
RESULT = re.compile(r"^#   (passed|FAILED) (\S+) ?(.*)$")


def read_logs(paths: list[str], spread: Spread) -> None:
    """Add the runs printed by earlier sweeps (their `# seed ..` lines), e.g. a 1-thread and a 2-thread sweep."""
    for path in paths:
        run_, figures, outcomes = None, {}, {}
        for line in open(path).read().splitlines() + ["# seed 0, threads 0:"]:
            if m := RUN.match(line):
                if run_ is not None:
                    spread.add(*run_, figures, outcomes)
                run_, figures, outcomes = (int(m[1]), int(m[2])), {}, {}
            elif m := RESULT.match(line):
                outcomes[m[2]] = m[1] == "passed"
                figures[m[2]] = {k: float(v) for k, v in (kv.split("=") for kv in m[3].split())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tests", nargs="*", help="test files or node ids, as pytest takes them")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("-k", default=None, help="pytest -k expression")
    parser.add_argument("--logs", nargs="+", default=[], help="tabulate the runs printed by earlier sweeps instead")
    args = parser.parse_args()
    if bool(args.tests) == bool(args.logs):
        parser.error("give either tests to run or --logs of earlier sweeps to tabulate")
    extra = ["-k", args.k] if args.k else []
    spread = Spread()
    read_logs(args.logs, spread)
    for threads in args.threads if args.tests else []:
        for seed in args.seeds:
            start = time.perf_counter()
            figures, outcomes = run(args.tests, seed, threads, extra)
            spread.add(seed, threads, figures, outcomes)
            print(f"# seed {seed}, threads {threads}: {sum(outcomes.values())}/{len(outcomes)} passed "
                  f"in {time.perf_counter() - start:.0f} s", flush=True)
            for test, ok in outcomes.items():
                figs = " ".join(f"{k}={v:.4g}" for k, v in figures.get(test, {}).items())
                print(f"#   {'passed' if ok else 'FAILED'} {test.split('::', 1)[-1]} {figs}", flush=True)
    print(f"\n`{' '.join(sys.argv)}`\n")
    spread.table()


if __name__ == "__main__":
    main()

"""What a run leaves behind for people: JSONL metrics, TensorBoard events and PNG curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float (NaN, +-inf) replaced by None, so `json.dumps` writes strict JSON (null)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def json_line(row: dict) -> str:
    """One strict-JSON line of a metrics file (non-finite numbers as null)."""
    return json.dumps(json_safe(row), allow_nan=False) + "\n"


class Tracker:
    """Append metrics rows {"step": k, ...} to metrics.jsonl and TensorBoard; no-op on non-main processes.

    Strings and ints are written as they are, other numbers (0-d tensors too) as floats, a non-finite one as null:
    the file stays strict JSON. TensorBoard gets the numbers. Resuming from step k drops the rows logged after k by
    the interrupted run, so the curve continues as if the run had never stopped.
    """

    def __init__(self, run_dir: Path, enabled: bool = True, resume_step: int | None = None):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            rows = [r for r in read_metrics(self.path) if r["step"] <= resume_step]
            self.path.write_text("".join(json_line(r) for r in rows))
        elif resume_step is None:
            self.path.write_text("")
        from torch.utils.tensorboard import SummaryWriter

        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=purge)

    def log(self, step: int, metrics: dict[str, float | str]) -> None:
        """Append one row at `step`: numbers (0-d tensors too) and strings."""
        if not self.enabled:
            return
        row = {"step": step, **{k: v if isinstance(v, (str, int)) else float(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json_line(row))
        for k, v in row.items():
            if k != "step" and not isinstance(v, str):
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(path: Path) -> list[dict]:
    """All rows of a metrics.jsonl file (the tracker writes a non-finite value as null: it reads as None)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_curves(path: Path, out: Path, keys: tuple[str, ...] = ("reward",), title: str = "") -> Path | None:
    """Plot each metric whose name ends with one of `keys` (train and eval/...) against step, into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(path)
    names = sorted({k for r in rows for k in r if k != "step" and k.split("/")[-1].endswith(keys)})
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for name in names:
        pts = [(r["step"], r[name]) for r in rows if r.get(name) is not None]
        if not pts:
            continue
        ax.plot(*zip(*pts), marker="o" if name.startswith("eval") else None, ms=3, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.set_title(title or out.stem)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def compare_curves(runs: dict[str, Path], out: Path, key: str = "eval/reward", title: str = "") -> Path:
    """One metric of several runs (label -> run folder or metrics.jsonl) against step, into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for label, run in runs.items():
        path = Path(run) / "metrics.jsonl" if Path(run).is_dir() else Path(run)
        pts = [(r["step"], r[key]) for r in read_metrics(path) if r.get(key) is not None]
        if not pts:
            raise ValueError(f"{path} has no metric {key!r}.")
        ax.plot(*zip(*pts), marker="o", ms=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_title(title or key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return Path(out)


if __name__ == "__main__":  # python -m mmalign.tracking OUT.png KEY LABEL=RUN_DIR [LABEL=RUN_DIR ...]
    import sys

    print(compare_curves(dict(a.split("=", 1) for a in sys.argv[3:]), Path(sys.argv[1]), sys.argv[2]))

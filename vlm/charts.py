"""Charts of a run: held-out per-task accuracy before and after training."""

from __future__ import annotations

from pathlib import Path

from mmalign.tracking import read_metrics


def accuracy_before_after(metrics_path: Path) -> dict[str, tuple[float, float]]:
    """{task: (first, last)} of the `eval/acc/<task>` metrics in a run's metrics.jsonl."""
    rows = [r for r in read_metrics(metrics_path) if any(k.startswith("eval/acc/") for k in r)]
    if not rows:
        return {}
    tasks = sorted({k[len("eval/acc/"):] for r in rows for k in r if k.startswith("eval/acc/")})
    first = {t: next(r[f"eval/acc/{t}"] for r in rows if f"eval/acc/{t}" in r) for t in tasks}
    last = {t: next(r[f"eval/acc/{t}"] for r in reversed(rows) if f"eval/acc/{t}" in r) for t in tasks}
    return {t: (first[t], last[t]) for t in tasks}


def plot_accuracy(metrics_path: Path, out: Path) -> Path | None:
    """A grouped bar chart (PNG) of held-out accuracy per task, before vs after training; None without eval rows."""
    data = accuracy_before_after(Path(metrics_path))
    if not data:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(data)
    xs = range(len(names))
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(names), 3.2))
    ax.bar([x - 0.2 for x in xs], [data[n][0] for n in names], 0.4, label="before")
    ax.bar([x + 0.2 for x in xs], [data[n][1] for n in names], 0.4, label="after")
    ax.set_xticks(list(xs), names)
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)

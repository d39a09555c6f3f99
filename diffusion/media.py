"""Image grids a person can open: one row per prompt, its samples side by side, the prompt as the row title."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_grid(items: list, path: str | Path, per_row: int, scale: int = 4, max_rows: int = 16) -> Path:
    """Write (context, uint8 image) pairs as a PNG grid, `per_row` images per row (upscaled, nearest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [items[i:i + per_row] for i in range(0, len(items), per_row)][:max_rows]
    fig, axes = plt.subplots(len(rows), 1, figsize=(per_row * 1.2 + 2.5, len(rows) * 1.0 + 0.3), squeeze=False)
    for ax, row in zip(axes[:, 0], rows):
        strip = np.concatenate([np.kron(np.asarray(im), np.ones((scale, scale, 1), np.uint8)) for _, im in row], 1)
        ax.imshow(strip, interpolation="nearest")
        ctx = row[0][0]
        ax.set_ylabel(ctx["prompt"] if isinstance(ctx, dict) else str(ctx), rotation=0, ha="right", va="center",
                      fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path

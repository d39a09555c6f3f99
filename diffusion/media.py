"""Media a person can open: image grids (one row per prompt, its samples side by side) and tiled MP4s of clips."""

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


def save_clip_grid(rows: list, path: str | Path, scale: int = 4) -> Path:
    """Write (label, uint8 clip (T, H, W, 3)) rows as a PNG: each clip's frames side by side, its label beside it.
    Clips longer than the first row's are cut to its length."""
    frames = len(rows[0][1])
    return save_grid([(label, frame) for label, clip in rows for frame in np.asarray(clip)[:frames]], path,
                     per_row=frames, scale=scale, max_rows=len(rows))


def save_video(clips: list, path: str | Path, fps: int = 6, scale: int = 8, per_row: int = 4) -> Path:
    """Write uint8 clips (T, H, W, 3) as one H.264 MP4 (`mmalign.mp4.write_mp4`), tiled `per_row` to a row,
    upscaled (nearest).

    Clips of unequal length hold their last frame.
    """
    from mmalign.mp4 import write_mp4

    clips = [np.asarray(c) for c in clips]
    if not clips or any(c.dtype != np.uint8 or c.ndim != 4 or c.shape[-1] != 3 for c in clips):
        raise ValueError("save_video takes a non-empty list of uint8 clips (T, H, W, 3).")
    h, w = clips[0].shape[1:3]
    rows, cols = -(-len(clips) // per_row), min(per_row, len(clips))

    def tiled(i: int) -> np.ndarray:
        canvas = np.zeros((rows * h, cols * w, 3), np.uint8)
        for j, c in enumerate(clips):
            r, q = divmod(j, per_row)
            canvas[r * h:(r + 1) * h, q * w:(q + 1) * w] = c[min(i, len(c) - 1)]
        return np.kron(canvas, np.ones((scale, scale, 1), np.uint8))

    return write_mp4((tiled(i) for i in range(max(len(c) for c in clips))), path, fps)

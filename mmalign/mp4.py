"""The one MP4 writer of the project: H.264 that browsers and common players play.

Frames go through the ffmpeg binary that the imageio-ffmpeg wheel ships, encoded with libx264 in yuv420p (the pixel
format "dumb" players and browsers need) with the index at the front of the file (`+faststart`, so a browser starts
playing before the whole file has arrived). yuv420p needs even sizes: an odd height or width gets one black row or
column.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np


def write_mp4(frames: Iterable[np.ndarray], path: str | Path, fps: float = 20) -> Path:
    """Write uint8 RGB frames (H, W, 3), all of one size, as an H.264 MP4.

    Args:
        frames: the frames in order (a list or a generator: they are streamed to ffmpeg).
        path: the .mp4 file (its folder is created).
        fps: frames per second.

    Returns:
        The path.

    Raises:
        ImportError: imageio-ffmpeg is not installed.
        ValueError: no frames, or a frame that is not uint8 (H, W, 3) of the first frame's size.
    """
    try:
        import imageio_ffmpeg
    except ImportError as err:
        raise ImportError("writing MP4 needs imageio-ffmpeg: pip install imageio-ffmpeg") from err
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer, shape = None, None
    try:
        for frame in frames:
            frame = np.asarray(frame)
            if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3 or shape not in (None, frame.shape):
                raise ValueError(f"write_mp4 takes uint8 RGB frames (H, W, 3) of one size, got {frame.dtype} "
                                 f"{frame.shape} after {shape}.")
            if writer is None:
                shape = frame.shape
                h, w = shape[0] + shape[0] % 2, shape[1] + shape[1] % 2
                writer = imageio_ffmpeg.write_frames(str(path), (w, h), fps=fps, codec="libx264",
                                                     pix_fmt_out="yuv420p", macro_block_size=2,
                                                     output_params=["-movflags", "+faststart"])
                writer.send(None)  # start ffmpeg
            writer.send(np.ascontiguousarray(np.pad(frame, ((0, h - shape[0]), (0, w - shape[1]), (0, 0)))))
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ValueError(f"write_mp4 got no frames for {path}.")
    return path

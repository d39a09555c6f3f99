"""Every MP4 the project writes is H.264 in yuv420p (what browsers play), read back with imageio-ffmpeg's ffmpeg."""

import numpy as np
import pytest

from mmalign.diffusion.media import save_video
from mmalign.mp4 import write_mp4

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")


def _read(path) -> tuple[dict, np.ndarray]:
    """ffmpeg's metadata of the file and its decoded frames (N, H, W, 3) uint8."""
    gen = imageio_ffmpeg.read_frames(str(path))
    meta = next(gen)
    w, h = meta["size"]
    return meta, np.stack([np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen])


def test_write_mp4_is_h264_yuv420p_with_every_frame_in_order(tmp_path):
    values = [10, 60, 110, 160, 210, 240, 30]
    frames = (np.full((15, 21, 3), v, np.uint8) for v in values)  # odd sizes, streamed from a generator
    meta, back = _read(write_mp4(frames, tmp_path / "sub" / "a.mp4", fps=5))
    assert meta["codec"].startswith("h264") and meta["pix_fmt"].startswith("yuv420p")
    assert meta["size"] == (22, 16) and meta["fps"] == 5.0  # padded to even sizes for yuv420p
    assert len(back) == len(values)
    np.testing.assert_allclose(back[:, :15, :21].mean((1, 2, 3)), values, atol=3)


def test_save_video_tiles_clips_into_h264(tmp_path):
    clips = [np.full((5, 8, 8, 3), 40, np.uint8), np.stack([np.full((8, 8, 3), v, np.uint8) for v in (90, 150, 200)])]
    meta, back = _read(save_video(clips, tmp_path / "clips.mp4", fps=6, scale=2, per_row=2))
    assert meta["codec"].startswith("h264") and meta["size"] == (32, 16) and len(back) == 5
    np.testing.assert_allclose(back[:, 2:14, 2:14].mean((1, 2, 3)), 40, atol=3)
    np.testing.assert_allclose(back[:, 2:14, 18:30].mean((1, 2, 3)), [90, 150, 200, 200, 200], atol=3)  # holds


def test_write_mp4_rejects_no_frames_and_mixed_sizes(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        write_mp4([], tmp_path / "empty.mp4")
    with pytest.raises(ValueError, match="of one size"):
        write_mp4([np.zeros((4, 4, 3), np.uint8), np.zeros((6, 4, 3), np.uint8)], tmp_path / "mixed.mp4")
    with pytest.raises(ValueError, match="uint8 RGB"):
        write_mp4([np.zeros((4, 4, 3), np.float32)], tmp_path / "float.mp4")


def test_robot_policy_video_is_h264_with_one_frame_per_step(tmp_path):
    pytest.importorskip("mujoco")
    from mmalign.robotics.report import write_video

    meta, back = _read(write_video(lambda obs: np.zeros((1, 2), np.float32), "mmalign/Reach-v0", tmp_path / "p.mp4",
                                   size=32))
    assert meta["codec"].startswith("h264") and meta["size"] == (32, 32)
    assert len(back) == 100 and back.std() > 0  # the episode's 100 steps (Reach's time limit), a rendered scene

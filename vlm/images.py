"""Images for self-supervised tasks: a folder loader, a procedural scene generator and small numpy/OpenCV ops.

Images are (H, W, 3) uint8 RGB numpy arrays throughout.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mmalign.data import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


# ---------------------------------------------------------------------------------------------------------------
# Sources


def read_image(path: str | Path) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image from a PNG/JPEG/... file (OpenCV, falling back to PIL)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is not None:
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        raise DataError(f"cannot read image {path}: {e}; remove or replace the file.") from e


def load_image_folder(folder: str | Path, size: int = 0, limit: int = 0) -> list[np.ndarray]:
    """Every image under `folder` (recursively, sorted by path), optionally centre-cropped and resized to size x size.

    Args:
        folder: a directory of PNG/JPEG/BMP/WebP files.
        size: output side in pixels; 0 keeps each image as it is.
        limit: read at most this many images; 0 = all.

    Raises:
        FileNotFoundError: the folder does not exist. DataError: it holds no image, or one that cannot be read.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist; give a folder of PNG/JPEG files or "
                                "dataset: procedural.")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DataError(f"image folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} files; put images there (any "
                        "depth) or use dataset: procedural.")
    paths = paths[:limit] if limit else paths
    images = [read_image(p) for p in paths]
    return [resize(center_crop_square(im), size) for im in images] if size else images


def procedural_image(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    """A random outdoor-like scene with a clear up direction: sky gradient, sun, ground, houses and trees.

    Upright scenes make rotation learnable; varied colours and objects make crops and patches distinguishable.
    """
    h = w = size
    img = np.zeros((h, w, 3), np.float32)
    horizon = int(h * rng.uniform(0.45, 0.7))
    sky_top, sky_low = rng.uniform([20, 60, 150], [90, 140, 255]), rng.uniform([150, 190, 220], [220, 235, 255])
    t = np.linspace(0, 1, horizon)[:, None, None]
    img[:horizon] = sky_top * (1 - t) + sky_low * t
    ground = rng.uniform([40, 90, 20], [140, 170, 80])
    shade = np.linspace(1.0, 0.6, h - horizon)[:, None, None]
    img[horizon:] = ground * shade
    cx, cy = int(rng.uniform(0.1, 0.9) * w), int(rng.uniform(0.08, 0.3) * h)
    r = max(2, int(size * rng.uniform(0.06, 0.12)))
    cv2.circle(img, (cx, cy), r, rng.uniform([230, 200, 40], [255, 255, 140]).tolist(), -1)
    for _ in range(int(rng.integers(1, 4))):
        _house(img, rng, horizon, size) if rng.random() < 0.6 else _tree(img, rng, horizon, size)
    noise = rng.normal(0, 4, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _house(img: np.ndarray, rng: np.random.Generator, horizon: int, size: int) -> None:
    bw, bh = int(size * rng.uniform(0.12, 0.25)), int(size * rng.uniform(0.1, 0.2))
    x0, y1 = int(rng.uniform(0, size - bw)), horizon + int(rng.uniform(0.0, 0.15) * size)
    cv2.rectangle(img, (x0, y1 - bh), (x0 + bw, y1), rng.uniform(60, 255, 3).tolist(), -1)
    roof = np.array([[x0 - 2, y1 - bh], [x0 + bw + 2, y1 - bh], [x0 + bw // 2, y1 - bh - bh // 1]], np.int32)
    cv2.fillPoly(img, [roof], rng.uniform([120, 20, 20], [200, 80, 60]).tolist())


def _tree(img: np.ndarray, rng: np.random.Generator, horizon: int, size: int) -> None:
    x, y = int(rng.uniform(0.05, 0.95) * size), horizon + int(rng.uniform(0.0, 0.15) * size)
    th = int(size * rng.uniform(0.08, 0.15))
    cv2.rectangle(img, (x - 1, y - th), (x + 1, y), (90, 60, 30), -1)
    cv2.circle(img, (x, y - th), max(2, int(size * rng.uniform(0.05, 0.1))), rng.uniform([20, 100, 20],
                                                                                        [80, 180, 70]).tolist(), -1)


def procedural_images(n: int, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """`n` procedural scenes, reproducible from `seed` (no downloads)."""
    rng = np.random.default_rng(seed)
    return [procedural_image(rng, size) for _ in range(n)]


# ---------------------------------------------------------------------------------------------------------------
# Ops


def center_crop_square(img: np.ndarray) -> np.ndarray:
    """The largest centred square of `img`."""
    h, w = img.shape[:2]
    s = min(h, w)
    return img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]


def resize(img: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize to size x size (or (h, w)); area interpolation when shrinking, bilinear when growing."""
    h, w = (size, size) if isinstance(size, int) else size
    if img.shape[:2] == (h, w):
        return img
    interp = cv2.INTER_AREA if h * w < img.shape[0] * img.shape[1] else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


def rotate(img: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate a square image counter-clockwise; off the right angles, crop the largest inscribed axis-aligned square
    (as SSL4RL does, so black corners never show) and resize it back to the input size."""
    if degrees % 90 == 0:
        return np.ascontiguousarray(np.rot90(img, int(degrees // 90) % 4))
    s = img.shape[0]
    m = cv2.getRotationMatrix2D(((s - 1) / 2, (s - 1) / 2), degrees, 1.0)
    out = cv2.warpAffine(img, m, (s, s), flags=cv2.INTER_LINEAR)
    theta = np.deg2rad(degrees)
    inner = int(np.floor(s / (abs(np.cos(theta)) + abs(np.sin(theta))))) - 2
    off = (s - inner) // 2
    return resize(out[off:off + inner, off:off + inner], s)


def grid_cells(img: np.ndarray, grid: int) -> list[np.ndarray]:
    """The grid x grid cells of `img`, row-major (the image is cropped to a multiple of `grid`)."""
    h, w = (img.shape[0] // grid) * grid, (img.shape[1] // grid) * grid
    ch, cw = h // grid, w // grid
    return [img[r * ch:(r + 1) * ch, c * cw:(c + 1) * cw] for r in range(grid) for c in range(grid)]


def augment(img: np.ndarray, rng: np.random.Generator, size: int, strength: float = 1.0) -> np.ndarray:
    """A SimCLR / solo-learn style view: random resized crop, h-flip, colour jitter, grayscale and blur.

    Args:
        img: (H, W, 3) uint8.
        rng: random generator.
        size: output side.
        strength: 0 returns a plain resize; 1 is solo-learn's setting (crop scale 0.08-1, jitter 0.8 with p=0.8,
            grayscale p=0.2, blur p=0.5, flip p=0.5).
    """
    if strength <= 0:
        return resize(center_crop_square(img), size)
    h, w = img.shape[:2]
    scale, ratio = rng.uniform(1 - 0.92 * strength, 1.0), np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    ch = int(np.clip(np.sqrt(scale * h * w / ratio), 4, h))
    cw = int(np.clip(np.sqrt(scale * h * w * ratio), 4, w))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = resize(img[y:y + ch, x:x + cw], size).astype(np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.8 * strength:
        j = 0.8 * strength
        out = out * rng.uniform(1 - j, 1 + j)  # brightness
        out = (out - out.mean()) * rng.uniform(1 - j, 1 + j) + out.mean()  # contrast
        gray = out.mean(-1, keepdims=True)
        out = gray + (out - gray) * rng.uniform(1 - j, 1 + j)  # saturation
    if rng.random() < 0.2 * strength:
        out = np.repeat(out.mean(-1, keepdims=True), 3, -1)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < 0.5 * strength:
        out = cv2.GaussianBlur(out, (3, 3), rng.uniform(0.1, 2.0))
    return np.ascontiguousarray(out)

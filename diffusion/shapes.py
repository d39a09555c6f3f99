"""The embedded text-to-image task: procedurally drawn coloured shapes at positions, described by prompts, and a
verifiable OpenCV check of colour / shape / count / position.

A spec is a dict {"color", "shape", "count", "position"} (position "" when count > 1); its prompt reads
"a red circle on the left" or "two blue squares". Images are uint8 RGB (H, W, 3) on a black background.
"""

from __future__ import annotations

import itertools
import re

import numpy as np

COLORS = {"red": (225, 35, 35), "green": (40, 200, 60), "blue": (50, 90, 235), "yellow": (235, 220, 40)}
SHAPES = ("circle", "square", "triangle")
POSITIONS = ("left", "right", "top", "bottom")
NUMBERS = {1: "a", 2: "two", 3: "three"}
WORDS = sorted({*COLORS, *SHAPES, *(s + "s" for s in SHAPES), *POSITIONS, *NUMBERS.values(), "on", "the", "at"})
"""Every word a prompt can contain (the tiny model's tokenizer vocabulary)."""


def prompt_of_spec(spec: dict) -> str:
    """"a red circle on the left" / "two blue squares"."""
    n = spec.get("count", 1)
    noun = spec["shape"] + ("s" if n > 1 else "")
    text = f"{NUMBERS[n]} {spec['color']} {noun}"
    if spec.get("position"):
        word = "at" if spec["position"] in ("top", "bottom") else "on"
        text += f" {word} the {spec['position']}"
    return text


def noisy_prompt(spec: dict, noise: float, rng: np.random.Generator) -> str:
    """The prompt of `spec` with each of its colour, shape and position words replaced, with probability `noise`
    each, by a uniformly drawn one (possibly the same): captions as loosely tied to their images as web alt-text."""
    options = {"color": tuple(COLORS), "shape": SHAPES, "position": POSITIONS}
    spec = {k: (options[k][rng.integers(len(options[k]))] if k in options and v and rng.random() < noise else v)
            for k, v in spec.items()}
    return prompt_of_spec(spec)


def parse_prompt(prompt: str) -> dict:
    """The spec a prompt describes (inverse of `prompt_of_spec`); missing parts are left out."""
    words = re.findall(r"[a-z]+", prompt.lower())
    spec: dict = {"count": next((n for n, w in NUMBERS.items() if w in words), 1)}
    for key, options in (("color", COLORS), ("position", POSITIONS)):
        found = [w for w in words if w in options]
        if found:
            spec[key] = found[0]
    shape = [s for s in SHAPES if s in words or s + "s" in words]
    if shape:
        spec["shape"] = shape[0]
    return spec


def all_specs(counts: tuple[int, ...] = (1,)) -> list[dict]:
    """Every spec: colour x shape x position for one object, colour x shape for counts > 1."""
    specs = []
    for n in counts:
        positions = POSITIONS if n == 1 else ("",)
        for c, s, p in itertools.product(COLORS, SHAPES, positions):
            specs.append({"color": c, "shape": s, "count": n, "position": p})
    return specs


def rows(counts: tuple[int, ...] = (1,)) -> list[dict]:
    """Dataset rows {"prompt", "color", "shape", "count", "position"} for every spec."""
    return [{"prompt": prompt_of_spec(s), **s} for s in all_specs(counts)]


def _centre(position: str, size: int, rng: np.random.Generator) -> tuple[int, int]:
    lo, hi, mid = int(0.27 * size), int(0.73 * size), size / 2
    jitter = rng.uniform(-0.06, 0.06, 2) * size
    cx, cy = {"left": (lo, mid), "right": (hi, mid), "top": (mid, lo), "bottom": (mid, hi)}.get(
        position, tuple(rng.uniform(0.25, 0.75, 2) * size))
    return int(round(cx + jitter[0])), int(round(cy + jitter[1]))


def _draw_one(img: np.ndarray, shape: str, color: tuple, cx: int, cy: int, r: int) -> None:
    import cv2

    if shape == "circle":
        cv2.circle(img, (cx, cy), r, color, -1)
    elif shape == "square":
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), color, -1)
    else:
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(img, [pts], color)


def draw(spec: dict, size: int = 16, rng: np.random.Generator | None = None) -> np.ndarray:
    """A (size, size, 3) uint8 image of the spec; shapes of radius ~size/6, objects of a count kept apart (counts
    up to 2 at 16 pixels, 3 at 32)."""
    rng = rng or np.random.default_rng()
    img = np.zeros((size, size, 3), np.uint8)
    r = max(2, int(round(size / 6)))
    n = spec.get("count", 1)
    if n == 1:
        centres = [_centre(spec.get("position", ""), size, rng)]
    else:  # objects on a row / column, spaced so they never touch
        step = size // n
        r = min(r, (step - 2) // 2)
        offs = [int(step * (i + 0.5)) for i in range(n)]
        other = int(rng.integers(r + 1, size - r - 1))
        centres = [(o, other) for o in offs] if rng.random() < 0.5 else [(other, o) for o in offs]
    for cx, cy in centres:
        _draw_one(img, spec["shape"], COLORS[spec["color"]], cx, cy, r)
    return img


def _colour_mask(image: np.ndarray, colour: str) -> tuple[np.ndarray, np.ndarray]:
    """Foreground mask (bright pixels) and the mask of foreground pixels nearest to `colour` in the palette."""
    img = image.astype(np.float32)
    fg = img.max(-1) > 90
    palette = np.array(list(COLORS.values()), np.float32)
    nearest = np.argmin(((img[:, :, None, :] - palette) ** 2).sum(-1), -1)
    return fg, fg & (nearest == list(COLORS).index(colour))


def _shape_of(stats_row: np.ndarray, centroid: np.ndarray) -> str:
    """Square when it fills its bounding box (fill ratio 1 vs pi/4 and 1/2); else triangle (apex up) when its
    centroid sits low in the box (2/3 of the height vs 1/2 for a circle), else circle."""
    _, top, w, h, area = stats_row
    if area / max(1, w * h) > 0.86:
        return "square"
    low = (centroid[1] - (top + (h - 1) / 2)) / max(1, h)
    return "triangle" if low > 0.07 else "circle"


def check(image: np.ndarray, spec: dict, min_area: int = 3) -> dict[str, bool]:
    """Which of the spec's attributes the image satisfies (OpenCV: palette colour mask, connected components,
    fill ratio for the shape, centroid for the position). Attributes a spec leaves out are not checked."""
    import cv2

    size = image.shape[0]
    result: dict[str, bool] = {}
    fg, mask = _colour_mask(image, spec["color"]) if "color" in spec else (None, None)
    if mask is None:
        return result
    n, _, stats, cents = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    comps = [i for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= min_area]
    result["color"] = bool(comps) and mask.sum() >= 0.5 * fg.sum()
    result["count"] = len(comps) == spec.get("count", 1)
    if "shape" in spec:
        result["shape"] = bool(comps) and all(_shape_of(stats[i], cents[i]) == spec["shape"] for i in comps)
    if spec.get("position"):
        if comps:
            big = max(comps, key=lambda i: stats[i, cv2.CC_STAT_AREA])
            left, top, w, h, _ = stats[big]  # bounding-box centre: a triangle's centroid sits low
            dx, dy = left + (w - 1) / 2 - (size - 1) / 2, top + (h - 1) / 2 - (size - 1) / 2
            where = ("left" if dx < 0 else "right") if abs(dx) > abs(dy) else ("top" if dy < 0 else "bottom")
            result["position"] = where == spec["position"] and max(abs(dx), abs(dy)) > 0.1 * size
        else:
            result["position"] = False
    return result


def position_score(image: np.ndarray, position: str) -> float:
    """Graded position in [0, 1]: the share of the foreground's brightness on the requested side of the centre
    line (1 = all of it); a dense version of `check`'s position test for reward shaping. Black image: 0."""
    m = image.astype(np.float32).max(-1)
    m = np.where(m > 90, m, 0.0)
    total = m.sum()
    if total == 0:
        return 0.0
    half = image.shape[0] / 2
    ys, xs = np.mgrid[: m.shape[0], : m.shape[1]] + 0.5
    side = {"left": xs < half, "right": xs > half, "top": ys < half, "bottom": ys > half}[position]
    return float(m[side].sum() / total)

"""SSL4RL self-supervised tasks (Guo et al. 2025, arXiv 2510.16416): unlabeled images -> verifiable questions.

Each task is a small class: `__call__(image, rng, other) -> SSLSample` (the generator; `other` is a second image,
used by contrastive negatives and distractors) and `score(predicted, answer) -> float` (the verifier). The four
tasks of SSL4RL's released code (rotation, jigsaw, position, contrastive) plus the masked-patch task its paper
names, made verifiable as multiple choice among candidate patches; and `arithmetic`, a text-only rule-based task
for LMM-R1's first stage. Prompts depend on the difficulty knobs only, never on the answer; the answer lives in
the context's "answer" field, which the policy never reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from mmalign.vlm.images import augment, center_crop_square, grid_cells, resize, rotate

INSTRUCTION = ("First think step by step inside <think> </think>, then give the final answer inside "
               "<answer> </answer>.")
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@dataclass
class SSLSample:
    """One question: images, prompt (with <image> placeholders), the verifiable answer and the allowed answers."""

    images: list[np.ndarray]
    prompt: str
    answer: str
    choices: list[str] = field(default_factory=list)


def parse_answer(text: str, require_tags: bool = True) -> str | None:
    """The last <answer>...</answer> content, stripped and lower-cased; without tags, None (or the whole text when
    `require_tags` is False, for tiny models that answer bare)."""
    found = _ANSWER_RE.findall(text)
    if found:
        return normalize(found[-1])
    return None if require_tags else normalize(text)


def normalize(text: str) -> str:
    """Lower-case, drop a trailing degree sign or word and collapse spaces around commas."""
    text = " ".join(text.strip().lower().split())
    text = re.sub(r"\s*(degrees?|°)$", "", text)
    return re.sub(r"\s*,\s*", ",", text)


class SSLGenerator:
    """Shared parts: the prompt suffix and exact-match scoring."""

    name = "ssl"
    choices: list[str] = []

    def __init__(self, size: int = 224, instruction: bool = True):
        self.size, self.instruction = size, instruction

    def ask(self, question: str) -> str:
        return f"{question} {INSTRUCTION}" if self.instruction else question

    @staticmethod
    def score(predicted: str | None, answer: str) -> float:
        """1.0 on an exact (normalised) match, else 0.0 (SSL4RL's reward for rotation, position, contrastive)."""
        return float(predicted is not None and predicted == normalize(answer))


class Rotation(SSLGenerator):
    """Predict the counter-clockwise rotation of an image, in multiples of 360 / num_rotations degrees.

    The image is centre-cropped to a square first, so the aspect ratio does not give 90 vs 0 away; off the right
    angles the largest inscribed square is kept, so black corners never show.

    Args:
        num_rotations: difficulty: 2 (0/180), 4 (0/90/180/270, SSL4RL) or 8 (45-degree steps).
        show_original: show the original and the rotated image (SSL4RL), else the rotated one alone.
    """

    name = "rotation"

    def __init__(self, num_rotations: int = 4, show_original: bool = True, **kw):
        super().__init__(**kw)
        if num_rotations < 2 or 360 % num_rotations:
            raise ValueError(f"rotation: num_rotations must divide 360 and be >= 2, got {num_rotations}.")
        self.angles = [k * 360 // num_rotations for k in range(num_rotations)]
        self.choices = [str(a) for a in self.angles]
        self.show_original = show_original

    def __call__(self, image: np.ndarray, rng: np.random.Generator, other: np.ndarray | None = None) -> SSLSample:
        base = resize(center_crop_square(image), self.size)
        angle = self.angles[int(rng.integers(len(self.angles)))]
        options = ", ".join(self.choices)
        if self.show_original:
            images = [base, rotate(base, angle)]
            q = (f"Image 1: <image> Image 2: <image> Image 2 is Image 1 rotated counter-clockwise by one of "
                 f"{options} degrees. By how many degrees?")
        else:
            images = [rotate(base, angle)]
            q = f"<image> This image was rotated counter-clockwise by one of {options} degrees. By how many degrees?"
        return SSLSample(images, self.ask(q), str(angle), self.choices)


class Jigsaw(SSLGenerator):
    """Reorder a grid x grid jigsaw: for each shown patch, its original position (1-based, row-major).

    Args:
        grid: difficulty: patches per side (SSL4RL uses 2).
        separate_images: feed the patches as grid^2 images (SSL4RL), else one shuffled mosaic.
    """

    name = "jigsaw"

    def __init__(self, grid: int = 2, separate_images: bool = True, **kw):
        super().__init__(**kw)
        self.grid, self.separate = grid, separate_images

    def __call__(self, image: np.ndarray, rng: np.random.Generator, other: np.ndarray | None = None) -> SSLSample:
        n = self.grid ** 2
        cells = grid_cells(resize(center_crop_square(image), self.size), self.grid)
        perm = rng.permutation(n)  # shown patch i is original patch perm[i]
        shown = [cells[j] for j in perm]
        example = ",".join(str(i + 1) for i in range(n))
        what = f"{self.grid}x{self.grid} grid, numbered 1 to {n} row by row"
        if self.separate:
            images = shown
            q = (" ".join(f"Patch {i + 1}: <image>" for i in range(n)) + f" These patches were cut from one image "
                 f"on a {what}, then shuffled. Give the original position of each patch in order, e.g. {example}.")
        else:
            rows = [np.concatenate(shown[r * self.grid:(r + 1) * self.grid], 1) for r in range(self.grid)]
            images = [np.concatenate(rows, 0)]
            q = (f"<image> This image was cut on a {what}, and the patches shuffled. Give the original position of "
                 f"each shown patch, row by row, e.g. {example}.")
        return SSLSample(images, self.ask(q), ",".join(str(j + 1) for j in perm))

    @staticmethod
    def score(predicted: str | None, answer: str) -> float:
        """Partial credit: the fraction of positions right (SSL4RL's jigsaw reward, int(pred[i]) == int(gt[i])).

        The reply must be whole numbers separated by commas or spaces; anything else scores 0, as SSL4RL's int()
        fails on it (digits inside a word, e.g. the prompt's "2x2" copied four times, are no answer)."""
        guess = re.split(r"[,\s]+", predicted.strip()) if predicted else []
        if not guess or not all(g.isdigit() for g in guess):
            return 0.0
        truth = answer.split(",")
        return sum(int(g) == int(t) for g, t in zip(guess, truth)) / len(truth)


def region_names(grid: int) -> list[str]:
    """Names of grid x grid regions, row-major: top-left ... bottom-right (grid 2 or 3), else "row r column c"."""
    rows = {2: ["top", "bottom"], 3: ["top", "middle", "bottom"]}.get(grid)
    cols = {2: ["left", "right"], 3: ["left", "center", "right"]}.get(grid)
    if rows is None:
        return [f"row {r + 1} column {c + 1}" for r in range(grid) for c in range(grid)]
    return [f"{r}-{c}" for r in rows for c in cols]


class Position(SSLGenerator):
    """Crop localisation: which grid region of the first image did the second (a crop) come from.

    Args:
        grid: difficulty: 2 (quadrants, SSL4RL) or more regions.
        min_frac: smallest crop side, as a fraction of the region's side (SSL4RL: 0.2).
        max_frac: largest crop side (SSL4RL: 0.8).
        augment_strength: augmentation of the crop (SSL4RL: off).
    """

    name = "position"

    def __init__(self, grid: int = 2, min_frac: float = 0.2, max_frac: float = 0.8, augment_strength: float = 0.0,
                 **kw):
        super().__init__(**kw)
        self.grid, self.min_frac, self.max_frac, self.strength = grid, min_frac, max_frac, augment_strength
        self.choices = region_names(grid)

    def __call__(self, image: np.ndarray, rng: np.random.Generator, other: np.ndarray | None = None) -> SSLSample:
        base = resize(center_crop_square(image), self.size)
        k = int(rng.integers(len(self.choices)))
        cell = grid_cells(base, self.grid)[k]
        ch, cw = cell.shape[:2]
        h = max(2, int(ch * rng.uniform(self.min_frac, self.max_frac)))
        w = max(2, int(cw * rng.uniform(self.min_frac, self.max_frac)))
        y, x = int(rng.integers(0, ch - h + 1)), int(rng.integers(0, cw - w + 1))
        crop = augment(cell[y:y + h, x:x + w], rng, self.size, self.strength)
        q = (f"Image 1: <image> Image 2: <image> Image 2 is a crop of one region of Image 1. Which region: "
             f"{', '.join(self.choices)}?")
        return SSLSample([base, crop], self.ask(q), self.choices[k], self.choices)


class Contrastive(SSLGenerator):
    """Are two augmented views from the same image ("positive") or from two images ("negative"), half and half.

    Args:
        augment_strength: difficulty: 1.0 is solo-learn's augmentation (SSL4RL); lower is easier.
    """

    name = "contrastive"
    choices = ["positive", "negative"]

    def __init__(self, augment_strength: float = 1.0, **kw):
        super().__init__(**kw)
        self.strength = augment_strength

    def __call__(self, image: np.ndarray, rng: np.random.Generator, other: np.ndarray | None = None) -> SSLSample:
        if other is None:
            raise ValueError("contrastive needs a second image (`other`) for negatives.")
        positive = bool(rng.random() < 0.5)
        images = [augment(image, rng, self.size, self.strength),
                  augment(image if positive else other, rng, self.size, self.strength)]
        q = ("Image 1: <image> Image 2: <image> Were these two images derived from the same original image? Answer "
             "positive (same) or negative (different).")
        return SSLSample(images, self.ask(q), "positive" if positive else "negative", self.choices)


class MaskedPatch(SSLGenerator):
    """Masked-patch reconstruction made verifiable: pick the patch that fills the grey hole, among candidates.

    Args:
        grid: the image is cut on a grid x grid grid; one cell is masked.
        num_candidates: difficulty: options shown (the true patch and num_candidates - 1 distractors).
        distractors_from_other: distractors come from another image (easier) instead of other cells of this one.
    """

    name = "masked_patch"

    def __init__(self, grid: int = 3, num_candidates: int = 4, distractors_from_other: bool = False, **kw):
        super().__init__(**kw)
        if not 2 <= num_candidates <= min(26, grid * grid):
            raise ValueError(f"masked_patch: num_candidates must be in 2..{min(26, grid * grid)}.")
        self.grid, self.k, self.from_other = grid, num_candidates, distractors_from_other
        self.choices = [chr(ord("a") + i) for i in range(num_candidates)]

    def __call__(self, image: np.ndarray, rng: np.random.Generator, other: np.ndarray | None = None) -> SSLSample:
        base = resize(center_crop_square(image), self.size)
        cells = grid_cells(base, self.grid)
        hole = int(rng.integers(len(cells)))
        source = grid_cells(resize(center_crop_square(other), self.size), self.grid) \
            if self.from_other and other is not None else cells
        pool = [i for i in range(len(source)) if source is not cells or i != hole]
        candidates = [cells[hole]] + [source[i] for i in rng.choice(pool, self.k - 1, replace=False)]
        order = rng.permutation(self.k)
        masked = base.copy()
        ch, cw = cells[0].shape[:2]
        r, c = divmod(hole, self.grid)
        masked[r * ch:(r + 1) * ch, c * cw:(c + 1) * cw] = 128
        letters = [chr(ord("A") + i) for i in range(self.k)]
        q = ("<image> A region of this image is masked in grey. Which candidate patch fills it? " +
             " ".join(f"{L}: <image>" for L in letters) + f" Answer with one letter of {', '.join(letters)}.")
        answer = letters[int(np.flatnonzero(order == 0)[0])]
        return SSLSample([masked] + [candidates[j] for j in order], self.ask(q), answer.lower(), self.choices)


class Arithmetic(SSLGenerator):
    """Text-only rule-based questions (LMM-R1's first, text-only stage): a + b or a - b, exact answer.

    Args:
        max_operand: difficulty: operands are drawn from 0..max_operand.
        ops: operators to use ("+", "-").
    """

    name = "arithmetic"

    def __init__(self, max_operand: int = 9, ops: str = "+-", **kw):
        super().__init__(**kw)
        self.max_operand, self.ops = max_operand, ops

    def __call__(self, image: np.ndarray | None, rng: np.random.Generator, other=None) -> SSLSample:
        a, b = (int(x) for x in rng.integers(0, self.max_operand + 1, 2))
        op = self.ops[int(rng.integers(len(self.ops)))]
        return SSLSample([], self.ask(f"What is {a} {op} {b}?"), str(a + b if op == "+" else a - b))


SSL_TASKS: dict[str, type[SSLGenerator]] = {t.name: t for t in (Rotation, Jigsaw, Position, Contrastive, MaskedPatch,
                                                            Arithmetic)}
"""Task names usable in configs."""


def build_ssl_task(spec: str | dict, size: int = 224, instruction: bool = True) -> SSLGenerator:
    """A task from a config spec: "rotation" or {"name": "jigsaw", "grid": 3, ...} (other keys are its knobs)."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", None)
    spec.pop("weight", None)
    if name not in SSL_TASKS:
        raise ValueError(f"unknown SSL task {name!r}; use one of {sorted(SSL_TASKS)}.")
    spec.setdefault("size", size)
    spec.setdefault("instruction", instruction)
    try:
        return SSL_TASKS[name](**spec)
    except TypeError as e:
        raise ValueError(f"SSL task {name!r}: bad options {sorted(spec)} ({e}).") from e

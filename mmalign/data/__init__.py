"""Prompt datasets: JSONL rows such as {"prompt": str, "references": [str, ...]}, one JSON object per line.

The rows are the `contexts` a policy samples from and reward functions read. Datasets shipped with mmalign live in
`mmalign/data/<name>.jsonl`; `shipped_dataset(name)` gives their path.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path


class DataError(ValueError):
    """A dataset file is malformed; the message names the file, the line and what is wrong."""


def shipped_datasets() -> list[str]:
    """Names of the datasets shipped inside the package."""
    folder = resources.files("mmalign") / "data"
    return sorted(p.name[: -len(".jsonl")] for p in folder.iterdir() if p.name.endswith(".jsonl"))


def shipped_dataset(name: str) -> Path:
    """Path of the dataset `name` shipped with mmalign (`mmalign/data/<name>.jsonl`).

    Raises:
        FileNotFoundError: listing the shipped names when there is no such dataset.
    """
    path = resources.files("mmalign") / "data" / f"{name}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"mmalign ships no dataset named {name!r}; shipped: {shipped_datasets()}. For your own data, pass the "
            f"path of a .jsonl file."
        )
    return Path(str(path))


TEXT_FIELDS = {"prompt": False, "references": True}
"""Fields that hold text, checked in every row that has them: field -> whether a list of strings is allowed too."""


def _missing(value: object) -> bool:
    """A required field counts as missing when absent, None, or an empty string or list."""
    return value is None or (isinstance(value, (str, list, dict)) and len(value) == 0)


def load_jsonl(path: str | Path, required: Sequence[str] = ("prompt",),
               text_fields: Mapping[str, bool] = TEXT_FIELDS) -> list[dict]:
    """Read a UTF-8 JSONL file of JSON objects, checking that every row has the `required` fields and that its text
    fields hold text.

    Blank lines are skipped. A required field that is absent, null or empty counts as missing.

    Args:
        path: the .jsonl file.
        required: fields every row must have, e.g. ("prompt", "references") for reference-based rewards.
        text_fields: field -> whether a list of strings is allowed besides a string (see `TEXT_FIELDS`); checked
            in the rows that have the field.

    Returns:
        The rows, in file order.

    Raises:
        FileNotFoundError: the file does not exist (the message says what to pass instead).
        DataError: (a ValueError) naming the file and line of a row that is not UTF-8, not a JSON object, lacks a
            required field or holds a non-text value in a text field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"dataset file {str(path)!r} not found. Pass the path of a .jsonl file with one JSON object per line "
            f'(e.g. {{"prompt": ..., "references": [...]}}), or a shipped dataset name: {shipped_datasets()}.'
        )
    rows = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                                "save the file as UTF-8.") from e
            if line.strip():
                rows.append(_parse_row(line, path, lineno, required, text_fields))
    if not rows:
        raise DataError(f"{path}: the file has no rows; expected one JSON object per line.")
    return rows


def _parse_row(line: str, path: Path, lineno: int, required: Sequence[str], text_fields: Mapping[str, bool]) -> dict:
    """One JSONL line as a dict, with a message naming file and line when it is malformed or incomplete."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno}).") from e
    if not isinstance(row, dict):
        raise DataError(f"{path}:{lineno}: expected a JSON object per line, got a {type(row).__name__}.")
    missing = [key for key in required if _missing(row.get(key))]
    if missing:
        raise DataError(
            f"{path}:{lineno}: row is missing {missing} (it has {sorted(row)}); every row needs {list(required)}."
        )
    for key, many in text_fields.items():
        value = row.get(key)
        if value is not None and not _is_text(value, many):
            kind = "a string or a list of strings" if many else "a string"
            raise DataError(f"{path}:{lineno}: {key!r} must be {kind}, got {value!r} ({type(value).__name__}); "
                            f"write it as {kind} in the file.")
    return row


def _is_text(value: object, many: bool) -> bool:
    """A string, or (when `many`) a list of strings."""
    return isinstance(value, str) or (many and isinstance(value, list) and all(isinstance(v, str) for v in value))


def write_jsonl(rows: Iterable[dict], path: str | Path) -> Path:
    """Write rows as JSONL (UTF-8, one object per line), creating parent folders; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def train_eval_split(rows: Sequence, eval_fraction: float, seed: int = 0) -> tuple[list, list]:
    """Split rows into (train, eval) by a seeded shuffle; both keep the original row order.

    Args:
        rows: the dataset.
        eval_fraction: share of rows held out, in [0, 1); rounded, and at least one row when > 0.
        seed: the same seed always gives the same split.

    Returns:
        (train_rows, eval_rows).
    """
    if not 0.0 <= eval_fraction < 1.0:
        raise DataError(f"eval_fraction must be in [0, 1), got {eval_fraction}.")
    n_eval = max(1, round(len(rows) * eval_fraction)) if eval_fraction > 0 else 0
    if n_eval >= len(rows) and n_eval > 0:
        raise DataError(
            f"eval_fraction {eval_fraction} of {len(rows)} rows leaves no training rows; use a smaller fraction."
        )
    held_out = set(random.Random(seed).sample(range(len(rows)), n_eval))
    train = [r for i, r in enumerate(rows) if i not in held_out]
    return train, [r for i, r in enumerate(rows) if i in held_out]

"""Built artefacts cached on disk, keyed by the config that made them.

Embedded models, world models, rendered clips and offline datasets are built on first use and reused after. Each
is reused only for the config that made it: its "made with" record (the resolved config as plain JSON, `made_with`)
is hashed into the cache folder's name, `<root>/<name>-<key>`, so artefacts of different configs live side by side,
and the record itself is stored in that folder as `made_with.json`, written once the artefact is complete and
compared on every reuse.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mmalign.config import ConfigError, to_dict

MADE_WITH = "made_with.json"
"""File name of the record inside a cache folder."""


class CacheError(ConfigError):
    """A cached artefact cannot be shown to match the config that asks for it; the message says what to do."""


def made_with(**parts: Any) -> dict:
    """The record of an artefact: its config parts (dataclasses, tuples, ...) as plain JSON values."""
    return json.loads(json.dumps(to_dict(parts), default=str))


def config_key(record: dict) -> str:
    """A stable 12-hex-digit hash of a record (key order does not matter)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """The fields where two records differ, as "field: old -> new" (nested fields dotted)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in differences(old.get(k, "(unset)"), new.get(k, "(unset)"), f"{prefix}{k}.")]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def read_made_with(folder: str | Path) -> dict | None:
    """The record stored in `folder`, or None where it holds none."""
    file = Path(folder) / MADE_WITH
    return json.loads(file.read_text()) if file.exists() else None


def cached(root: str | Path, name: str, record: dict, build: Callable[[Path], Any], what: str) -> Path:
    """The folder `<root>/<name>-<key>` holding the artefact made with `record`, built by `build(folder)` if absent.

    Args:
        root: folder of the cache (e.g. a task's `embedded_dir`).
        name: artefact name, the folder's prefix.
        record: the config that makes the artefact (`made_with`).
        build: writes the artefact into the folder it is given (the record is written after it returns).
        what: the artefact in words, for messages ("embedded shapes model").

    Returns:
        The folder.

    Raises:
        CacheError: the folder's record differs from `record` (edited or copied by hand).
    """
    folder = Path(root) / f"{name}-{config_key(record)}"
    stored = read_made_with(folder)
    if stored is not None and stored != record:
        raise CacheError(f"{folder} holds a {what} made with other settings than its name says "
                         f"({'; '.join(differences(stored, record))}): it was changed by hand; delete it and run "
                         "again to build it for this config.")
    if stored is None:
        folder.mkdir(parents=True, exist_ok=True)
        build(folder)
        (folder / MADE_WITH).write_text(json.dumps(record, indent=1, sort_keys=True))
    return folder

"""What tests check of a run folder: that nothing in it changed, and that its metrics are strict JSON."""

import hashlib
import json
from pathlib import Path


def tree_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, by relative path: equal digests = nothing was touched."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def strict_rows(path: Path) -> list[dict]:
    """metrics.jsonl rows, parsed as strict JSON (NaN / Infinity are errors)."""
    def refuse(name):
        raise ValueError(f"{path} holds {name}: not JSON")

    return [json.loads(line, parse_constant=refuse) for line in Path(path).read_text().splitlines()]

"""A run folder `<output_dir>/<name>/`, one helper for every loop that writes one (the Trainer, the SAC / PEBBLE
loop, PEARL's comparison): the guard that keeps a new run out of an existing one, the resolved config it records
(`config.yaml`), the settings a resumed run may change, the tracker it logs to, checksummed checkpoints with resume
from the newest intact one, and the `final/` folder.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mmalign.checkpoint import CheckpointError, finalize_checkpoint, list_checkpoints, save_checkpoint
from mmalign.config import MOVED_KEYS, ConfigError, join_key, move_recorded_keys
from mmalign.tracking import Tracker

T = TypeVar("T")

RUN_MARKERS = ("config.yaml", "metrics.jsonl", "checkpoints", "final")
"""What a run folder holds once a run has started in it."""


class RunExistsError(ConfigError):
    """The run folder already holds a run and the run was not asked to continue it."""


def check_new_run(run_dir: Path, resumable: bool = True, markers: Iterable[str] = RUN_MARKERS) -> None:
    """Refuse to start a run in a folder that holds one (any of `markers`); touches nothing.

    Args:
        run_dir: the run folder.
        resumable: whether the entry point has `--resume` (its message offers it).
        markers: names whose presence in `run_dir` means a run was started there.
    """
    found = [m for m in markers if (Path(run_dir) / m).exists()]
    if found:
        how = "pass --resume to continue it, or choose a new name" if resumable else "choose a new name"
        raise RunExistsError(f"{run_dir} already holds a run ({', '.join(found)}): {how} (nothing was changed).")


def open_run(run_dir: Path, config: dict, main: bool = True, resume_step: int | None = None) -> Tracker:
    """Record the resolved `config` as `run_dir/config.yaml` (main process) and open the run's tracker.

    Args:
        run_dir: the run folder (created).
        config: the resolved config as plain data (what runs).
        main: whether this is the process that writes.
        resume_step: the step a resumed run continues from (the tracker drops rows logged after it); None = new run.
    """
    if main:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        (Path(run_dir) / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return Tracker(Path(run_dir), main, resume_step=resume_step)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as {dotted.key: leaf value}; lists are leaves."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for k, v in data.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_changes(old: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old value, new value)} of every leaf that differs (None for a side that lacks it)."""
    a, b = flatten(old), flatten(yaml.safe_load(yaml.safe_dump(new)))  # compare as config.yaml would hold it
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def check_resume_config(run_dir: Path, config: dict, fixed: Iterable[str], changeable: Iterable[str] = (),
                        main: bool = True) -> dict[str, tuple]:
    """Compare the config a run resumes with against the one it recorded; refuse changes to `fixed` settings.

    Args:
        run_dir: the run folder (its `config.yaml` is what ran so far).
        config: the resolved config the run continues with.
        fixed: dotted keys (or whole sections) a running run cannot change (task, model, data, seed, ...).
        changeable: keys inside `fixed` sections that may change all the same.
        main: whether this process prints the changes.

    Returns:
        {dotted key: (old, new)} of the changes, all changeable; the caller applies them.
    """
    path = Path(run_dir) / "config.yaml"
    try:
        old = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"--resume: cannot read the run's recorded config {path} ({e}); start a new run under a "
                          "new name (nothing was changed).") from e
    if not isinstance(old, dict):
        raise ConfigError(f"--resume: {path} does not hold a config mapping; start a new run under a new name "
                          "(nothing was changed).")
    old = _moved_keys_mapped(old, config, main)
    changes, recorded = config_changes(old, config), flatten(old)
    # a key the recorded config lacks is a setting newer than the run: its default keeps what ran
    refused = [k for k in changes if k in recorded and _under(k, tuple(fixed)) and not _under(k, tuple(changeable))]
    if refused:
        what = "; ".join(f"{k}: {changes[k][0]!r} -> {changes[k][1]!r}" for k in refused)
        raise ConfigError(f"--resume: {what} differ from {path}, and a running run cannot change them; resume with "
                          "the recorded values, or start a new run under a new name (nothing was changed).")
    if main:
        for k, (a, b) in changes.items():
            print(f"resume: {k} changed from {a!r} to {b!r}", file=sys.stderr)
    return changes


def _moved_keys_mapped(recorded: dict, config: dict, main: bool) -> dict:
    """The recorded config with keys that moved into settings groups at their new places (`MOVED_KEYS`), each move
    printed."""
    mapped = move_recorded_keys(recorded, yaml.safe_load(yaml.safe_dump(config)))
    if main:
        for key in sorted(flatten(recorded).keys() - flatten(mapped).keys()):
            section, _, leaf = key.rpartition(".")
            print(f"resume: recorded key {key} is now {join_key(section, MOVED_KEYS[leaf])}", file=sys.stderr)
    return mapped


class Run:
    """A run folder as a loop uses it: checked when built, then a tracker, checkpoints and the final folder.

    A new run refuses a folder that holds one (`check_new_run`); a resumed run needs a checkpoint and refuses changes
    to `fixed` settings (`check_resume_config`). With several processes, pass `main` (the process that writes the
    shared files) and `barrier` (waits for every process); each process saves its own parts under its own names.

    Args:
        run_dir: the run folder.
        config: the resolved config as plain data (what runs; written as config.yaml when the tracker opens).
        resume: continue the run in `run_dir`.
        fixed: dotted keys (or sections) a resumed run must keep.
        changeable: keys inside `fixed` sections that may change all the same.
        main: whether this process writes the shared files.
        barrier: waits for every process (a no-op for one process).
        keep: how many of the newest checkpoints to keep.
    """

    def __init__(self, run_dir: Path, config: dict, resume: bool = False, fixed: Iterable[str] = (),
                 changeable: Iterable[str] = (), main: bool = True, barrier: Callable[[], None] = lambda: None,
                 keep: int = 2):
        self.dir, self.ckpt_dir = Path(run_dir), Path(run_dir) / "checkpoints"
        self.config, self.main, self.barrier, self.keep = config, main, barrier, keep
        if resume:
            if not (self.dir / "config.yaml").exists():
                raise FileNotFoundError(f"--resume: {self.dir} holds no run to continue; start it without --resume.")
            check_resume_config(self.dir, config, fixed, changeable, main)
        else:
            check_new_run(self.dir)
        barrier()  # every process has checked before the main one writes

    def tracker(self, resume_step: int | None = None) -> Tracker:
        """Write config.yaml (main process) and open the tracker; `resume_step` drops rows logged after it."""
        return open_run(self.dir, self.config, self.main, resume_step)

    def save(self, step: int, parts: dict[str, dict[str, Any]]) -> Path:
        """Checkpoint `step`: this process's named state dicts (`mmalign.checkpoint.save_checkpoint`), then the main
        process records checksums, renames the folder into place and prunes old checkpoints."""
        directory = self.ckpt_dir / f"step_{step:06d}"
        save_checkpoint(directory, parts)
        self.barrier()
        if self.main:
            finalize_checkpoint(directory, self.keep)
        self.barrier()
        return directory

    def restore(self, load: Callable[[Path], T]) -> T:
        """`load(checkpoint)` of the newest intact checkpoint: one that raises `CheckpointError` is skipped with a
        warning naming its bad file, and the one before it is tried."""
        if not list_checkpoints(self.ckpt_dir):
            raise FileNotFoundError(f"--resume: no checkpoint in {self.ckpt_dir}; start the run again under a new "
                                    "name (nothing was changed).")
        for ckpt in reversed(list_checkpoints(self.ckpt_dir)):
            try:
                return load(ckpt)
            except CheckpointError as e:
                if self.main:
                    print(f"mmalign: warning: skipping checkpoint {ckpt.name}: {e} Trying the one before it.",
                          file=sys.stderr)
        raise CheckpointError(f"--resume: no intact checkpoint in {self.ckpt_dir} (each one's damage is named above); "
                              "start a new run under a new name.")

    def save_final(self, parts: dict[str, dict[str, Any]]) -> Path:
        """`final/`: named state dicts, checksummed like a checkpoint (main process only)."""
        final = self.dir / "final"
        save_checkpoint(final, parts)
        finalize_checkpoint(final, keep=0)
        return final

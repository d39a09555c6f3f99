"""Checkpoints as safetensors + JSON (never pickles): trainable weights, optimizer, scheduler, step and RNG states.

A checkpoint is written into a temporary folder and renamed into place, so a crash mid-save never leaves a
half-written checkpoint and never touches the previous ones. `manifest.json` records the SHA-256 of every file at
save time; loading verifies it, so a damaged checkpoint is an error that names the bad file, never silent weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

MANIFEST = "manifest.json"
"""{"sha256": {file name: hex digest}} of every other file of a checkpoint."""
STEP_DIR = re.compile(r"step_(\d+)")
"""The name of a checkpoint folder in `<run>/checkpoints/`."""


class CheckpointError(ValueError):
    """A checkpoint is damaged, incomplete or does not fit the policy; the message names the file."""


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, _, name = key.partition(".")
        state.setdefault(int(pid), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """Capture the torch (CPU and CUDA), numpy and python RNG states of this process."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(keys.astype(np.int64))
    py = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)], "python": [py[0], list(py[1]), py[2]]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, state, gauss_next = meta["python"]
    random.setstate((version, tuple(state), gauss_next))


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train, by name (LoRA adapters only when LoRA is on)."""
    return {n: p.detach().cpu().contiguous() for n, p in module.named_parameters() if p.requires_grad}


def staging_dir(directory: Path) -> Path:
    """The temporary folder checkpoint `directory` is written into before `finalize_checkpoint` renames it."""
    return directory.with_name(directory.name + ".tmp")


def save_checkpoint(directory: Path, module: nn.Module, optimizer, scheduler, step: int, rank: int = 0,
                    world_size: int = 1, extra: dict | None = None) -> None:
    """Write checkpoint `directory` atomically. Rank 0 writes the shared files; every rank its RNG state.

    With several processes, call on every rank with the same `directory`; rank 0 renames after a barrier
    (the caller's), so pass `rank` and let `finalize_checkpoint` do the rename.
    """
    tmp = staging_dir(directory)
    tmp.mkdir(parents=True, exist_ok=True)
    tensors, meta = rng_state()
    save_file(tensors, tmp / f"rng_{rank}.safetensors")
    (tmp / f"rng_{rank}.json").write_text(json.dumps(meta))
    if rank == 0:
        save_file(trainable_state(module), tmp / "trainable.safetensors")
        opt_tensors, opt_meta = _flatten_optimizer(optimizer)
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        state = {"step": step, "world_size": world_size, "optimizer": opt_meta,
                 "scheduler": scheduler.state_dict(), **(extra or {})}
        (tmp / "trainer_state.json").write_text(json.dumps(state))


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(directory: Path) -> None:
    """Record the SHA-256 of every file in `directory` (flat) in its manifest."""
    files = sorted(p for p in Path(directory).iterdir() if p.is_file() and p.name != MANIFEST)
    manifest = {"sha256": {p.name: sha256(p) for p in files}}
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest, indent=1))


def verify_checkpoint(directory: Path) -> None:
    """Check every file the manifest lists against its recorded SHA-256; raise `CheckpointError` naming the first
    missing or changed one. A checkpoint saved before manifests existed passes unverified."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint {directory} does not exist (pass a runs/<name>/checkpoints/step_N folder).")
    path = directory / MANIFEST
    if not path.exists():
        return
    try:
        digests = json.loads(path.read_text())["sha256"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is damaged ({type(e).__name__}: {e}); the checkpoint cannot be trusted.") from e
    for name, digest in digests.items():
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory / name} is missing: the checkpoint is incomplete.")
        if sha256(directory / name) != digest:
            raise CheckpointError(f"{directory / name} does not match the checksum recorded when it was saved: the "
                                  "file is damaged.")


def finalize_checkpoint(directory: Path, keep: int) -> None:
    """Record the manifest, rename the temporary folder into place and delete all but the newest `keep`
    checkpoints (rank 0 only, after every rank has written its files)."""
    tmp = staging_dir(directory)
    write_manifest(tmp)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    for old in list_checkpoints(directory.parent)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints (`step_<digits>` folders) in `folder`, oldest first; anything else there is ignored."""
    if not folder.is_dir():
        return []
    done = [p for p in folder.iterdir() if p.is_dir() and STEP_DIR.fullmatch(p.name)]
    return sorted(done, key=lambda p: int(STEP_DIR.fullmatch(p.name).group(1)))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not readable JSON ({type(e).__name__}: {e}).") from e


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises its own error types for truncated or garbled files
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(e).__name__}: {e}).") from e


def _read_weights(directory: Path, module: nn.Module) -> dict[str, torch.Tensor]:
    """A verified checkpoint's trainable weights, checked against `module`'s parameters (names, shapes, finite)."""
    path = Path(directory) / "trainable.safetensors"
    weights = _read_tensors(path)
    params = dict(module.named_parameters())
    missing = sorted(set(weights) - set(params))
    if missing:
        raise CheckpointError(f"{path} has weights the policy lacks (e.g. {missing[0]}): the checkpoint does not "
                              "match this config's policy; use the config that wrote it.")
    for name, value in weights.items():
        if value.shape != params[name].shape:
            raise CheckpointError(f"{path}: {name} has shape {tuple(value.shape)}, the policy's "
                                  f"{tuple(params[name].shape)}: the checkpoint does not match this config's policy; "
                                  "use the config that wrote it.")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"{path}: {name} holds non-finite values; the checkpoint is damaged.")
    return weights


def load_weights(directory: Path, module: nn.Module) -> None:
    """Verify a checkpoint and copy its trainable weights into `module` (by parameter name)."""
    verify_checkpoint(directory)
    _copy_weights(_read_weights(directory, module), module)


def _copy_weights(weights: dict[str, torch.Tensor], module: nn.Module) -> None:
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)


def load_checkpoint(directory: Path, module: nn.Module, optimizer, scheduler, rank: int = 0) -> dict:
    """Restore a checkpoint written by `save_checkpoint`; returns its trainer state (step, ...).

    Every file is verified and read before anything is restored, so a `CheckpointError` (naming the bad file)
    leaves the module, optimizer, scheduler and RNG states as they were.
    """
    directory = Path(directory)
    verify_checkpoint(directory)
    state = _read_json(directory / "trainer_state.json")
    if not isinstance(state, dict) or not {"step", "optimizer", "scheduler"} <= set(state):
        raise CheckpointError(f"{directory / 'trainer_state.json'} lacks step, optimizer or scheduler state.")
    weights = _read_weights(directory, module)
    opt_tensors = _read_tensors(directory / "optimizer.safetensors")
    try:
        opt_state = _unflatten_optimizer(opt_tensors, state["optimizer"])
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{directory / 'trainer_state.json'}: its optimizer state does not fit "
                              f"optimizer.safetensors ({type(e).__name__}: {e}).") from e
    rng_file = directory / f"rng_{rank}.safetensors"
    rng = (_read_tensors(rng_file), _read_json(directory / f"rng_{rank}.json")) if rng_file.exists() else None
    _copy_weights(weights, module)
    optimizer.load_state_dict(opt_state)
    scheduler.load_state_dict(state["scheduler"])
    if rng is not None:
        set_rng_state(*rng)
    return state

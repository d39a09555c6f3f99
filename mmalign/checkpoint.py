"""Checkpoints as safetensors + JSON (never pickles): named state dicts (weights, optimizer, trainer, RNG, task).

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
from collections.abc import Iterable
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


def split_state(state: dict[str, Any], prefix: str = "") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A nested state dict as (tensors, JSON): tensors keyed by their "/"-joined path, the rest kept nested."""
    tensors, meta = {}, {}
    for k, v in state.items():
        path = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            tensors[path] = v.detach().cpu().contiguous()
        elif isinstance(v, dict):
            sub_tensors, sub_meta = split_state(v, path + "/")
            tensors.update(sub_tensors)
            meta[k] = sub_meta
        else:
            meta[k] = v
    return tensors, meta


def join_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The nested state dict `split_state` split (JSON object keys come back as strings)."""
    state = json.loads(json.dumps(meta))
    for path, value in tensors.items():
        *parents, leaf = path.split("/")
        node = state
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return state


def local(t: torch.Tensor) -> torch.Tensor:
    """This process's part of a tensor: its shard of an FSDP-sharded one (a DTensor), else the tensor."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """An optimizer's state dict with integer keys made strings, ready for `split_state`; under FSDP, this
    process's shards of it."""
    sd = optimizer.state_dict()
    state = {str(pid): {k: local(v) if isinstance(v, torch.Tensor) else v for k, v in s.items()}
             for pid, s in sd["state"].items()}
    return {"state": state, "param_groups": sd["param_groups"]}


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Restore what `optimizer_state` captured (the shards of FSDP-sharded parameters become their DTensors)."""
    from torch.distributed.tensor import DTensor

    params = [p for g in optimizer.param_groups for p in g["params"]]
    restored = {}
    for pid, s in state["state"].items():
        p = params[int(pid)]
        if isinstance(p, DTensor):  # moments are shards shaped like the parameter's shard; `step` is a scalar
            s = {k: DTensor.from_local(v.to(p.device), p.device_mesh, p.placements, shape=p.shape, stride=p.stride())
                 if isinstance(v, torch.Tensor) and v.dim() == p.dim() else v for k, v in s.items()}
        restored[int(pid)] = s
    optimizer.load_state_dict({"state": restored, "param_groups": state["param_groups"]})


def rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and python RNG states of this process, as a state dict."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = {str(i): s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    state["numpy"] = {"keys": torch.from_numpy(keys.astype(np.int64)), "rest": [kind, int(pos), int(has_gauss),
                                                                              float(gauss)]}
    state["python"] = [py[0], list(py[1]), py[2]]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"])
    cuda = [state.get("cuda", {})[k] for k in sorted(state.get("cuda", {}), key=int)]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, gauss = state["numpy"]["rest"]
    np.random.set_state((kind, state["numpy"]["keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py, gauss_next = state["python"]
    random.setstate((version, tuple(py), gauss_next))


def whole(t: torch.Tensor) -> torch.Tensor:
    """A tensor whole: FSDP's sharded parameters (DTensors) gathered from every process (a collective: call it on
    all of them), others as they are."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def trainable_state(module: nn.Module, shards: bool = False) -> dict[str, torch.Tensor]:
    """The parameters that train, by name (LoRA adapters only when LoRA is on): whole (under FSDP every process
    must call it), or with `shards` this process's shards of them."""
    part = local if shards else whole
    return {n: part(p.detach()).cpu().contiguous() for n, p in module.named_parameters() if p.requires_grad}


def staging_dir(directory: Path) -> Path:
    """The temporary folder checkpoint `directory` is written into before `finalize_checkpoint` renames it."""
    return directory.with_name(directory.name + ".tmp")


def save_checkpoint(directory: Path, parts: dict[str, dict[str, Any]]) -> None:
    """Write named state dicts into checkpoint `directory`'s staging folder: part `name` becomes `name.safetensors`
    (its tensors) and `name.json` (everything else, JSON). `finalize_checkpoint` then records the checksums and
    renames the folder into place, so a crash mid-save never leaves a half-written checkpoint.

    With several processes, every process writes its own parts (named with its rank) into the same folder, and the
    main one finalizes after a barrier.
    """
    tmp = staging_dir(directory)
    tmp.mkdir(parents=True, exist_ok=True)
    for name, state in parts.items():
        tensors, meta = split_state(state)
        if tensors:
            save_file(tensors, tmp / f"{name}.safetensors")
        (tmp / f"{name}.json").write_text(json.dumps(meta))


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


def check_weights(weights: dict[str, torch.Tensor], module: nn.Module, path: Path) -> None:
    """Raise a `CheckpointError` (naming `path`) unless `weights` fit `module`'s parameters (names, shapes) and are
    finite."""
    params = dict(module.named_parameters())
    missing = sorted(set(weights) - set(params))
    if missing:
        raise CheckpointError(f"{path} has weights the policy lacks (e.g. {missing[0]}): the checkpoint does not "
                              "match this config's policy; use the config that wrote it.")
    for name, value in weights.items():
        if value.shape != local(params[name]).shape:
            raise CheckpointError(f"{path}: {name} has shape {tuple(value.shape)}, the policy's "
                                  f"{tuple(local(params[name]).shape)}: the checkpoint does not match this config's "
                                  "policy; use the config that wrote it.")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"{path}: {name} holds non-finite values; the checkpoint is damaged.")


def copy_weights(weights: dict[str, torch.Tensor], module: nn.Module) -> None:
    """Copy `weights` (checked by `check_weights`) into `module`'s parameters of the same names (into this process's
    shards of FSDP-sharded ones)."""
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            local(params[name]).copy_(value)


def load_weights(directory: Path, module: nn.Module) -> None:
    """Verify a checkpoint and copy its trainable weights into `module` (by parameter name)."""
    verify_checkpoint(directory)
    path = Path(directory) / "trainable.safetensors"
    weights = _read_tensors(path)
    check_weights(weights, module, path)
    copy_weights(weights, module)


def load_checkpoint(directory: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Verify checkpoint `directory` and read its parts `names` (each a state dict, as `save_checkpoint` wrote it).

    Everything is verified and read before the caller restores anything, so a `CheckpointError` (naming the bad
    file) leaves the caller's state as it was.
    """
    directory = Path(directory)
    verify_checkpoint(directory)
    parts = {}
    for name in names:
        meta = _read_json(directory / f"{name}.json")
        tensors = _read_tensors(directory / f"{name}.safetensors") if (directory / f"{name}.safetensors").exists() \
            else {}
        if not isinstance(meta, dict):
            raise CheckpointError(f"{directory / (name + '.json')} does not hold a state mapping; it is damaged.")
        parts[name] = join_state(tensors, meta)
    return parts

"""Checkpoints as safetensors + JSON (never pickles): trainable weights, optimizer, scheduler, step and RNG states.

A checkpoint is written into a temporary folder and renamed into place, so a crash mid-save never leaves a
half-written checkpoint and never touches the previous ones.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn


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


def save_checkpoint(directory: Path, module: nn.Module, optimizer, scheduler, step: int, rank: int = 0,
                    world_size: int = 1, extra: dict | None = None) -> None:
    """Write checkpoint `directory` atomically. Rank 0 writes the shared files; every rank its RNG state.

    With several processes, call on every rank with the same `directory`; rank 0 renames after a barrier
    (the caller's), so pass `rank` and let `finalize_checkpoint` do the rename.
    """
    tmp = directory.with_name(directory.name + ".tmp")
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


def finalize_checkpoint(directory: Path, keep: int) -> None:
    """Rename the temporary folder into place and delete all but the newest `keep` checkpoints (rank 0 only)."""
    tmp = directory.with_name(directory.name + ".tmp")
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(tmp, directory)
    for old in list_checkpoints(directory.parent)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    done = [p for p in folder.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp")]
    return sorted(done, key=lambda p: int(p.name.split("_")[1]))


def load_weights(directory: Path, module: nn.Module) -> None:
    """Copy a checkpoint's trainable weights into `module` (by parameter name)."""
    weights = load_file(Path(directory) / "trainable.safetensors")
    params = dict(module.named_parameters())
    missing = sorted(set(weights) - set(params))
    if missing:
        raise ValueError(f"checkpoint {directory} has weights the policy lacks (e.g. {missing[0]}); "
                         "use the config that wrote it.")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)


def load_checkpoint(directory: Path, module: nn.Module, optimizer, scheduler, rank: int = 0) -> dict:
    """Restore a checkpoint written by `save_checkpoint`; returns its trainer state (step, ...)."""
    state = json.loads((directory / "trainer_state.json").read_text())
    load_weights(directory, module)
    optimizer.load_state_dict(_unflatten_optimizer(load_file(directory / "optimizer.safetensors"),
                                                   state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    rng_file = directory / f"rng_{rank}.safetensors"
    if rng_file.exists():
        set_rng_state(load_file(rng_file), json.loads((directory / f"rng_{rank}.json").read_text()))
    return state

"""One way to name a device in every domain: `auto` (CUDA when there is one, else the CPU), `cpu`, `cuda`, `cuda:N`."""

import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(spec: str = "auto") -> torch.device:
    """The torch device a config's `device` value names; asking for CUDA on a machine without it is an error."""
    name = str(spec).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ValueError(f"device {spec!r} is not one of auto, cpu, cuda, cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} asks for CUDA, but torch sees no GPU here: use device=cpu (or auto)")
    return torch.device(name)


def check_device(cfg, name: str = "device") -> None:
    """Config check of field `name` (a device spec): a ConfigError keyed by the field if `resolve_device` refuses."""
    from mmalign.config import ConfigError

    try:
        resolve_device(getattr(cfg, name))
    except ValueError as e:
        raise ConfigError(f"{e}.", name) from e

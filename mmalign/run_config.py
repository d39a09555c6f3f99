"""The run config: which task, the trainer's settings, the algorithm's settings, the task's own arguments.

```yaml
task: text                 # a name in TASKS or "package.module:Class"
task_args: {...}           # validated against the task class's `Config` dataclass
trainer: {...}             # TrainerConfig
algorithm: grpo            # a name in ALGORITHMS (grpo, ppo, preference, ddpo, b2) or "package.module:NAME"
grpo: {...}                # the section named after the algorithm: its config dataclass (GRPOConfig here)
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmalign.algorithms import ALGORITHMS, Algorithm
from mmalign.config import ConfigError, check_choice, check_numbers, from_dict, load_config, resolve, to_dict
from mmalign.device import DEVICES

TASKS = {
    "text": "mmalign.text.task:TextTask",
    "diffusion": "mmalign.diffusion.task:DiffusionTask",
    "vlm": "mmalign.vlm.task:SSLTask",
    "video": "mmalign.diffusion.video.task:VideoTask",
    "robot": "mmalign.robotics.task:RobotTask",
}
"""Task names usable in configs; anything else is a "package.module:Class" string."""


@dataclass
class TrainerConfig:
    name: str = "run"
    """Run name: outputs go to `<output_dir>/<name>/`."""
    output_dir: str = "runs"
    """Folder that holds run folders."""
    seed: int = 0
    """Seed of everything (each process adds its rank for sampling)."""
    steps: int = 100
    """Training iterations (sample -> score -> update)."""
    contexts_per_step: int = 4
    """Contexts (prompts, tasks) per iteration, over all processes."""
    num_samples: int = 8
    """Samples per context (the GRPO group size)."""
    epochs: int = 1
    """Passes over each rollout (GRPO's mu)."""
    minibatches: int = 1
    """Optimizer steps per epoch; the rollout is split into this many minibatches."""
    micro_batch_size: int = 0
    """Samples per forward/backward (gradient accumulation inside a minibatch); 0 = whole minibatch."""
    micro_steps: int = 0
    """Steps per forward/backward inside a micro-batch (DDPO's per-timestep backward: a chunk of denoising steps at a
    time instead of all of them); for policies that score each step on its own (diffusion, not text); 0 = all."""
    lr: float = 1e-5
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    adam_eps: float = 1e-8
    """AdamW epsilon (PPO implementations for control use 1e-5)."""
    lr_schedule: str = "constant"
    """"constant", "linear" (decay to 0) or "cosine", after warmup."""
    warmup_steps: int = 0
    """Linear warmup iterations."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm; 0 disables."""
    mixed_precision: str = "no"
    """"no", "bf16" (autocast) or "fp16" (autocast and a gradient scaler; CUDA only, refused on the CPU)."""
    device: str = "auto"
    """"auto" (CUDA when there is one, else the CPU), "cpu", "cuda" or "cuda:N" (one process; launchers give each
    process its own GPU). The task's models are built on it and the Trainer's processes run on it."""
    cpu: bool = False
    """Same as device: cpu (kept for older configs)."""
    log_every: int = 1
    """Log training metrics every this many iterations."""
    eval_every: int = 0
    """Evaluate on held-out contexts every this many iterations (and before the first and after the last); 0 =
    only before and after."""
    save_every: int = 10
    """Checkpoint every this many iterations (and at the end); 0 = only at the end."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep."""
    max_skipped_steps: int = 10
    """Optimizer steps in a row that may be skipped for a non-finite (NaN or inf) loss or gradient before the run
    stops with an error; each skip leaves the weights unchanged and is counted in the `skipped_steps` metric."""

    def __post_init__(self) -> None:
        check_choice(self, "lr_schedule", ("constant", "linear", "cosine"))
        check_choice(self, "mixed_precision", ("no", "bf16", "fp16"))
        check_numbers(self, "steps", "contexts_per_step", "num_samples", "epochs", "minibatches", "log_every",
                      "max_skipped_steps", ge=1)
        check_numbers(self, "seed", "micro_batch_size", "micro_steps", "warmup_steps", "eval_every", "save_every",
                      "keep_checkpoints", "weight_decay", "max_grad_norm", ge=0)
        check_numbers(self, "lr", gt=0)
        check_numbers(self, "adam_betas", ge=0, lt=1)
        check_numbers(self, "adam_eps", gt=0)
        if self.device not in DEVICES and not re.fullmatch(r"cuda:\d+", str(self.device)):
            raise ConfigError(f"must be one of {list(DEVICES)} or cuda:N, got {self.device!r}.", "device")
        if self.cpu and self.device not in ("auto", "cpu"):
            raise ConfigError(f"cpu: true (an alias of device: cpu) contradicts device: {self.device}; keep one of "
                              "them.", "cpu")
        if len(self.adam_betas) != 2:
            raise ConfigError(f"expected two numbers [beta1, beta2], got {self.adam_betas!r}.", "adam_betas")

    def torch_device(self):
        """The torch device this config runs on (`mmalign.device.resolve_device` of `device`, or the CPU for
        `cpu: true`); CUDA asked for on a machine without it is a `ConfigError` naming the key."""
        from mmalign.device import resolve_device

        try:
            return resolve_device("cpu" if self.cpu else self.device)
        except ValueError as e:
            raise ConfigError(str(e), "trainer.device") from e


@dataclass
class RunConfig:
    task: str
    """The task: a name in TASKS or "package.module:Class"."""
    task_args: Any = None
    """Arguments of the task, validated against the task class's `Config`."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Loop settings."""
    algorithm: str = "grpo"
    """A name in ALGORITHMS or "package.module:NAME"; its settings are the YAML section of the same name."""
    algorithm_args: Any = None
    """The algorithm's config dataclass (default settings when None). One with a `check_trainer(trainer)` method
    refuses loop settings it cannot learn from when the run config is built (GRPO: groups of one sample)."""

    def __post_init__(self) -> None:
        if self.algorithm_args is None:
            self.algorithm_args = algorithm(self.algorithm).config()
        check_trainer = getattr(self.algorithm_args, "check_trainer", None)  # settings the algorithm cannot use
        if check_trainer is not None:
            check_trainer(self.trainer)


def algorithm(name: str) -> Algorithm:
    """The `Algorithm` a config's `algorithm` names."""
    try:
        algo = resolve(name, ALGORITHMS)
    except ConfigError as e:
        raise ConfigError(e.problem, "algorithm") from e
    if not isinstance(algo, Algorithm):
        raise ConfigError(f"{name!r} does not name an mmalign.algorithms.Algorithm.", "algorithm")
    return algo


def task_class(name: str) -> type:
    """The task class a config's `task` names."""
    try:
        return resolve(name, TASKS)
    except ConfigError as e:
        raise ConfigError(e.problem, "task") from e


def load_run_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a run config file, apply `key=value` overrides, validate everything; errors name the key and the file
    or override it came from."""
    return load_config(path, overrides, run_config_from_dict)


def run_config_from_dict(data: dict) -> RunConfig:
    """Validate a run config's sections (task arguments, the algorithm's section, the trainer) into a `RunConfig`."""
    data = dict(data)
    if "task" not in data:
        raise ConfigError(f"missing key; set it to one of {sorted(TASKS)} or 'package.module:Class'.", "task")
    name = data.get("algorithm", "grpo")
    algo = algorithm(name)
    others = [k for k in (*ALGORITHMS, "algorithm_args") if k in data and k != name]
    if others:
        raise ConfigError(f"is {name!r}, but the config also has a section {others[0]!r}; the algorithm's settings "
                          f"go in the section named after it: rename {others[0]!r} to {name!r} or remove it.",
                          "algorithm")
    data["algorithm_args"] = from_dict(algo.config, data.pop(name, None), where=name)
    data["task_args"] = from_dict(task_class(data["task"]).Config, data.get("task_args"), where="task_args")
    return from_dict(RunConfig, data)


def run_config_dict(cfg: RunConfig) -> dict:
    """The resolved config (what actually runs) as plain data, in the layout of a config file."""
    data = to_dict(cfg)
    data[cfg.algorithm] = data.pop("algorithm_args")
    return data

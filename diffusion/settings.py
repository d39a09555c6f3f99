"""Settings groups of the denoising-step policy, shared by the image and video task configs and taken by
`DiffusionPolicy` itself: how a sample is drawn (`SamplingSettings`), which steps train and how their log-probs
count (`TrainedSteps`), B2-DiffuRL's branch sampling (`B2Settings`). LoRA is `mmalign.settings.LoRASettings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mmalign.config import ConfigError, check_choice, check_numbers
from mmalign.diffusion.steps import REDUCTIONS


@dataclass(frozen=True)
class SamplingSettings:
    """How the policy draws a sample: the denoising schedule, guidance, step noise, size and prompt length."""

    num_steps: int = 20
    """Denoising steps T per sample."""
    guidance_scale: float = 1.0
    """Classifier-free guidance scale w: u + w (c - u) (1 = off, one denoiser call per step)."""
    detach_uncond: bool = False
    """Stop gradients through the unconditional guidance branch (Flow-GRPO)."""
    eta: float = 1.0
    """DDIM stochasticity (> 0 for RL: the step must be a distribution), "ddim" family."""
    noise_level: float = 0.7
    """Flow-SDE noise scale a (> 0), "flow" family."""
    resolution: int = 0
    """Sample height = width in pixels (the latent is this over the VAE's factor); 0 = the model's size."""
    max_text_length: int = 8
    """Prompt tokens, padded / truncated to this fixed length (77 for CLIP-based SD checkpoints); the embedded models
    are pre-trained with it."""

    def __post_init__(self) -> None:
        check_numbers(self, "num_steps", "max_text_length", ge=1)
        check_numbers(self, "guidance_scale", "eta", "noise_level", "resolution", ge=0)


@dataclass(frozen=True)
class TrainedSteps:
    """Which denoising steps of a sample train, and how a step's log-prob reduces over the latent.

    Steps outside [start, end) are sampled but masked out of the loss; of the steps inside, each sample trains a
    random `fraction` (DDPO's timestep_fraction).
    """

    start: int = 0
    """First trained step index (earlier, high-noise steps are sampled, not trained)."""
    end: int = 0
    """One past the last trained step; 0 = the last step (num_steps)."""
    fraction: float = 1.0
    """Fraction of the steps in [start, end) each sample trains, drawn at random per sample (DDPO)."""
    reduce: str = "mean"
    """Step log-prob over the latent's elements: "mean" (DDPO / Flow-GRPO; clip ranges ~1e-4 to 1e-3) or "sum"."""

    def __post_init__(self) -> None:
        check_numbers(self, "start", "end", ge=0)
        check_numbers(self, "fraction", gt=0, le=1)
        check_choice(self, "reduce", REDUCTIONS)


@dataclass(frozen=True)
class B2Settings:
    """B2-DiffuRL branch sampling (Hu et al. 2025, Sec. 3.2; `mmalign.diffusion.schedule.B2Schedule`): trunks branch
    into clones at a step that moves earlier over training; only the steps after the branch point train."""

    branches: int = 0
    """Clones per trunk; 0 = off (independent samples). trainer.num_samples must be a multiple."""
    split_left: int = 14
    """Remaining steps at the branch point in the first stage."""
    split_right: int = 20
    """Remaining steps at the branch point in the last stage (capped at sampling.num_steps)."""
    stages: int = 100
    """Training iterations over which the branch point moves earlier."""

    def __post_init__(self) -> None:
        check_numbers(self, "branches", ge=0)
        check_numbers(self, "split_left", "split_right", "stages", ge=1)


def check_trained_steps(cfg: Any) -> None:
    """Check that a task config's `trained_steps` [start, end or num_steps) hold a step of its `sampling.num_steps`.

    Raises:
        ConfigError: keyed "trained_steps.end" or "trained_steps.start".
    """
    steps, num_steps = cfg.trained_steps, cfg.sampling.num_steps
    if steps.end > num_steps:
        raise ConfigError(f"must be <= sampling.num_steps ({num_steps}), got {steps.end}.", "trained_steps.end")
    if steps.start >= (steps.end or num_steps):
        raise ConfigError(f"must be below trained_steps.end (or sampling.num_steps when end is 0), got {steps.start}: "
                          "no step would train.", "trained_steps.start")

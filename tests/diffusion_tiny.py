"""Tiny real diffusion adapters for tests: image (`DiffusionPolicy`) and video (`VideoPolicy`) policies over
denoisers built from config (`tiny_components`, `tiny_video_components`), and the contexts they sample from."""

import numpy as np

from mmalign.diffusion.models import tiny_components
from mmalign.diffusion.policy import DiffusionPolicy, add_lora
from mmalign.diffusion.settings import SamplingSettings, TrainedSteps
from mmalign.diffusion.video.policy import VideoPolicy, tiny_video_components

WORDS = "a red green blue circle square triangle left right top bottom".split()
PROMPTS = ["a red circle left", "a blue square top"]
VIDEO_WORDS = "push block up down left right".split()


def tiny_diffusion_policy(family: str = "ddim", guidance: float = 1.0, lora: bool = False, denoiser: str = "unet",
                          channels: int = 4, trained: TrainedSteps | None = None,
                          reference: str | None = None) -> DiffusionPolicy:
    """Three denoising steps over 8x8 latents of a UNet ("unet") or SD3 transformer ("sd3"), no VAE.

    With `lora`, the adapters start random (so they change the outputs) and are the reference by default.
    """
    comp = tiny_components(WORDS, family=family, denoiser=denoiser, channels=channels)
    if lora:
        add_lora(comp.denoiser, init=False)
    sampling = SamplingSettings(num_steps=3, guidance_scale=guidance, max_text_length=6)
    return DiffusionPolicy(comp, sampling, trained, reference or ("lora" if lora else "none"))


def video_contexts(n: int = 2, size: int = 8, seed: int = 0) -> list[dict]:
    """`n` video contexts: a prompt and a random uint8 first frame (size, size, 3)."""
    rng = np.random.default_rng(seed)
    return [{"prompt": p, "frame": rng.integers(0, 256, (size, size, 3), dtype=np.uint8)}
            for p in ["push block up", "push block left down"][:n]]


def tiny_video_policy(kind: str = "folded", family: str = "ddim", guidance: float = 1.0, frames: int = 4,
                      num_steps: int = 3, trained: TrainedSteps | None = None) -> VideoPolicy:
    """A video policy of `frames` 8x8 pixel frames: a frame-folding 2D UNet ("folded") or a UNet3D ("3d")."""
    comp = tiny_video_components(VIDEO_WORDS, frames=frames, kind=kind, family=family)
    return VideoPolicy(comp, frames, SamplingSettings(num_steps=num_steps, guidance_scale=guidance, max_text_length=4),
                       trained)

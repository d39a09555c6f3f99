"""Pre-train the embedded image-to-video model on rendered MuJoCo clips, on the CPU, and save it as a diffusers
pipeline folder (unet/, text_encoder/, tokenizer/, scheduler/; pixel space, no VAE).

The denoiser is a `UNet2DConditionModel` with the 7 generated frames folded into channels (in: 3 first-frame + 21,
out: 21; see `video.py` for why not the 3D UNet on a CPU), the instruction through a small `CLIPTextModel` over the
clip vocabulary. Objective: v-prediction (Salimans & Ho 2022; epsilon prediction of the same short schedule gave
x0 estimates far outside [-1, 1] at high noise and samples of pure noise) on x0 = frames 1..F of a clip given frame
0 and the instruction, 10% empty instructions (for classifier-free guidance). The default 3000 steps give clips in
which the scene, the rail and the block are recognisable and move (docs/video.md); at 600 the sampled frames were
speckle over a faint scene, although the model's one-step x0 estimates on noised real clips were already close.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmalign.cache import cached, made_with
from mmalign.config import check_numbers
from mmalign.diffusion.models import Components, ddim_scheduler, save_components, tiny_text_encoder
from mmalign.diffusion.pretrain import train_denoiser
from mmalign.diffusion.video.policy import tiny_video_components
from mmalign.envs.clips import WORDS


@dataclass
class VideoPretrainConfig:
    steps: int = 3000
    """Optimizer steps."""
    batch_size: int = 32
    """Clips per step."""
    lr: float = 2e-3
    """AdamW learning rate (cosine decay)."""
    width: int = 32
    """UNet base channels (two levels: width, 2 width)."""
    text_hidden: int = 32
    """Text encoder width."""
    uncond_prob: float = 0.1
    """Fraction of empty instructions."""
    seed: int = 0
    """Seed of weights and batches."""

    def __post_init__(self) -> None:
        check_numbers(self, "steps", "batch_size", "width", "text_hidden", ge=1)
        check_numbers(self, "lr", gt=0)
        check_numbers(self, "uncond_prob", ge=0, le=1)
        check_numbers(self, "seed", ge=0)


def embedded_video_components(cfg: VideoPretrainConfig, frames: int, size: int) -> Components:
    """The embedded video model, randomly initialised: generates `frames` frames of `size` px after a first frame."""
    comp = tiny_video_components(WORDS, frames=frames, size=size, kind="folded",
                                 width=(cfg.width, 2 * cfg.width), text_hidden=cfg.text_hidden, seed=cfg.seed)
    comp.text_encoder = tiny_text_encoder(len(comp.tokenizer), hidden=cfg.text_hidden, layers=2, seed=cfg.seed)
    sched = ddim_scheduler()
    comp.scheduler = type(sched).from_config(sched.config, prediction_type="v_prediction")
    return comp


def pretrain_video(clips: np.ndarray, prompts: list[str], cfg: VideoPretrainConfig, out_dir: str | Path,
                   max_text_length: int = 6, log_every: int = 100) -> Path:
    """Train on uint8 clips (N, F + 1, S, S, 3) with their instructions; save a pipeline folder to `out_dir`."""
    n, t, s = clips.shape[:3]
    comp = embedded_video_components(cfg, t - 1, s)
    video = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 127.5 - 1  # (N, 3, F + 1, S, S)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)

    def batch(step: int):
        i = rng.integers(0, n, cfg.batch_size)
        text = ["" if rng.random() < cfg.uncond_prob else prompts[j] for j in i]
        return video[i, :, 1:], text, video[i, :, 0]  # x0 = frames 1..F given frame 0

    comp = train_denoiser(comp, batch, cfg.steps, cfg.lr, max_text_length, log_every, "video pretrain")
    return save_components(comp, out_dir)


def embedded_video_model(root: str | Path, data: dict, train: np.ndarray, clip_cfg, cfg: VideoPretrainConfig,
                         max_text_length: int = 6) -> Path:
    """The video model pre-trained with `cfg` on clips `train` of `data` (rendered with `clip_cfg`), in its cache
    folder `<root>/base-<key>` (`mmalign.cache`), pre-trained there on first use; returns the folder."""
    return cached(root, "base", made_with(clips=clip_cfg, pretrain=cfg, max_text_length=max_text_length),
                  lambda out: pretrain_video(data["frames"][train], [str(p) for p in data["prompts"][train]], cfg, out,
                                             max_text_length),
                  "embedded video model")

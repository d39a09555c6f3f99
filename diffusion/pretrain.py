"""Pre-train the embedded text-to-image model on procedurally drawn shapes, on the CPU, and save it as a diffusers
pipeline folder (unet/ or transformer/, text_encoder/, tokenizer/, scheduler/; pixel space, no VAE).

The model is a small `UNet2DConditionModel` (base width 16, ~0.1 M parameters) over 3 x 8 x 8 pixels in [-1, 1],
conditioned on a small `CLIPTextModel` over a word-level tokenizer of the shapes vocabulary, trained with the DDPM
epsilon objective (Ho et al. 2020, Eq. 14) and 10% empty prompts so classifier-free guidance works. The defaults
(1200 steps of 64 images, about 2.5 min on one CPU thread) make a model that follows its prompts only partly, the
room RL alignment is meant to close: each caption word is redrawn at random with probability 0.4
(`caption_noise`, loosely captioned data), and the text encoder stays at its random initialisation (trained jointly
from scratch it collapses "right", "top" and "bottom" into one meaning; docs/diffusion.md).
Use one thread (`torch.set_num_threads(1)` / `OMP_NUM_THREADS=1`) on a small shared CPU: with two contended
threads the same steps ran about 9x slower.

`FlowPretrainConfig` makes the flow-matching member of the family on the same data: a small SD3-style transformer
(`SD3Transformer2DModel`, MMDiT, one pixel per token) trained on the velocity target with SD3's flow-matching
scheduler, sampled by the policy with flow-SDE steps (Flow-GRPO).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mmalign.cache import cached, made_with
from mmalign.config import check_choice, check_nonempty, check_numbers
from mmalign.diffusion import shapes
from mmalign.diffusion.models import Components, ddim_scheduler, denoiser_forward, flow_scheduler, save_components
from mmalign.diffusion.schedule import training_pair


@dataclass
class PretrainConfig:
    steps: int = 1200
    """Optimizer steps."""
    batch_size: int = 64
    """Images per step."""
    lr: float = 2e-3
    """AdamW learning rate (cosine decay)."""
    size: int = 8
    """Image height = width in pixels."""
    width: int = 16
    """UNet base channels (two levels: width, 2 width)."""
    text_hidden: int = 32
    """Text encoder width."""
    counts: tuple[int, ...] = (1,)
    """Object counts in the data."""
    uncond_prob: float = 0.1
    """Fraction of empty prompts (for classifier-free guidance)."""
    caption_noise: float = 0.4
    """Probability that each attribute word of a training caption is redrawn at random (`shapes.noisy_prompt`):
    the model then follows its prompts only partly, as one pre-trained on loosely captioned data does."""
    train_text_encoder: bool = False
    """Train the text encoder with the UNet. Trained jointly from scratch it collapses "right", "top" and "bottom"
    (docs/diffusion.md); frozen at its random initialisation the words stay apart."""
    seed: int = 0
    """Seed of weights and data."""

    def __post_init__(self) -> None:
        check_nonempty(self, "counts")
        check_choice(self, "counts", tuple(shapes.NUMBERS))
        check_numbers(self, "steps", "batch_size", "size", "width", "text_hidden", ge=1)
        check_numbers(self, "lr", gt=0)
        check_numbers(self, "uncond_prob", "caption_noise", ge=0, le=1)
        check_numbers(self, "seed", ge=0)


@dataclass
class FlowPretrainConfig(PretrainConfig):
    """The flow-matching embedded model: an SD3-style transformer of `layers` joint blocks, `heads` heads of `width`
    channels, one token per pixel; the data and the rest of the training as `PretrainConfig`."""

    layers: int = 4
    """Joint transformer blocks."""
    heads: int = 2
    """Attention heads (hidden size = heads x width)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_numbers(self, "layers", "heads", ge=1)


def embedded_components(cfg: PretrainConfig) -> Components:
    """The embedded model's components, randomly initialised: a UNet with the DDIM schedule, or for a
    `FlowPretrainConfig` an SD3-style transformer with the flow-matching schedule."""
    from diffusers import SD3Transformer2DModel, UNet2DConditionModel

    from mmalign.diffusion.models import tiny_text_encoder
    from mmalign.text.policy import word_tokenizer

    torch.manual_seed(cfg.seed)
    tok = word_tokenizer(shapes.WORDS)
    te = tiny_text_encoder(len(tok), hidden=cfg.text_hidden, layers=2, seed=cfg.seed)
    if isinstance(cfg, FlowPretrainConfig):
        net = SD3Transformer2DModel(
            sample_size=cfg.size, patch_size=1, in_channels=3, out_channels=3, num_layers=cfg.layers,
            attention_head_dim=cfg.width, num_attention_heads=cfg.heads, joint_attention_dim=cfg.text_hidden,
            caption_projection_dim=cfg.heads * cfg.width, pooled_projection_dim=cfg.text_hidden,
            pos_embed_max_size=cfg.size)
        return Components(net, flow_scheduler(), te, tok)
    unet = UNet2DConditionModel(
        sample_size=cfg.size, in_channels=3, out_channels=3, block_out_channels=(cfg.width, 2 * cfg.width),
        layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cfg.text_hidden,
        attention_head_dim=8, norm_num_groups=8)
    return Components(unet, ddim_scheduler(), te, tok)


def _batch(cfg: PretrainConfig, rows: list[dict], rng: np.random.Generator) -> tuple[torch.Tensor, list[str]]:
    picks = rng.integers(0, len(rows), cfg.batch_size)
    imgs = np.stack([shapes.draw(rows[i], cfg.size, rng) for i in picks])
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
    prompts = ["" if rng.random() < cfg.uncond_prob else shapes.noisy_prompt(rows[i], cfg.caption_noise, rng)
               for i in picks]
    return x, prompts


def train_denoiser(comp: Components, batch: Callable, steps: int, lr: float, max_text_length: int,
                   log_every: int = 100, label: str = "pretrain") -> Components:
    """Train `comp`'s denoiser and text encoder (their parameters that require grad) by denoising (Ho et al. 2020,
    Eq. 14; the target follows the scheduler's prediction_type: epsilon, or v as in Salimans & Ho 2022, Sec. 4), or
    with a flow-matching scheduler on the velocity (`schedule.training_pair`), AdamW with cosine decay.

    Args:
        batch: `batch(step) -> (x0, prompts, first)`: clean samples (B, C, ...) in [-1, 1], their prompts, and
            None or a first frame (B, C, H, W) to condition on; with a first frame x0 is a clip (B, C, F, H, W)
            whose frames are folded into channels after it, as `VideoPolicy.net_at` does.
    """
    unet, te, tok, sched = comp.denoiser.train(), comp.text_encoder.train(), comp.tokenizer, comp.scheduler
    params = [p for p in [*unet.parameters(), *te.parameters()] if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    lr_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    flow = "FlowMatch" in type(sched).__name__
    ac = None if flow else sched.alphas_cumprod.float()
    v_target = sched.config.get("prediction_type") == "v_prediction"
    t0 = time.perf_counter()
    for step in range(steps):
        x0, prompts, first = batch(step)
        fold = (lambda y: y) if first is None else (lambda y: y.flatten(1, 2))  # noqa: E731
        ids = tok(prompts, padding="max_length", max_length=max_text_length, truncation=True,
                  return_tensors="pt")["input_ids"]
        out = te(input_ids=ids)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(x0),))
        eps = torch.randn_like(x0)
        xt, target, model_t = training_pair(x0, eps, t, ac, v_target, sched.config.num_train_timesteps)
        inp = fold(xt) if first is None else torch.cat([first, fold(xt)], 1)
        pred = denoiser_forward(unet, inp, model_t, out.last_hidden_state, out.pooler_output)
        loss = F.mse_loss(pred, fold(target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lr_sched.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"{label} step {step + 1}/{steps} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f}s)")
    comp.denoiser, comp.text_encoder = unet.eval(), te.eval()
    return comp


def pretrain(cfg: PretrainConfig, out_dir: str | Path, max_text_length: int = 8, log_every: int = 100) -> Path:
    """Train the embedded model and save it to `out_dir` (a diffusers pipeline folder); returns the folder."""
    comp = embedded_components(cfg)
    comp.text_encoder.requires_grad_(cfg.train_text_encoder)
    rows, rng = shapes.rows(cfg.counts), np.random.default_rng(cfg.seed)
    comp = train_denoiser(comp, lambda step: (*_batch(cfg, rows, rng), None), cfg.steps, cfg.lr, max_text_length,
                          log_every)
    return save_components(comp, out_dir)


def embedded_model(root: str | Path, cfg: PretrainConfig, max_text_length: int = 8) -> Path:
    """The embedded model made with `cfg` in its cache folder `<root>/shapes-<key>` (`mmalign.cache`), pre-trained
    there on first use; returns the folder."""
    name = "shapes-flow" if isinstance(cfg, FlowPretrainConfig) else "shapes"
    return cached(root, name, made_with(pretrain=cfg, max_text_length=max_text_length),
                  lambda out: pretrain(cfg, out, max_text_length), "embedded shapes model")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Pre-train the embedded shapes model into ROOT/shapes-<key> (the cache "
                                 "the task reads with embedded_dir: ROOT), unless it is there; prints the folder.")
    ap.add_argument("root")
    ap.add_argument("steps", nargs="?", type=int, default=PretrainConfig.steps)
    ap.add_argument("--train-text-encoder", action="store_true", help="train the text encoder with the UNet")
    ap.add_argument("--caption-noise", type=float, default=PretrainConfig.caption_noise)
    ap.add_argument("--flow", action="store_true", help="the flow-matching SD3-style transformer (FlowPretrainConfig)")
    args = ap.parse_args()
    kind = FlowPretrainConfig if args.flow else PretrainConfig
    print(embedded_model(args.root, kind(steps=args.steps, train_text_encoder=args.train_text_encoder,
                                         caption_noise=args.caption_noise)))

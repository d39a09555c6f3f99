"""Building and loading diffusers components: tiny models from config (tests, the embedded task) and any
diffusers pipeline folder from a local path (SD 1.x/2.x UNet pipelines, SD3-style transformer pipelines).

A pipeline folder is the `save_pretrained` layout: `model_index.json`, `unet/` or `transformer/`, `scheduler/`,
`text_encoder/`, `tokenizer/`, optionally `vae/`. Without `vae/` the model denoises pixels in [-1, 1] directly.
Nothing is ever downloaded: everything loads with `local_files_only=True`.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


@dataclass
class Components:
    """What a `DiffusionPolicy` needs; `vae` is None for pixel-space models."""

    denoiser: nn.Module
    scheduler: object
    text_encoder: nn.Module
    tokenizer: object
    vae: nn.Module | None = None


def tiny_unet(sample_size: int = 8, channels: int = 4, width: tuple[int, int] = (4, 8), cross_dim: int = 8,
              seed: int = 0):
    """A tiny `UNet2DConditionModel` from config (diffusers' own test config), randomly initialised."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=width, layers_per_block=1, sample_size=sample_size, in_channels=channels,
        out_channels=channels, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cross_dim,
        attention_head_dim=max(2, width[-1] // 4), norm_num_groups=min(width[0], 8))


def tiny_sd3_transformer(sample_size: int = 8, channels: int = 4, text_dim: int = 8, seed: int = 0):
    """A tiny `SD3Transformer2DModel` (MMDiT) from config, randomly initialised."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(sample_size=sample_size, patch_size=1, in_channels=channels, num_layers=1,
                                 attention_head_dim=8, num_attention_heads=2, joint_attention_dim=text_dim,
                                 caption_projection_dim=16, pooled_projection_dim=text_dim, out_channels=channels,
                                 pos_embed_max_size=sample_size)


def tiny_text_encoder(vocab_size: int, hidden: int = 8, layers: int = 2, seed: int = 0):
    """A tiny `CLIPTextModel` from config; pad 0, eos 1, bos 2 (as `mmalign.text.policy.word_tokenizer`)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                                        num_hidden_layers=layers, num_attention_heads=2, max_position_embeddings=32,
                                        pad_token_id=0, eos_token_id=1, bos_token_id=2, layer_norm_eps=1e-5))


def ddim_scheduler(num_train_timesteps: int = 1000):
    """SD's DDIM schedule (scaled-linear betas, set_alpha_to_one=False so the last step keeps std > 0)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=num_train_timesteps, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def flow_scheduler(shift: float = 1.0):
    """SD3's flow-matching Euler scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def tiny_components(words: list[str], family: str = "ddim", sample_size: int = 8, channels: int = 4,
                    denoiser: str = "unet", seed: int = 0) -> Components:
    """Tiny components for tests: a UNet (or SD3 transformer), a CLIP text encoder, a word tokenizer, no VAE."""
    from mmalign.text.policy import word_tokenizer

    tok = word_tokenizer(words)
    te = tiny_text_encoder(len(tok), seed=seed)
    net = (tiny_unet(sample_size, channels, seed=seed) if denoiser == "unet"
           else tiny_sd3_transformer(sample_size, channels, seed=seed))
    sched = ddim_scheduler() if family == "ddim" else flow_scheduler()
    return Components(net, sched, te, tok)


def denoiser_forward(net: nn.Module, x: torch.Tensor, t: torch.Tensor, emb: torch.Tensor,
                     pooled: torch.Tensor) -> torch.Tensor:
    """The denoiser's output at model timesteps t (B,): a UNet takes the prompt embeddings (B, L, D), an SD3 /
    FLUX-style transformer (its forward has `pooled_projections`) the pooled embeddings (B, D) too."""
    if "pooled_projections" in inspect.signature(net.forward).parameters:
        return net(hidden_states=x, timestep=t, encoder_hidden_states=emb, pooled_projections=pooled).sample
    return net(x, t, encoder_hidden_states=emb).sample


def denoiser_folder(denoiser: nn.Module) -> str:
    """The pipeline subfolder of a denoiser: "unet" (UNet models) or "transformer"."""
    return "unet" if type(denoiser).__name__.startswith("UNet") else "transformer"


def save_denoiser(denoiser: nn.Module, path: str | Path) -> None:
    """A trained denoiser into `path`: its PEFT LoRA adapter as `lora/` (diffusers `save_lora_adapter`), or the full
    model as `unet/` or `transformer/` (a pipeline subfolder)."""
    path = Path(path)
    if getattr(denoiser, "_hf_peft_config_loaded", False):
        denoiser.save_lora_adapter(str(path / "lora"))
    else:
        denoiser.save_pretrained(path / denoiser_folder(denoiser))


def save_components(comp: Components, path: str | Path) -> Path:
    """Write the components as a diffusers pipeline folder (model_index.json + one subfolder each)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    parts = {denoiser_folder(comp.denoiser): comp.denoiser, "scheduler": comp.scheduler,
             "text_encoder": comp.text_encoder, "tokenizer": comp.tokenizer, "vae": comp.vae}
    index = {"_class_name": "DiffusionPipeline", "_diffusers_version": _diffusers_version()}
    for name, obj in parts.items():
        if obj is None:
            continue
        obj.save_pretrained(path / name)
        module = "diffusers" if type(obj).__module__.startswith("diffusers") else "transformers"
        index[name] = [module, type(obj).__name__]
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def load_components(path: str | Path, dtype: torch.dtype = torch.float32) -> Components:
    """Components of a local diffusers pipeline folder (SD 1.x/2.x: unet; SD3-style: transformer + text_encoder).

    Only the first text encoder / tokenizer is used (for SD3's three encoders, precompute or pass `text_encoder`
    explicitly: see docs/diffusion.md).
    """
    import diffusers
    import transformers

    path = Path(path).expanduser()
    index_file = path / "model_index.json"
    if not index_file.exists():
        raise FileNotFoundError(f"{path} is not a diffusers pipeline folder (no model_index.json); nothing is "
                                "downloaded: save one with `save_pretrained` or "
                                "`mmalign.diffusion.models.save_components`.")
    index = json.loads(index_file.read_text())

    def load(name: str, **kw):
        if name not in index or index[name] is None or index[name][0] is None or not (path / name).exists():
            return None
        lib, cls = index[name]
        module = diffusers if lib == "diffusers" else transformers
        if name == "tokenizer":
            return transformers.AutoTokenizer.from_pretrained(path / name, local_files_only=True)
        return getattr(module, cls).from_pretrained(path / name, local_files_only=True, **kw)

    denoiser = load("unet", torch_dtype=dtype) or load("transformer", torch_dtype=dtype)
    if denoiser is None:
        raise FileNotFoundError(f"{path}: no unet/ or transformer/ subfolder.")
    text_kw = {"dtype": dtype}
    return Components(denoiser, load("scheduler"), load("text_encoder", **text_kw), load("tokenizer"),
                      load("vae", torch_dtype=dtype))

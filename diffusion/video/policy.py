"""Image-to-video diffusion on the adapter contract: `DiffusionPolicy` over latents with a time axis.

A step is one denoising step of the whole clip latent x_t (B, C, F, h, w) -> x_{t-1}; its log-prob is the Gaussian
density of the sampled x_{t-1} from the same stateless DDIM / flow-SDE functions as images (`steps.py`), averaged
over all C x F x h x w elements (`reduce="mean"`) or summed (`"sum"`). Conditioning: the instruction through the
frozen text encoder (cross-attention), the first frame by channel concatenation of its latent (pixels in [-1, 1]
without a VAE, a 2D VAE's latent per frame with one). The sampled clip is the first frame followed by the F
generated frames, uint8 (F + 1, H, W, 3).

Two kinds of diffusers denoiser, told apart by class:
- a video UNet (`UNet3DConditionModel`): x and the first frame repeated over time are concatenated on channels,
  (B, 2C, F, h, w); `in_channels = 2 out_channels`.
- a `UNet2DConditionModel` with frames folded into channels: (B, C + C F, h, w) in, (B, C F, h, w) out, so
  F = out_channels / (in_channels - out_channels). About 13x faster than the 3D UNet on one CPU thread at the
  embedded size, hence the embedded model's choice; the latent keeps its time axis either way.

`Rollout.state["pooled"]` holds the first-frame latents (B, C, h, w) (the slot image policies use for pooled text
embeddings), so slicing, re-scoring and branching work unchanged. Contexts are dicts {"prompt": str, "frame":
uint8 (H, W, 3)}.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from mmalign.diffusion.models import Components
from mmalign.diffusion.policy import DiffusionPolicy, prompt_of, seeded_noise, to_images
from mmalign.rollout import Rollout


def frame_of(context) -> np.ndarray:
    """The conditioning first frame of a context dict, uint8 (H, W, 3)."""
    if not isinstance(context, dict) or "frame" not in context:
        raise ValueError("a video context is a dict with 'prompt' (the instruction) and 'frame' (uint8 H x W x 3 "
                         f"first frame), got {type(context).__name__}.")
    return np.asarray(context["frame"])


def is_video_unet(net) -> bool:
    """True for denoisers that take (B, C, F, h, w) (diffusers' 3D / spatio-temporal UNets)."""
    name = type(net).__name__
    return "3D" in name or "SpatioTemporal" in name


class VideoPolicy(DiffusionPolicy):
    """A diffusers video denoiser (or a frame-folding 2D UNet) + frozen text encoder as an mmalign `Policy`.

    Args:
        comp: components (`tiny_video_components`, `models.load_components`).
        num_frames: generated frames F; read from the channels of a frame-folding UNet, needed for a 3D UNet.
        *args, **kw: `DiffusionPolicy`'s (sampling, trained, reference, b2).
    """

    def __init__(self, comp: Components, num_frames: int = 0, *args, **kw):
        super().__init__(comp, *args, **kw)
        cfg = self.denoiser.config
        self.folded = not is_video_unet(self.denoiser)
        if self.folded:
            c = cfg.in_channels - cfg.out_channels
            if c <= 0 or cfg.out_channels % c:
                raise ValueError(f"a frame-folding UNet needs in_channels = C + C F and out_channels = C F; got "
                                 f"in {cfg.in_channels}, out {cfg.out_channels}.")
            self.channels, self.num_frames = c, cfg.out_channels // c
        else:
            if cfg.in_channels != 2 * cfg.out_channels:
                raise ValueError(f"first-frame conditioning concatenates channels: in_channels must be 2 x "
                                 f"out_channels, got {cfg.in_channels} and {cfg.out_channels}.")
            if num_frames < 1:
                raise ValueError("a video UNet generates any number of frames: pass num_frames >= 1.")
            self.channels, self.num_frames = cfg.out_channels, num_frames
        if comp.vae is not None and comp.vae.config.latent_channels != self.channels:
            raise ValueError(f"the VAE has {comp.vae.config.latent_channels} latent channels, the denoiser "
                             f"{self.channels}.")

    # --- conditioning ------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_frames(self, frames: Sequence[np.ndarray]) -> Tensor:
        """uint8 first frames (H, W, 3) -> latents (N, C, h, w)."""
        arr = np.stack([np.asarray(f) for f in frames])
        size = self.latent_size * (self._vae_factor() if self.vae is not None else 1)
        if arr.dtype != np.uint8 or arr.shape[1:] != (size, size, 3):
            raise ValueError(f"first frames must be uint8 ({size}, {size}, 3) for this model, got {arr.dtype} "
                             f"{arr.shape[1:]}: resize them (the model works at {size} px).")
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().to(self.device) / 127.5 - 1
        if self.vae is None:
            return x
        dtype = next(self.vae.parameters()).dtype
        return self.vae.encode(x.to(dtype)).latent_dist.mode().float() * self.vae.config.scaling_factor

    def _vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def _contexts(self, contexts: Sequence, num_samples: int) -> tuple[Tensor, Tensor, Tensor]:
        """Group (B,), prompt embeddings (B, L, D) and first-frame latents (B, C, h, w) of each sample."""
        emb, _ = self.encode([prompt_of(c) for c in contexts])
        first = self.encode_frames([frame_of(c) for c in contexts])
        group = torch.arange(len(contexts), device=self.device).repeat_interleave(num_samples)
        return group, emb[group], first[group]

    # --- the denoiser --------------------------------------------------------------------------------------
    def net_at(self, x: Tensor, t: Tensor, emb: Tensor, first: Tensor) -> Tensor:
        """Unguided output (B, C, F, h, w) in fp32 for x (B, C, F, h, w) and first-frame latents (B, C, h, w)."""
        net = self.ref_denoiser if self._use_ref else self.denoiser
        self.net_calls += x.shape[0]
        dtype = next(net.parameters()).dtype
        b, c, f, h, w = x.shape
        if self.folded:
            inp = torch.cat([first, x.reshape(b, c * f, h, w)], 1)
        else:
            inp = torch.cat([first.unsqueeze(2).expand(-1, -1, f, -1, -1), x], 1)
        out = net(inp.to(dtype), t, encoder_hidden_states=emb.to(dtype)).sample
        return out.float().reshape(b, c, f, h, w)

    def uncond_inputs(self, b: int, first: Tensor) -> tuple[Tensor, Tensor]:
        """The unconditional CFG branch drops the instruction and keeps the first frame: (B, L, D), (B, C, h, w)."""
        ue, _ = self.uncond()
        return ue.expand(b, -1, -1), first

    # --- sampling ------------------------------------------------------------------------------------------
    def init_noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, C, F, h, w) standard normal starting latents."""
        s = self.latent_size
        shape = (n, self.channels, self.num_frames, s, s)
        return torch.randn(shape, generator=generator, device="cpu" if generator else self.device).to(self.device)

    @torch.no_grad()
    def decode(self, x: Tensor) -> list[np.ndarray]:
        """Latents (B, C, F, h, w) -> B uint8 clips of the generated frames (F, H, W, 3)."""
        b, _, f = x.shape[:3]
        frames = x.transpose(1, 2).flatten(0, 1)  # (B F, C, h, w)
        if self.vae is not None:
            dtype = next(self.vae.parameters()).dtype
            frames = self.vae.decode(frames.to(dtype) / self.vae.config.scaling_factor).sample
        images = np.stack(to_images(frames))
        return list(images.reshape(b, f, *images.shape[1:]))

    def _rollout(self, contexts: Sequence, group: Tensor, chain: list[Tensor], logps: list[Tensor], emb: Tensor,
                 pooled: Tensor, start: int, extra: dict | None = None) -> Rollout:
        rollout = super()._rollout(contexts, group, chain, logps, emb, pooled, start, extra)
        rollout.outputs = [np.concatenate([frame_of(contexts[g])[None], clip])
                           for g, clip in zip(group.tolist(), rollout.outputs)]
        return rollout


@torch.no_grad()
def generate_clips(policy: VideoPolicy, contexts: Sequence, seed: int = 0,
                   noise: tuple[Tensor, Tensor] | None = None) -> list[np.ndarray]:
    """One clip (F + 1, H, W, 3) per context from seeded noise (the same noise for every set of weights), or from
    `noise` (initial latents, step noise; `chunked_noise`)."""
    x, steps = noise if noise is not None else seeded_noise(policy, len(contexts), seed)
    return policy.sample(contexts, 1, noise=torch.cat([x[None].cpu(), steps.cpu()])).outputs


def tiny_video_components(words: list[str], frames: int = 4, size: int = 8, kind: str = "folded",
                          family: str = "ddim", width: tuple[int, int] = (8, 16), text_hidden: int = 8,
                          seed: int = 0) -> Components:
    """A video denoiser built from config ("folded": UNet2DConditionModel over C + C F channels; "3d":
    UNet3DConditionModel), a tiny CLIP text encoder, a word tokenizer, no VAE (pixel space, C = 3)."""
    from diffusers import UNet2DConditionModel, UNet3DConditionModel

    from mmalign.diffusion.models import ddim_scheduler, flow_scheduler, tiny_text_encoder
    from mmalign.text.policy import word_tokenizer

    tok = word_tokenizer(words)
    te = tiny_text_encoder(len(tok), hidden=text_hidden, seed=seed)
    torch.manual_seed(seed)
    common = dict(sample_size=size, block_out_channels=width, layers_per_block=1, cross_attention_dim=text_hidden,
                  attention_head_dim=max(2, width[-1] // 4), norm_num_groups=min(width[0], 8))
    if kind == "folded":
        net = UNet2DConditionModel(in_channels=3 * (frames + 1), out_channels=3 * frames,
                                   down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                   up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **common)
    elif kind == "3d":
        net = UNet3DConditionModel(in_channels=6, out_channels=3, down_block_types=("CrossAttnDownBlock3D",
                                   "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), **common)
    else:
        raise ValueError(f"kind must be 'folded' or '3d', got {kind!r}.")
    return Components(net, ddim_scheduler() if family == "ddim" else flow_scheduler(), te, tok)

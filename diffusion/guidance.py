"""Classifier-free guidance (Ho & Salimans 2022, Eq. 6) over any denoiser call, images and video alike."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Net = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""`net(x, k, emb, extra)`: the unguided fp32 output for a batch at schedule indices k (B,)."""


def classifier_free_guidance(net: Net, x: Tensor, k: Tensor, cond: tuple[Tensor, Tensor],
                             uncond: tuple[Tensor, Tensor], scale: float, detach_uncond: bool = False) -> Tensor:
    """u + w (c - u) from one batched forward of [uncond; cond] (Ho & Salimans 2022, Eq. 6).

    Args:
        net: the denoiser call.
        x: (B, ...) current sample.
        k: (B,) long schedule index of the step.
        cond: the conditional inputs (emb (B, L, D), extra): pooled prompt embeddings (B, D) for images, first-frame
            latents (B, C, h, w) for video.
        uncond: the unconditional inputs, shaped as `cond` (the empty prompt; video keeps its first frame).
        scale: guidance scale w.
        detach_uncond: stop gradients through the unconditional branch u (Flow-GRPO).

    Returns:
        (B, ...) fp32 guided output.
    """
    both = net(torch.cat([x, x]), torch.cat([k, k]), torch.cat([uncond[0], cond[0]]), torch.cat([uncond[1], cond[1]]))
    u, c = both.chunk(2)
    if detach_uncond:
        u = u.detach()
    return u + scale * (c - u)

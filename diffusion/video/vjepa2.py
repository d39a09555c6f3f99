"""transformers' V-JEPA 2 (`VJEPA2Model`) as the PFC world model: a built-in loader for its model folders.

MIND-V's reward (Eq. 4) compares the predictor's forecast of a window's future with the encoding of the future the
clip actually shows. Here, per window of `context + future` frames: the encoder reads the context frames alone (so
the forecast never sees the future) and the whole window (whose future tokens are the target); the predictor
(`VJEPA2Model.predictor`) fills the future tokens from the context ones, and s_i is the cosine of the forecast and
the target over all future tokens. Frames are normalised as V-JEPA 2's processor does (ImageNet mean and std).
Time is patched in tubelets of `tubelet_size` frames, so the window's context and future must be multiples of it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class VJEPA2WorldModel(nn.Module):
    """A frozen `transformers.VJEPA2Model` with `scores(video, pfc) -> (B, W)`, the world-model interface."""

    def __init__(self, model):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 1, 3, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> VJEPA2WorldModel:
        """A local folder written by `VJEPA2Model.save_pretrained` (config.json with model_type "vjepa2")."""
        from transformers import VJEPA2Model

        return cls(VJEPA2Model.from_pretrained(str(path)))

    def scores(self, video: Tensor, pfc) -> Tensor:
        """s_i of every window (MIND-V Eq. 4), (B, W), for video (B, T, 3, H, W) in [-1, 1]."""
        from mmalign.diffusion.video.world_model import window_starts

        tub, patch = self.model.config.tubelet_size, self.model.config.patch_size
        if pfc.context % tub or pfc.future % tub:
            raise ValueError(f"V-JEPA 2 patches time in tubelets of {tub} frames: set the PFC window's context "
                             f"({pfc.context}) and future ({pfc.future}) to multiples of {tub}.")
        if video.shape[-1] % patch or video.shape[-2] % patch:
            raise ValueError(f"V-JEPA 2 patches {patch} x {patch} pixels: clips of {tuple(video.shape[-2:])} pixels "
                             "do not divide; render clips at a multiple of the patch size.")
        starts = window_starts(video.shape[1], pfc)
        span = pfc.context + pfc.future
        windows = torch.stack([video[:, s:s + span] for s in starts], 1).flatten(0, 1)  # (B * W, span, 3, H, W)
        pred, target = self.forecast(windows, pfc.context)
        s = F.cosine_similarity(pred.flatten(1), target.flatten(1), dim=1)
        return s.view(video.shape[0], len(starts))

    def forecast(self, windows: Tensor, context: int) -> tuple[Tensor, Tensor]:
        """(forecast, target) future tokens (R, N_future, D) of windows (R, frames, 3, H, W) in [-1, 1] whose first
        `context` frames are the context."""
        windows = ((windows + 1) / 2 - self.mean) / self.std
        target = self.model.encoder(pixel_values_videos=windows).last_hidden_state  # (R, N, D)
        ctx = self.model.encoder(pixel_values_videos=windows[:, :context]).last_hidden_state
        n_ctx, n, rows = ctx.shape[1], target.shape[1], target.shape[0]
        hidden = torch.cat([ctx, target[:, n_ctx:]], 1)  # the future slots are masked out of the predictor's input
        ctx_mask = [torch.arange(n_ctx, device=hidden.device).expand(rows, -1)]
        tgt_mask = [torch.arange(n_ctx, n, device=hidden.device).expand(rows, -1)]
        return self.model.predictor(hidden, ctx_mask, tgt_mask).last_hidden_state, target[:, n_ctx:]

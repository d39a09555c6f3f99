"""Prompt encoders: contexts (text + images) -> the exact token and pixel tensors a VLM family wants.

One small class per model family (VLM-R1's `VLMBaseModule` idea). Each `encode` returns a `PromptBatch`; the
policy keeps pixel tensors per sample in `Rollout.state`, so the cores never see them and minibatch slicing of
a rollout slices images with their rows.

`Qwen2VLInputs` needs no torchvision: images go through transformers' PIL image processor
(`Qwen2VLImageProcessorPil`; the fast one and the stock `Qwen2VLProcessor` need torchvision), and the image pad
tokens are expanded here, one `<|image_pad|>` per merged patch, with `mm_token_type_ids` = 1 on them (what the
stock processor does).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor
from transformers.modeling_outputs import BaseModelOutputWithPooling

IMAGE = "<image>"
"""Placeholder for an image inside a prompt; prompts without it get their images before the text."""


def context_parts(context) -> tuple[str, list]:
    """(prompt text, images) of a context: a str (text only) or a dict with "prompt" and optional "images"."""
    if isinstance(context, str):
        return context, []
    if isinstance(context, dict) and "prompt" in context:
        return context["prompt"], list(context.get("images", []))
    raise ValueError(f"a VLM context must be a str or a dict with 'prompt' (and 'images'), got {type(context)}.")


def content_list(text: str, n_images: int) -> list[dict]:
    """Chat-message content: text pieces and {"type": "image"} items in the order of the <image> placeholders."""
    pieces = text.split(IMAGE)
    if len(pieces) == 1:
        return [{"type": "image"}] * n_images + [{"type": "text", "text": text}]
    if len(pieces) - 1 != n_images:
        raise ValueError(f"prompt has {len(pieces) - 1} {IMAGE} placeholders for {n_images} images: {text!r}")
    out: list[dict] = []
    for i, piece in enumerate(pieces):
        if i:
            out.append({"type": "image"})
        if piece:
            out.append({"type": "text", "text": piece})
    return out


def to_pil(image):
    """A PIL RGB image from a PIL image or an (H, W, 3) uint8 array."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB")
    return Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).convert("RGB")


@dataclass
class PromptBatch:
    """Left-padded prompts of B contexts.

    Attributes:
        input_ids: (B, P) long.
        attention_mask: (B, P) long.
        position_ids: (B, R, P) long; R = 3 for M-RoPE (Qwen2-VL), 1 otherwise.
        token_types: (B, P) long, 1 on image tokens (Qwen2-VL's `mm_token_type_ids`); padded with 0 over completions.
        images: per-sample model tensors, each a list of B tensors (e.g. "pixel_values" (N_i, D), "image_grid_thw"
            (n_i, 3)); rows without images hold empty tensors.
    """

    input_ids: Tensor
    attention_mask: Tensor
    position_ids: Tensor
    token_types: Tensor
    images: dict[str, list[Tensor]] = field(default_factory=dict)


class Qwen2VLInputs:
    """Qwen2-VL / Qwen2.5-VL prompts: chat rendering, image processing, pad expansion, M-RoPE positions.

    Args:
        tokenizer: the model's tokenizer; its chat template is used when it has one, else Qwen's layout.
        image_processor: a Qwen2-VL image processor (the PIL one needs no torchvision).
        config: the model config (special token ids, vision merge size).
        rope_index: the model's `get_rope_index` (3-D M-RoPE positions).
        image_features: the model's `get_image_features` (the vision tower and merger).
        max_prompt_length: longer prompts are an error (truncating would cut image tokens).
    """

    def __init__(self, tokenizer, image_processor, config, rope_index, image_features,
                 max_prompt_length: int = 4096):
        self.tokenizer, self.image_processor, self.rope_index = tokenizer, image_processor, rope_index
        self.image_features = image_features
        self.image_token = tokenizer.convert_ids_to_tokens(config.image_token_id)
        self.image_token_id = config.image_token_id
        self.merge = config.vision_config.spatial_merge_size
        self.max_prompt_length = max_prompt_length
        self.chat_template = getattr(tokenizer, "chat_template", None) is not None
        self.banned_token_ids = sorted({config.image_token_id, config.video_token_id, config.vision_start_token_id,
                                        config.vision_end_token_id})

    def render(self, text: str, n_images: int) -> str:
        """The prompt string with one `<|vision_start|><|image_pad|><|vision_end|>` per image."""
        content = content_list(text, n_images)
        if self.chat_template:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                      add_generation_prompt=True)
        body = "".join(c["text"] if c["type"] == "text" else
                       f"<|vision_start|>{self.image_token}<|vision_end|>" for c in content)
        return f"<|im_start|>user\n{body}<|im_end|>\n<|im_start|>assistant\n"

    def process_images(self, images: list) -> tuple[Tensor, Tensor]:
        """(N, C * temporal_patch * patch^2) flattened patches and (n, 3) grids (t, h, w) of `images`."""
        if not images:
            dim = 3 * self.image_processor.temporal_patch_size * self.image_processor.patch_size ** 2
            return torch.zeros(0, dim), torch.zeros(0, 3, dtype=torch.long)
        out = self.image_processor(images=[to_pil(im) for im in images], return_tensors="pt")
        return out["pixel_values"].float(), out["image_grid_thw"].long()

    def expand(self, text: str, grids: Tensor) -> str:
        """Repeat each image pad token grid.prod() / merge^2 times (what the stock processor does)."""
        counts = iter((grids.prod(-1) // self.merge ** 2).tolist())
        return re.sub(re.escape(self.image_token), lambda _: self.image_token * next(counts), text)

    def encode(self, contexts: Sequence, device: torch.device) -> PromptBatch:
        """Tokenise, process images and compute positions for B contexts; see `PromptBatch`."""
        texts, pixels, grids = [], [], []
        for c in contexts:
            text, images = context_parts(c)
            pv, thw = self.process_images(images)
            texts.append(self.expand(self.render(text, len(images)), thw))
            pixels.append(pv.to(device))
            grids.append(thw.to(device))
        enc = self.tokenizer(texts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="pt")
        ids, attn = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        if ids.shape[1] > self.max_prompt_length:
            raise ValueError(f"a prompt has {ids.shape[1]} tokens > max_prompt_length={self.max_prompt_length}; "
                             "raise it or shrink the images (image processor max_pixels).")
        types = (ids == self.image_token_id).long() * attn
        pos, _ = self.rope_index(ids, mm_token_type_ids=types, image_grid_thw=torch.cat(grids),
                                 attention_mask=attn)
        return PromptBatch(ids, attn, pos.permute(1, 0, 2), types, {"pixel_values": pixels, "image_grid_thw": grids})

    def model_inputs(self, images: dict[str, list[Tensor]], token_types: Tensor, dtype: torch.dtype) -> dict:
        """Keyword arguments of the model's forward for a batch's images (none when it has no image).

        The vision tower runs once per distinct image tensor: the samples of a group share their context's tensors
        (same objects, also after slicing), so a group of G samples costs one vision pass, not G. The features go in
        through the forward's `mm_encoder_outputs`, gradients included.
        """
        grids = torch.cat(images["image_grid_thw"])
        if grids.shape[0] == 0:
            return {"mm_token_type_ids": token_types}
        unique: dict[int, tuple[Tensor, Tensor]] = {}
        for pv, g in zip(images["pixel_values"], images["image_grid_thw"]):
            if g.shape[0]:
                unique.setdefault(id(pv), (pv, g))
        pvs, gs = zip(*unique.values())
        feats = self.image_features(torch.cat(pvs).to(dtype), torch.cat(gs)).pooler_output  # one per image
        starts, k = {}, 0
        for key, (_, g) in unique.items():
            starts[key], k = k, k + g.shape[0]
        pooled = [feats[starts[id(pv)] + j] for pv, g in zip(images["pixel_values"], images["image_grid_thw"])
                  for j in range(g.shape[0])]
        return {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=pooled)},
                "image_grid_thw": grids, "mm_token_type_ids": token_types}


def qwen2_vl_image_processor(path: str | None = None, **kwargs):
    """transformers' PIL Qwen2-VL image processor (no torchvision), from a local folder or from kwargs."""
    try:
        from transformers import Qwen2VLImageProcessorPil as Processor
    except ImportError:  # older transformers: the slow processor is the PIL one
        from transformers import Qwen2VLImageProcessor as Processor
    if path is not None:
        return Processor.from_pretrained(path, local_files_only=True, **kwargs)
    return Processor(**kwargs)


def inner_model(model):
    """The multimodal backbone (`model.model`) of a Qwen2-VL model, through a peft wrapper if there is one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


def prompt_encoder(model, tokenizer, image_processor, max_prompt_length: int = 4096):
    """The prompt encoder for `model`'s family (its config's model_type)."""
    model_type = model.config.model_type
    if model_type not in INPUTS:
        raise ValueError(f"no prompt encoder for model_type {model_type!r} yet; supported: {sorted(INPUTS)}.")
    inner = inner_model(model)
    return INPUTS[model_type](tokenizer, image_processor, model.config, inner.get_rope_index, inner.get_image_features,
                              max_prompt_length)


INPUTS = {"qwen2_vl": Qwen2VLInputs, "qwen2_5_vl": Qwen2VLInputs}
"""Model types with a prompt encoder; others (LLaVA, Idefics3) are not wired yet (see docs/vlm.md)."""

"""Prompt encoders: contexts (text + images) -> the exact token and pixel tensors a VLM family wants.

One small class per model family (VLM-R1's `VLMBaseModule` idea). Each `encode` returns a `PromptBatch`; the
policy keeps pixel tensors per sample in `Rollout.state`, so the cores never see them and minibatch slicing of
a rollout slices images with their rows.

None needs torchvision:
- `Qwen2VLInputs` (Qwen2-VL, Qwen2.5-VL): images go through transformers' PIL image processor
  (`Qwen2VLImageProcessorPil`; the fast one and the stock `Qwen2VLProcessor` need torchvision), and the image pad
  tokens are expanded here, one `<|image_pad|>` per merged patch, with `mm_token_type_ids` = 1 on them (what the
  stock processor does). Positions are 3-D (M-RoPE).
- `Idefics3Inputs` (Idefics3, SmolVLM) and `LlavaInputs` (LLaVA): transformers' stock `Idefics3Processor` /
  `LlavaProcessor` (no video processor, so they build without torchvision) over the PIL image processors expand
  the image tokens and make the pixels. Positions are 1-D (count of real tokens before each one).

Every family's vision tower runs once per distinct image tensor per forward, and its features enter the forward
through `mm_encoder_outputs`, computed with the model that is being run (the policy, or the reference copy).
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
        rope_index: the model's `get_rope_index` (3-D M-RoPE positions; it reads no weights).
        max_prompt_length: longer prompts are an error (truncating would cut image tokens).
    """

    def __init__(self, tokenizer, image_processor, config, rope_index, max_prompt_length: int = 4096):
        self.tokenizer, self.image_processor, self.rope_index = tokenizer, image_processor, rope_index
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

    image_keys = ("pixel_values", "image_grid_thw")
    """Per-sample image tensors kept in `Rollout.state`."""

    def model_inputs(self, model, images: dict[str, list[Tensor]], token_types: Tensor, dtype: torch.dtype) -> dict:
        """Keyword arguments of `model`'s forward for a batch's images (none when it has no image).

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
        feats = inner_model(model).get_image_features(torch.cat(pvs).to(dtype), torch.cat(gs)).pooler_output
        starts, k = {}, 0
        for key, (_, g) in unique.items():
            starts[key], k = k, k + g.shape[0]
        pooled = [feats[starts[id(pv)] + j] for pv, g in zip(images["pixel_values"], images["image_grid_thw"])
                  for j in range(g.shape[0])]
        return {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=pooled)},
                "image_grid_thw": grids, "mm_token_type_ids": token_types}


class ProcessorInputs:
    """Prompts of VLMs with 1-D positions, through a stock transformers processor that builds without torchvision.

    Each context is processed on its own (so every sample keeps its own pixel tensors), then the token ids are
    left-padded together. Subclasses name the per-sample image tensors (`image_keys`) and run the vision tower
    (`features`).

    Args:
        processor: the family's stock processor (e.g. `Idefics3Processor`, `LlavaProcessor`) over a PIL image
            processor and the tokenizer.
        config: the model config (image token id).
        max_prompt_length: longer prompts are an error (truncating would cut image tokens).
        layout: the prompt layout used when the tokenizer has no chat template; `{content}` marks the user turn.
    """

    image_keys: tuple[str, ...] = ("pixel_values",)
    layout = "User: {content}\nAssistant:"

    def __init__(self, processor, config, max_prompt_length: int = 4096, layout: str | None = None):
        self.processor, self.tokenizer = processor, processor.tokenizer
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(processor.image_token)
        if self.image_token_id != _image_token_id(config):
            raise ValueError(f"the processor's image token {processor.image_token!r} has id {self.image_token_id}, "
                             f"the model's image token id is {_image_token_id(config)}: use the model's tokenizer.")
        self.max_prompt_length = max_prompt_length
        self.layout = layout or self.layout
        self.chat_template = getattr(self.tokenizer, "chat_template", None) is not None
        structural = [getattr(processor, a, None) for a in ("fake_image_token", "global_image_tag")]
        structural += [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)] if structural[0] else []
        ids = {self.image_token_id, *self.tokenizer.convert_tokens_to_ids([t for t in structural if t])}
        self.banned_token_ids = sorted(ids - {self.tokenizer.unk_token_id, None})

    @property
    def image_processor(self):
        """The processor's image processor (saved with the policy)."""
        return self.processor.image_processor

    def render(self, text: str, n_images: int) -> str:
        """The prompt string with one image token per image (the processor expands them)."""
        content = content_list(text, n_images)
        if self.chat_template:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                      add_generation_prompt=True)
        body = "".join(c["text"] if c["type"] == "text" else self.processor.image_token for c in content)
        return self.layout.format(content=body)

    def encode(self, contexts: Sequence, device: torch.device) -> PromptBatch:
        """Tokenise and process images of B contexts; see `PromptBatch` (position_ids (B, 1, P))."""
        rows, images = [], {k: [] for k in self.image_keys}
        for c in contexts:
            text, ims = context_parts(c)
            kw = {"images": [to_pil(im) for im in ims]} if ims else {}
            out = self.processor(text=[self.render(text, len(ims))], return_tensors="pt", **kw)
            rows.append(out["input_ids"][0])
            for k in self.image_keys:
                images[k].append(self.sample_tensor(out, k).to(device) if ims else torch.zeros(0, device=device))
        enc = self.tokenizer.pad({"input_ids": [r.tolist() for r in rows]}, padding=True, padding_side="left",
                                 return_tensors="pt")
        ids, attn = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        if ids.shape[1] > self.max_prompt_length:
            raise ValueError(f"a prompt has {ids.shape[1]} tokens > max_prompt_length={self.max_prompt_length}; "
                             "raise it or shrink the images (the image processor's size).")
        pos = (attn.cumsum(-1) - 1).clamp(min=0)[:, None]  # real tokens before each one; left padding skipped
        return PromptBatch(ids, attn, pos, (ids == self.image_token_id).long() * attn, images)

    def sample_tensor(self, out, key: str) -> Tensor:
        """One sample's tensor `key` from the processor's output for that sample alone."""
        return out[key]

    def model_inputs(self, model, images: dict[str, list[Tensor]], token_types: Tensor, dtype: torch.dtype) -> dict:
        """Keyword arguments of `model`'s forward for a batch's images (none when it has no image).

        The vision tower runs once per distinct sample tensor (the samples of a group share their context's
        tensors, also after slicing), one batched pass per tensor shape; features go in through
        `mm_encoder_outputs`, gradients included.
        """
        first = images[self.image_keys[0]]
        unique: dict[int, dict[str, Tensor]] = {}
        for i, t in enumerate(first):
            if t.shape[0]:
                unique.setdefault(id(t), {k: images[k][i] for k in self.image_keys})
        if not unique:
            return {}
        by_shape: dict[tuple, list[int]] = {}
        for key, sample in unique.items():
            by_shape.setdefault(tuple(sample[self.image_keys[0]].shape), []).append(key)
        feats: dict[int, Tensor] = {}
        for keys in by_shape.values():
            feats.update(zip(keys, self.features(model, [unique[k] for k in keys], dtype)))
        pooled = [feats[id(t)] for t in first if t.shape[0]]  # batch order = image-token order
        return {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=pooled)}}

    def features(self, model, samples: list[dict[str, Tensor]], dtype: torch.dtype) -> list[Tensor]:
        """(tokens_i, D) image features of each sample (its image tokens in order); samples share tensor shapes."""
        raise NotImplementedError(f"{type(self).__name__} must define features()")


class Idefics3Inputs(ProcessorInputs):
    """Idefics3 / SmolVLM prompts through `Idefics3Processor`: per sample `pixel_values` (N, 3, H, W) and
    `pixel_attention_mask` (N, H, W), N = the images and their tiles when the image processor splits them.

    The default layout is SmolVLM-Instruct's (`<|im_start|>User:...<end_of_utterance>\nAssistant:`).
    """

    image_keys = ("pixel_values", "pixel_attention_mask")
    layout = "<|im_start|>User:{content}<end_of_utterance>\nAssistant:"

    def sample_tensor(self, out, key: str) -> Tensor:
        return out[key][0]  # (1, N, ...) -> (N, ...)

    def features(self, model, samples: list[dict[str, Tensor]], dtype: torch.dtype) -> list[Tensor]:
        pv = torch.stack([s["pixel_values"] for s in samples]).to(dtype)
        mask = torch.stack([s["pixel_attention_mask"] for s in samples])
        return list(inner_model(model).get_image_features(pv, mask).pooler_output)  # one (N * seq, D) per sample


class LlavaInputs(ProcessorInputs):
    """LLaVA prompts through `LlavaProcessor`: per sample `pixel_values` (N, 3, H, W), one row per image.

    The default layout is LLaVA-1.5's (`USER: ... ASSISTANT:`).
    """

    layout = "USER: {content} ASSISTANT:"

    def features(self, model, samples: list[dict[str, Tensor]], dtype: torch.dtype) -> list[Tensor]:
        cfg = inner_model(model).config
        pv = torch.cat([s["pixel_values"] for s in samples]).to(dtype)
        per_image = inner_model(model).get_image_features(
            pv, vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy).pooler_output
        counts = [s["pixel_values"].shape[0] for s in samples]
        return [torch.cat(x) for x in _split(list(per_image), counts)]


def _split(items: list, counts: list[int]) -> list[list]:
    out, k = [], 0
    for n in counts:
        out.append(items[k:k + n])
        k += n
    return out


def _image_token_id(config) -> int:
    return getattr(config, "image_token_id", None) or config.image_token_index


def qwen2_vl_image_processor(path: str | None = None, **kwargs):
    """transformers' PIL Qwen2-VL image processor (no torchvision), from a local folder or from kwargs."""
    try:
        from transformers import Qwen2VLImageProcessorPil as Processor
    except ImportError:  # older transformers: the slow processor is the PIL one
        from transformers import Qwen2VLImageProcessor as Processor
    if path is not None:
        return Processor.from_pretrained(path, local_files_only=True, **kwargs)
    return Processor(**kwargs)


def qwen2_vl_processor(image_processor, tokenizer, chat_template: str | None = None):
    """transformers' stock `Qwen2VLProcessor` without its video processor (which needs torchvision).

    The stock `__init__` takes a video processor; this image-only subclass sets the token attributes and calls
    `ProcessorMixin.__init__` with the image processor and tokenizer, so everything else (image token expansion,
    `mm_token_type_ids`, chat templates) is the stock code. mmalign does not need it (`Qwen2VLInputs` does the same
    work); tests compare against it, and TRL takes it as its `processing_class`.
    """
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    return ImageOnlyQwen2VLProcessor(image_processor, tokenizer, chat_template)


def pil_image_processor(model_type: str, path: str | None = None, **kwargs):
    """transformers' PIL image processor (no torchvision) of a model family, from a local folder or from kwargs."""
    import transformers

    if path is not None:
        from transformers import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(path, backend="pil", local_files_only=True, **kwargs)
    names = {"idefics3": "Idefics3ImageProcessorPil", "smolvlm": "SmolVLMImageProcessorPil",
             "llava": "CLIPImageProcessorPil", "qwen2_vl": "Qwen2VLImageProcessorPil",
             "qwen2_5_vl": "Qwen2VLImageProcessorPil"}
    if model_type not in names:
        raise ValueError(f"no PIL image processor known for model_type {model_type!r}; pass one built yourself.")
    return getattr(transformers, names[model_type])(**kwargs)


def stock_processor(model_type: str, config, tokenizer, image_processor):
    """The stock `Idefics3Processor` / `LlavaProcessor` of a model from its parts (they need no torchvision).

    Token counts come from the model config: Idefics3 / SmolVLM image_seq_len = (image_size / patch)^2 /
    scale_factor^2; LLaVA patch size and feature strategy, plus one CLS token for CLIP towers.
    """
    from transformers import Idefics3Processor, LlavaProcessor

    v = config.vision_config
    if model_type in ("idefics3", "smolvlm"):  # SmolVLM's image token layout is Idefics3's
        seq = (v.image_size // v.patch_size) ** 2 // config.scale_factor ** 2
        return Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=seq)
    if model_type == "llava":
        return LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=v.patch_size,
                              vision_feature_select_strategy=config.vision_feature_select_strategy,
                              num_additional_image_tokens=int(v.model_type == "clip_vision_model"))
    raise ValueError(f"no stock processor for model_type {model_type!r}.")


def inner_model(model):
    """The multimodal backbone (`model.model`) of a Qwen2-VL model, through a peft wrapper if there is one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.model


def prompt_encoder(model, tokenizer, image_processor, max_prompt_length: int = 4096):
    """The prompt encoder for `model`'s family (its config's model_type)."""
    model_type = model.config.model_type
    if model_type not in INPUTS:
        raise ValueError(f"no prompt encoder for model_type {model_type!r}; supported: {sorted(INPUTS)} "
                         "(docs/vlm.md says how to add a family).")
    if INPUTS[model_type] is Qwen2VLInputs:
        return Qwen2VLInputs(tokenizer, image_processor, model.config, inner_model(model).get_rope_index,
                             max_prompt_length)
    processor = stock_processor(model_type, model.config, tokenizer, image_processor)
    return INPUTS[model_type](processor, model.config, max_prompt_length)


INPUTS = {"qwen2_vl": Qwen2VLInputs, "qwen2_5_vl": Qwen2VLInputs, "idefics3": Idefics3Inputs,
          "smolvlm": Idefics3Inputs, "llava": LlavaInputs}
"""Model types with a prompt encoder."""

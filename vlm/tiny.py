"""Tiny VLMs built from config, offline: in-memory word-level tokenizers and random-init Qwen2-VL / Qwen2.5-VL,
Idefics3 / SmolVLM and LLaVA models with tiny vision towers and tiny Llama / Qwen2 language models.

Used by tests, the tiny configs and the benchmark; nothing is fetched from a hub.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from mmalign.config import ConfigError
from mmalign.text.policy import check_model_type, transformers_config

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]
"""Special tokens Qwen2-VL's template and forward need; pad is <|endoftext|>, EOS is <|im_end|>."""

TAGS = ["<think>", "</think>", "<answer>", "</answer>"]
_PRETOKENIZE = r"</?\w+>|\w+(?:-\w+)*|[^\w\s]"  # hyphenated words (top-left) are one token


IDEFICS3_SPECIALS = ["<|endoftext|>", "<end_of_utterance>", "<|im_start|>", "<fake_token_around_image>", "<image>",
                     "<global-img>", *[f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]]
"""Idefics3 / SmolVLM: pad <|endoftext|>, EOS <end_of_utterance> (SmolVLM-Instruct's), the image layout tokens."""

LLAVA_SPECIALS = ["<pad>", "</s>", "<s>", "<image>"]
"""LLaVA (1.5 layout): pad <pad>, EOS </s>, BOS <s>, the image token <image>."""

FAMILIES = {  # model_type -> (specials, pad, eos, image token, role words of the default prompt layout)
    "qwen2_vl": (QWEN_SPECIALS, "<|endoftext|>", "<|im_end|>", "<|image_pad|>", ("user", "assistant")),
    "qwen2_5_vl": (QWEN_SPECIALS, "<|endoftext|>", "<|im_end|>", "<|image_pad|>", ("user", "assistant")),
    "idefics3": (IDEFICS3_SPECIALS, "<|endoftext|>", "<end_of_utterance>", "<image>", ("User", "Assistant", ":")),
    "smolvlm": (IDEFICS3_SPECIALS, "<|endoftext|>", "<end_of_utterance>", "<image>", ("User", "Assistant", ":")),
    "llava": (LLAVA_SPECIALS, "<pad>", "</s>", "<image>", ("USER", "ASSISTANT", ":")),
}


def word_tokenizer(words: Sequence[str] = (), model_type: str = "qwen2_vl", model_max_length: int = 2048):
    """An in-memory word-level tokenizer with the special tokens of `model_type`'s family (tests, tiny models).

    Words (hyphenated ones whole, so "top-left" is one answer token), the think/answer tags and single
    punctuation marks are tokens; the family's specials come first (ids 0..), then <unk>, the tags, then `words` in
    order. Decoding joins tokens with spaces.

    Args:
        words: vocabulary besides specials and tags (e.g. every word of the task prompts and answers).
        model_type: "qwen2_vl", "qwen2_5_vl", "idefics3", "smolvlm" or "llava" (see `FAMILIES`).
        model_max_length: maximum sequence length.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    check_model_type(model_type, FAMILIES, "tiny VLM")
    specials, pad, eos, image, roles = FAMILIES[model_type]
    vocab = {t: i for i, t in enumerate(specials)}
    for w in ["<unk>", *TAGS, *roles, *words]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Split(Regex(_PRETOKENIZE), behavior="isolated")])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, eos_token=eos, unk_token="<unk>",
                                   model_max_length=model_max_length, extra_special_tokens={"image_token": image})
    fast.add_special_tokens({"additional_special_tokens": [t for t in specials if t != pad]})
    return fast


def qwen_word_tokenizer(words: Sequence[str] = (), model_max_length: int = 2048):
    """`word_tokenizer` with Qwen2-VL's special tokens: ids 0..6 are `QWEN_SPECIALS` (pad <|endoftext|>,
    EOS <|im_end|>)."""
    return word_tokenizer(words, "qwen2_vl", model_max_length)


def words_of(texts: Sequence[str]) -> list[str]:
    """Every token `qwen_word_tokenizer` would split `texts` into, in first-seen order."""
    import re

    seen: dict[str, None] = {}
    for t in texts:
        for w in re.findall(_PRETOKENIZE, t):
            seen.setdefault(w, None)
    return list(seen)


def tiny_qwen2_vl_config(tokenizer, hidden: int = 32, layers: int = 2, vision_depth: int = 2,
                         vision_dim: int = 32, merge: int = 2, model_type: str = "qwen2_vl", **overrides) -> dict:
    """A transformers config dict for a tiny Qwen2-VL (or "qwen2_5_vl") matching `tokenizer`'s special ids."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    half = _mrope_half(hidden)
    text = dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                 "mrope_section": [half // 2, half // 4, half // 4]},
                pad_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], bos_token_id=ids["<|im_start|>"])
    vision = dict(depth=vision_depth, embed_dim=vision_dim, hidden_size=hidden, num_heads=2, mlp_ratio=2,
                  patch_size=14, spatial_merge_size=merge, temporal_patch_size=2)
    if model_type == "qwen2_5_vl":
        vision = dict(depth=vision_depth, hidden_size=vision_dim, intermediate_size=2 * vision_dim,
                      out_hidden_size=hidden, num_heads=2, patch_size=14, spatial_merge_size=merge,
                      temporal_patch_size=2, fullatt_block_indexes=[vision_depth - 1], window_size=28)
    cfg = dict(model_type=model_type, text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"],
               video_token_id=ids["<|video_pad|>"], vision_start_token_id=ids["<|vision_start|>"],
               vision_end_token_id=ids["<|vision_end|>"], tie_word_embeddings=True)
    cfg.update(overrides)
    return cfg



def _mrope_half(hidden: int) -> int:
    """The rotary half-dimension of a tiny Qwen2-VL head (4 heads), which M-RoPE splits t:h:w = 2:1:1."""
    half = hidden // 4 // 2
    if half < 4 or half % 4:
        raise ConfigError(f"is {hidden}, but M-RoPE needs hidden / 4 heads / 2 divisible by 4 (e.g. 32, 64, 96).",
                          "hidden")
    return half


def _llama_text(tokenizer, hidden: int, layers: int) -> dict:
    """A tiny Llama text config matching `tokenizer` (pad, EOS)."""
    return dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                bos_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)


def tiny_idefics3_config(tokenizer, hidden: int = 32, layers: int = 2, vision_depth: int = 2, vision_dim: int = 32,
                         image_size: int = 56, scale_factor: int = 2, model_type: str = "idefics3",
                         **overrides) -> dict:
    """A tiny Idefics3 (or "smolvlm") config: SigLIP-style tower of 14 px patches, pixel shuffle, Llama LM.

    An image of `image_size` px becomes (image_size / 14)^2 / scale_factor^2 image tokens (4 at 56 px)."""
    vision = dict(hidden_size=vision_dim, intermediate_size=2 * vision_dim, num_hidden_layers=vision_depth,
                  num_attention_heads=2, image_size=image_size, patch_size=14)
    cfg = dict(model_type=model_type, text_config=_llama_text(tokenizer, hidden, layers), vision_config=vision,
               image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=scale_factor,
               tie_word_embeddings=True)
    cfg.update(overrides)
    return cfg


def tiny_llava_config(tokenizer, hidden: int = 32, layers: int = 2, vision_depth: int = 2, vision_dim: int = 32,
                      image_size: int = 28, **overrides) -> dict:
    """A tiny LLaVA config: CLIP vision tower of 14 px patches (features of its last layer, CLS dropped), Llama LM.

    An image of `image_size` px becomes (image_size / 14)^2 image tokens (4 at 28 px)."""
    vision = dict(model_type="clip_vision_model", hidden_size=vision_dim, intermediate_size=2 * vision_dim,
                  num_hidden_layers=vision_depth, num_attention_heads=2, image_size=image_size, patch_size=14,
                  projection_dim=vision_dim)
    cfg = dict(model_type="llava", text_config=_llama_text(tokenizer, hidden, layers), vision_config=vision,
               image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vision_feature_layer=-1,
               vision_feature_select_strategy="default", image_seq_length=(image_size // 14) ** 2,
               tie_word_embeddings=True)
    cfg.update(overrides)
    return cfg


TINY_CONFIGS = {"qwen2_vl": tiny_qwen2_vl_config, "qwen2_5_vl": tiny_qwen2_vl_config,
                "idefics3": tiny_idefics3_config, "smolvlm": tiny_idefics3_config, "llava": tiny_llava_config}
"""model_type -> the function that writes its tiny config."""


def tiny_vlm_config(tokenizer, model_type: str = "qwen2_vl", **kwargs) -> dict:
    """The tiny config of `model_type`'s family (keyword arguments as in `tiny_<family>_config`)."""
    check_model_type(model_type, FAMILIES, "tiny VLM")
    if not model_type.startswith("qwen"):
        kwargs.pop("merge", None)  # a Qwen knob; configs written for Qwen may carry it
    if model_type != "llava":
        kwargs["model_type"] = model_type
    return TINY_CONFIGS[model_type](tokenizer, **kwargs)


def check_tiny_vlm_config(model_config: dict) -> None:
    """Refuse a tiny-VLM `model_config` ({"model_type": ..., knobs of `tiny_<family>_config`, fields of the
    transformers config}) whose family is unknown or that holds a key which is neither a knob nor a field.

    Raises:
        ConfigError: keyed inside `model_config` ("model_type", "hidden", the unknown key).
    """
    kwargs = dict(model_config)
    model_type = kwargs.pop("model_type", "qwen2_vl")
    check_model_type(model_type, FAMILIES, "tiny VLM")
    params = inspect.signature(TINY_CONFIGS[model_type]).parameters
    knobs = {name for name, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD} - {"tokenizer", "model_type"}
    knobs.add("merge")
    if model_type.startswith("qwen") and "hidden" in kwargs:
        _mrope_half(kwargs["hidden"])
    transformers_config(model_type, kwargs, knobs)


def tiny_image_processor(model_type: str, side: int):
    """The PIL image processor (no torchvision) of a tiny model: images become `side` x `side` inputs."""
    check_model_type(model_type, FAMILIES, "tiny VLM")
    if model_type in ("qwen2_vl", "qwen2_5_vl"):
        from mmalign.vlm.inputs import qwen2_vl_image_processor

        side = side // 28 * 28 or 28
        return qwen2_vl_image_processor(min_pixels=side * side, max_pixels=side * side)
    from mmalign.vlm.inputs import pil_image_processor

    if model_type in ("idefics3", "smolvlm"):
        return pil_image_processor(model_type, do_image_splitting=False, size={"longest_edge": side},
                                   max_image_size={"longest_edge": side})
    return pil_image_processor(model_type, size={"shortest_edge": side}, crop_size={"height": side, "width": side})


def build_vlm(model_config: dict):
    """A random-init image-text-to-text model from a config dict ({"model_type": "qwen2_vl", ...}); a key its
    transformers config does not know is an error."""
    from transformers import AutoModelForImageTextToText

    cfg = dict(model_config)
    model_type = cfg.pop("model_type")
    return AutoModelForImageTextToText.from_config(transformers_config(model_type, cfg))

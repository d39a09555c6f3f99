"""Tiny VLMs built from config, offline: an in-memory Qwen-style tokenizer and a random-init Qwen2-VL.

Used by tests, the tiny configs and the benchmark; nothing is fetched from a hub (DESIGN.md section 6).
"""

from __future__ import annotations

from collections.abc import Sequence

QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]
"""Special tokens Qwen2-VL's template and forward need; pad is <|endoftext|>, EOS is <|im_end|>."""

TAGS = ["<think>", "</think>", "<answer>", "</answer>"]
_PRETOKENIZE = r"</?\w+>|\w+(?:-\w+)*|[^\w\s]"  # hyphenated words (top-left) are one token


def qwen_word_tokenizer(words: Sequence[str] = (), model_max_length: int = 2048):
    """An in-memory word-level tokenizer with Qwen2-VL's special tokens (tests, tiny models).

    Words (hyphenated ones whole, so "top-left" is one answer token), the think/answer tags and single
    punctuation marks are tokens; ids 0..6 are `QWEN_SPECIALS`, then
    <unk>, the tags, then `words` in order. Decoding joins tokens with spaces.

    Args:
        words: vocabulary besides specials and tags (e.g. every word of the task prompts and answers).
        model_max_length: maximum sequence length.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(QWEN_SPECIALS)}
    for w in ["<unk>", *TAGS, "user", "assistant", *words]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Split(Regex(_PRETOKENIZE), behavior="isolated")])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                   unk_token="<unk>", model_max_length=model_max_length,
                                   extra_special_tokens={"image_token": "<|image_pad|>"})
    fast.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS[1:]})
    return fast


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
    text = dict(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
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


def build_vlm(model_config: dict):
    """A random-init image-text-to-text model from a config dict ({"model_type": "qwen2_vl", ...})."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    cfg = dict(model_config)
    model_type = cfg.pop("model_type")
    return AutoModelForImageTextToText.from_config(AutoConfig.for_model(model_type, **cfg))

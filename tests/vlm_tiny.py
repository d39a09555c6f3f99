"""Tiny VLM fixtures for the VLM tests: a random-init Qwen2-VL over a word-level Qwen-style tokenizer."""

import numpy as np
import torch
from mmalign.vlm.inputs import prompt_encoder, qwen2_vl_image_processor
from mmalign.vlm.policy import VLMPolicy
from mmalign.vlm.tiny import build_vlm, qwen_word_tokenizer, tiny_qwen2_vl_config, words_of

WORDS = words_of(["what is in and ? a cat dog 0 90 180 270 yes no , ."])


def tiny_vlm_policy(seed: int = 0, lora: bool = False, model_type: str = "qwen2_vl", words=WORDS, **kwargs):
    tok = qwen_word_tokenizer(words)
    torch.manual_seed(seed)
    model = build_vlm(tiny_qwen2_vl_config(tok, model_type=model_type))
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
        kwargs.setdefault("reference", "lora")
    proc = qwen2_vl_image_processor(min_pixels=56 * 56, max_pixels=56 * 56, patch_size=14, merge_size=2)
    kwargs.setdefault("max_new_tokens", 6)
    return VLMPolicy(model, prompt_encoder(model, tok, proc), **kwargs)


def random_image(seed: int, h: int = 56, w: int = 56) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)

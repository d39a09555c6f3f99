"""Tiny VLM fixtures for the VLM tests: random-init Qwen2-VL / Qwen2.5-VL, Idefics3 / SmolVLM and LLaVA models over
word-level tokenizers with each family's special tokens."""

import numpy as np
import torch
from mmalign.vlm.inputs import prompt_encoder
from mmalign.vlm.policy import VLMPolicy
from mmalign.vlm.tiny import build_vlm, tiny_image_processor, tiny_vlm_config, word_tokenizer, words_of

WORDS = words_of(["what is in and ? a cat dog 0 90 180 270 yes no , ."])
SIDE = {"qwen2_vl": 56, "qwen2_5_vl": 56, "idefics3": 56, "smolvlm": 56, "llava": 28}
"""Image side each tiny family sees: 4 image tokens per image (Qwen 2x2 merge, Idefics3 pixel shuffle 2, LLaVA)."""


def tiny_vlm_policy(seed: int = 0, lora: bool = False, model_type: str = "qwen2_vl", words=WORDS, **kwargs):
    tok = word_tokenizer(words, model_type)
    torch.manual_seed(seed)
    side = SIDE[model_type]
    extra = {} if model_type.startswith("qwen") else {"image_size": side}
    model = build_vlm(tiny_vlm_config(tok, model_type, **extra))
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
        kwargs.setdefault("reference", "lora")
    kwargs.setdefault("max_new_tokens", 6)
    return VLMPolicy(model, prompt_encoder(model, tok, tiny_image_processor(model_type, side)), **kwargs)


def random_image(seed: int, h: int = 56, w: int = 56) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)

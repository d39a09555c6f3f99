"""Tiny VLM fixtures for the VLM tests: random-init Qwen2-VL / Qwen2.5-VL, Idefics3 / SmolVLM and LLaVA models over
word-level tokenizers with each family's special tokens, and contexts with images of different sizes."""

import numpy as np
import torch

from mmalign.rollout import Rollout
from mmalign.vlm.inputs import pil_image_processor, prompt_encoder
from mmalign.vlm.policy import VLMPolicy
from mmalign.vlm.tiny import build_vlm, tiny_image_processor, tiny_vlm_config, word_tokenizer, words_of

WORDS = words_of(["what is in and ? a cat dog 0 90 180 270 yes no , ."])
SIDE = {"qwen2_vl": 56, "qwen2_5_vl": 56, "idefics3": 56, "smolvlm": 56, "llava": 28}
"""Image side each tiny family sees: 4 image tokens per image (Qwen 2x2 merge, Idefics3 pixel shuffle 2, LLaVA)."""


def tiny_vlm_policy(seed: int = 0, lora: bool = False, model_type: str = "qwen2_vl", words=WORDS,
                    **kwargs) -> VLMPolicy:
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


def tiled_idefics3_policy(**kwargs) -> VLMPolicy:
    """Idefics3 with SmolVLM's default image processing: each image split into tiles plus a global view."""
    policy = tiny_vlm_policy(model_type="idefics3", **kwargs)
    policy.inputs.processor.image_processor = pil_image_processor(
        "idefics3", do_image_splitting=True, size={"longest_edge": 112}, max_image_size={"longest_edge": 56})
    return policy


def gradient_reaches(policy: VLMPolicy, rollout: Rollout, part: str) -> bool:
    """Whether the rollout's re-scored log-probs give a nonzero gradient to the parameters named with `part`."""
    params = [p for n, p in policy.model.named_parameters() if part in n and p.requires_grad]
    grads = torch.autograd.grad(policy.logprobs(rollout).sum(), params, allow_unused=True)
    return any(g is not None and bool(g.abs().sum() > 0) for g in grads)


def random_image(seed: int, h: int = 56, w: int = 56) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


CONTEXTS = [  # prompts of different lengths (left padding), several images of different sizes, a text-only one
    {"prompt": "what is in <image> and <image> ?", "images": [random_image(0), random_image(1, 84, 56)]},
    {"prompt": "a cat", "images": []},
    {"prompt": "what is in", "images": [random_image(2)]},
]

"""Tiny real models and tasks for tests: a Qwen2 causal LM built from config, word-level tokenizer, BLEU reward."""

from types import SimpleNamespace

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from mmalign.rewards import BleuReward
from mmalign.text import CausalLMPolicy, word_tokenizer

WORDS = "the a cat dog sat ran on to mat park red blue big small and is describe tell me about".split()
ROWS = [
    {"prompt": "describe the cat", "references": ["the cat sat on the mat"]},
    {"prompt": "tell me about the dog", "references": ["the dog ran to the park"]},
]


def tiny_lm(seed: int = 0, hidden: int = 32, layers: int = 2, vocab: int | None = None) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab or len(WORDS) + 4, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=128, pad_token_id=0, eos_token_id=1, bos_token_id=2,
                      tie_word_embeddings=True)
    return Qwen2ForCausalLM(cfg)


def tiny_policy(seed: int = 0, lora: bool = False, **kwargs) -> CausalLMPolicy:
    model = tiny_lm(seed)
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
        kwargs.setdefault("reference", "lora")
    kwargs.setdefault("max_new_tokens", 8)
    return CausalLMPolicy(model, word_tokenizer(WORDS), **kwargs)


def tiny_task(policy: CausalLMPolicy, rows=ROWS) -> SimpleNamespace:
    return SimpleNamespace(policy=policy, rewards=[("bleu", BleuReward(), 1.0)], train_contexts=list(rows),
                           eval_contexts=list(rows))


def slow_bleu(contexts, outputs):
    """BLEU that takes a while: lets a test kill a run between two checkpoints."""
    import time

    time.sleep(0.3)
    return BleuReward()(contexts, outputs)


def nan_reward(contexts, outputs):
    return [float("nan")] * len(outputs)


def short_reward(contexts, outputs):
    return [0.0] * (len(outputs) - 1)


def huge_reward(contexts, outputs):
    """Finite rewards whose sum overflows float32: the advantages, loss and gradients come out non-finite."""
    return [1e38] * len(outputs)

"""Tiny real models and tasks for tests: a Qwen2 causal LM built from config, word-level tokenizer, BLEU reward."""


import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from mmalign.text.policy import CausalLMPolicy, word_tokenizer
from mmalign.text.rewards import BleuReward

WORDS = "the a cat dog sat ran on to mat park red blue big small and is describe tell me about".split()
ROWS = [
    {"prompt": "describe the cat", "references": ["the cat sat on the mat"]},
    {"prompt": "tell me about the dog", "references": ["the dog ran to the park"]},
]
PROMPTS = ["describe the cat", "tell me about the red dog and the park", {"prompt": "a"}]
"""Prompts of different lengths (left padding), as strings and as a row."""


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


class TinyTask:
    """A Task (mmalign.task) over `rows` with a BLEU reward: evaluation is the mean BLEU of one sample per row."""

    def __init__(self, policy: CausalLMPolicy, rows=ROWS):
        self.policy, self.rewards = policy, [("bleu", BleuReward(), 1.0)]
        self.train_contexts = self.eval_contexts = list(rows)

    def evaluate(self, policy: CausalLMPolicy) -> dict[str, float]:
        outputs = policy.sample(self.eval_contexts, 1).outputs
        return {"reward": sum(BleuReward()(self.eval_contexts, outputs)) / len(outputs)}

    def finish(self, policy: CausalLMPolicy, run_dir) -> None:
        pass


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

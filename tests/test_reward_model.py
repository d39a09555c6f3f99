"""Reward-model training: a tiny sequence classifier learns which of two replies is preferred."""

import random

import torch
from tiny import WORDS
from transformers import Qwen2Config, Qwen2ForSequenceClassification

from mmalign.algorithms.reward_model import RewardModelConfig, pair_accuracy, text_scorer, train_reward_model
from mmalign.text.policy import word_tokenizer


def make_pairs(n: int, seed: int) -> list[tuple]:
    """Preferred replies mention the cat; rejected ones mention the dog."""
    rng = random.Random(seed)
    filler = ["the", "a", "red", "blue", "big", "small", "sat", "ran", "on", "mat", "park"]
    pairs = []
    for _ in range(n):
        a = " ".join(rng.choices(filler, k=4))
        b = " ".join(rng.choices(filler, k=4))
        pairs.append((("describe", f"{a} cat"), ("describe", f"{b} dog")))
    return pairs


def test_bradley_terry_training_learns_the_preference():
    torch.manual_seed(0)
    tok = word_tokenizer(WORDS)
    model = Qwen2ForSequenceClassification(Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, num_labels=1, pad_token_id=0))
    score = text_scorer(model, tok)
    train, held_out = make_pairs(256, seed=0), make_pairs(64, seed=1)
    before = pair_accuracy(score, held_out)
    history = train_reward_model(score, model.parameters(), train, RewardModelConfig(lr=3e-3, epochs=2, batch_size=16))
    after = pair_accuracy(score, held_out)
    assert history[-1]["loss"] < history[0]["loss"]
    assert after > 0.95 and after > before + 0.3, (before, after)

"""The distillation of a shallow student (mmalign.text.distill): its loss on hand-computed numbers, the layer map,
the copied weights, and a tiny end-to-end run whose held-out KL falls and whose folder loads as a causal LM."""

import math

import pytest
import torch
from tiny import ROWS, WORDS, tiny_lm
from transformers import LlamaConfig, LlamaForCausalLM

from mmalign.text.distill import DistillSettings, distill, layer_map, shallow_copy, topk_kl
from mmalign.text.policy import CausalLMPolicy, word_tokenizer
from mmalign.text.task import load_causal_lm


def test_topk_kl_matches_hand_computed_value():
    # teacher top-2 probs .5 and .3 of tokens 0 and 1 -> q = (.625, .375); student uniform over 3 tokens
    top = torch.log(torch.tensor([[[0.5, 0.3], [0.9, 0.05]]]))
    ids = torch.tensor([[[0, 1], [2, 0]]])
    student = torch.tensor([[[0.0, 0.0, 0.0], [5.0, -3.0, 1.0]]])
    mask = torch.tensor([[True, False]])  # the second position must not count
    # forward KL(q || p_S); the reverse, or a mask letting position 2 in, gives another number
    expected = 0.625 * math.log(0.625 * 3) + 0.375 * math.log(0.375 * 3)
    assert topk_kl(student, top, ids, mask).item() == pytest.approx(expected, abs=1e-6)


def test_topk_kl_is_zero_when_the_student_is_the_teacher_on_its_top_tokens():
    student = torch.tensor([[[2.0, 1.0, -30.0]]])
    top, ids = torch.log_softmax(student, -1).topk(2, -1)
    assert topk_kl(student, top, ids, torch.ones(1, 1, dtype=torch.bool)).item() == pytest.approx(0.0, abs=1e-6)
    # the second position averages in: (0 + KL) / 2
    two = torch.cat([student, torch.zeros(1, 1, 3)], 1)
    tops, idss = torch.cat([top, top], 1), torch.cat([ids, ids], 1)
    q = torch.softmax(top[0, 0], -1)
    kl = float((q * (q.log() - math.log(1 / 3))).sum())
    assert topk_kl(two, tops, idss, torch.ones(1, 2, dtype=torch.bool)).item() == pytest.approx(kl / 2, abs=1e-6)


def test_layer_map_takes_evenly_spaced_layers_with_the_first_and_last():
    assert layer_map(30, 6) == [0, 6, 12, 17, 23, 29]
    assert layer_map(4, 2) == [0, 3]
    assert layer_map(4, 1) == [0]
    with pytest.raises(ValueError, match="1 to 4 layers"):
        layer_map(4, 5)


def test_shallow_copy_keeps_the_teachers_weights_at_the_mapped_layers():
    torch.manual_seed(0)
    teacher = LlamaForCausalLM(LlamaConfig(vocab_size=24, hidden_size=16, intermediate_size=32, num_hidden_layers=4,
                                           num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True))
    student = shallow_copy(teacher, 2)
    assert student.config.num_hidden_layers == 2 and len(student.model.layers) == 2
    for s, t in zip(student.model.layers, [teacher.model.layers[0], teacher.model.layers[3]]):
        assert torch.equal(s.mlp.up_proj.weight, t.mlp.up_proj.weight)
        assert torch.equal(s.self_attn.q_proj.weight, t.self_attn.q_proj.weight)
    assert torch.equal(student.get_output_embeddings().weight, teacher.get_output_embeddings().weight)
    assert not student.get_input_embeddings().weight.requires_grad
    assert student.model.layers[1].mlp.up_proj.weight.requires_grad


def test_qwen2_layer_types_follow_the_map():
    student = shallow_copy(tiny_lm(layers=4), 2)
    assert len(student.config.layer_types) == 2


def test_distilled_student_gets_closer_to_the_teacher_and_saves_as_a_causal_lm(tmp_path):
    teacher = tiny_lm(seed=1, layers=4)
    with torch.no_grad():  # a peaked teacher whose deep layers matter, so a one-layer copy has something to learn
        for name, p in teacher.named_parameters():
            if name.endswith(("down_proj.weight", "o_proj.weight", "up_proj.weight", "v_proj.weight")):
                p.mul_(8)
        teacher.model.norm.weight.mul_(8)
    tokenizer = word_tokenizer(WORDS)
    policy = CausalLMPolicy(teacher, tokenizer, max_new_tokens=6, temperature=1.0)
    rows = ROWS * 4
    settings = DistillSettings(layers=1, top_k=8, steps=30, batch_size=4, lr=1e-2)
    student, record = distill(policy, rows, ROWS, settings, log=lambda _: None)
    assert record["held_out_kl_after"] < 0.5 * record["held_out_kl_before"], record
    assert sum(record["loss"][-5:]) < sum(record["loss"][:5])
    student.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, tok = load_causal_lm(str(tmp_path))
    ids = torch.tensor([[3, 4, 5]])
    assert torch.allclose(loaded(input_ids=ids).logits, student(input_ids=ids).logits, atol=1e-5)
    assert loaded.config.num_hidden_layers == 1 and len(tok) == len(tokenizer)

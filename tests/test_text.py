"""The text adapter beyond the contract (test_contract.py): EOS and masking, the LoRA reference, teacher-forced
rollouts, greedy decoding, chunked and compiled re-scoring."""

import pytest
import torch
from tiny import PROMPTS, ROWS, WORDS, tiny_policy

from mmalign.text.policy import group_firsts


def test_stops_at_eos_and_masks_after_it():
    policy = tiny_policy()
    with torch.no_grad():  # make EOS (id 1) very likely so rows end early
        policy.model.lm_head.weight[1] += 5 * policy.model.model.embed_tokens.weight.std()
        policy.model.model.norm.weight.fill_(3.0)
    rollout = policy.sample(PROMPTS, 4)
    tokens = rollout.state["input_ids"][:, rollout.state["prompt_length"]:]
    lengths = rollout.mask.sum(1)
    assert bool((lengths < 8).any()), "EOS never sampled; the test setup is broken"
    for row, n in zip(tokens, lengths):
        if n < 8:
            assert row[n - 1] == 1 and bool((row[n:] == 0).all())  # EOS is the last real step, then padding
    assert bool((rollout.logprobs[~rollout.mask] == 0).all())


def test_lora_reference_is_the_base_model(sampled):
    policy, rollout = sampled("text-lora")
    with policy.model.disable_adapter():
        base = policy.logprobs(rollout)
    torch.testing.assert_close(policy.ref_logprobs(rollout), base)
    assert not torch.allclose(base, rollout.logprobs)  # the adapters are not a no-op here
    trainable = [n for n, p in policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)


def test_rollout_from_given_text_scores_with_grad():
    policy = tiny_policy()
    roll = policy.rollout_from(ROWS, ["the cat sat", "the dog"])
    assert roll.mask.sum(1).tolist() == [4, 3]  # words + EOS
    lp = policy.logprobs(roll)
    assert lp.requires_grad and bool((lp[roll.mask] < 0).all())
    assert WORDS[0] in policy.tokenizer.get_vocab()


def test_greedy_is_deterministic():
    policy = tiny_policy()
    a = policy.sample(ROWS, 2, greedy=True).outputs
    b = policy.sample(ROWS, 2, greedy=True).outputs
    assert a == b and a[0] == a[1]


@pytest.mark.parametrize("lora", [False, True])
def test_chunked_logprobs_equal_the_full_logits_pass_with_gradients(lora):
    chunked = tiny_policy(lora=lora, logprob_chunk=5, temperature=0.7)
    full = tiny_policy(lora=lora, logprob_chunk=0, temperature=0.7)
    rollout = chunked.sample(ROWS[:3], 2)
    a, b = chunked.logprobs(rollout), full.logprobs(rollout)
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, rollout.logprobs, atol=1e-5)
    (a * rollout.mask).sum().backward()
    (b * rollout.mask).sum().backward()
    for (name, p), q in zip(chunked.named_parameters(), full.parameters()):
        if p.requires_grad:
            assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-4), name
    with torch.no_grad():
        assert torch.allclose(chunked.logprobs(rollout), b, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("lora, chunk", [(False, 0), (True, 512)])
def test_compiled_scoring_gives_the_eager_logprobs_and_gradients(lora, chunk):
    """`scoring="compiled"` runs the differentiated re-scoring through `torch.compile`, each group's shared prompt
    once; it must be the eager one's function: same log-probs, same gradients, through the logits (chunk 0) and the
    hidden states (chunked); without gradients it stays eager."""
    eager = tiny_policy(lora=lora, temperature=0.7, logprob_chunk=chunk)
    compiled = tiny_policy(lora=lora, temperature=0.7, logprob_chunk=chunk, scoring="compiled")
    rollout = eager.sample(ROWS, 2)
    n = len(rollout)
    rollout = rollout[torch.cat([torch.arange(0, n, 2), torch.arange(1, n, 2)])]  # a minibatch of scattered groups
    assert group_firsts(rollout.group, rollout.state["input_ids"][:, :rollout.state["prompt_length"]]) is not None
    with torch.no_grad():
        compiled.logprobs(rollout)
    assert compiled._compiled_forward is None
    a, b = eager.logprobs(rollout), compiled.logprobs(rollout)
    assert compiled._compiled_forward is not None
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    (a * rollout.mask).sum().backward()
    (b * rollout.mask).sum().backward()
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        if p.requires_grad:
            torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-4, msg=name)
    with pytest.raises(ValueError, match=r"scoring 'fast' is not one of \['eager', 'compiled'\]"):
        tiny_policy(scoring="fast")

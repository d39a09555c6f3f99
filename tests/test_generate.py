"""The shared KV-cache decoder (`mmalign.generate`) that the text and VLM adapters sample with: it draws what
transformers' own `generate` draws, banned tokens are never drawn, sampled log-probs are the processed logits';
the compiled decoder (static cache, compiled step) decodes greedily what the eager one does and keeps the contract."""

from functools import partial

import pytest
import torch
from tiny import ROWS, tiny_policy

from mmalign import generate
from mmalign.generate import sample_tokens, scaled_logits
from mmalign.text.policy import positions


def _prompt(policy, contexts):
    ids, attn = policy.encode(contexts)
    pos = positions(attn)
    return ids, attn, {"input_ids": ids, "attention_mask": attn, "position_ids": pos}, pos[:, -1:]


def test_same_tokens_as_transformers_generate_for_the_same_seed():
    """Sampling (and greedy decoding) draw what transformers' own `generate` draws from the same RNG state; rows
    stop at EOS at different steps and are padded after it."""
    policy = tiny_policy(max_new_tokens=12)
    contexts = ROWS + ["the red dog and the big cat"]  # prompts of different lengths: left padding
    ids, attn, inputs, last = _prompt(policy, contexts)
    inputs, last = {k: v.repeat_interleave(4, 0) for k, v in inputs.items()}, last.repeat_interleave(4, 0)
    tok = policy.tokenizer
    for greedy in (False, True):
        torch.manual_seed(1)
        ours = sample_tokens(policy.model, inputs, last, 12, tok.eos_token_id, tok.pad_token_id, greedy=greedy)
        torch.manual_seed(1)
        theirs = policy.model.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                       max_new_tokens=12, do_sample=not greedy, top_k=0, top_p=1.0, temperature=1.0,
                                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        assert torch.equal(ours.tokens.masked_fill(~ours.mask, tok.pad_token_id), theirs[:, ids.shape[1]:])
        if not greedy:
            assert len(set(ours.mask.sum(1).tolist())) > 2  # rows ended at different steps


def test_banned_tokens_are_never_sampled_and_logprobs_are_the_processed_logits():
    policy = tiny_policy(max_new_tokens=8)
    _, _, inputs, last = _prompt(policy, ROWS)
    banned = torch.tensor([1, 5, 6, 7])  # EOS included: every row runs to the limit
    process = lambda x: scaled_logits(x, 0.5, banned)  # noqa: E731
    torch.manual_seed(0)
    out = sample_tokens(policy.model, {k: v.repeat_interleave(16, 0) for k, v in inputs.items()},
                        last.repeat_interleave(16, 0), 8, 1, 0, process)
    assert out.tokens.shape == (32, 8) and bool(out.mask.all())
    assert not bool(torch.isin(out.tokens, banned).any())
    ids = torch.cat([inputs["input_ids"].repeat_interleave(16, 0), out.tokens], 1)
    attn = torch.ones_like(ids)
    attn[:, :inputs["attention_mask"].shape[1]] = inputs["attention_mask"].repeat_interleave(16, 0)
    logits = policy.model(input_ids=ids, attention_mask=attn, position_ids=positions(attn)).logits
    p = inputs["input_ids"].shape[1]
    rescored = torch.log_softmax(process(logits[:, p - 1:-1]), -1).gather(-1, out.tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(rescored, out.logprobs, atol=1e-5, rtol=0)


def test_unknown_decoder_is_an_error_naming_the_choices():
    policy = tiny_policy()
    _, _, inputs, last = _prompt(policy, ROWS)
    with pytest.raises(ValueError, match=r"decoder 'compield' is not one of \['eager', 'compiled'\]"):
        sample_tokens(policy.model, inputs, last, 4, 1, 0, decoder="compield")
    with pytest.raises(ValueError, match="decoder 'fast'"):
        tiny_policy(decoder="fast")


def _rescored(policy, inputs, out, process):
    """Log-probs of `out.tokens` under one full forward over prompt + completion (what training re-scores)."""
    p = inputs["input_ids"].shape[1]
    ids = torch.cat([inputs["input_ids"], out.tokens], 1)
    attn = torch.cat([inputs["attention_mask"], out.mask.long()], 1)
    logits = policy.model(input_ids=ids, attention_mask=attn, position_ids=positions(attn)).logits
    return torch.log_softmax(process(logits[:, p - 1:-1]), -1).gather(-1, out.tokens[..., None]).squeeze(-1)


@pytest.mark.slow  # two compilations of the decode step (greedy, sampling): tens of seconds
def test_compiled_decoder_greedy_equals_eager_and_sampled_logprobs_equal_rescored():
    policy = tiny_policy(max_new_tokens=12)
    tok = policy.tokenizer
    _, _, inputs, last = _prompt(policy, ROWS + ["the red dog and the big cat"])  # left padding
    inputs, last = {k: v.repeat_interleave(4, 0) for k, v in inputs.items()}, last.repeat_interleave(4, 0)
    banned = torch.tensor([5, 6, 7])
    process = partial(scaled_logits, temperature=0.5, banned=banned)
    run = partial(sample_tokens, policy.model, inputs, last, 12, tok.eos_token_id, tok.pad_token_id, process)
    eager, compiled = run(greedy=True), run(greedy=True, decoder="compiled")
    assert torch.equal(compiled.tokens, eager.tokens) and torch.equal(compiled.mask, eager.mask)
    torch.testing.assert_close(compiled.logprobs, eager.logprobs, atol=1e-5, rtol=0)

    torch.manual_seed(1)
    out = run(decoder="compiled")
    assert len(set(out.mask.sum(1).tolist())) > 2  # rows ended at different steps
    assert not bool(torch.isin(out.tokens, banned).any())
    for row, mask in zip(out.tokens, out.mask):  # each row: a prefix ending at its EOS (or the limit), then padding
        n = int(mask.sum())
        assert bool(mask[:n].all()) and bool((row[n:] == tok.pad_token_id).all())
        assert (row[:n] == tok.eos_token_id).nonzero().flatten().tolist() in ([n - 1], [])
    assert bool((out.logprobs[~out.mask] == 0).all())
    torch.testing.assert_close(_rescored(policy, inputs, out, process)[out.mask], out.logprobs[out.mask], atol=1e-5,
                               rtol=0)

    # a batch of the same size with shorter prompts (in the same `CACHE_BLOCK`) reuses the static cache and the
    # compiled step
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    _, _, short, short_last = _prompt(policy, ["the big red dog sat"] * 12)
    assert short["input_ids"].shape[1] < inputs["input_ids"].shape[1]
    again = sample_tokens(policy.model, short, short_last, 12, tok.eos_token_id, tok.pad_token_id, process,
                          decoder="compiled")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    assert len(generate._caches[policy.model]) == 1
    torch.testing.assert_close(_rescored(policy, short, again, process)[again.mask], again.logprobs[again.mask],
                               atol=1e-5, rtol=0)


def test_compiled_decoder_draws_follow_the_softmax_and_never_a_banned_token():
    """The compiled step's sampler (`_choose`, the inverse CDF) draws each token with its softmax probability."""
    n = 20_000
    logits = torch.tensor([[2.0, 0.5, -1.0, 1.0, 0.0]]).repeat(n, 1)
    process = partial(scaled_logits, temperature=0.7, banned=torch.tensor([3]))
    torch.manual_seed(0)
    tok, lp, done = generate._choose(logits, process, False, torch.zeros(n, dtype=torch.bool), eos=4, pad=0)
    p = torch.softmax(process(logits[:1]), -1)[0]
    freq = torch.bincount(tok, minlength=5) / n
    assert freq[3] == 0
    torch.testing.assert_close(freq, p, atol=0.012, rtol=0)  # 4.6 standard errors at p = 0.84
    torch.testing.assert_close(lp, p.log()[tok])
    assert torch.equal(done, tok == 4)

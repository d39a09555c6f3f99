"""The shared KV-cache decoder (`mmalign.generate`) that the text and VLM adapters sample with: it draws what
transformers' own `generate` draws, banned tokens are never drawn, sampled log-probs are the processed logits'."""

import torch
from tiny import ROWS, tiny_policy

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

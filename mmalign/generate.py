"""Token sampling with a KV cache, shared by the token adapters (`mmalign.text`, `mmalign.vlm`).

One prefill forward over the left-padded prompt, then one forward per new token on the cached keys and values.
A step's log-prob is log softmax of the adapter's processed logits (`scaled_logits`: temperature, banned tokens) at
the sampled token, so re-scoring the tokens with the same processing gives the same values. Each row stops at its
first EOS; later steps hold padding, log-prob 0, and are masked out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

try:  # transformers renamed `past_key_values` to `cache` (5.x); support both spellings
    from transformers.modeling_outputs import CausalLMOutputWithPast

    _CACHE = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
except ImportError:  # pragma: no cover
    _CACHE = "past_key_values"


class Sampled(NamedTuple):
    """What `sample_tokens` drew.

    Attributes:
        tokens: (B, T) completion ids; padding after a row's EOS.
        logprobs: (B, T) fp32 log-prob of each token under the processed logits; 0 after EOS.
        mask: (B, T) bool, the completion up to and including EOS.
    """

    tokens: Tensor
    logprobs: Tensor
    mask: Tensor


def scaled_logits(logits: Tensor, temperature: float = 1.0, banned: Tensor | None = None) -> Tensor:
    """fp32 logits / temperature, with the `banned` token ids at -inf: (..., V) -> (..., V)."""
    logits = logits.float() if temperature == 1.0 else logits.float() / temperature
    if banned is None or not banned.numel():
        return logits
    return logits.index_fill(-1, banned.to(logits.device), float("-inf"))


def _same(position: Tensor) -> Tensor:
    return position


@torch.no_grad()
def sample_tokens(model, inputs: dict[str, Any], last_position: Tensor, max_new_tokens: int, eos_token_id: int,
                  pad_token_id: int, process_logits: Callable[[Tensor], Tensor] = scaled_logits,
                  greedy: bool = False, position_arg: Callable[[Tensor], Tensor] = _same) -> Sampled:
    """Sample up to `max_new_tokens` tokens per row from a causal LM with a KV cache; stop each row at EOS.

    Args:
        model: a transformers model with a causal-LM head (`logits`, a cache in its output).
        inputs: the prefill forward's keyword arguments: `input_ids` (B, P), `attention_mask` (B, P) (left-padded),
            `position_ids`, and whatever else the model needs (image tensors).
        last_position: the prompt's last position per row, last dimension 1: (B, 1), or (B, R, 1) for M-RoPE;
            every new token advances it by one.
        max_new_tokens: completion length limit T.
        eos_token_id: the token that ends a row (it is part of the completion).
        pad_token_id: what fills a row after its EOS.
        process_logits: (B, V) raw next-token logits -> (B, V) fp32 logits the policy samples from.
        greedy: take the argmax instead of sampling.
        position_arg: `last_position` -> the decode forward's `position_ids` (layout of the model).

    Returns:
        `Sampled` (tokens, logprobs, mask), each (B, T) with T <= max_new_tokens.
    """
    attn, pos = inputs["attention_mask"], last_position
    out = model(**inputs, use_cache=True, logits_to_keep=1)  # the prefill needs the next-token logits only
    b = attn.shape[0]
    done = torch.zeros(b, dtype=torch.bool, device=attn.device)
    toks, lps, masks = [], [], []
    for _ in range(max_new_tokens):
        logp = torch.log_softmax(process_logits(out.logits[:, -1]), -1)
        tok = logp.argmax(-1) if greedy else torch.multinomial(logp.exp(), 1).squeeze(-1)
        toks.append(torch.where(done, pad_token_id, tok))
        lps.append(torch.where(done, 0.0, logp.gather(-1, tok[:, None]).squeeze(-1)))
        masks.append(~done)
        done = done | (tok == eos_token_id)
        if bool(done.all()) or len(toks) == max_new_tokens:
            break
        attn = torch.cat([attn, attn.new_ones(b, 1)], 1)
        pos = pos + 1
        out = model(input_ids=toks[-1][:, None], attention_mask=attn, position_ids=position_arg(pos), use_cache=True,
                    **{_CACHE: getattr(out, _CACHE)})
    return Sampled(torch.stack(toks, 1), torch.stack(lps, 1), torch.stack(masks, 1))

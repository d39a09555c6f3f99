"""Token sampling with a KV cache, shared by the token adapters (`mmalign.text`, `mmalign.vlm`).

One prefill forward over the left-padded prompt, then one forward per new token on the cached keys and values.
A step's log-prob is log softmax of the adapter's processed logits (`scaled_logits`: temperature, banned tokens) at
the sampled token, so re-scoring the tokens with the same processing gives the same values. Each row stops at its
first EOS; later steps hold padding, log-prob 0, and are masked out.

Two decoders (`DECODERS`) do this: "eager" grows a dynamic KV cache and runs each step op by op; "compiled" writes
into a static KV cache allocated once per batch shape and runs the whole decode step (forward, logit processing,
sampling, log-prob gather, EOS masking) as one `torch.compile`d graph (inductor on the CPU; CUDA graphs through
`mode="reduce-overhead"` on a GPU), see `compiled_decode`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import Tensor

try:  # transformers renamed `past_key_values` to `cache` (5.x); support both spellings
    from transformers.modeling_outputs import CausalLMOutputWithPast

    CACHE_ARG = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
except ImportError:  # pragma: no cover
    CACHE_ARG = "past_key_values"


DECODERS = ("eager", "compiled")
"""What `sample_tokens(..., decoder=)` accepts (`GenerationSettings.decoder`)."""


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
                  greedy: bool = False, position_arg: Callable[[Tensor], Tensor] = _same,
                  decoder: str = "eager") -> Sampled:
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
        decoder: "eager" (a dynamic KV cache, op by op) or "compiled" (`compiled_decode`: a static KV cache and a
            compiled decode step); both keep the contract, the tokens sampled differ (different random streams),
            greedy ones agree.

    Returns:
        `Sampled` (tokens, logprobs, mask), each (B, T) with T <= max_new_tokens.
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder {decoder!r} is not one of {list(DECODERS)}")
    if decoder == "compiled":
        return compiled_decode(model, inputs, last_position, max_new_tokens, eos_token_id, pad_token_id,
                               process_logits, greedy, position_arg)
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
                    **{CACHE_ARG: getattr(out, CACHE_ARG)})
    return Sampled(torch.stack(toks, 1), torch.stack(lps, 1), torch.stack(masks, 1))


# --------------------------------------------------------------------------------------------------------------
# the compiled decoder


CACHE_BLOCK = 16
"""A static cache holds prompt + completion rounded up to a multiple of this many positions, so prompts of nearby
lengths share one cache shape and so one compiled graph."""

_caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(B, L): StaticCache}
_steps: dict[str, Callable] = {}  # device type -> the compiled `_decode_step`


def _choose(logits: Tensor, process_logits: Callable[[Tensor], Tensor], greedy: bool, done: Tensor, eos: int,
            pad: int) -> tuple[Tensor, Tensor, Tensor]:
    """Pick the next token of each row from its raw logits (B, V): (token, log-prob, done after it), each (B,).

    Sampling inverts the CDF: the first token whose cumulative probability reaches u ~ U(0, 1] (times the total,
    which rounding keeps near 1). One uniform draw a row instead of the Gumbel-max trick's one a token (2.4x less
    time per step at a 152k vocabulary on the CPU), no multinomial in the graph; a token of probability 0 is never
    drawn. Rows already done get `pad` and log-prob 0."""
    logp = torch.log_softmax(process_logits(logits), -1)
    if greedy:
        tok = logp.argmax(-1)
    else:
        cdf = logp.exp().cumsum(-1)
        u = (1 - torch.rand_like(cdf[:, -1:])) * cdf[:, -1:]
        tok = torch.searchsorted(cdf, u).squeeze(-1)
    lp = logp.gather(-1, tok[:, None]).squeeze(-1)
    return torch.where(done, pad, tok), torch.where(done, 0.0, lp), done | (tok == eos)


def _decode_step(model, process_logits, position_arg, greedy: bool, eos: int, pad: int, tok: Tensor, pos: Tensor,
                 attn: Tensor, cache, done: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One new token for every row: forward of the last token on the static cache, then `_choose`.
    Returns (token, log-prob, done, position), the inputs of the next step."""
    pos = pos + 1
    out = model(input_ids=tok[:, None], attention_mask=attn, position_ids=position_arg(pos), use_cache=True,
                **{CACHE_ARG: cache})
    return *_choose(out.logits[:, -1], process_logits, greedy, done, eos, pad), pos


DECODE_ATTENTION = "mmalign_decode"
"""The attention implementation name the compiled decode step runs an SDPA model's text layers with
(`_gqa_decode_attention`); registered with transformers' attention and mask interfaces on first use."""


def _gqa_decode_attention(module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                          dropout: float = 0.0, scaling: float | None = None, **kwargs) -> tuple[Tensor, None]:
    """Attention of one new token per row over the whole static cache, written out as two matrix products and a
    softmax that inductor fuses, without copying the keys and values once per query head (grouped-query attention):
    the query heads that share a key/value head become that head's queries, (B, H, 1, D) -> (B, KV, H / KV, D), as
    transformers' eager decode does (`pack_gqa`). Under `torch.compile` transformers' SDPA path would repeat the
    cache H / KV times on every step, and the CPU's fused SDPA kernel costs more than the products at one query.
    Longer queries go to its SDPA."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, h, q, d = query.shape
    if q != 1 or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    kv = key.shape[1]
    scores = query.reshape(b, kv, h // kv, d) @ key.transpose(-1, -2) * (d**-0.5 if scaling is None else scaling)
    if attention_mask is not None and attention_mask.dtype == torch.bool:  # True where a position may be seen
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    elif attention_mask is not None:  # additive
        scores = scores + attention_mask
    return (scores.softmax(-1) @ value).reshape(b, 1, h, d), None


@contextmanager
def _decode_attention(model):
    """Run an SDPA model's text layers with `_gqa_decode_attention` inside the block (other models as they are)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    config = model.config.get_text_config(decoder=True)
    if config._attn_implementation != "sdpa":
        yield
        return
    AttentionInterface.register(DECODE_ATTENTION, _gqa_decode_attention)
    AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)
    config._attn_implementation = DECODE_ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = "sdpa"


def _compiled_step(device: torch.device) -> Callable:
    kind = device.type
    if kind not in _steps:
        # CUDA graphs replay the whole step with one launch. The CPU has no use for them; there inductor's C++
        # wrapper calls the kernels without the Python wrapper's ~1 ms a step, and torch's own random numbers
        # (`fallback_random`) cost less than inductor's Philox draws
        options = {"mode": "reduce-overhead"} if kind == "cuda" else \
            {"options": {"cpp_wrapper": True, "fallback_random": True}}
        _steps[kind] = torch.compile(_decode_step, dynamic=False, **options)
    return _steps[kind]


def _static_cache(model, batch: int, length: int):
    """The model's static KV cache for `batch` rows of `length` positions, allocated on first use and reset after."""
    from transformers import StaticCache

    caches = _caches.setdefault(model, {})
    if (batch, length) not in caches:
        if len(caches) >= 4:  # bound the memory held by caches of old batch shapes
            caches.pop(next(iter(caches)))
        config = model.config if hasattr(model, "config") else model.get_base_model().config
        caches[batch, length] = StaticCache(config=config, max_cache_len=length)
    cache = caches[batch, length]
    cache.reset()
    return cache


@torch.no_grad()
def compiled_decode(model, inputs: dict[str, Any], last_position: Tensor, max_new_tokens: int, eos_token_id: int,
                    pad_token_id: int, process_logits: Callable[[Tensor], Tensor] = scaled_logits,
                    greedy: bool = False, position_arg: Callable[[Tensor], Tensor] = _same) -> Sampled:
    """`sample_tokens` on a static KV cache with a compiled decode step (the arguments are the same).

    The prefill runs eagerly into a `transformers.StaticCache` of prompt + `max_new_tokens` positions (rounded up to
    `CACHE_BLOCK`); each later token is one call of the compiled `_decode_step`, whose shapes never change within a
    batch: the attention mask covers the whole cache from the start (positions not yet written are hidden by the
    causal mask). Rows past their EOS keep running, masked (static shapes); the loop stops once every row is done,
    checked every few steps, and the result is trimmed to the same length as the eager decoder's.
    """
    attn = inputs["attention_mask"]
    b, p = attn.shape
    length = -(-(p + max_new_tokens) // CACHE_BLOCK) * CACHE_BLOCK
    cache = _static_cache(model, b, length)
    out = model(**inputs, use_cache=True, logits_to_keep=1, **{CACHE_ARG: cache})
    done = torch.zeros(b, dtype=torch.bool, device=attn.device)
    tok, lp, done = _choose(out.logits[:, -1], process_logits, greedy, done, eos_token_id, pad_token_id)
    full = torch.cat([attn, attn.new_ones(b, length - p)], 1)
    step, cuda = _compiled_step(attn.device), attn.device.type == "cuda"
    toks, lps, dones, pos = [tok], [lp], [done], last_position.contiguous()  # the strides of every later step's
    with _decode_attention(model):
        while len(toks) < max_new_tokens and not (len(toks) % 8 == 0 and bool(done.all())):
            if cuda:
                torch.compiler.cudagraph_mark_step_begin()
            # the first call picks (or compiles) the graph by its guards; the later ones have the same inputs
            with torch.compiler.set_stance(skip_guard_eval_unsafe=len(toks) > 1):
                tok, lp, done, pos = step(model, process_logits, position_arg, greedy, eos_token_id, pad_token_id,
                                          tok, pos, full, cache, done)
            if cuda:  # a CUDA graph's outputs are overwritten by its next replay
                tok, lp, done, pos = tok.clone(), lp.clone(), done.clone(), pos.clone()
            toks.append(tok)
            lps.append(lp)
            dones.append(done)
    # mask of step t: the row was not done before it (the EOS itself counts)
    mask = ~torch.stack([torch.zeros_like(done)] + dones[:-1], 1)
    t = int(mask.any(0).nonzero().max()) + 1
    return Sampled(torch.stack(toks, 1)[:, :t], torch.stack(lps, 1)[:, :t], mask[:, :t])

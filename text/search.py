"""Token-level searches of a text policy (`mmalign.text.policy.CausalLMPolicy`) under rewards.

- `lookahead_decode`, DeAL (Huang et al. 2024): decoding as search: at each step the top-k next tokens of the model
  are expanded by a greedy lookahead of `depth` tokens and scored by the rewards (any callables, several at once,
  non-differentiable ones included); the best-scored token is kept. k = 1 is greedy decoding.
- `value_guided_decode`, Transfer Q* (Chakraborty et al. 2024, eq. 7): the next token is sampled from
  pi_ref(y_t) exp(alpha Q(y_t)) over the top-k tokens of pi_ref, where Q(y_t) is the reward of a completion that a
  baseline-aligned model rolls out from the prefix and y_t. alpha = 0 is top-k sampling from pi_ref.

Each returns the decoded texts and a `mmalign.decoding.Cost` (model forwards, generated tokens), as best-of-N does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from mmalign.decoding.search import Cost
from mmalign.generate import sample_tokens, scaled_logits
from mmalign.task import check_rewards


def _positions(attn: Tensor) -> Tensor:
    return (attn.long().cumsum(-1) - 1).clamp(min=0)


def _next_logp(policy, model, ids: Tensor, attn: Tensor) -> Tensor:
    """(B, V) log-probs of the next token under `model` (the policy's temperature), full forward over the prefix."""
    logits = model(input_ids=ids, attention_mask=attn, position_ids=_positions(attn)).logits[:, -1]
    return torch.log_softmax(scaled_logits(logits, policy.temperature), -1)


def _complete(policy, model, ids: Tensor, attn: Tensor, budget: int, greedy: bool) -> tuple[Tensor, Tensor]:
    """Continue each row of (ids, attn) by up to `budget` tokens of `model`: (tokens, mask) (R, T)."""
    pos = _positions(attn)
    tok = policy.tokenizer
    out = sample_tokens(model, {"input_ids": ids, "attention_mask": attn, "position_ids": pos}, pos[:, -1:], budget,
                        tok.eos_token_id, tok.pad_token_id, lambda x: scaled_logits(x, policy.temperature), greedy)
    return out.tokens, out.mask


def _expand(policy, model, ids, attn, cand: Tensor, depth: int, greedy: bool, cost: Cost) -> tuple[Tensor, Tensor]:
    """Rows (B * k) of each prefix followed by each candidate token (B, k) and `depth` more tokens of `model`."""
    k = cand.shape[1]
    ids_k = torch.cat([ids.repeat_interleave(k, 0), cand.reshape(-1, 1)], 1)
    attn_k = torch.cat([attn.repeat_interleave(k, 0), attn.new_ones(len(ids_k), 1)], 1)
    if depth == 0:
        return ids_k, attn_k
    toks, mask = _complete(policy, model, ids_k, attn_k, depth, greedy)
    mask = mask & (cand.reshape(-1, 1) != policy.tokenizer.eos_token_id)  # a candidate EOS ends its row
    cost.model_calls, cost.tokens = cost.model_calls + toks.shape[1], cost.tokens + int(mask.sum())
    return torch.cat([ids_k, toks], 1), torch.cat([attn_k, mask.long()], 1)


def _texts(policy, ids: Tensor, attn: Tensor, prompt_len: int) -> list[str]:
    comp = ids[:, prompt_len:].masked_fill(attn[:, prompt_len:] == 0, policy.tokenizer.pad_token_id)
    return policy.tokenizer.batch_decode(comp, skip_special_tokens=True)


def _scores(policy, model, ids, attn, cand, depth, greedy, cost, rows, reward, prompt_len) -> Tensor:
    """(B, k) reward of each prefix + candidate continued by `model`."""
    full_ids, full_attn = _expand(policy, model, ids, attn, cand, depth, greedy, cost)
    texts = _texts(policy, full_ids, full_attn, prompt_len)
    return check_rewards(reward(rows, texts), len(rows), "reward").view(cand.shape)


@torch.no_grad()
def _token_search(policy, contexts: Sequence, score_model, k: int, depth: int, greedy_rollout: bool,
                  reward: Callable, pick: Callable[[Tensor, Tensor], Tensor]) -> tuple[list[str], Cost]:
    """The loop both searches share: top-k of the policy, each candidate continued by `score_model` and scored by
    `reward`, `pick(top-k log-probs, scores) -> (B,) index into the top-k`."""
    ids, attn = policy.encode(contexts)
    prompt_len, eos, pad = ids.shape[1], policy.tokenizer.eos_token_id, policy.tokenizer.pad_token_id
    done, cost = torch.zeros(len(ids), dtype=torch.bool, device=ids.device), Cost()
    rows = [c for c in contexts for _ in range(k)]
    for t in range(policy.max_new_tokens):
        logp = _next_logp(policy, policy.model, ids, attn)
        cost.model_calls += 1
        top, cand = logp.topk(k, -1)
        if k == 1:  # one candidate: nothing to score, greedy decoding
            choice = cand[:, 0]
        else:
            scores = _scores(policy, score_model, ids, attn, cand, min(depth, policy.max_new_tokens - t - 1),
                             greedy_rollout, cost, rows, reward, prompt_len)
            choice = cand.gather(1, pick(top, scores.to(top))[:, None]).squeeze(1)
        tok = torch.where(done, pad, choice)
        ids, attn = torch.cat([ids, tok[:, None]], 1), torch.cat([attn, (~done).long()[:, None]], 1)
        cost.tokens += int((~done).sum())
        done = done | (tok == eos)
        if bool(done.all()):
            break
    return _texts(policy, ids, attn, prompt_len), cost


def lookahead_decode(policy, contexts: Sequence, reward: Callable, k: int = 4, depth: int = 4):
    """DeAL: the top-k token whose greedy `depth`-token lookahead scores highest under `reward` (ties: the more
    likely token). `reward` may be a `CombinedReward`-like callable returning one number per output."""
    if k < 1 or depth < 0:
        raise ValueError(f"lookahead search needs k >= 1 and depth >= 0, got k={k}, depth={depth}.")

    def pick(top: Tensor, scores: Tensor) -> Tensor:
        return (scores + 1e-6 * top.softmax(-1)).argmax(1)  # the likelier token breaks a tie

    return _token_search(policy, contexts, policy.model, k, depth, True, reward, pick)


def value_guided_decode(policy, contexts: Sequence, reward: Callable, aligned, k: int = 4, alpha: float = 1.0,
                        depth: int | None = None, generator: torch.Generator | None = None):
    """Transfer Q*: sample from pi_ref(y_t) exp(alpha Q(y_t)) over pi_ref's top-k, Q estimated by one rollout of the
    baseline-aligned causal LM `aligned` (same vocabulary) to the end (or `depth` tokens), scored by `reward`."""
    if k < 1:
        raise ValueError(f"value-guided decoding needs k >= 1, got {k}.")

    def pick(top: Tensor, q: Tensor) -> Tensor:
        return torch.multinomial(torch.softmax(top + alpha * q, -1), 1, generator=generator).squeeze(1)

    return _token_search(policy, contexts, aligned, k, policy.max_new_tokens if depth is None else depth, False,
                         reward, pick)

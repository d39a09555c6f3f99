"""Offline preference training (DPO family, TPO, CoPG, PRO) over any adapter that can re-score given outputs.

The adapter turns (contexts, given outputs) into a teacher-forced `Rollout` with `rollout_from`; sequence scores
are the masked sum (or mean) of its per-step log-probs. Rows hold a prompt and either "chosen" / "rejected" or
"responses" (best first, or with "rewards" to rank by); TPO reads a gold answer from "gold" or "references"[0].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mmalign import preference as P
from mmalign.algorithms import Algorithm
from mmalign.config import check_choice, check_numbers
from mmalign.rollout import Rollout

LOSSES = ("dpo", "ipo", "robust", "tpo", "tpo-l", "copg", "pro")


@dataclass
class PreferenceConfig:
    loss: str = "dpo"
    """One of dpo, ipo, robust, tpo, tpo-l, copg, pro."""
    beta: float = 0.1
    """Inverse temperature of the log-ratio (or reward regulariser for CoPG)."""
    label_smoothing: float = 0.0
    """cDPO / TPO label smoothing."""
    robust_eps: float = 0.1
    """Assumed label-flip rate of robust DPO."""
    alpha: float = 1.0
    """TPO weight of the gold-answer NLL."""
    gamma: float = 0.5
    """TPO-L target margin."""
    sft_weight: float = 0.0
    """PRO weight of the NLL of the best response."""

    def __post_init__(self) -> None:
        check_choice(self, "loss", LOSSES)
        check_numbers(self, "beta", gt=0)
        check_numbers(self, "label_smoothing", ge=0, le=0.5)
        check_numbers(self, "robust_eps", ge=0, lt=0.5)
        check_numbers(self, "alpha", "sft_weight", ge=0)


def sequence_logps(logprobs: Tensor, mask: Tensor, average: bool = False) -> Tensor:
    """(B, T) step log-probs -> (B,) sum (or mean) over real steps."""
    total = (logprobs * mask).sum(-1)
    return total / mask.sum(-1).clamp(min=1) if average else total


def responses_of(rows: list[dict]) -> tuple[list[list[str]], Tensor | None]:
    """Responses per row (best first when there are no rewards) and their rewards (B, n) if given."""
    if all("chosen" in r and "rejected" in r for r in rows):
        return [[r["chosen"], r["rejected"]] for r in rows], None
    if all("responses" in r for r in rows):
        n = {len(r["responses"]) for r in rows}
        if len(n) != 1 or n.pop() < 2:
            raise ValueError("every row needs the same number (>= 2) of 'responses'.")
        rewards = torch.tensor([r["rewards"] for r in rows]) if all("rewards" in r for r in rows) else None
        return [list(r["responses"]) for r in rows], rewards
    raise ValueError("preference rows need 'chosen' and 'rejected', or 'responses' (and optionally 'rewards').")


def _gold(rows: list[dict]) -> list[str]:
    try:
        return [r["gold"] if "gold" in r else r["references"][0] for r in rows]
    except (KeyError, IndexError) as e:
        raise ValueError("TPO needs a gold answer per row: a 'gold' key or a non-empty 'references' list.") from e


def preference_loss(policy, rows: list[dict], cfg: PreferenceConfig, denom: Tensor | float | None = None
                    ) -> tuple[Tensor, dict]:
    """Loss of one micro-batch of preference rows: the sum of per-row losses / `denom` (default: rows)."""
    responses, rewards = responses_of(rows)
    n = len(responses[0])
    rolls: list[Rollout] = [policy.rollout_from(rows, [r[k] for r in responses]) for k in range(n)]
    avg = cfg.loss in ("tpo-l", "pro")
    logps = torch.stack([sequence_logps(policy.logprobs(r), r.mask, avg) for r in rolls], 1)  # (B, n)
    needs_ref = cfg.loss in ("dpo", "ipo", "robust", "copg")
    ref = torch.stack([sequence_logps(policy.ref_logprobs(r), r.mask) for r in rolls], 1) if needs_ref else None
    losses = _losses(policy, rows, cfg, logps, ref, rewards, rolls)
    metrics = {"pref_acc": (logps[:, 0] - (ref[:, 0] if needs_ref else 0) >
                            logps[:, 1] - (ref[:, 1] if needs_ref else 0)).float().mean()}
    return losses.sum() / (len(rows) if denom is None else denom), metrics


def _losses(policy, rows, cfg: PreferenceConfig, logps: Tensor, ref: Tensor | None, rewards: Tensor | None,
            rolls: list[Rollout]) -> Tensor:
    c, r = logps[:, 0], logps[:, 1]
    if cfg.loss == "dpo":
        return P.dpo_loss(c, r, ref[:, 0], ref[:, 1], cfg.beta, cfg.label_smoothing).losses
    if cfg.loss == "ipo":
        lens = [roll.mask.sum(-1).float() for roll in rolls[:2]]
        return P.ipo_loss(c, r, ref[:, 0], ref[:, 1], cfg.beta, *lens).losses
    if cfg.loss == "robust":
        return P.robust_dpo_loss(c, r, ref[:, 0], ref[:, 1], cfg.beta, cfg.robust_eps).losses
    if cfg.loss in ("tpo", "tpo-l"):
        gold = policy.rollout_from(rows, _gold(rows))
        gold_lp = sequence_logps(policy.logprobs(gold), gold.mask, average=True)
        fn = P.tpo_loss if cfg.loss == "tpo" else P.tpo_l_loss
        extra = {} if cfg.loss == "tpo" else {"gamma": cfg.gamma}
        return fn(c, r, gold_lp, cfg.beta, cfg.alpha, label_smoothing=cfg.label_smoothing, **extra).losses
    if cfg.loss == "copg":
        if rewards is None:  # pairs: R(chosen) - R(rejected) = 1/2 makes CoPG beta^2 x IPO (Flet-Berliac et al.)
            rewards = torch.tensor([[0.5, 0.0]]).expand(len(rows), 2)
        return P.copg_loss(rewards.to(logps), logps, ref, cfg.beta)
    sft = sequence_logps(policy.logprobs(rolls[0]), rolls[0].mask) if cfg.sft_weight > 0 else None
    out = P.pro_loss(logps, None if rewards is None else rewards.to(logps), sft, cfg.sft_weight)
    return out.rank if out.sft is None else out.rank + out.sft


PREFERENCE = Algorithm(PreferenceConfig, None, preference_loss)

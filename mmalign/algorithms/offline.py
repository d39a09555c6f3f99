"""Offline preference training over any adapter that can re-score given outputs: DPO (cDPO), IPO, robust DPO, TPO,
TPO-L, CoPG, PRO and GRAO, each a small loss function in the `LOSSES` registry.

The adapter turns (contexts, given outputs) into a teacher-forced `Rollout` with `rollout_from`; a response's score
is the masked sum (or mean) of its per-step log-probs. Rows hold a prompt and either "chosen" / "rejected" or
"responses" (best first, or with "rewards" to rank by); TPO and GRAO read a gold answer from "gold" or
"references"[0], GRAO also the gold answer's reward from "gold_reward". `PreferenceConfig.loss` names the registry
entry once, at config time; the entry declares whether the loss needs the frozen reference (its log-probs are
computed only then), whether it scores responses by summed or length-averaged log-probs, and whether it reads the
gold answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from mmalign import preference as P
from mmalign.algorithms import Algorithm
from mmalign.config import check_choice, check_numbers
from mmalign.rollout import Rollout


@dataclass
class PreferenceConfig:
    loss: str = "dpo"
    """A name in `LOSSES`: dpo, ipo, robust, tpo, tpo-l, copg, pro, grao, arm (GenARM's reward model)."""
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
    grao_beta: float = 0.5
    """GRAO imitation weight beta (Wang et al. 2025: 0.5)."""
    grao_lambda: float = 0.6
    """GRAO alignment weight lambda (Wang et al. 2025: 0.6)."""

    def __post_init__(self) -> None:
        check_choice(self, "loss", LOSSES)
        check_numbers(self, "beta", gt=0)
        check_numbers(self, "label_smoothing", ge=0, le=0.5)
        check_numbers(self, "robust_eps", ge=0, lt=0.5)
        check_numbers(self, "alpha", "sft_weight", "grao_beta", "grao_lambda", ge=0)


@dataclass
class Scores:
    """What a loss reads for a micro-batch of B rows with n responses each (response 0 is the chosen / best one).

    Attributes:
        logps: (B, n) policy score of each response, with grad: its summed log-probs, or the length-averaged ones
            when the loss averages.
        sums: (B, n) summed policy log-probs, with grad.
        lengths: (B, n) real steps of each response.
        ref: (B, n) summed log-probs under the frozen reference, or None when the loss needs no reference.
        rewards: (B, n) the rows' rewards, or None when they give none.
        gold: (B,) length-averaged policy log-prob of the gold answer, with grad, or None when the loss reads none.
        gold_rewards: (B,) the rows' "gold_reward", or None when they give none.
    """

    logps: Tensor
    sums: Tensor
    lengths: Tensor
    ref: Tensor | None = None
    rewards: Tensor | None = None
    gold: Tensor | None = None
    gold_rewards: Tensor | None = None


class PreferenceLoss(NamedTuple):
    """A registered loss and what it needs."""

    fn: Callable[[Scores, PreferenceConfig], Tensor]
    """(scores, cfg) -> (B,) loss of each row."""
    needs_reference: bool
    """Compute the frozen reference's summed log-probs (`Scores.ref`)."""
    average: bool
    """Score responses by length-averaged log-probs (`Scores.logps`); else by summed ones."""
    needs_gold: bool = False
    """Score the rows' gold answer (`Scores.gold`)."""


def _dpo(s: Scores, cfg: PreferenceConfig) -> Tensor:
    # DPO Eq. 7 (Rafailov et al. 2023), cDPO with label smoothing
    return P.dpo_loss(s.logps[:, 0], s.logps[:, 1], s.ref[:, 0], s.ref[:, 1], cfg.beta, cfg.label_smoothing).losses


def _ipo(s: Scores, cfg: PreferenceConfig) -> Tensor:
    # IPO Eq. 17 on length-normalised log-ratios, as TRL
    return P.ipo_loss(s.logps[:, 0], s.logps[:, 1], s.ref[:, 0], s.ref[:, 1], cfg.beta, s.lengths[:, 0],
                      s.lengths[:, 1]).losses


def _robust(s: Scores, cfg: PreferenceConfig) -> Tensor:
    return P.robust_dpo_loss(s.logps[:, 0], s.logps[:, 1], s.ref[:, 0], s.ref[:, 1], cfg.beta, cfg.robust_eps).losses


def _tpo(s: Scores, cfg: PreferenceConfig) -> Tensor:
    return P.tpo_loss(s.logps[:, 0], s.logps[:, 1], s.gold, cfg.beta, cfg.alpha, cfg.label_smoothing).losses


def _tpo_l(s: Scores, cfg: PreferenceConfig) -> Tensor:
    return P.tpo_l_loss(s.logps[:, 0], s.logps[:, 1], s.gold, cfg.beta, cfg.alpha, cfg.gamma,
                        cfg.label_smoothing).losses


def _copg(s: Scores, cfg: PreferenceConfig) -> Tensor:
    rewards = s.rewards
    if rewards is None:  # pairs: R(chosen) - R(rejected) = 1/2 makes CoPG beta^2 x IPO (Flet-Berliac et al.)
        rewards = torch.tensor([[0.5, 0.0]]).expand(len(s.logps), 2)
    return P.copg_loss(rewards.to(s.logps), s.logps, s.ref, cfg.beta)


def _pro(s: Scores, cfg: PreferenceConfig) -> Tensor:
    sft = s.sums[:, 0] if cfg.sft_weight > 0 else None
    out = P.pro_loss(s.logps, None if s.rewards is None else s.rewards.to(s.logps), sft, cfg.sft_weight)
    return out.rank if out.sft is None else out.rank + out.sft


def _arm(s: Scores, cfg: PreferenceConfig) -> Tensor:
    # GenARM's autoregressive reward model (Xu et al. 2025, eq. 4-5): r(x, y) = sum_t log pi_r(y_t | x, y_<t), trained
    # with the Bradley-Terry loss -log sigmoid(beta (r(x, y_w) - r(x, y_l))); no reference
    return P.bradley_terry_loss(cfg.beta * s.logps[:, 0], cfg.beta * s.logps[:, 1])


def _grao(s: Scores, cfg: PreferenceConfig) -> Tensor:
    if s.rewards is None or s.gold_rewards is None:
        raise ValueError("GRAO needs rewards: rows with 'responses' and their 'rewards', a gold answer ('gold' or "
                         "'references') and its reward 'gold_reward'.")
    return P.grao_loss(s.logps, s.rewards.to(s.logps), s.gold, s.gold_rewards.to(s.logps), cfg.grao_beta,
                       cfg.grao_lambda)


LOSSES: dict[str, PreferenceLoss] = {
    "dpo": PreferenceLoss(_dpo, needs_reference=True, average=False),
    "ipo": PreferenceLoss(_ipo, needs_reference=True, average=False),
    "robust": PreferenceLoss(_robust, needs_reference=True, average=False),
    "tpo": PreferenceLoss(_tpo, needs_reference=False, average=False, needs_gold=True),
    "tpo-l": PreferenceLoss(_tpo_l, needs_reference=False, average=True, needs_gold=True),
    "copg": PreferenceLoss(_copg, needs_reference=True, average=False),
    "pro": PreferenceLoss(_pro, needs_reference=False, average=True),
    "grao": PreferenceLoss(_grao, needs_reference=False, average=True, needs_gold=True),
    "arm": PreferenceLoss(_arm, needs_reference=False, average=False),
}
"""The direct preference losses a config can name (`preference.loss`)."""


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
        raise ValueError("TPO and GRAO need a gold answer per row: a 'gold' key or a non-empty 'references' "
                         "list.") from e


def given_rollouts(policy, contexts: Sequence, outputs: list[list]) -> list[Rollout]:
    """One teacher-forced rollout per list of given outputs (`policy.rollout_from`), all with the same random draws.

    An adapter whose score of a given output is random draws from the generator it is handed (Diffusion-DPO: a
    noise and a timestep per row). Every list gets a generator in the same state, so all outputs of a row share
    their draws: chosen and rejected images are noised alike (Wallace et al. 2023, Eq. 14). The global RNG then
    moves on as after one list.
    """
    start, rolls = torch.get_rng_state(), []
    for given in outputs:
        generator = torch.Generator()
        generator.set_state(start)
        rolls.append(policy.rollout_from(contexts, given, generator=generator))
    torch.set_rng_state(generator.get_state())
    return rolls


def _scores(policy, rows: list[dict], spec: PreferenceLoss) -> Scores:
    """Score every response (and the gold answer when the loss reads it) of a micro-batch of rows."""
    responses, rewards = responses_of(rows)
    n = len(responses[0])
    given = [[r[k] for r in responses] for k in range(n)] + ([_gold(rows)] if spec.needs_gold else [])
    rolls = given_rollouts(policy, rows, given)
    steps = [policy.logprobs(r) for r in rolls]
    sums = torch.stack([sequence_logps(lp, r.mask) for lp, r in zip(steps[:n], rolls)], 1)  # (B, n)
    lengths = torch.stack([r.mask.sum(-1) for r in rolls[:n]], 1)
    ref = None
    if spec.needs_reference:
        ref = torch.stack([sequence_logps(policy.ref_logprobs(r), r.mask) for r in rolls[:n]], 1)
    gold = sequence_logps(steps[n], rolls[n].mask, average=True) if spec.needs_gold else None
    gold_rewards = torch.tensor([float(r["gold_reward"]) for r in rows]) if all(
        "gold_reward" in r for r in rows) else None
    return Scores(sums / lengths.clamp(min=1) if spec.average else sums, sums, lengths.float(), ref, rewards, gold,
                  gold_rewards)


def preference_loss(policy, rows: list[dict], cfg: PreferenceConfig, denom: Tensor | float | None = None
                    ) -> tuple[Tensor, dict]:
    """Loss of one micro-batch of preference rows: the sum of per-row losses / `denom` (default: rows)."""
    spec = LOSSES[cfg.loss]
    s = _scores(policy, rows, spec)
    losses = spec.fn(s, cfg)
    margin = s.logps if s.ref is None else s.logps - s.ref
    metrics = {"pref_acc": (margin[:, 0] > margin[:, 1]).float().mean()}
    return losses.sum() / (len(rows) if denom is None else denom), metrics


PREFERENCE = Algorithm(PreferenceConfig, None, preference_loss)

"""Preference-learning losses as pure tensor functions.

Every function takes per-sequence scores that the caller has already reduced over steps (summed or length-averaged
log-probs, rewards) and returns **per-example losses** of shape (B,): the reduction over the batch (mean, sum, a token
normaliser) belongs to the caller. Nothing here reads a model, a tokenizer or a `Rollout`.

Contents:

- reward models: `bradley_terry_loss`; Bayesian reward-model ensembles (BRME): `gaussian_preference_loss` per
  Gaussian head and `brme_reward`, the robust mix of the nominal head and the worst head.
- DPO family on sequence log-ratios (policy vs. frozen reference): `dpo_loss` (with cDPO label smoothing),
  `ipo_loss`, `robust_dpo_loss`.
- reference-free: `tpo_loss`, `tpo_l_loss` (chosen/rejected contrast plus NLL on a gold answer).
- listwise and group losses: `pro_loss` (ranking with reward-gap temperatures), `copg_loss` (contrastive policy
  gradient over k samples), `grao_loss` (group relative alignment optimisation with a reference answer).

Pairwise functions return a `PairLoss` whose implicit rewards are detached, for logging only.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

# PRO's reference code adds this inside the log of its listwise softmax (compute_loss in DAMO-ConvAI PRO).
PRO_LOG_EPS = 1e-10


class PairLoss(NamedTuple):
    """Per-pair losses and the implicit rewards that go with them.

    Attributes:
        losses: (B,) loss of each pair, with grad; reduce it yourself (usually `.mean()`).
        chosen_rewards: (B,) implicit reward of the chosen response, detached (for logging).
        rejected_rewards: (B,) implicit reward of the rejected response, detached (for logging).
    """

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor


class PROLoss(NamedTuple):
    """PRO's two terms, kept apart so both can be logged.

    Attributes:
        rank: (B,) listwise ranking loss, summed over the n - 1 ranking stages.
        sft: (B,) weighted NLL of the SFT target, or None when no `sft_logps` were given. Total = rank + sft.
    """

    rank: Tensor
    sft: Tensor | None


# ---------------------------------------------------------------------------------------------------------------------
# validation helpers


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"These inputs must all have the same shape (one value per example), got {shapes}.")


def _check_2d(expected: tuple[int, int] | None = None, **tensors: Tensor) -> tuple[int, int]:
    for name, t in tensors.items():
        if t.dim() != 2:
            raise ValueError(f"`{name}` must be 2-D (B, n): one row of n responses per prompt; got {tuple(t.shape)}.")
    _check_same_shape(**tensors)
    shape = tuple(next(iter(tensors.values())).shape)
    if expected is not None and shape != expected:
        raise ValueError(f"Inputs of shape {shape} do not match the (B, n) = {expected} of the other inputs.")
    return shape


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"`{name}` must be > 0, got {value}.")


def _check_non_negative(name: str, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"`{name}` must be >= 0, got {value}.")


def _soft_logistic(logits: Tensor, p: Tensor | float) -> Tensor:
    """Cross-entropy of sigmoid(logits) against target probability p: -p log s(x) - (1 - p) log s(-x)."""
    return -p * F.logsigmoid(logits) - (1 - p) * F.logsigmoid(-logits)


# ---------------------------------------------------------------------------------------------------------------------
# reward models


def bradley_terry_loss(
    reward_chosen: Tensor,
    reward_rejected: Tensor,
    margin: Tensor | float | None = None,
    label: Tensor | None = None,
) -> Tensor:
    """Bradley-Terry negative log-likelihood of a pairwise preference, for training a reward model.

    Args:
        reward_chosen: (B,) reward of the response labelled as chosen.
        reward_rejected: (B,) reward of the other response.
        margin: optional (B,) or scalar >= 0: the preferred response must win by at least this much (the Llama-2
            margin, TRL's RewardTrainer `margin` column). With soft labels it applies to both directions.
        label: optional (B,) probability in [0, 1] that `chosen` is really preferred (soft labels; 1 = hard label).

    Returns:
        (B,) loss of each pair: -log s(d - m) for hard labels, with d = r_chosen - r_rejected.
    """
    _check_same_shape(reward_chosen=reward_chosen, reward_rejected=reward_rejected)
    if label is not None:
        _check_same_shape(reward_chosen=reward_chosen, label=label)
        if bool(((label < 0) | (label > 1)).any()):
            raise ValueError("`label` must hold probabilities in [0, 1] that the chosen response is preferred.")
    diff = reward_chosen - reward_rejected
    m = 0.0 if margin is None else margin
    if label is None:
        # Bradley & Terry (1952); InstructGPT Eq. 1, with the Llama-2 margin: -log s(r_w - r_l - m)
        return -F.logsigmoid(diff - m)
    # soft labels: p * -log s(d - m) + (1 - p) * -log s(-d - m)
    return -label * F.logsigmoid(diff - m) - (1 - label) * F.logsigmoid(-diff - m)


def gaussian_preference_loss(
    mean_chosen: Tensor,
    std_chosen: Tensor,
    mean_rejected: Tensor,
    std_rejected: Tensor,
    sigma0: float = 1.0,
    beta: float = 0.0,
) -> Tensor:
    """Bradley-Terry NLL of a Gaussian reward head, with a KL pull of its scale towards a prior scale.

    A head predicts r ~ N(mean, std^2) for each response (BRME, Yan et al. 2024, arXiv 2409.15360, Sec. 3.2). With
    d = r_c - r_r ~ N(mu, v), mu = mean_c - mean_r, v = std_c^2 + std_r^2, the preference probability E[s(d)] is
    taken in closed form with the probit approximation s(mu / sqrt(1 + pi v / 8)) (MacKay 1992), so a wide head
    predicts a flatter preference and the loss needs no noise draws. The regulariser is
    KL(N(m, std^2) || N(m, sigma0^2)) = log(sigma0 / std) + std^2 / (2 sigma0^2) - 1/2 on both responses
    (as `mmalign.robotics.rrl`); without it, std collapses to 0 on pairs the head separates.

    Args:
        mean_chosen: (B, K) means of K heads on the chosen response (or (B,) for one head).
        std_chosen: (B, K) standard deviations, > 0.
        mean_rejected: (B, K) means on the rejected response.
        std_rejected: (B, K) standard deviations, > 0.
        sigma0: prior scale of the KL term, > 0.
        beta: weight of the KL term, >= 0.

    Returns:
        (B, K) loss of each pair under each head: -log s(mu / sqrt(1 + pi v / 8)) + beta * (KL_c + KL_r).
    """
    _check_same_shape(mean_chosen=mean_chosen, std_chosen=std_chosen, mean_rejected=mean_rejected,
                      std_rejected=std_rejected)
    _check_positive("sigma0", sigma0)
    _check_non_negative("beta", beta)
    var = std_chosen.square() + std_rejected.square()
    nll = -F.logsigmoid((mean_chosen - mean_rejected) / torch.sqrt(1 + torch.pi * var / 8))

    kl = gaussian_kl_to_scale(std_chosen, sigma0) + gaussian_kl_to_scale(std_rejected, sigma0)
    return nll + beta * kl if beta else nll


def gaussian_kl_to_scale(std: Tensor, sigma0: float) -> Tensor:
    """KL(N(mu, std^2) || N(mu, sigma0^2)) elementwise (same mean, so only the scales enter): the scale regulariser
    of BRME's heads and of PEARL's robust reward model."""
    return torch.log(sigma0 / std) + std.pow(2) / (2 * sigma0**2) - 0.5


def brme_reward(means: Tensor, stds: Tensor, lam: float) -> Tensor:
    """The reward-robust objective's reward: lam * nominal + (1 - lam) * worst case over the ensemble.

    Yan et al. 2024 (arXiv 2409.15360), Eq. 2: J_lam = lam * J_perform + (1 - lam) * J_robust, with the nominal reward
    the mean of the most confident head (the smallest std) and the robust reward the minimum over the heads' means.

    Args:
        means: (B, K) reward means of K heads.
        stds: (B, K) their standard deviations.
        lam: weight of the nominal reward in [0, 1]; 1 is the nominal head alone, 0 the worst case alone.

    Returns:
        (B,) rewards.
    """
    _check_2d(means=means, stds=stds)
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"`lam` weighs the nominal reward against the worst case and must lie in [0, 1], got {lam}.")
    nominal = means.gather(1, stds.argmin(1, keepdim=True)).squeeze(1)
    return lam * nominal + (1 - lam) * means.min(1).values


# ---------------------------------------------------------------------------------------------------------------------
# DPO family: inputs are summed log-probs (B,) of chosen / rejected under the policy and the frozen reference


def _log_ratios(
    policy_chosen_logps: Tensor, policy_rejected_logps: Tensor, ref_chosen_logps: Tensor, ref_rejected_logps: Tensor
) -> tuple[Tensor, Tensor]:
    _check_same_shape(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    return policy_chosen_logps - ref_chosen_logps, policy_rejected_logps - ref_rejected_logps


def _pair_loss(losses: Tensor, chosen_scores: Tensor, rejected_scores: Tensor, beta: float) -> PairLoss:
    return PairLoss(losses, beta * chosen_scores.detach(), beta * rejected_scores.detach())


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> PairLoss:
    """DPO sigmoid loss, with conservative-DPO (cDPO) label smoothing.

    Args:
        policy_chosen_logps: (B,) summed log-prob of the chosen response under the policy (with grad).
        policy_rejected_logps: (B,) same for the rejected response.
        ref_chosen_logps: (B,) summed log-prob of the chosen response under the frozen reference.
        ref_rejected_logps: (B,) same for the rejected response.
        beta: KL strength, > 0 (TRL default 0.1).
        label_smoothing: eps in [0, 0.5], the assumed probability that a label is flipped (cDPO); 0 = plain DPO.

    Returns:
        PairLoss with losses (B,) and implicit rewards beta * log(pi / pi_ref) of each response.
    """
    _check_positive("beta", beta)
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"`label_smoothing` is a flip probability and must lie in [0, 0.5], got {label_smoothing}.")
    chosen, rejected = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    # DPO Eq. 7 (Rafailov et al. 2023): -log s(beta * delta); cDPO (Mitchell 2023): target probability 1 - eps
    losses = _soft_logistic(beta * (chosen - rejected), 1.0 - label_smoothing)
    return _pair_loss(losses, chosen, rejected, beta)


def ipo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
) -> PairLoss:
    """IPO squared loss (Azar et al. 2023, Eq. 17; beta is the paper's tau).

    TRL divides each log-ratio by its completion length before the square (its comment says the IPO authors confirmed
    this). Pass both lengths to get TRL's numbers; leave both out for the paper's unnormalised form.

    Args:
        policy_chosen_logps: (B,) summed log-prob of the chosen response under the policy (with grad).
        policy_rejected_logps: (B,) same for the rejected response.
        ref_chosen_logps: (B,) summed log-prob of the chosen response under the frozen reference.
        ref_rejected_logps: (B,) same for the rejected response.
        beta: regularisation, > 0; the target log-ratio gap is 1 / (2 beta).
        chosen_lengths: optional (B,) number of completion tokens of the chosen response (clamped to >= 1 as in TRL).
        rejected_lengths: optional (B,) same for the rejected response; give both lengths or neither.

    Returns:
        PairLoss with losses (B,) and implicit rewards beta * log(pi / pi_ref) (unnormalised, as TRL logs them).
    """
    _check_positive("beta", beta)
    if (chosen_lengths is None) != (rejected_lengths is None):
        raise ValueError("Give both `chosen_lengths` and `rejected_lengths` (TRL's normalisation) or neither.")
    chosen, rejected = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    h_chosen, h_rejected = chosen, rejected
    if chosen_lengths is not None:
        _check_same_shape(policy_chosen_logps=chosen, chosen_lengths=chosen_lengths, rejected_lengths=rejected_lengths)
        h_chosen = chosen / chosen_lengths.clamp(min=1)
        h_rejected = rejected / rejected_lengths.clamp(min=1)
    # IPO Eq. 17: (h - 1 / (2 tau))^2 with h the (length-normalised) log-ratio gap
    losses = (h_chosen - h_rejected - 1.0 / (2.0 * beta)) ** 2
    return _pair_loss(losses, chosen, rejected, beta)


def robust_dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float = 0.1,
    eps: float = 0.1,
) -> PairLoss:
    """Robust DPO (rDPO, Chowdhury et al. 2024): an unbiased DPO loss under labels flipped with probability eps.

    Unlike cDPO, the eps term enters with a minus sign and the sum is rescaled by 1 / (1 - 2 eps), so the expected
    loss over noisy labels equals the clean DPO loss. It is unbounded below as beta * delta grows.

    Args:
        policy_chosen_logps: (B,) summed log-prob of the chosen response under the policy (with grad).
        policy_rejected_logps: (B,) same for the rejected response.
        ref_chosen_logps: (B,) summed log-prob of the chosen response under the frozen reference.
        ref_rejected_logps: (B,) same for the rejected response.
        beta: KL strength, > 0.
        eps: label-flip rate in [0, 0.5); 0 gives plain DPO.

    Returns:
        PairLoss with losses (B,) and implicit rewards beta * log(pi / pi_ref).
    """
    _check_positive("beta", beta)
    if not 0.0 <= eps < 0.5:
        raise ValueError(f"robust DPO `eps` (label-flip rate) must be in [0, 0.5), got {eps}; use 0 for plain DPO.")
    chosen, rejected = _log_ratios(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    z = beta * (chosen - rejected)
    # rDPO loss (Chowdhury et al. 2024, as TRL's loss_type="robust"): [-(1-eps) log s(z) + eps log s(-z)] / (1 - 2eps)
    losses = (-(1.0 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1.0 - 2.0 * eps)
    return _pair_loss(losses, chosen, rejected, beta)


# ---------------------------------------------------------------------------------------------------------------------
# TPO: reference-free; triples (gold, chosen, rejected)


def _tpo(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    gold_logps: Tensor,
    beta: float,
    alpha: float,
    gamma: float,
    label_smoothing: float,
) -> PairLoss:
    _check_same_shape(chosen_logps=chosen_logps, rejected_logps=rejected_logps, gold_logps=gold_logps)
    _check_positive("beta", beta)
    _check_non_negative("alpha", alpha)
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"`label_smoothing` is a flip probability and must lie in [0, 0.5], got {label_smoothing}.")
    # TPO (arXiv 2405.16681): -log s(beta (s_w - s_l) - gamma) + alpha * NLL(gold); gamma = 0 for plain TPO
    preference = _soft_logistic(beta * (chosen_logps - rejected_logps) - gamma, 1.0 - label_smoothing)
    losses = preference - alpha * gold_logps
    return _pair_loss(losses, chosen_logps, rejected_logps, beta)


def tpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    gold_logps: Tensor,
    beta: float = 0.01,
    alpha: float = 1.0,
    label_smoothing: float = 0.0,
) -> PairLoss:
    """Triple Preference Optimization (TPO, sigmoid variant): no reference model.

    Args:
        chosen_logps: (B,) summed log-prob of the chosen response under the policy.
        rejected_logps: (B,) summed log-prob of the rejected response under the policy.
        gold_logps: (B,) log-likelihood of the gold (reference) answer. The reference code's NLL is token-mean
            cross-entropy, so pass length-averaged log-probs to match it.
        beta: preference strength, > 0 (TRL default 0.01).
        alpha: weight of the gold NLL, >= 0 (TRL default 1.0).
        label_smoothing: cDPO-style flip probability in [0, 0.5].

    Returns:
        PairLoss with losses (B,) = -log s(beta (s_w - s_l)) - alpha * gold_logps and implicit rewards beta * s.
    """
    return _tpo(chosen_logps, rejected_logps, gold_logps, beta, alpha, 0.0, label_smoothing)


def tpo_l_loss(
    chosen_avg_logps: Tensor,
    rejected_avg_logps: Tensor,
    gold_logps: Tensor,
    beta: float = 0.01,
    alpha: float = 1.0,
    gamma: float = 0.5,
    label_smoothing: float = 0.0,
) -> PairLoss:
    """TPO-L: TPO on length-averaged log-probs with a target reward margin gamma.

    Args:
        chosen_avg_logps: (B,) length-averaged (token-mean) log-prob of the chosen response under the policy.
        rejected_avg_logps: (B,) same for the rejected response.
        gold_logps: (B,) log-likelihood of the gold answer (token-mean to match the reference code).
        beta: preference strength, > 0.
        alpha: weight of the gold NLL, >= 0.
        gamma: target margin (`tpo_l_gamma`), subtracted after scaling by beta: s(beta * delta - gamma).
        label_smoothing: cDPO-style flip probability in [0, 0.5].

    Returns:
        PairLoss with losses (B,) = -log s(beta (avg_w - avg_l) - gamma) - alpha * gold_logps and implicit rewards
        beta * avg_logps.
    """
    return _tpo(chosen_avg_logps, rejected_avg_logps, gold_logps, beta, alpha, gamma, label_smoothing)


# ---------------------------------------------------------------------------------------------------------------------
# listwise and group losses


def pro_loss(
    scores: Tensor,
    rewards: Tensor | None = None,
    sft_logps: Tensor | None = None,
    sft_weight: float = 2.0,
) -> PROLoss:
    """Preference Ranking Optimization (PRO, Song et al. AAAI'24) with reward-gap temperatures.

    With responses ranked best first, stage k contrasts response k against all worse ones:
    L_rank = sum_{k<n} [ log(1e-10 + exp(s_k T_k^k) + sum_{i>k} exp(s_i T_k^i)) - s_k T_k^k ],
    T_k^i = r_k - r_i (i > k), T_k^k = max_{i>k} T_k^i, exactly as the reference code computes it.

    Args:
        scores: (B, n) length-normalised log-likelihood of each response under the policy.
        rewards: optional (B, n) reward of each response. Rows are sorted by it (best first, stable) and its gaps
            give the temperatures. Leave out when `scores` are already ranked best first: all temperatures are 1
            (the paper's loss without dynamic temperature).
        sft_logps: optional (B,) **summed** log-likelihood of the SFT target (the top response in the reference code).
        sft_weight: weight of the SFT term, >= 0 (code default 2; its HH script uses 0.05).

    Returns:
        PROLoss(rank (B,), sft (B,) = -sft_weight * (n - 1)^2 * sft_logps, or None).
    """
    b, n = _check_2d(scores=scores)
    if n < 2:
        raise ValueError(f"PRO ranks at least 2 responses per prompt; `scores` has n = {n}.")
    _check_non_negative("sft_weight", sft_weight)
    if rewards is None:
        gaps = torch.ones(b, n, n, dtype=scores.dtype, device=scores.device)
    else:
        _check_2d((b, n), rewards=rewards)
        order = rewards.argsort(dim=1, descending=True, stable=True)
        scores, rewards = scores.gather(1, order), rewards.gather(1, order)
        gaps = rewards[:, :, None] - rewards[:, None, :]  # gaps[b, k, i] = r_k - r_i
    log_eps = torch.full((b, 1), PRO_LOG_EPS, dtype=scores.dtype, device=scores.device).log()
    rank = scores.new_zeros(b)
    for k in range(n - 1):
        neg = scores[:, k + 1 :] * gaps[:, k, k + 1 :]  # s_i T_k^i, i > k
        pos = scores[:, k] * gaps[:, k, k + 1 :].max(dim=1).values  # s_k T_k^k
        # PRO Eq. with dynamic temperatures (code: compute_loss); log(eps + sum exp) done as a stable logsumexp
        rank = rank + torch.logsumexp(torch.cat([log_eps, pos[:, None], neg], dim=1), dim=1) - pos
    sft = None
    if sft_logps is not None:
        if tuple(sft_logps.shape) != (b,):
            raise ValueError(f"`sft_logps` must be (B,) = ({b},), got {tuple(sft_logps.shape)}.")
        # L_sft = -sft_weight * (n-1)^2 * log pi(y_sft): the (n-1)^2 factor is the reference code's
        sft = -sft_weight * (n - 1) ** 2 * sft_logps
    return PROLoss(rank, sft)


def copg_loss(rewards: Tensor, policy_logps: Tensor, ref_logps: Tensor, beta: float = 0.1) -> Tensor:
    """Contrastive Policy Gradient (CoPG, Flet-Berliac et al. 2024) over k samples of each prompt.

    With regularised rewards R_i = r_i - beta * log(pi(y_i) / pi_ref(y_i)), the loss is
    1 / (k - 1) * sum_{i>j} (R_i - R_j)^2. Its negative gradient is a policy gradient where each sample's baseline
    is the others' regularised reward, so it needs no importance weights: the samples may come from the current
    policy (online) or any other (offline). For k = 2 and r_w - r_l = 1/2 it equals beta^2 times the unnormalised
    `ipo_loss` (IPO Eq. 17).

    Args:
        rewards: (B, k) reward of each sample (no grad needed).
        policy_logps: (B, k) summed log-prob of each sample under the policy (with grad).
        ref_logps: (B, k) summed log-prob of each sample under the frozen reference.
        beta: KL strength, > 0.

    Returns:
        (B,) loss of each prompt.
    """
    _, k = _check_2d(rewards=rewards, policy_logps=policy_logps, ref_logps=ref_logps)
    if k < 2:
        raise ValueError(f"CoPG contrasts samples of the same prompt: it needs k >= 2 per row, got k = {k}.")
    _check_positive("beta", beta)
    regularised = rewards - beta * (policy_logps - ref_logps)  # R^pi_beta(x, y)
    diff = regularised[:, :, None] - regularised[:, None, :]  # diff[b, i, j] = R_i - R_j
    # CoPG: l = 1/(k-1) sum_{i>j} (R_i - R_j)^2; every unordered pair once (strict upper triangle)
    return (diff**2).triu(diagonal=1).sum(dim=(1, 2)) / (k - 1)


def _standardise(x: Tensor, dim: int, eps: float) -> Tensor:
    return (x - x.mean(dim=dim, keepdim=True)) / (x.std(dim=dim, keepdim=True) + eps)


def grao_loss(
    sample_logps: Tensor,
    sample_rewards: Tensor,
    reference_logps: Tensor,
    reference_rewards: Tensor,
    beta: float = 0.5,
    lam: float = 0.6,
    eps: float = 1e-4,
    reference_in_group: bool = True,
) -> Tensor:
    """Group Relative Alignment Optimization (GRAO, Wang et al. 2025, Eq. 2-4) as a loss to minimise.

    J = 1/G sum_i [ A_i J(o_i) + beta A_y J(y) + lam A_i (J(o_i) - J(y)) ]  (exploration + imitation + alignment);
    the loss is -J. A = (R - mean) / (std + eps), std with Bessel's correction as in GRPO.

    Args:
        sample_logps: (B, G) length-normalised log-prob J(o_i) of each of the G on-policy samples (with grad).
        sample_rewards: (B, G) reward of each sample.
        reference_logps: (B,) length-normalised log-prob J(y) of the reference answer under the policy (with grad).
        reference_rewards: (B,) reward of the reference answer.
        beta: imitation weight, >= 0 (paper 0.5).
        lam: alignment-regulariser weight, >= 0 (paper 0.6).
        eps: added to the group std.
        reference_in_group: if True (default), mean and std are taken over the G + 1 rewards {o_1..o_G, y} ("one
            group (o_i, y)"); if False over the G samples only, and A_y uses those statistics.

    Returns:
        (B,) loss -J of each prompt.
    """
    b, g = _check_2d(sample_logps=sample_logps, sample_rewards=sample_rewards)
    for name, t in (("reference_logps", reference_logps), ("reference_rewards", reference_rewards)):
        if tuple(t.shape) != (b,):
            raise ValueError(f"`{name}` must be (B,) = ({b},), one reference answer per prompt; got {tuple(t.shape)}.")
    _check_non_negative("beta", beta)
    _check_non_negative("lam", lam)
    if g + int(reference_in_group) < 2:
        raise ValueError("GRAO normalises rewards within a group: give at least 2 samples per prompt.")
    if reference_in_group:
        adv = _standardise(torch.cat([sample_rewards, reference_rewards[:, None]], dim=1), dim=1, eps=eps)
        adv_samples, adv_ref = adv[:, :g], adv[:, g]
    else:
        mean, std = sample_rewards.mean(dim=1), sample_rewards.std(dim=1)
        adv_samples = _standardise(sample_rewards, dim=1, eps=eps)
        adv_ref = (reference_rewards - mean) / (std + eps)
    j_ref = reference_logps[:, None]
    # GRAO Eq. 2-4: exploration A_i J(o_i) + imitation beta A_y J(y) + alignment lam A_i (J(o_i) - J(y))
    exploration = adv_samples * sample_logps
    imitation = beta * adv_ref[:, None] * j_ref
    alignment = lam * adv_samples * (sample_logps - j_ref)
    return -(exploration + imitation + alignment).mean(dim=1)

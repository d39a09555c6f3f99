"""Hand-computed checks of the preference losses in mmalign.preference."""

import math

import pytest
import torch

from mmalign.preference import (
    PairLoss,
    bradley_terry_loss,
    copg_loss,
    dpo_loss,
    grao_loss,
    ipo_loss,
    pro_loss,
    robust_dpo_loss,
    tpo_l_loss,
    tpo_loss,
)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def softplus(x: float) -> float:
    """-log sigmoid(-x) = log(1 + e^x), by hand."""
    return math.log1p(math.exp(x))


def close(actual: torch.Tensor, *expected: float) -> None:
    torch.testing.assert_close(actual, t(*expected), rtol=1e-9, atol=1e-12)


# one DPO pair: log-ratios +0.5 (chosen) and -0.5 (rejected), so delta = 1
PAIR = dict(
    policy_chosen_logps=t(-1.0), policy_rejected_logps=t(-2.0), ref_chosen_logps=t(-1.5), ref_rejected_logps=t(-1.5)
)
SWAPPED = dict(
    policy_chosen_logps=t(-2.0), policy_rejected_logps=t(-1.0), ref_chosen_logps=t(-1.5), ref_rejected_logps=t(-1.5)
)


def pair_with_grad() -> dict[str, torch.Tensor]:
    return {k: v.clone().requires_grad_(k.startswith("policy")) for k, v in PAIR.items()}


# --- Bradley-Terry -------------------------------------------------------------------------------------------------


def test_bradley_terry_hand_values():
    close(bradley_terry_loss(t(2.0, 0.0), t(1.0, 0.0)), softplus(-1.0), math.log(2.0))
    close(bradley_terry_loss(t(2.0), t(1.0), margin=0.5), softplus(-0.5))
    close(bradley_terry_loss(t(2.0), t(1.0), margin=t(1.0)), math.log(2.0))


def test_bradley_terry_soft_labels():
    close(bradley_terry_loss(t(2.0), t(1.0), label=t(1.0)), softplus(-1.0))
    close(bradley_terry_loss(t(2.0), t(1.0), label=t(0.0)), softplus(1.0))
    close(bradley_terry_loss(t(2.0), t(1.0), label=t(0.25)), 0.25 * softplus(-1.0) + 0.75 * softplus(1.0))
    # margin applies to whichever side is preferred
    close(bradley_terry_loss(t(2.0), t(1.0), margin=0.5, label=t(0.0)), softplus(1.5))


def test_bradley_terry_sign_flip_and_gradient():
    chosen, rejected = t(2.0).requires_grad_(), t(1.0).requires_grad_()
    loss = bradley_terry_loss(chosen, rejected)
    assert bradley_terry_loss(t(1.0), t(2.0)) > loss
    loss.sum().backward()
    assert chosen.grad < 0 < rejected.grad


# --- DPO family ----------------------------------------------------------------------------------------------------


def test_dpo_hand_values_and_rewards():
    out = dpo_loss(**PAIR, beta=0.5)
    assert isinstance(out, PairLoss)
    close(out.losses, softplus(-0.5))
    close(out.chosen_rewards, 0.25)
    close(out.rejected_rewards, -0.25)
    close(dpo_loss(**PAIR, beta=0.5, label_smoothing=0.1).losses, 0.9 * softplus(-0.5) + 0.1 * softplus(0.5))


def test_ipo_hand_values():
    # tau = 0.25 -> target gap 2; unnormalised gap 1 -> (1 - 2)^2
    close(ipo_loss(**PAIR, beta=0.25).losses, 1.0)
    # TRL normalisation: 0.5 / 2 - (-0.5) / 4 = 0.375
    close(ipo_loss(**PAIR, beta=0.25, chosen_lengths=t(2.0), rejected_lengths=t(4.0)).losses, (0.375 - 2.0) ** 2)
    close(ipo_loss(**PAIR, beta=0.5).losses, 0.0)


def test_robust_dpo_hand_values():
    expected = (0.8 * softplus(-0.5) - 0.2 * softplus(0.5)) / 0.6
    close(robust_dpo_loss(**PAIR, beta=0.5, eps=0.2).losses, expected)
    torch.testing.assert_close(robust_dpo_loss(**PAIR, beta=0.5, eps=0.0).losses, dpo_loss(**PAIR, beta=0.5).losses)


def test_robust_dpo_is_unbiased_under_label_noise():
    # E over a flip with probability eps of the rDPO loss equals the clean DPO loss (Chowdhury et al. 2024)
    eps = 0.3
    noisy = (1 - eps) * robust_dpo_loss(**PAIR, eps=eps).losses + eps * robust_dpo_loss(**SWAPPED, eps=eps).losses
    torch.testing.assert_close(noisy, dpo_loss(**PAIR).losses)


@pytest.mark.parametrize(
    "fn, kwargs",
    [(dpo_loss, {}), (dpo_loss, {"label_smoothing": 0.2}), (ipo_loss, {}), (robust_dpo_loss, {"eps": 0.2})],
)
def test_dpo_family_sign_flip_and_gradient(fn, kwargs):
    inputs = pair_with_grad()
    loss = fn(**inputs, **kwargs).losses
    assert fn(**SWAPPED, **kwargs).losses > loss
    loss.sum().backward()
    assert inputs["policy_chosen_logps"].grad < 0 < inputs["policy_rejected_logps"].grad


def test_dpo_family_is_per_pair():
    batch = {k: torch.cat([v, SWAPPED[k]]) for k, v in PAIR.items()}
    losses = dpo_loss(**batch).losses
    assert losses.shape == (2,)
    close(losses, softplus(-0.1), softplus(0.1))


# --- TPO -----------------------------------------------------------------------------------------------------------


def test_tpo_hand_values():
    out = tpo_loss(t(-3.0), t(-5.0), t(-0.7), beta=0.1, alpha=1.0)
    close(out.losses, softplus(-0.2) + 0.7)
    close(out.chosen_rewards, -0.3)
    close(tpo_loss(t(-3.0), t(-5.0), t(-0.7), beta=0.1, alpha=0.0).losses, softplus(-0.2))
    # TPO-L: beta * (avg_w - avg_l) - gamma = 2 * 1 - 0.5
    close(tpo_l_loss(t(-1.0), t(-2.0), t(-0.7), beta=2.0, alpha=0.5, gamma=0.5).losses, softplus(-1.5) + 0.35)


def test_tpo_sign_flip_and_gradient():
    chosen, rejected, gold = t(-3.0).requires_grad_(), t(-5.0).requires_grad_(), t(-0.7).requires_grad_()
    loss = tpo_l_loss(chosen, rejected, gold, beta=0.1)
    assert tpo_l_loss(t(-5.0), t(-3.0), t(-0.7), beta=0.1).losses > loss.losses
    loss.losses.sum().backward()
    assert chosen.grad < 0 < rejected.grad
    assert gold.grad < 0  # the NLL term pushes the gold answer's log-prob up


# --- PRO -----------------------------------------------------------------------------------------------------------


def test_pro_two_responses_by_hand():
    # reward gap 2: log(1e-10 + e^{-1*2} + e^{-2*2}) + 2, i.e. -log s(2 (s_1 - s_2)) up to the 1e-10
    expected = math.log(1e-10 + math.exp(-2.0) + math.exp(-4.0)) + 2.0
    out = pro_loss(t(-1.0, -2.0)[None], rewards=t(3.0, 1.0)[None])
    close(out.rank, expected)
    assert out.sft is None
    assert abs(expected - softplus(-2.0)) < 1e-9
    # rows are sorted by reward first
    close(pro_loss(t(-2.0, -1.0)[None], rewards=t(1.0, 3.0)[None]).rank, expected)


def test_pro_three_responses_by_hand():
    scores, rewards = t(-1.0, -1.5, -3.0)[None], t(3.0, 2.0, 0.0)[None]
    # stage 1: T = (3 | 1, 3); stage 2: T = (2 | 2)
    stage1 = math.log(1e-10 + math.exp(-3.0) + math.exp(-1.5) + math.exp(-9.0)) + 3.0
    stage2 = math.log(1e-10 + math.exp(-3.0) + math.exp(-6.0)) + 3.0
    out = pro_loss(scores, rewards=rewards, sft_logps=t(-10.0), sft_weight=0.05)
    close(out.rank, stage1 + stage2)
    close(out.sft, 0.05 * 4 * 10.0)  # -sft_weight * (n-1)^2 * log p
    # without rewards: presorted, temperature 1
    plain = math.log(1e-10 + math.exp(-1.0) + math.exp(-1.5) + math.exp(-3.0)) + 1.0
    plain += math.log(1e-10 + math.exp(-1.5) + math.exp(-3.0)) + 1.5
    close(pro_loss(scores).rank, plain)


def test_pro_gradient_ranks_scores():
    scores = t(-2.0, -2.0, -2.0)[None].requires_grad_()
    pro_loss(scores, rewards=t(0.0, 2.0, 1.0)[None]).rank.sum().backward()
    best, worst = scores.grad[0, 1], scores.grad[0, 0]
    assert best < 0 < worst


# --- CoPG ----------------------------------------------------------------------------------------------------------


def test_copg_three_samples_by_hand():
    # R = r - 0.5 * (logp - ref) = (0.75, 0.25, 1.25); pairs (0.5^2 + 0.5^2 + 1^2) / (k - 1) = 1.5 / 2
    rewards, logps, ref = t(1.0, 0.0, 0.5)[None], t(-1.0, -2.0, -3.0)[None], t(-1.5, -1.5, -1.5)[None]
    close(copg_loss(rewards, logps, ref, beta=0.5), 0.75)


@pytest.mark.parametrize("beta", [0.1, 0.5, 2.0])
def test_copg_is_beta_squared_times_ipo(beta):
    # k = 2 with R(y_w) - R(y_l) = 1/2: (1/2 - beta delta)^2 = beta^2 (delta - 1/(2 beta))^2, unnormalised IPO
    gen = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(5, generator=gen, dtype=torch.float64) for _ in range(4))
    copg = copg_loss(t(0.5, 0.0).expand(5, 2), torch.stack([pc, pr], 1), torch.stack([rc, rr], 1), beta=beta)
    ipo = ipo_loss(pc, pr, rc, rr, beta=beta).losses
    torch.testing.assert_close(copg, beta**2 * ipo)


def test_copg_gradient_favours_higher_reward():
    logps = t(-2.0, -2.0, -2.0)[None].requires_grad_()
    copg_loss(t(1.0, 0.0, 0.5)[None], logps, t(-2.0, -2.0, -2.0)[None]).sum().backward()
    assert logps.grad[0, 0] < 0 < logps.grad[0, 1]
    assert abs(logps.grad[0, 2]) < 1e-12  # the middle sample's baselines cancel


# --- GRAO ----------------------------------------------------------------------------------------------------------


def test_grao_hand_values():
    logps, rewards, ref_logp = t(-1.0, -2.0)[None], t(1.0, 0.0)[None], t(-1.5)
    # group {1, 0, 2}: mean 1, Bessel std 1 -> A = (0, -1), A_y = 1
    # i=1: 0 + 0.5 * 1 * -1.5 + 0 = -0.75; i=2: 2 - 0.75 + 0.6 * -1 * -0.5 = 1.55; J = 0.4
    close(grao_loss(logps, rewards, ref_logp, t(2.0), beta=0.5, lam=0.6, eps=0.0), -0.4)
    # samples only: mean 0.5, std sqrt(0.5); A = (a, -a), A_y = 1.5 / sqrt(0.5)
    a, a_y = 0.5 / math.sqrt(0.5), 1.5 / math.sqrt(0.5)
    terms = [a * -1.0 + 0.5 * a_y * -1.5 + 0.6 * a * 0.5, -a * -2.0 + 0.5 * a_y * -1.5 + 0.6 * -a * -0.5]
    close(grao_loss(logps, rewards, ref_logp, t(2.0), eps=0.0, reference_in_group=False), -sum(terms) / 2)


def test_grao_zero_advantage():
    logps, ref_logp = t(-1.0, -2.0, -0.5)[None].requires_grad_(), t(-1.5).requires_grad_()
    loss = grao_loss(logps, t(1.0, 1.0, 1.0)[None], ref_logp, t(1.0))
    loss.sum().backward()
    close(loss, 0.0)
    assert logps.grad.abs().max() == 0 and ref_logp.grad.abs().max() == 0


def test_grao_gradient_direction():
    logps, ref_logp = t(-1.0, -1.0, -1.0)[None].requires_grad_(), t(-1.0).requires_grad_()
    grao_loss(logps, t(0.0, 1.0, 0.5)[None], ref_logp, t(2.0)).sum().backward()
    assert logps.grad[0, 1] < logps.grad[0, 2] < logps.grad[0, 0]
    assert ref_logp.grad < 0  # the best answer in the group is the reference: imitate it


# --- validation ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: robust_dpo_loss(**PAIR, eps=0.5), r"\[0, 0.5\)"),
        (lambda: dpo_loss(**PAIR, beta=0.0), "beta"),
        (lambda: dpo_loss(**PAIR, label_smoothing=0.7), "label_smoothing"),
        (lambda: dpo_loss(t(1.0, 2.0), t(1.0), t(1.0), t(1.0)), "same shape"),
        (lambda: ipo_loss(**PAIR, chosen_lengths=t(3.0)), "both"),
        (lambda: bradley_terry_loss(t(1.0), t(0.0), label=t(1.5)), r"\[0, 1\]"),
        (lambda: tpo_loss(t(1.0), t(0.0), t(0.0), alpha=-1.0), "alpha"),
        (lambda: pro_loss(t(1.0, 2.0)), "2-D"),
        (lambda: pro_loss(t(1.0)[None]), "at least 2"),
        (lambda: pro_loss(t(1.0, 2.0)[None], rewards=t(1.0, 2.0, 3.0)[None]), "match"),
        (lambda: copg_loss(t(1.0)[None], t(1.0)[None], t(1.0)[None]), "k >= 2"),
        (lambda: grao_loss(t(1.0, 2.0)[None], t(1.0, 2.0)[None], t(1.0, 2.0), t(1.0)), "one reference"),
    ],
)
def test_validation_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()

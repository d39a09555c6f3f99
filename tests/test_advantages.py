"""Advantage estimators against hand-computed numbers."""

import math

import pytest
import torch

from mmalign.advantages import (
    difficulty_weights,
    gae,
    group_advantages,
    rloo_advantages,
    scale_advantages,
    whiten,
    zero_std_fraction,
)

R = torch.tensor([1.0, 3.0, 0.0, 0.0, 4.0, 2.0])
G = torch.tensor([0, 0, 1, 1, 2, 2])


def test_grpo_group_std():
    # group 0: mean 2, Bessel std sqrt(2); group 1: std 0; group 2: mean 3, std sqrt(2)
    s = math.sqrt(2)
    expected = torch.tensor([-1 / (s + 1e-4), 1 / (s + 1e-4), 0, 0, 1 / (s + 1e-4), -1 / (s + 1e-4)])
    torch.testing.assert_close(group_advantages(R, G, "group"), expected)


def test_dr_grpo_and_batch_std():
    centred = torch.tensor([-1.0, 1.0, 0.0, 0.0, 1.0, -1.0])
    torch.testing.assert_close(group_advantages(R, G, "none"), centred)
    batch_std = float(R.std())  # Bessel over all 6: mean 10/6
    torch.testing.assert_close(group_advantages(R, G, "batch"), centred / (batch_std + 1e-4))


def test_groups_need_not_be_sorted():
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    torch.testing.assert_close(group_advantages(R[perm], G[perm]), group_advantages(R, G)[perm])


def test_rloo_leave_one_out():
    r = torch.tensor([1.0, 2.0, 6.0, 5.0, 5.0])
    g = torch.tensor([0, 0, 0, 1, 1])
    # sample 0: 1 - (2+6)/2 = -3; sample 1: 2 - 3.5 = -1.5; sample 2: 6 - 1.5 = 4.5
    torch.testing.assert_close(rloo_advantages(r, g), torch.tensor([-3.0, -1.5, 4.5, 0.0, 0.0]))
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(torch.tensor([1.0]), torch.tensor([0]))


def test_zero_std_fraction():
    assert zero_std_fraction(R, G) == pytest.approx(1 / 3)


def test_grpo_s_difficulty_scaling():
    w = torch.tensor([1.0, 0.0, 0.5, 0.5])
    g = torch.tensor([0, 0, 1, 1])
    s0, s1 = 1 / (1 + math.exp(-0.0)), 1 / (1 + math.exp(-1.0))
    expected = torch.tensor([s0 / ((s0 + s1) / 2), s1 / ((s0 + s1) / 2), 1.0, 1.0])
    weights = difficulty_weights(w, g)
    torch.testing.assert_close(weights, expected)
    # the harder sample (lower similarity) gets the larger weight; scaling multiplies advantages
    adv = torch.tensor([1.0, 1.0, -2.0, 2.0])
    torch.testing.assert_close(scale_advantages(adv, weights, torch.full((4,), 2.0)), adv * expected * 2)


def test_gae_single_episode_by_hand():
    # 3 steps, terminated at the end: gamma 0.5, lambda 0.5
    r = torch.tensor([[1.0, 0.0, 2.0]])
    v = torch.tensor([[0.5, 1.0, 1.0]])
    term = torch.tensor([[False, False, True]])
    zero = torch.zeros_like(term)
    adv, ret = gae(r, v, torch.full_like(v, 99.0), term, zero, gamma=0.5, lam=0.5)
    d2 = 2.0 - 1.0  # terminal: no bootstrap even though bootstrap=99
    d1 = 0.0 + 0.5 * 1.0 - 1.0
    d0 = 1.0 + 0.5 * 1.0 - 0.5
    a2, a1 = d2, d1 + 0.25 * d2
    a0 = d0 + 0.25 * a1
    torch.testing.assert_close(adv, torch.tensor([[a0, a1, a2]]))
    torch.testing.assert_close(ret, adv + v)


def test_gae_truncation_bootstraps_and_last_column():
    r = torch.tensor([[1.0, 1.0]])
    v = torch.tensor([[0.0, 0.0]])
    boot = torch.tensor([[10.0, 20.0]])
    f = torch.zeros(1, 2, dtype=torch.bool)
    trunc = torch.tensor([[True, False]])
    adv, _ = gae(r, v, boot, f, trunc, gamma=0.5, lam=1.0)
    # step 0 truncated: 1 + 0.5*10, and no carry from step 1; step 1 is the last column: 1 + 0.5*20
    torch.testing.assert_close(adv, torch.tensor([[6.0, 11.0]]))
    # the same step terminated instead: no bootstrap
    adv_t, _ = gae(r, v, boot, trunc, f, gamma=0.5, lam=1.0)
    torch.testing.assert_close(adv_t, torch.tensor([[1.0, 11.0]]))


def test_gae_autoreset_step_is_masked():
    # episode ends (terminated) at step 1; step 2 is gymnasium's autoreset step (not a transition); step 3 new episode
    r = torch.tensor([[0.0, 1.0, 123.0, 2.0]])
    v = torch.tensor([[1.0, 1.0, 50.0, 1.0]])
    term = torch.tensor([[False, True, False, False]])
    mask = torch.tensor([[True, True, False, True]])
    trunc = torch.zeros_like(term)
    boot = torch.zeros_like(v)
    adv, ret = gae(r, v, boot, term, trunc, mask, gamma=1.0, lam=1.0)
    assert adv[0, 2] == 0 and ret[0, 2] == 0
    # step 3: last column, bootstrap 0 -> 2 - 1 = 1; step 1: 1 - 1 = 0; step 0: 0 + 1 - 1 + a1 = 0
    torch.testing.assert_close(adv, torch.tensor([[0.0, 0.0, 0.0, 1.0]]))


def test_whiten_masked():
    x = torch.tensor([[1.0, 3.0, 100.0]])
    m = torch.tensor([[True, True, False]])
    out = whiten(x, m)
    torch.testing.assert_close(out, torch.tensor([[-1.0, 1.0, 0.0]]), atol=1e-4, rtol=0)

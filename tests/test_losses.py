"""Policy-gradient losses against hand-computed numbers; sign and mask errors must fail here."""

import math

import pytest
import torch

from mmalign.losses import agg_units, aggregate, clipped_surrogate, kl_estimate


def test_clipped_surrogate_by_hand():
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.7]]))
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    out = clipped_surrogate(logp, old, adv, clip_low=0.2, clip_high=0.28)
    # A>0: min(1.5, 1.28) = 1.28 ; min(0.5, 0.8) = 0.5 ; A<0: min(-1.1, -1.1) = -1.1 ; min(-0.7, -0.8) = -0.8
    torch.testing.assert_close(out.loss, torch.tensor([[-1.28, -0.5, 1.1, 0.8]]))
    assert out.clipped.tolist() == [[True, False, False, True]]


def test_surrogate_gradient_follows_advantage_sign():
    logp = torch.zeros(2, 1, requires_grad=True)
    out = clipped_surrogate(logp, torch.zeros(2, 1), torch.tensor([2.0, -3.0]))
    out.loss.sum().backward()
    # descending the loss raises the log-prob of the positive-advantage sample and lowers the other
    assert logp.grad[0, 0] == pytest.approx(-2.0) and logp.grad[1, 0] == pytest.approx(3.0)


def test_kl_estimators():
    logp = torch.tensor([math.log(0.5)])
    ref = torch.tensor([math.log(0.25)])
    torch.testing.assert_close(kl_estimate(logp, ref, "k1"), torch.tensor([math.log(2)]))
    # k3 = r - 1 - log r with r = ref/pi = 0.5
    torch.testing.assert_close(kl_estimate(logp, ref, "k3"), torch.tensor([0.5 - 1 - math.log(0.5)]))
    assert float(kl_estimate(ref, ref, "k3")) == 0.0
    with pytest.raises(ValueError):
        kl_estimate(logp, ref, "k9")


X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
M = torch.tensor([[True, True, True], [True, False, False]])


def test_aggregations_by_hand():
    assert float(aggregate(X, M, "token-mean")) == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert float(aggregate(X, M, "seq-mean")) == pytest.approx((2.0 + 4.0) / 2)
    assert float(aggregate(X, M, "fixed", fixed_length=5)) == pytest.approx(10 / (2 * 5))
    # the mask really masks: garbage in padded steps changes nothing
    assert float(aggregate(X + (~M) * 1e6, M, "token-mean")) == pytest.approx(2.5)


def test_global_denominator_makes_minibatches_add_up():
    for mode in ("token-mean", "seq-mean", "fixed"):
        whole = aggregate(X, M, mode)
        denom = agg_units(M, mode)
        parts = aggregate(X[:1], M[:1], mode, denom) + aggregate(X[1:], M[1:], mode, denom)
        torch.testing.assert_close(parts, whole)


def test_unknown_aggregation():
    with pytest.raises(ValueError, match="aggregation"):
        aggregate(X, M, "sum")

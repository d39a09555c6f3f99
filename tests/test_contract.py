"""The adapter contract (mmalign/rollout.py), one test body for every adapter configuration of `adapters.CASES`:
a sampled `Rollout` has agreeing shapes, and right after `rollout = policy.sample(contexts, n)` the policy re-scores
exactly what it sampled (ratio 1), with gradients to its trainable parameters; the optional protocols it has give
per-step tensors. It catches stateful schedulers, dropout, padding, dtype and masking bugs in any adapter."""

import pytest
import torch
from adapters import CASES, params

from mmalign.rollout import HasEntropy, HasReference, HasValue, Policy

PER_STEP = {HasReference: ("ref_logprobs", False), HasValue: ("values", True), HasEntropy: ("entropy", True)}
"""Each optional protocol's per-step method, and whether its (B, T) result carries grad."""

ENV_ROWS = {"robot"}
"""Adapters whose rows are environments: `sample(contexts, n)` continues every env for n steps (B = num_envs rows of
T = n steps, all of context 0, the env), instead of n samples per context."""


def minibatch(b: int) -> torch.Tensor:
    """Indices of a minibatch out of order: the last, the first and the middle sample."""
    return torch.tensor(list(dict.fromkeys([b - 1, 0, b // 2])))


@pytest.mark.parametrize("name", params(CASES))
def test_rollout_shapes_agree(sampled, name):
    case = CASES[name]
    policy, rollout = sampled(name)
    assert isinstance(policy, Policy) and all(isinstance(policy, p) for p in case.protocols)
    b, t = case.shape
    assert rollout.group.shape == (b,) and rollout.group.dtype == torch.long
    assert rollout.logprobs.shape == rollout.mask.shape == (b, t) and rollout.mask.dtype == torch.bool
    assert not rollout.logprobs.requires_grad and bool(rollout.mask.any())
    assert len(rollout.outputs) in (0, b)


@pytest.mark.parametrize("name", params(CASES))
def test_group_gives_each_context_num_samples_samples(sampled, name):
    case = CASES[name]
    group = sampled(name)[1].group
    assert 0 <= int(group.min()) and int(group.max()) < len(case.contexts)
    if name in ENV_ROWS:
        assert group.tolist() == [0] * case.shape[0] and case.shape[1] == case.num_samples
    else:
        assert group.bincount(minlength=len(case.contexts)).tolist() == [case.num_samples] * len(case.contexts)


@pytest.mark.parametrize("name", params(CASES))
def test_rescored_logprobs_equal_sampled_with_grad(sampled, name):
    """Every step, masked or not, agrees: the cores form exp(new - old) over the whole (B, T) before masking."""
    case = CASES[name]
    policy, rollout = sampled(name)
    torch.testing.assert_close(policy.logprobs(rollout), rollout.logprobs, atol=1e-5, rtol=case.rtol)
    mb = rollout[minibatch(len(rollout))]  # minibatch slicing keeps each sample's state with it
    logp = policy.logprobs(mb)
    torch.testing.assert_close(logp, mb.logprobs, atol=1e-5, rtol=case.rtol)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    grads = torch.autograd.grad(logp[mb.mask].sum(), trainable, allow_unused=True)
    assert any(g is not None and bool(g.abs().sum() > 0) for g in grads)


@pytest.mark.parametrize("name", params(n for n in CASES if CASES[n].protocols))
def test_optional_protocols_give_per_step_tensors(sampled, name):
    """`ref_logprobs`, `values`, `entropy`: finite (B, T); a reference copied at construction scores as sampled."""
    case = CASES[name]
    policy, rollout = sampled(name)
    for protocol in case.protocols:
        method, with_grad = PER_STEP[protocol]
        out = getattr(policy, method)(rollout)
        assert out.shape == rollout.mask.shape and out.requires_grad == with_grad, method
        assert bool(torch.isfinite(out).all()), method
        if protocol is HasReference and policy.reference == "copy":
            torch.testing.assert_close(out, rollout.logprobs, atol=1e-5, rtol=case.rtol)

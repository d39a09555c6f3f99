"""Stateless denoising steps against closed forms and against diffusers' own schedulers."""

import math

import pytest
import torch

from mmalign.diffusion.models import ddim_scheduler, flow_scheduler
from mmalign.diffusion.steps import ddim_step, euler_step, flow_sde_step, gaussian_logprob


def test_gaussian_logprob_matches_torch_normal():
    torch.manual_seed(0)
    x, mean, std = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4), torch.tensor([0.5, 1.0, 2.0])
    ref = torch.distributions.Normal(mean, std[:, None, None, None]).log_prob(x)
    assert torch.allclose(gaussian_logprob(x, mean, std, "mean"), ref.mean((1, 2, 3)), atol=1e-6)
    assert torch.allclose(gaussian_logprob(x, mean, std, "sum"), ref.sum((1, 2, 3)), atol=1e-4)


def test_gaussian_logprob_hand_computed():
    # one element at the mean, std 1: log N = -log sqrt(2 pi)
    lp = gaussian_logprob(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), "sum")
    assert lp.item() == pytest.approx(-0.5 * math.log(2 * math.pi))


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_ddim_step_matches_diffusers_and_closed_form(eta):
    sched = ddim_scheduler()
    sched.set_timesteps(4)
    torch.manual_seed(0)
    x, eps, z = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    t = int(sched.timesteps[1])
    prev_t = t - 1000 // 4
    a_t = sched.alphas_cumprod[t].expand(2)
    a_prev = sched.alphas_cumprod[prev_t].expand(2)
    out = ddim_step(eps, x, a_t, a_prev, eta, noise=z)
    expected = sched.step(eps, t, x, eta=eta, variance_noise=z).prev_sample
    assert torch.allclose(out.prev_sample, expected, atol=1e-5)
    std = eta * sched._get_variance(t, prev_t) ** 0.5
    assert torch.allclose(out.std, std.expand(2).float(), atol=1e-7)
    # closed form: the log-prob of x_{t-1} = mean + std z is the mean over elements of log N(z; 0, 1) - log std
    closed = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).mean((1, 2, 3)) - torch.log(std.float())
    assert torch.allclose(out.logprob, closed, atol=1e-5)
    # re-scoring the drawn sample gives the same log-prob
    again = ddim_step(eps, x, a_t, a_prev, eta, prev_sample=out.prev_sample)
    assert torch.allclose(again.logprob, out.logprob, atol=1e-6)


def test_ddim_step_batched_per_sample_timesteps():
    sched = ddim_scheduler()
    ac = sched.alphas_cumprod
    torch.manual_seed(1)
    x, eps, z = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    ts, prev = torch.tensor([801, 401]), torch.tensor([601, 201])
    both = ddim_step(eps, x, ac[ts], ac[prev], 1.0, noise=z)
    for i in range(2):
        one = ddim_step(eps[i:i + 1], x[i:i + 1], ac[ts[i:i + 1]], ac[prev[i:i + 1]], 1.0, noise=z[i:i + 1])
        assert torch.allclose(both.prev_sample[i], one.prev_sample[0])
        assert torch.allclose(both.logprob[i], one.logprob[0])


def test_ddim_step_rejects_zero_eta():
    a = torch.tensor([0.5])
    with pytest.raises(ValueError, match="std > 0"):
        ddim_step(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), a, torch.tensor([0.7]), 0.0)


def test_flow_sde_step_closed_form():
    torch.manual_seed(0)
    x, v, z = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    sigma, sigma_prev, a = torch.tensor([0.8, 0.5]), torch.tensor([0.6, 0.3]), 0.7
    out = flow_sde_step(v, x, sigma, sigma_prev, a, noise=z)
    s = a * torch.sqrt(sigma / (1 - sigma))
    dt = (sigma_prev - sigma)[:, None, None, None]
    sb, ssb = sigma[:, None, None, None], s[:, None, None, None]
    mean = x * (1 + ssb**2 / (2 * sb) * dt) + v * (1 + ssb**2 * (1 - sb) / (2 * sb)) * dt  # Flow-GRPO's form
    std = s * torch.sqrt(sigma - sigma_prev)
    assert torch.allclose(out.mean, mean, atol=1e-6) and torch.allclose(out.std, std, atol=1e-6)
    ref = torch.distributions.Normal(mean, std[:, None, None, None]).log_prob(out.prev_sample).mean((1, 2, 3))
    assert torch.allclose(out.logprob, ref, atol=1e-5)


def test_flow_sde_first_step_finite_and_noise_free_limit_is_euler():
    sched = flow_scheduler()
    sched.set_timesteps(4)
    torch.manual_seed(0)
    x, v = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    s0, s1 = sched.sigmas[0:1], sched.sigmas[1:2]
    out = flow_sde_step(v, x, s0, s1, 0.7)
    assert torch.isfinite(out.logprob).all() and float(s0) == 1.0
    tiny = flow_sde_step(v, x, sched.sigmas[1:2], sched.sigmas[2:3], 1e-6)
    expected = euler_step(v, x, sched.sigmas[1:2], sched.sigmas[2:3])
    assert torch.allclose(tiny.mean, expected, atol=1e-5)


@pytest.mark.parametrize("shift,steps", [(3.0, 10), (1.0, 4)])
def test_flow_sde_first_step_std_is_flow_grpos(shift, steps):
    # Flow-GRPO's sde_step_with_logprob at sigma = 1 replaces sigma by sigmas[1] in the denominator only:
    # std_dev_t = a sqrt(1 / (1 - sigmas[1])), and the step's std is std_dev_t sqrt(-dt) = a exactly
    sched = flow_scheduler(shift)
    sched.set_timesteps(steps)
    s0, s1, a = float(sched.sigmas[0]), float(sched.sigmas[1]), 0.7
    assert s0 == 1.0
    torch.manual_seed(0)
    x, v, z = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    out = flow_sde_step(v, x, sched.sigmas[0:1], sched.sigmas[1:2], a, noise=z)
    std_dev_t = a * math.sqrt(s0 / (1 - s1))
    dt = s1 - s0
    mean = x * (1 + std_dev_t**2 / (2 * s0) * dt) + v * (1 + std_dev_t**2 * (1 - s0) / (2 * s0)) * dt
    assert out.std.item() == pytest.approx(std_dev_t * math.sqrt(-dt), rel=1e-6)
    assert out.std.item() == pytest.approx(a, rel=1e-6)
    assert torch.allclose(out.mean, mean, atol=1e-6)
    # the contract: re-scoring the drawn x_{t-1} gives the sampled log-prob
    again = flow_sde_step(v, x, sched.sigmas[0:1], sched.sigmas[1:2], a, prev_sample=out.prev_sample)
    assert torch.allclose(again.logprob, out.logprob, atol=1e-6)


def test_euler_step_matches_flow_match_scheduler():
    sched = flow_scheduler()
    sched.set_timesteps(4)
    torch.manual_seed(0)
    x, v = torch.randn(1, 4, 4, 4), torch.randn(1, 4, 4, 4)
    expected = sched.step(v, sched.timesteps[0], x).prev_sample  # mutates the scheduler: only used here
    assert torch.allclose(euler_step(v, x, sched.sigmas[0:1], sched.sigmas[1:2]), expected, atol=1e-6)


def test_training_pair_hand_computed():
    """The pre-training / Diffusion-DPO objective: flow matching at t = 499 is sigma 0.5, x_t halfway between x0 and
    the noise, target the velocity eps - x0, time 500; DDPM at a = alphas_cumprod[t] mixes by sqrt(a), sqrt(1 - a)."""
    from mmalign.diffusion.schedule import training_pair

    x0, eps, t = torch.full((1, 1, 1, 1), 1.0), torch.full((1, 1, 1, 1), 3.0), torch.tensor([499])
    xt, target, time = training_pair(x0, eps, t)
    assert xt.item() == 2.0 and target.item() == 2.0 and time.item() == 500.0
    ac = torch.linspace(0.99, 0.01, 1000)
    a = ac[499].item()
    xt, target, time = training_pair(x0, eps, t, ac)
    assert math.isclose(xt.item(), math.sqrt(a) + 3 * math.sqrt(1 - a), rel_tol=1e-6)
    assert target.item() == 3.0 and time.item() == 499.0
    _, v, _ = training_pair(x0, eps, t, ac, v_target=True)
    assert math.isclose(v.item(), 3 * math.sqrt(a) - math.sqrt(1 - a), rel_tol=1e-6)

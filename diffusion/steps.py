"""Stateless, batched denoising steps with a Gaussian log-prob: the "action" of diffusion RL.

One denoising step maps x_t to x_{t-1} ~ N(mean(x_t, model output), std^2 I). Each function here computes
(mean, std) in fp32 from the model output and per-sample schedule values, then either draws x_{t-1} (sampling)
or scores a given x_{t-1} (re-scoring). They never touch a diffusers scheduler, so sampling and re-scoring run
the same arithmetic and the importance ratio right after sampling is exactly 1.

Log-prob reduction: the per-element Gaussian log-density is averaged ("mean", DDPO and Flow-GRPO's choice, hence
their 1e-4 clip ranges) or summed ("sum", the true log-density of the step) over all non-batch dimensions.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

REDUCTIONS = ("mean", "sum")


class StepOutput(NamedTuple):
    prev_sample: Tensor  # (B, ...) x_{t-1}, fp32
    logprob: Tensor  # (B,) reduced Gaussian log-density of prev_sample
    mean: Tensor  # (B, ...) mean of x_{t-1} given x_t
    std: Tensor  # (B,) standard deviation of x_{t-1} given x_t


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, ..., 1) broadcastable against `like`."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def gaussian_logprob(x: Tensor, mean: Tensor, std: Tensor, reduce: str = "mean") -> Tensor:
    """Reduced log N(x; mean, std^2 I) over non-batch dims.

    Args:
        x: (B, ...) the value to score (detached: the action is data, not a function of the weights).
        mean: (B, ...) Gaussian mean (with grad when re-scoring).
        std: (B,) per-sample standard deviation, > 0.
        reduce: "mean" or "sum" over the non-batch dimensions.

    Returns:
        (B,) log-probs.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}.")
    s = _bcast(std, mean)
    lp = -((x.detach() - mean) ** 2) / (2 * s**2) - torch.log(s) - 0.5 * math.log(2 * math.pi)
    dims = tuple(range(1, lp.dim()))
    return lp.mean(dims) if reduce == "mean" else lp.sum(dims)


def _finish(mean: Tensor, std: Tensor, prev_sample: Tensor | None, noise: Tensor | None, reduce: str) -> StepOutput:
    if (std <= 0).any():
        raise ValueError("a stochastic step needs std > 0 (DDIM eta > 0, flow noise_level > 0) to have a log-prob.")
    if prev_sample is None:
        noise = torch.randn_like(mean) if noise is None else noise.float()
        prev_sample = mean + _bcast(std, mean) * noise
    prev_sample = prev_sample.float()
    return StepOutput(prev_sample, gaussian_logprob(prev_sample, mean, std, reduce), mean, std)


def ddim_mean_std(model_output: Tensor, x_t: Tensor, alpha_t: Tensor, alpha_prev: Tensor, eta: float,
                  prediction_type: str = "epsilon") -> tuple[Tensor, Tensor]:
    """Mean (B, C, H, W) and std (B,) of a DDIM step (Song et al. 2021, Eq. 12 and 16), fp32; eta = 0 is DDIM's ODE.

    x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t);  sigma = eta sqrt((1 - a_prev) / (1 - a_t)) sqrt(1 - a_t / a_prev);
    mean = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps.
    """
    out, x = model_output.float(), x_t.float()
    a_t, a_prev = _bcast(alpha_t.float(), x), _bcast(alpha_prev.float(), x)
    if prediction_type == "epsilon":
        x0, eps = (x - (1 - a_t).sqrt() * out) / a_t.sqrt(), out
    elif prediction_type == "v_prediction":
        x0, eps = a_t.sqrt() * x - (1 - a_t).sqrt() * out, a_t.sqrt() * out + (1 - a_t).sqrt() * x
    elif prediction_type == "sample":
        x0, eps = out, (x - a_t.sqrt() * out) / (1 - a_t).sqrt()
    else:
        raise ValueError(f"unsupported prediction_type {prediction_type!r}.")
    var = (1 - alpha_prev.float()) / (1 - alpha_t.float()) * (1 - alpha_t.float() / alpha_prev.float())
    std = eta * var.clamp(min=0).sqrt()  # (B,), Eq. 16
    mean = a_prev.sqrt() * x0 + (1 - a_prev - _bcast(std, x) ** 2).clamp(min=0).sqrt() * eps  # Eq. 12
    return mean, std


def ddim_step(model_output: Tensor, x_t: Tensor, alpha_t: Tensor, alpha_prev: Tensor, eta: float,
              prediction_type: str = "epsilon", prev_sample: Tensor | None = None, noise: Tensor | None = None,
              reduce: str = "mean") -> StepOutput:
    """One DDIM step with eta > 0, batched over per-sample timesteps (DDPO): x_{t-1} = mean + sigma z.

    Args:
        model_output: (B, C, H, W) the (guided) model prediction: epsilon, v or x0 per `prediction_type`.
        x_t: (B, C, H, W) current sample.
        alpha_t: (B,) alphas_cumprod at t.
        alpha_prev: (B,) alphas_cumprod at the previous timestep (final_alpha_cumprod past the end).
        eta: DDIM stochasticity, > 0 (1 = DDPM-like variance).
        prediction_type: "epsilon", "v_prediction" or "sample".
        prev_sample: (B, C, H, W) x_{t-1} to score; None draws one.
        noise: (B, C, H, W) standard normal noise for drawing; None draws fresh noise.
        reduce: log-prob reduction, "mean" or "sum".

    Returns:
        StepOutput(prev_sample, logprob (B,), mean, std (B,)).
    """
    mean, std = ddim_mean_std(model_output, x_t, alpha_t, alpha_prev, eta, prediction_type)
    return _finish(mean, std, prev_sample, noise, reduce)


def flow_sde_step(velocity: Tensor, x_t: Tensor, sigma: Tensor, sigma_prev: Tensor, noise_level: float,
                  prev_sample: Tensor | None = None, noise: Tensor | None = None, reduce: str = "mean") -> StepOutput:
    """One Euler-Maruyama step of the flow-matching SDE with the ODE's marginals (Flow-GRPO, Liu et al. 2025, Eq. 9).

    sigma runs from 1 (noise) to 0 (data), dt = sigma_prev - sigma < 0, v is the predicted velocity:
    s = a sqrt(sigma / (1 - sigma));  mean = x + [v + s^2 / (2 sigma) (x + (1 - sigma) v)] dt;
    x_{t-1} = mean + s sqrt(-dt) z. At sigma = 1 the next sigma replaces sigma in the denominator 1 - sigma only, so
    the first step's s is a sqrt(1 / (1 - sigma_prev)) (Flow-GRPO's `sde_step_with_logprob`, which uses sigmas[1]).

    Args:
        velocity: (B, C, H, W) the (guided) velocity prediction.
        x_t: (B, C, H, W) current sample.
        sigma: (B,) current sigma in (0, 1].
        sigma_prev: (B,) next (smaller) sigma in [0, 1).
        noise_level: a, the SDE noise scale, > 0 (Flow-GRPO default 0.7).
        prev_sample, noise, reduce: as in `ddim_step`.

    Returns:
        StepOutput(prev_sample, logprob (B,), mean, std (B,)) with std = s sqrt(-dt).
    """
    v, x = velocity.float(), x_t.float()
    sigma, sigma_prev = sigma.float(), sigma_prev.float()
    s = noise_level * (sigma / (1 - torch.where(sigma >= 1, sigma_prev, sigma))).sqrt()  # (B,), no 0 division
    dt = sigma_prev - sigma
    sb, db, ssb = _bcast(sigma, x), _bcast(dt, x), _bcast(s, x)
    mean = x + (v + ssb**2 / (2 * sb) * (x + (1 - sb) * v)) * db
    return _finish(mean, s * (-dt).sqrt(), prev_sample, noise, reduce)


def euler_step(velocity: Tensor, x_t: Tensor, sigma: Tensor, sigma_prev: Tensor) -> Tensor:
    """Deterministic flow ODE step x + v dt (noise_level = 0; FlowMatchEulerDiscreteScheduler.step), (B, C, H, W)."""
    return x_t.float() + velocity.float() * _bcast((sigma_prev - sigma).float(), x_t)

"""Robust Reward Learning (RRL) of PEARL (Liu et al., ICML 2024, arXiv 2306.03615), and a plain BT baseline.

RRL models each step's reward as a Gaussian, r_t ~ N(mu(s_t, a_t), sigma(s_t, a_t)^2), so that pairs with
unreliable (e.g. transferred) labels can be explained by uncertainty instead of by a distorted mean:

- reparameterisation (PEARL's RPT, reviewer 2 of the ICLR-2024 submission): r_t = mu_t + sigma_t * eps_t,
  eps_t ~ N(0, 1); the segment return R = sum_t r_t enters the Bradley-Terry likelihood,
  L_BT = -E_eps[ z log s(R_a - R_b) + (1 - z) log s(R_b - R_a) ] (`mmalign.preference.bradley_terry_loss`);
- uncertainty regulariser (reviewer 4: "pushes the predicted uncertainty towards a predefined value"): the KL from
  the predicted step distribution to one with the same mean and a set scale sigma_0 (the "N(mu, 1)" form with
  sigma_0 = 1):  KL(N(mu, sigma^2) || N(mu, sigma_0^2)) = log(sigma_0 / sigma) + sigma^2 / (2 sigma_0^2) - 1/2,
  averaged over steps. Total loss L = L_BT + beta * KL. The exact form and coefficients of the ICML text are not
  verified (reference notes B4); these are this module's choices, stated in `RRLConfig`.

Without the regulariser, sigma is free to collapse on clean pairs and grow without bound on noisy ones; with it,
sigma stays near sigma_0 unless the labels pay for a departure. Noisy labels pay for a larger sigma (it flattens
P(a > b) towards 1/2); consistent labels pay for a smaller one. The plain BT model (`stochastic=False`) is the
same network with R = sum_t mu_t and no regulariser.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from mmalign.config import check_choice, check_numbers
from mmalign.preference import bradley_terry_loss, gaussian_kl_to_scale


@dataclass
class RRLConfig:
    """Reward-model training settings (RRL and the plain BT baseline share them)."""

    stochastic: bool = True
    """True: RRL (Gaussian rewards, reparameterised, KL regulariser); False: plain Bradley-Terry on the mean."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden sizes of the reward MLP on concat(obs, action)."""
    sigma0: float = 0.5
    """Scale the regulariser pulls each step's sigma towards (PEARL's predefined uncertainty; N(mu, 1) for 1)."""
    beta: float = 0.02
    """Weight of the KL regulariser (0.02 with sigma0 0.5: sigma moves 1.7-2x apart between noisy and clean regions
    in the tests; a larger beta pins it to sigma0)."""
    likelihood: str = "predictive"
    """"predictive": -log E_eps[s(R_a - R_b)] (variance flattens the predicted preference, so noisy pairs can be
    explained by uncertainty); "expected": E_eps[-log s(R_a - R_b)] (by Jensen, noise only ever raises this loss,
    so sigma shrinks everywhere and most where labels are noisiest; kept for comparison)."""
    mean_bound: float = 1.0
    """Per-step mean reward is bound * tanh(.) (B-Pref's tanh output); 0 = unbounded. A bounded mean cannot
    flatten noisy pairs by itself shrinking only there without losing the ranking, which leaves it to sigma."""
    num_samples: int = 8
    """Reparameterised draws of the returns per pair and step."""
    lr: float = 1e-3
    """Adam learning rate."""
    epochs: int = 100
    """Passes over the labelled pairs."""
    batch_size: int = 64
    """Pairs per optimizer step."""
    weight_decay: float = 0.0
    """Adam(W) weight decay."""
    seed: int = 0
    """Seed of the initialisation, the shuffling and the noise draws."""

    def __post_init__(self) -> None:
        check_choice(self, "likelihood", ("predictive", "expected"))
        check_numbers(self, "hidden", "num_samples", "epochs", "batch_size", ge=1)
        check_numbers(self, "sigma0", "lr", gt=0)
        check_numbers(self, "beta", "mean_bound", "weight_decay", "seed", ge=0)


class StepReward(NamedTuple):
    """Per-step reward distribution. mean, std: (..., H)."""

    mean: Tensor
    std: Tensor


class GaussianReward(nn.Module):
    """MLP from (obs, action) to a per-step Gaussian reward N(mean, std^2).

    Args:
        obs_dim: observation size.
        act_dim: action size.
        hidden: hidden layer sizes.
        sigma0: initial std (the regulariser's target), set through the log-std head's bias.
        mean_bound: mean = bound * tanh(.); 0 = unbounded.
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (64, 64), sigma0: float = 1.0,
                 mean_bound: float = 1.0):
        super().__init__()
        self.mean_bound = mean_bound
        layers, d = [], obs_dim + act_dim
        for h in hidden:
            layers += [nn.Linear(d, h), nn.ReLU()]
            d = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, 2)
        nn.init.zeros_(self.head.weight[1])
        nn.init.constant_(self.head.bias[1], float(torch.log(torch.tensor(sigma0))))

    def forward(self, obs: Tensor, actions: Tensor) -> StepReward:
        """obs (..., obs_dim), actions (..., act_dim) -> StepReward with mean, std (...)."""
        out = self.head(self.body(torch.cat([obs, actions], -1)))
        mean = self.mean_bound * torch.tanh(out[..., 0]) if self.mean_bound > 0 else out[..., 0]
        return StepReward(mean, out[..., 1].clamp(-5.0, 3.0).exp())

    @torch.no_grad()
    def reward(self, obs: Tensor, actions: Tensor) -> Tensor:
        """Mean reward (...) on obs' device, e.g. to relabel an offline dataset."""
        dev = self.head.weight.device
        return self(obs.to(dev), actions.to(dev)).mean.to(obs.device)


def sampled_returns(step: StepReward, num_samples: int, generator: torch.Generator | None = None) -> Tensor:
    """Reparameterised segment returns: R = sum_t (mu_t + sigma_t eps_t).

    Args:
        step: mean, std (N, H).
        num_samples: draws S.
        generator: noise generator (a CPU one: the draws are the same whatever device the model is on).

    Returns:
        (S, N) returns, differentiable in mean and std.
    """
    eps = torch.randn((num_samples, *step.mean.shape), generator=generator, dtype=step.mean.dtype)
    eps = eps.to(step.mean.device)
    return (step.mean + step.std * eps).sum(-1)


def rrl_loss(model: GaussianReward, obs_a: Tensor, act_a: Tensor, obs_b: Tensor, act_b: Tensor, labels: Tensor,
             cfg: RRLConfig, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """RRL (or plain BT) loss on a batch of labelled segment pairs.

    Args:
        model: the reward network.
        obs_a: (B, H, obs_dim) first segments; act_a (B, H, act_dim).
        act_a: (B, H, act_dim).
        obs_b: (B, H, obs_dim) second segments.
        act_b: (B, H, act_dim).
        labels: (B,) P(a preferred to b), in [0, 1] (soft CPA labels are fine).
        cfg: stochastic / beta / sigma0 / num_samples.
        generator: noise generator.

    Returns:
        dict with "loss" (scalar, with grad), "bt" and "kl" (scalars).
    """
    sa, sb = model(obs_a, act_a), model(obs_b, act_b)
    if not cfg.stochastic:  # plain Bradley-Terry on summed mean rewards
        bt = bradley_terry_loss(sa.mean.sum(-1), sb.mean.sum(-1), label=labels).mean()
        return {"loss": bt, "bt": bt.detach(), "kl": torch.zeros(())}
    ra, rb = sampled_returns(sa, cfg.num_samples, generator), sampled_returns(sb, cfg.num_samples, generator)
    if cfg.likelihood == "expected":  # E_eps[-log P(z | R_a, R_b)]: MC over draws of the BT loss
        bt = bradley_terry_loss(ra.flatten(), rb.flatten(), label=labels.repeat(cfg.num_samples)).mean()
    else:  # -log E_eps[P(z | R_a, R_b)]: the predictive probability p = E_eps[s(R_a - R_b)] enters the likelihood
        log_s = math.log(cfg.num_samples)
        log_p = torch.logsumexp(-bradley_terry_loss(ra, rb), 0) - log_s  # log E s(R_a - R_b), (B,)
        log_q = torch.logsumexp(-bradley_terry_loss(rb, ra), 0) - log_s  # log E s(R_b - R_a)
        bt = -(labels * log_p + (1 - labels) * log_q).mean()
    kl = torch.cat([gaussian_kl_to_scale(sa.std, cfg.sigma0), gaussian_kl_to_scale(sb.std, cfg.sigma0)]).mean()
    return {"loss": bt + cfg.beta * kl, "bt": bt.detach(), "kl": kl.detach()}


def fit_reward(obs_a: Tensor, act_a: Tensor, obs_b: Tensor, act_b: Tensor, labels: Tensor, cfg: RRLConfig,
               device: torch.device | str = "cpu") -> tuple[GaussianReward, list[dict[str, float]]]:
    """Train a reward model on labelled pairs of segments.

    Args:
        obs_a: (N, H, obs_dim) first segments.
        act_a: (N, H, act_dim).
        obs_b: (N, H, obs_dim) second segments.
        act_b: (N, H, act_dim).
        labels: (N,) P(a preferred to b).
        cfg: settings (cfg.stochastic picks RRL or plain BT).
        device: where the model trains (the data moves there; shuffling and noise stay on a CPU generator).

    Returns:
        The trained model (on `device`) and per-epoch mean metrics.
    """
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    model = GaussianReward(obs_a.shape[-1], act_a.shape[-1], cfg.hidden, cfg.sigma0, cfg.mean_bound).to(device)
    obs_a, act_a, obs_b, act_b, labels = (x.to(device) for x in (obs_a, act_a, obs_b, act_b, labels))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    history = []
    for _ in range(cfg.epochs):
        order, sums = torch.randperm(len(labels), generator=g), {"loss": 0.0, "bt": 0.0, "kl": 0.0}
        for i in range(0, len(order), cfg.batch_size):
            j = order[i:i + cfg.batch_size].to(device)
            out = rrl_loss(model, obs_a[j], act_a[j], obs_b[j], act_b[j], labels[j], cfg, g)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            for k in sums:
                sums[k] += float(out[k].detach()) * len(j) / len(labels)
        history.append(sums)
    return model, history


@torch.no_grad()
def ranking_accuracy(model: GaussianReward, obs: Tensor, actions: Tensor, true_returns: Tensor) -> float:
    """Fraction of segment pairs (with different true returns) that the predicted mean returns order correctly.

    Args:
        model: reward model.
        obs: (N, H, obs_dim) held-out segments.
        actions: (N, H, act_dim).
        true_returns: (N,) ground-truth segment returns.

    Returns:
        Pairwise ranking accuracy in [0, 1] (Kendall-style agreement).
    """
    pred = model.reward(obs, actions).sum(-1)
    a, b = torch.triu_indices(len(pred), len(pred), 1)
    differ = true_returns[a] != true_returns[b]
    agree = (pred[a] > pred[b]) == (true_returns[a] > true_returns[b])
    return float(agree[differ].float().mean())

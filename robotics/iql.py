"""Implicit Q-Learning (Kostrikov, Nair, Levine, ICLR 2022) for offline policies on relabelled datasets.

IQL never queries Q at actions outside the dataset:

- value: expectile regression of V(s) towards min_i Q_target_i(s, a),
  L_V = E[ |tau - 1(u < 0)| u^2 ],  u = Q_target(s, a) - V(s)  (tau = 0.7: V tracks an upper expectile of Q);
- Q: L_Q = E[ (r + gamma (1 - d) V(s') - Q_i(s, a))^2 ] for both critics (clipped double Q);
- actor: advantage-weighted regression, weights exp(beta (Q_target(s, a) - V(s))) clipped at 100. The actor is
  a deterministic Gaussian mean with a fixed std, so -log pi(a | s) reduces to the squared error ||pi(s) - a||^2;
- target critics follow the online ones by Polyak averaging, rate 0.005.

The paper's locomotion settings (tau 0.7, beta 3.0, gamma 0.99, lr 3e-4, batch 256) are the defaults here, with
smaller MLPs (64, 64) so that a few thousand steps run on a CPU in well under a minute.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from mmalign.config import check_numbers


@dataclass
class IQLConfig:
    """IQL settings (defaults: the paper's, except the network size and the number of steps)."""

    hidden: tuple[int, ...] = (64, 64)
    """Hidden sizes of the Q, V and actor MLPs."""
    expectile: float = 0.7
    """tau of the expectile value loss."""
    beta: float = 3.0
    """Inverse temperature of the advantage weights exp(beta A)."""
    max_weight: float = 100.0
    """Clip of the advantage weights."""
    gamma: float = 0.99
    """Discount."""
    polyak: float = 0.005
    """Target-network update rate."""
    lr: float = 3e-4
    """Adam learning rate of all three networks."""
    batch_size: int = 256
    """Transitions per step."""
    steps: int = 5000
    """Gradient steps."""
    seed: int = 0
    """Seed of the initialisation and the batch sampling."""
    normalize_obs: bool = False
    """Standardise observations with the dataset's mean and std (per dimension) in every network; the actor keeps
    the statistics, so it acts on raw observations. Meta-World's 39-d observations need it."""

    def __post_init__(self) -> None:
        check_numbers(self, "hidden", "batch_size", "steps", ge=1)
        check_numbers(self, "expectile", gt=0, lt=1)
        check_numbers(self, "beta", "seed", ge=0)
        check_numbers(self, "max_weight", "lr", gt=0)
        check_numbers(self, "gamma", ge=0, le=1)
        check_numbers(self, "polyak", gt=0, le=1)


def _mlp(d_in: int, d_out: int, hidden: tuple[int, ...]) -> nn.Sequential:
    layers, d = [], d_in
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    return nn.Sequential(*layers, nn.Linear(d, d_out))


class TwinQ(nn.Module):
    """Two Q(s, a) critics; `forward` returns both (B,) each."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.q1, self.q2 = _mlp(obs_dim + act_dim, 1, hidden), _mlp(obs_dim + act_dim, 1, hidden)

    def forward(self, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor]:
        x = torch.cat([obs, act], -1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class DeterministicActor(nn.Module):
    """Gaussian-mean actor pi(s) = tanh(MLP((s - mean) / std)), actions in [-1, 1] (mean 0, std 1 by default)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.net = _mlp(obs_dim, act_dim, hidden)
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))

    def forward(self, obs: Tensor) -> Tensor:
        return torch.tanh(self.net((obs - self.obs_mean) / self.obs_std))

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """One observation (obs_dim,) -> action (act_dim,) float32."""
        return self(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """Asymmetric squared loss |tau - 1(u < 0)| u^2 on u = Q - V, averaged."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


def transitions(observations: np.ndarray, actions: np.ndarray, rewards: np.ndarray, lengths: np.ndarray,
                ) -> dict[str, Tensor]:
    """Flatten padded episodes (E, L, ...) into (s, a, r, s', done) transitions.

    The planar tasks never terminate, only time out, so each episode's last step (whose s' is not stored) is dropped
    and every kept transition has done = 0.

    Args:
        observations: (E, L, obs_dim).
        actions: (E, L, act_dim).
        rewards: (E, L) the rewards to learn from (e.g. a reward model's mean).
        lengths: (E,) valid steps per episode.

    Returns:
        dict of float32 tensors obs, act, rew, next_obs, done with N = sum(lengths - 1) rows.
    """
    e, t = np.nonzero(np.arange(observations.shape[1])[None] < (np.asarray(lengths)[:, None] - 1))
    f = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
    return {"obs": f(observations[e, t]), "act": f(actions[e, t]), "rew": f(rewards[e, t]),
            "next_obs": f(observations[e, t + 1]), "done": torch.zeros(len(e))}


def train_iql(data: dict[str, Tensor], cfg: IQLConfig | None = None, device: torch.device | str = "cpu",
              ) -> tuple[DeterministicActor, dict[str, float]]:
    """Train IQL offline.

    Args:
        data: transitions from `transitions` (obs, act, rew, next_obs, done).
        cfg: settings.
        device: where the networks train (the data moves there; batches are drawn by a CPU generator, so the same
            seed draws the same batches on any device).

    Returns:
        The actor, on the CPU (rolling it out is env work), and the last step's losses / mean advantage weight.
    """
    cfg = cfg or IQLConfig()
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    obs_dim, act_dim = data["obs"].shape[-1], data["act"].shape[-1]
    q, v, actor = TwinQ(obs_dim, act_dim, cfg.hidden), _mlp(obs_dim, 1, cfg.hidden), DeterministicActor(
        obs_dim, act_dim, cfg.hidden)
    q, v, actor = q.to(device), v.to(device), actor.to(device)
    data = {k: x.to(device) for k, x in data.items()}
    if cfg.normalize_obs:  # critics read the standardised observations; the actor stores the statistics
        mean, std = data["obs"].mean(0), data["obs"].std(0) + 1e-3
        actor.obs_mean.copy_(mean)
        actor.obs_std.copy_(std)
        data = {**data, "obs": (data["obs"] - mean) / std, "next_obs": (data["next_obs"] - mean) / std}
        actor_in = lambda x: x * std + mean  # noqa: E731  (the actor standardises itself)
    else:
        actor_in = lambda x: x  # noqa: E731
    q_target = copy.deepcopy(q).requires_grad_(False)
    opt_q, opt_v = torch.optim.Adam(q.parameters(), cfg.lr), torch.optim.Adam(v.parameters(), cfg.lr)
    opt_pi = torch.optim.Adam(actor.parameters(), cfg.lr)
    n = len(data["obs"])
    for _ in range(cfg.steps):
        idx = torch.randint(0, n, (cfg.batch_size,), generator=g).to(device)
        s, a, r, s2, d = (data[k][idx] for k in ("obs", "act", "rew", "next_obs", "done"))
        with torch.no_grad():
            q_t = torch.min(*q_target(s, a))
        # value: expectile of the target Q
        v_s = v(s).squeeze(-1)
        loss_v = expectile_loss(q_t - v_s, cfg.expectile)
        opt_v.zero_grad(set_to_none=True)
        loss_v.backward()
        opt_v.step()
        # critics: r + gamma V(s')
        with torch.no_grad():
            target = r + cfg.gamma * (1.0 - d) * v(s2).squeeze(-1)
        q1, q2 = q(s, a)
        loss_q = (q1 - target).pow(2).mean() + (q2 - target).pow(2).mean()
        opt_q.zero_grad(set_to_none=True)
        loss_q.backward()
        opt_q.step()
        # actor: advantage-weighted regression onto the dataset action
        with torch.no_grad():
            w = torch.exp(cfg.beta * (q_t - v_s.detach())).clamp(max=cfg.max_weight)
        loss_pi = (w * (actor(actor_in(s)) - a).pow(2).sum(-1)).mean()
        opt_pi.zero_grad(set_to_none=True)
        loss_pi.backward()
        opt_pi.step()
        with torch.no_grad():
            for p, pt in zip(q.parameters(), q_target.parameters()):
                pt.lerp_(p, cfg.polyak)
        last = (loss_v, loss_q, loss_pi, w.mean())  # read once at the end: .item() per step would sync a GPU
    return actor.cpu(), {k: float(x) for k, x in zip(("loss_v", "loss_q", "loss_pi", "weight"), last)}


def evaluate(actor: DeterministicActor, env_id: str, episodes: int = 10, seed: int = 10_000,
             max_episode_steps: int | None = None) -> dict[str, float]:
    """Roll the actor out; success = info["success"] at any step of the episode.

    Args:
        actor: the policy.
        env_id: a registered id or a task name (`mmalign.robotics.offline_data.make_env`).
        episodes: number of episodes (reset seeds seed, seed + 1, ...).
        seed: first reset seed.
        max_episode_steps: episode length; None = the env's own.

    Returns:
        dict with success (rate), return (mean ground-truth return), episodes.
    """
    from mmalign.robotics.offline_data import make_env

    env = make_env(env_id, max_episode_steps)
    succ, rets = [], []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, ret, ok = False, 0.0, False
        while not done:
            obs, r, term, trunc, info = env.step(actor.act(obs))
            ret, ok, done = ret + r, ok or bool(info["success"]), term or trunc
        succ.append(ok)
        rets.append(ret)
    env.close()
    return {"success": float(np.mean(succ)), "return": float(np.mean(rets)), "episodes": episodes}

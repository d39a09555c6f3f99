"""The Gaussian robot policy beyond the contract (test_contract.py): the state a rollout keeps, its log-prob
density, and the rollout a real vector env produces for PPO's GAE."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from robot_tiny import tiny_robot_policy

from mmalign.advantages import gae
from mmalign.algorithms.ppo import PPOConfig, ppo_loss, ppo_prepare
from mmalign.robotics.policy import GaussianActorCritic, GaussianPolicy
from mmalign.robotics.sampler import VecEnvSampler


def test_rollout_keeps_observations_and_raw_actions(sampled):
    rollout = sampled("robot")[1]  # 3 envs, 12 steps each
    assert rollout.state["obs"].shape == (3, 12, 10) and rollout.state["actions"].shape == (3, 12, 2)


def test_logprob_is_gaussian_density_summed_over_action_dims():
    policy = tiny_robot_policy(num_envs=1)
    rollout = policy.sample(["reach"], 2)
    obs, act = rollout.state["obs"][0, 0], rollout.state["actions"][0, 0]
    mean, std = policy.net.actor(obs), policy.net.log_std.exp()
    expected = (-0.5 * ((act - mean) / std) ** 2 - std.log() - 0.5 * np.log(2 * np.pi)).sum()
    torch.testing.assert_close(policy.logprobs(rollout)[0, 0], expected)


def test_rollout_marks_truncation_autoreset_and_bootstrap_from_real_vector_env():
    # episodes of 4 steps: truncated after steps 3 and 8, autoreset steps 4 and 9 are not transitions
    policy = tiny_robot_policy(num_envs=2, max_episode_steps=4)
    r = policy.sample(["reach"], 11)
    expect_trunc = torch.zeros(2, 11, dtype=torch.bool)
    expect_trunc[:, [3, 8]] = True
    expect_mask = torch.ones(2, 11, dtype=torch.bool)
    expect_mask[:, [4, 9]] = False
    assert torch.equal(r.extras["truncated"], expect_trunc)
    assert torch.equal(r.mask, expect_mask)
    assert not r.extras["terminated"].any()  # the planar tasks never terminate
    assert float(r.rewards[~r.mask].abs().sum()) == 0.0
    # the successor at a truncation is the final observation, not the reset one; it bootstraps from V(final)
    final = r.state["next_obs"][:, 3]
    assert not torch.allclose(final, r.state["obs"][:, 5])  # obs at 5 follows the reset
    torch.testing.assert_close(r.state["obs"][:, 4], final)  # the autoreset step starts from the final obs
    torch.testing.assert_close(r.extras["bootstrap_values"][:, 3], policy.net.value(final).detach())
    torch.testing.assert_close(r.extras["bootstrap_values"][:, -1], policy.net.value(r.state["next_obs"][:, -1]))
    assert len(policy.sampler.pop_finished()) == 4 and policy.sampler.env_steps == 18


def test_gae_on_env_rollout_matches_hand_recursion():
    policy = tiny_robot_policy(num_envs=2, max_episode_steps=4)
    r = policy.sample(["reach"], 11)
    cfg = PPOConfig(gamma=0.9, lam=0.8, whiten_advantages=False)
    ppo_prepare(policy, r, cfg)
    v = policy.net.value(r.state["obs"]).detach()
    boot, rew, mask = r.extras["bootstrap_values"], r.rewards, r.mask
    adv = torch.zeros(2, 11)
    for b in range(2):
        running = 0.0
        for t in reversed(range(11)):
            if not mask[b, t]:
                running = 0.0
                continue
            ends = bool(r.extras["truncated"][b, t]) or t == 10  # successor: V(final obs) / outside the rollout
            delta = rew[b, t] + 0.9 * (boot[b, t] if ends else v[b, t + 1]) - v[b, t]
            running = delta if ends else delta + 0.9 * 0.8 * running
            adv[b, t] = running
    torch.testing.assert_close(r.extras["advantages"], adv, atol=1e-5, rtol=1e-5)
    # the shared core agrees when handed the same tensors explicitly
    a2, _ = gae(rew, v * mask, boot, r.extras["terminated"], r.extras["truncated"], mask, 0.9, 0.8)
    torch.testing.assert_close(a2, adv, atol=1e-5, rtol=1e-5)
    loss, metrics = ppo_loss(policy, r, cfg)
    assert torch.isfinite(loss) and metrics["clip_frac"] == 0.0  # ratio 1 right after sampling


class _TerminatingEnv(gym.Env):
    """Counts steps; terminates after step 2 of each episode (so termination, not truncation)."""

    observation_space = gym.spaces.Box(-10, 10, (10,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(10, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(10, self.t, np.float32), 1.0, self.t == 3, False, {"success": self.t == 3}


def test_termination_gets_zero_successor_value():
    if "test/Terminating-v0" not in gym.registry:
        gym.register("test/Terminating-v0", entry_point=_TerminatingEnv)
    torch.manual_seed(0)
    policy = GaussianPolicy(GaussianActorCritic(10, 2, (8,)), VecEnvSampler("test/Terminating-v0", 2))
    r = policy.sample(["x"], 8)
    assert torch.equal(r.extras["terminated"][0], torch.tensor([0, 0, 1, 0, 0, 0, 1, 0], dtype=torch.bool))
    assert torch.equal(r.mask[0], torch.tensor([1, 1, 1, 0, 1, 1, 1, 0], dtype=torch.bool))
    ppo_prepare(policy, r, PPOConfig(gamma=1.0, lam=1.0, whiten_advantages=False))
    v = policy.net.value(r.state["obs"]).detach()
    # gamma = lam = 1: the advantage of step 0 is the episode return (3) minus V(s_0), no bootstrap
    torch.testing.assert_close(r.extras["advantages"][:, 0], 3.0 - v[:, 0])
    torch.testing.assert_close(r.extras["advantages"][:, 4], 3.0 - v[:, 4])
    assert r.state["success"][0].tolist() == [0, 0, 1, 0, 0, 0, 1, 0]

"""Online preference-based RL for robots on the Trainer (`task: robot`): PrefPPO (Lee et al. 2021) with the shared
PPO core, the reward learned from a scripted teacher's preferences.

A Trainer iteration is one PPO iteration: `set_progress` runs a feedback round when one is due (`feedback.py`:
query -> label -> reward-model fit), the policy collects `trainer.num_samples` steps from each of `num_envs` envs
(B = num_envs rows, T = num_samples), the reward callable scores every step (learned r_hat of the executed action,
the env reward for `reward: ground_truth`, or PEBBLE's state entropy during warm-up), then PPO with GAE updates
(`algorithm: ppo`; `trainer.epochs` x `trainer.minibatches` of env rows). Env steps per iteration:
num_envs x num_samples (autoreset steps excluded).

Evaluation is on the ground truth: success rate and return of the deterministic policy, and the reward model's
accuracy on held-out segment pairs. A checkpoint restarts the envs (seeded by the run's seed and env step), so a
resumed run continues the same curve. The run folder gains curves.png (success and return against env steps and
against feedback), success.png, final/reward_ensemble.safetensors and final_policy.mp4.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmalign.config import check_choice, check_numbers
from mmalign.robotics.env_runner import VECTORS, make_vec_env
from mmalign.robotics.feedback import FeedbackConfig, PreferenceFeedback
from mmalign.robotics.policy import GaussianActorCritic, GaussianPolicy
from mmalign.robotics.sampler import Trajectory, make_sampler


@dataclass
class RobotTaskConfig:
    env_id: str = "mmalign/Reach-v0"
    """A gymnasium id (the mmalign/ planar tasks and mmalign/MetaWorld-v3 report info["success"])."""
    env_kwargs: dict = field(default_factory=dict)
    """Keyword arguments of the env (e.g. {task: reach-v3} for mmalign/MetaWorld-v3)."""
    num_envs: int = 8
    """Parallel envs: the rows of a rollout."""
    sampler: str = "local"
    """Where the envs step: "local" (this process) or "ray" (`ray_workers` Ray actors, each a vector env over its
    share of the envs; `pip install 'mmalign[ray]'`). Same seed, same rollouts (docs/robotics.md, Scaling out)."""
    vector: str = "sync"
    """How each vector env steps its envs: "sync" (one after another) or "async" (gymnasium's AsyncVectorEnv, a
    subprocess per env)."""
    ray_workers: int = 2
    """Ray actors of `sampler: ray` (1 CPU each, at most num_envs)."""
    ray_address: str | None = None
    """Ray cluster of `sampler: ray` ("auto", "ray://head:10001"); None = a local instance with `ray_workers` CPUs."""
    seed: int = 0
    """Seed of the envs, the teacher, query sampling and reward fitting (the networks follow trainer.seed)."""
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    """Where the reward comes from: the teacher, queries, the reward ensemble (`feedback.py`)."""
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    """Actor and critic widths."""
    log_std_init: float = -0.5
    """Initial log-std of every action dimension."""
    eval_episodes: int = 10
    """Deterministic episodes per evaluation; success = max over the episode of info["success"] (B-Pref)."""
    video: bool = True
    """Write final_policy.mp4 of one deterministic episode."""
    torch_threads: int = 1
    """torch CPU threads; small networks run fastest on one (more threads cost ~10x on a loaded 2-core machine)."""

    def __post_init__(self) -> None:
        check_numbers(self, "num_envs", "eval_episodes", "torch_threads", ge=1)
        check_numbers(self, "ray_workers", ge=1, le=self.num_envs)
        check_choice(self, "sampler", ("local", "ray"))
        check_choice(self, "vector", VECTORS)
        check_numbers(self, "seed", ge=0)
        check_numbers(self, "hidden", ge=1)


class RobotReward:
    """The per-step reward of a robot rollout: (B, T) for B `Trajectory` outputs of T steps (0 on masked steps)."""

    name = "reward"

    def __init__(self, task: RobotTask):
        self.task = task

    def __call__(self, contexts: Sequence, outputs: Sequence[Trajectory]) -> Tensor:
        fb, steps = self.task.feedback, self.task.sampler.env_steps
        mask = torch.stack([o.mask for o in outputs]).float()
        if fb.cfg.reward == "ground_truth" and not fb.warming_up(steps):
            return torch.stack([o.env_rewards for o in outputs]) * mask
        # the executed (clipped) action, as in the labelled segments: the raw Gaussian sample lies outside the box
        # the reward model was fit on, and PPO learns to exploit the extrapolation
        obs, actions = torch.stack([o.obs for o in outputs]), torch.stack([o.env_actions for o in outputs])
        return fb.reward(obs, actions, steps) * mask


class RobotTask:
    """A Task (mmalign.task) for online preference RL: envs, a Gaussian actor-critic, preference feedback. The
    actor-critic and the reward ensemble live on `device` (the Trainer's); the envs step on CPUs."""

    Config = RobotTaskConfig
    CHANGEABLE_ON_RESUME = ("sampler", "vector", "ray_workers", "ray_address")
    """task_args a resumed run may change: where the envs step changes no trajectory (the envs restart, seeded, at
    every checkpoint), so a run killed in-process may resume on Ray workers, or on a cluster, and back."""

    def __init__(self, cfg: RobotTaskConfig, device: torch.device | str = "cpu"):
        self.cfg = cfg
        torch.set_num_threads(cfg.torch_threads)
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        self.seed = cfg.seed + 1_000_003 * rank  # each process its own envs and labels
        self.sampler = make_sampler(cfg.sampler, cfg.env_id, cfg.num_envs, self.seed, cfg.vector, cfg.env_kwargs,
                                    on_episode=lambda ep: self.feedback.add_episode(ep),
                                    ray_workers=cfg.ray_workers, ray_address=cfg.ray_address)
        obs_dim, act_dim = self.sampler.observation_space.shape[0], self.sampler.action_space.shape[0]
        self.feedback = PreferenceFeedback(cfg.feedback, obs_dim, act_dim, self.seed, device)
        net = GaussianActorCritic(obs_dim, act_dim, cfg.hidden, cfg.log_std_init).to(device)
        self.policy = GaussianPolicy(net, self.sampler)
        self.rewards = [("reward", RobotReward(self), 1.0)]
        self.train_contexts = self.eval_contexts = [cfg.env_id]

    def set_progress(self, step: int) -> dict[str, float]:
        """Before iteration `step`: a feedback round when one is due; the env steps and labels so far."""
        fb, steps = self.feedback, self.sampler.env_steps
        metrics = fb.round() if fb.due(steps) else {}
        return {**metrics, "env_steps": steps, "feedback": fb.feedback, "episode_return": fb.recent_return()}

    @torch.no_grad()
    def evaluate(self, policy: GaussianPolicy) -> dict[str, float]:
        """Ground-truth success rate and return of the deterministic policy; held-out reward-model accuracy."""
        cfg, n = self.cfg, self.cfg.eval_episodes
        env = make_vec_env(cfg.env_id, n, seed=10_000 + self.seed, **cfg.env_kwargs)
        obs, _ = env.reset(seed=[10_000 + self.seed] * n)
        ret, success, done = np.zeros(n), np.zeros(n, bool), np.zeros(n, bool)
        while not done.all():
            obs, r, term, trunc, info = env.step(policy(obs))
            ret += r * ~done
            success |= np.asarray(info["success"], bool) & ~done
            done |= term | trunc
        env.close()
        return {"success_rate": float(success.mean()), "return": float(ret.mean()), **self.feedback.heldout_accuracy(),
                "env_steps": self.sampler.env_steps, "feedback": self.feedback.feedback}

    def checkpoint_state(self) -> dict:
        """Restart the envs (seeded by the env step: a checkpoint is a synchronisation point) and return the run
        state: env steps and the whole feedback state."""
        self.sampler.restart(self._restart_seed())
        return {"env_steps": self.sampler.env_steps, "feedback": self.feedback.state_dict()}

    def restore_state(self, state: dict) -> None:
        self.feedback.load_state_dict(state["feedback"])
        self.sampler.env_steps = state["env_steps"]
        self.sampler.restart(self._restart_seed())

    def _restart_seed(self) -> int:
        return (self.seed * 7_919 + self.sampler.env_steps) % 2**31

    def finish(self, policy: GaussianPolicy, run_dir: Path) -> None:
        """The reward ensemble beside the final weights, curves against env steps and feedback, a video."""
        from mmalign.robotics.report import write_report

        write_report(run_dir, self.feedback, policy, self.cfg.env_id, self.seed, self.cfg.video, self.cfg.env_kwargs)

"""PEBBLE (Lee et al. 2021): SAC on a reward learned from preferences, with the replay buffer relabelled after every
reward update. Off-policy, so not the Trainer's loop: a short loop of its own on the shared run helper
(`mmalign.runs.Run`: config.yaml, the run-exists guard, metrics, checksummed checkpoints with `--resume`, final/).

Per vector step: act (uniform until `sac.learning_starts`), store the transitions with the learner's reward
(`feedback.py`: PEBBLE's state-entropy warm-up, then r_hat), `sac.updates_per_step` SAC updates per env step; a
feedback round when one is due, then relabel every stored transition. Leaving the warm-up resets the critics.
The envs, feedback and evaluation are the robot task's (`task.py`); its Gaussian actor-critic is not used.

`mmalign train configs/robotics/reach_pebble.yaml [key=value ...] [--resume]` (`loop: pebble` in the config).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mmalign import config
from mmalign.checkpoint import load_checkpoint, rng_state, set_rng_state
from mmalign.config import check_numbers, from_dict, to_dict
from mmalign.device import check_device, resolve_device
from mmalign.robotics.sac import SAC, ReplayBuffer, SACConfig
from mmalign.robotics.task import RobotTask, RobotTaskConfig
from mmalign.runs import Run


@dataclass
class PebbleConfig:
    name: str = "pebble"
    """Run name: outputs go to `<output_dir>/<name>/`."""
    output_dir: str = "runs"
    """Folder that holds run folders."""
    seed: int = 0
    """Seed of the networks and the SAC updates (the envs and labels follow task.seed)."""
    total_env_steps: int = 100_000
    """Env steps of training (autoreset steps excluded)."""
    eval_every: int = 10_000
    """Evaluate every this many env steps (and at the start and the end)."""
    save_every: int = 10_000
    """Checkpoint every this many env steps (and at the end); a checkpoint restarts the envs."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep."""
    device: str = "auto"
    """Where SAC, its replay buffer and the reward ensemble live: auto (CUDA when there is one), cpu or cuda."""
    task: RobotTaskConfig = field(default_factory=RobotTaskConfig)
    """Envs, preference feedback and evaluation (the robot task's settings; its `hidden` is unused)."""
    sac: SACConfig = field(default_factory=SACConfig)
    """SAC settings."""

    def __post_init__(self) -> None:
        check_numbers(self, "total_env_steps", "eval_every", "save_every", "keep_checkpoints", ge=1)
        check_numbers(self, "seed", ge=0)
        check_device(self)


FIXED_ON_RESUME = ("seed", "task", "sac.hidden", "sac.buffer_size")
"""What a resumed PEBBLE run must keep; the rest (steps, cadences, SAC coefficients, the device) may change."""
CHANGEABLE_ON_RESUME = ("task.sampler", "task.vector", "task.ray_workers", "task.ray_address")
"""Where the envs step: the trajectories do not depend on it, so a resumed run may move them."""


def updates_due(updates_per_step: float, before: int, after: int) -> int:
    """SAC updates owed for the env steps (before, after]: floor(u * after) - floor(u * before), so that every env
    step earns `updates_per_step` on average whatever the vector size, an autoreset step (no real step) earns none,
    and a resumed run owes what the uninterrupted one did."""
    return int(updates_per_step * after) - int(updates_per_step * before)


class Pebble:
    """One run's state: the robot task (envs, feedback), the SAC agent and its replay buffer."""

    def __init__(self, cfg: PebbleConfig):
        self.cfg = cfg
        self.metrics: dict[str, float] = {}  # the newest value of each training metric
        torch.manual_seed(cfg.seed)
        device = resolve_device(cfg.device)
        self.task = RobotTask(cfg.task, device)
        sampler = self.task.sampler
        obs_dim, act_dim = sampler.observation_space.shape[0], sampler.action_space.shape[0]
        self.agent = SAC(obs_dim, act_dim, cfg.sac, device)
        self.buffer = ReplayBuffer(obs_dim, act_dim, cfg.sac.buffer_size, device)

    @property
    def env_steps(self) -> int:
        return self.task.sampler.env_steps

    def reward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The learner's reward; during warm-up the state entropy against the newest 10k stored states."""
        ref = self.buffer.obs[: len(self.buffer)][-10_000:] if len(self.buffer) else None
        return self.task.feedback.reward(obs, actions, self.env_steps, reference=ref)

    def step(self) -> dict[str, float]:
        """A feedback round when due (then relabel), one vector step into the buffer, then the SAC updates."""
        cfg, fb = self.cfg.sac, self.task.feedback
        metrics = fb.round() if fb.due(self.env_steps) else {}
        if metrics:
            self.buffer.relabel(self.reward)
        self.agent.random_actions = self.env_steps < cfg.learning_starts
        before = self.env_steps
        rollout = self.task.sampler.collect(self.agent, 1)
        ground_truth = fb.cfg.reward == "ground_truth" and not fb.warming_up(self.env_steps)
        self.buffer.add_rollout(rollout, None if ground_truth else self.reward)
        if self.env_steps < cfg.learning_starts:
            return metrics
        if fb.cfg.unsup_steps and before <= fb.cfg.unsup_steps < self.env_steps:
            self.agent.reset_critics()  # PEBBLE: leave warm-up with fresh critics on the new reward
            if ground_truth:
                self.buffer.relabel(lambda s, a: torch.zeros(len(s), device=s.device))  # warm-up env rewards unknown
        for _ in range(updates_due(cfg.updates_per_step, before, self.env_steps)):
            metrics.update(self.agent.update(self.buffer.sample(cfg.batch_size)))
        return metrics

    def evaluate(self) -> dict[str, float]:
        return {f"eval/{k}": v for k, v in self.task.evaluate(self.agent).items()}

    def checkpoint_parts(self) -> dict[str, dict]:
        return {"agent": self.agent.state_dict(), "buffer": self.buffer.state_dict(),
                "task_0": self.task.checkpoint_state(), "rng_0": rng_state(), "metrics": self.metrics}

    def load_checkpoint(self, ckpt: Path) -> int:
        """Restore checkpoint `ckpt` (read and checked whole first); returns its env step."""
        parts = load_checkpoint(ckpt, ["agent", "buffer", "task_0", "rng_0", "metrics"])
        self.metrics = parts["metrics"]
        self.agent.load_state_dict(parts["agent"])
        self.buffer.load_state_dict(parts["buffer"])
        self.task.restore_state(parts["task_0"])
        set_rng_state(parts["rng_0"])
        return self.env_steps


def train(cfg: PebbleConfig, resume: bool = False) -> Path:
    """Run (or continue) one PEBBLE experiment; returns the run folder."""
    run = Run(Path(cfg.output_dir) / cfg.name, to_dict(cfg), resume, FIXED_ON_RESUME, CHANGEABLE_ON_RESUME,
              keep=cfg.keep_checkpoints)
    pebble = Pebble(cfg)
    start = run.restore(pebble.load_checkpoint) if resume else 0
    t0 = time.perf_counter()
    next_eval = (start // cfg.eval_every + 1) * cfg.eval_every
    next_save = (start // cfg.save_every + 1) * cfg.save_every
    with run.tracker(start if resume else None) as tracker:
        if not resume:
            tracker.log(0, pebble.evaluate())
        while pebble.env_steps < cfg.total_env_steps:
            pebble.metrics.update(pebble.step())
            steps, last = pebble.env_steps, pebble.env_steps >= cfg.total_env_steps
            if steps >= next_eval or last:
                tracker.log(steps, {**pebble.evaluate(), **pebble.metrics, "feedback": pebble.task.feedback.feedback,
                                    "episode_return": pebble.task.feedback.recent_return(),
                                    "time": time.perf_counter() - t0})
                next_eval += cfg.eval_every
            if steps >= next_save or last:
                run.save(steps, pebble.checkpoint_parts())
                next_save += cfg.save_every
    run.save_final({"actor": pebble.agent.actor.state_dict()})  # the final SAC actor, checksummed
    pebble.task.finish(pebble.agent, run.dir)  # then the task's reward ensemble beside it, curves, the video
    return run.dir


def load_config(path: str | Path, overrides: list[str] | None = None) -> PebbleConfig:
    """A YAML file (and dotted key=value overrides) as a validated `PebbleConfig`."""

    def build(data: dict) -> PebbleConfig:
        data.pop("loop", None)
        return from_dict(PebbleConfig, data)

    return config.load_config(path, overrides, build)


def main(path: str, overrides: list[str], resume: bool = False) -> Path:
    """`mmalign train CONFIG` for a config with `loop: pebble`."""
    return train(load_config(path, overrides), resume)

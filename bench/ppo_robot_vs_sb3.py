"""Env steps per second of mmalign's robot PPO loop vs raw env stepping (the floor) and Stable-Baselines3 PPO.

All three use the same env (mmalign/Reach-v0, 8 synchronous copies), and both PPOs use the same settings: 64x64
tanh actor and critic, 128 steps per env per rollout, 10 epochs x 4 minibatches, one torch thread. Reported:
steps/s of each and the ratios. Needs `pip install stable-baselines3` (it is not a dependency of mmalign).

    python bench/ppo_robot_vs_sb3.py [--steps 16384]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def raw_steps_per_s(steps: int, num_envs: int) -> float:
    from mmalign.robotics.sampler import make_vec_env

    env = make_vec_env("mmalign/Reach-v0", num_envs, seed=0)
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    for _ in range(steps // num_envs):
        env.step(rng.uniform(-1, 1, (num_envs, 2)).astype(np.float32))
    return steps / (time.perf_counter() - t)


def mmalign_steps_per_s(steps: int, num_envs: int) -> float:
    """PPO on the ground-truth reward through the Trainer (the robot task of configs/robotics/reach_prefppo.yaml)."""
    from pathlib import Path

    from mmalign.run_config import load_run_config
    from mmalign.trainer import Trainer

    config = Path(__file__).parents[1] / "configs" / "robotics" / "reach_prefppo.yaml"
    overrides = ["task_args.feedback.reward=ground_truth", f"task_args.num_envs={num_envs}", "task_args.video=false"]
    trainer = Trainer(load_run_config(config, overrides))
    sampler = trainer.task.sampler
    trainer.step(0)  # warm-up
    start, t, k = sampler.env_steps, time.perf_counter(), 1
    while sampler.env_steps - start < steps:
        trainer.step(k)
        k += 1
    return (sampler.env_steps - start) / (time.perf_counter() - t)


def sb3_steps_per_s(steps: int, num_envs: int) -> float:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    import mmalign.envs  # noqa: F401

    env = make_vec_env("mmalign/Reach-v0", n_envs=num_envs, seed=0)
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=128 * num_envs // 4, n_epochs=10, seed=0, device="cpu",
                policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}}, verbose=0)
    model.learn(128 * num_envs)  # warm-up
    t = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    return steps / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=16384)
    p.add_argument("--num-envs", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(1)
    out = {"raw": raw_steps_per_s(args.steps, args.num_envs),
           "mmalign_ppo": mmalign_steps_per_s(args.steps, args.num_envs)}
    try:
        out["sb3_ppo"] = sb3_steps_per_s(args.steps, args.num_envs)
    except ImportError:
        print("stable-baselines3 is not installed: pip install stable-baselines3")
    out["mmalign_over_raw"] = out["mmalign_ppo"] / out["raw"]
    if "sb3_ppo" in out:
        out["mmalign_over_sb3"] = out["mmalign_ppo"] / out["sb3_ppo"]
    print(json.dumps({k: round(v, 3) for k, v in out.items()}, indent=2))


if __name__ == "__main__":
    main()

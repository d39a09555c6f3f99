"""Env steps per second of mmalign's robot PPO loop vs raw env stepping (the floor) and Stable-Baselines3 PPO.

All systems use the same env (mmalign/Reach-v0, 8 synchronous copies), and the PPOs use the same settings: 64x64
tanh actor and critic, 128 steps per env per rollout, 10 epochs x 4 minibatches, one torch thread. mmalign's Trainer
uses torch's fused AdamW on the CPU; SB3 runs twice, with its default Adam ("sb3") and with the fused one
("sb3_fused"), so that the optimizer implementation is not all the ratio measures. Needs `pip install -e .[bench]`
(stable-baselines3 is not a dependency of mmalign; without it the SB3 columns are dropped).

Interleaving: the systems live in this process and run one PPO iteration (num_envs x 128 env steps: one rollout and
its update; for raw stepping the same number of random-action steps) at a time, in ABBA order (mmalign, sb3,
sb3_fused, raw, then raw, sb3_fused, sb3, mmalign, ...), so the load drifts of a shared machine hit them alike. Each
pass over the systems gives one ratio per pair from adjacent runs; the table shows the per-pass ratios and their
median, on wall time and on process CPU time (less sensitive to other tenants). SB3 runs each iteration as
`learn(n_steps * n_envs, reset_num_timesteps=False)`: one rollout and one `train()`.

    python bench/ppo_robot_vs_sb3.py [--passes 16] [--num-envs 8]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

ROLLOUT = 128  # steps per env per PPO iteration, as configs/robotics/reach_prefppo.yaml


class Raw:
    """Random actions through the same vector env: the floor of any loop."""

    def __init__(self, num_envs: int):
        from mmalign.robotics.sampler import make_vec_env

        self.env, self.n = make_vec_env("mmalign/Reach-v0", num_envs, seed=0), num_envs
        self.rng = np.random.default_rng(0)

    def iteration(self) -> int:
        for _ in range(ROLLOUT):
            self.env.step(self.rng.uniform(-1, 1, (self.n, 2)).astype(np.float32))
        return ROLLOUT * self.n


class MMAlign:
    """PPO on the ground-truth reward through the Trainer (the robot task of configs/robotics/reach_prefppo.yaml)."""

    def __init__(self, num_envs: int):
        from mmalign.run_config import load_run_config
        from mmalign.trainer import Trainer

        config = Path(__file__).parents[1] / "configs" / "robotics" / "reach_prefppo.yaml"
        overrides = ["task_args.feedback.reward=ground_truth", f"task_args.num_envs={num_envs}",
                     "task_args.video=false", f"trainer.num_samples={ROLLOUT}"]
        self.trainer = Trainer(load_run_config(config, overrides))
        self.sampler, self.k = self.trainer.task.sampler, 0

    def iteration(self) -> int:
        start = self.sampler.env_steps  # real steps: gymnasium's autoreset steps are not counted
        self.trainer.step(self.k)
        self.k += 1
        return self.sampler.env_steps - start


class SB3:
    """Stable-Baselines3's PPO with its default Adam (on the CPU torch's loop of small ops per parameter tensor)."""

    fused = False

    def __init__(self, num_envs: int):
        from stable_baselines3 import PPO
        from stable_baselines3.common.env_util import make_vec_env

        import mmalign.envs  # noqa: F401

        env = make_vec_env("mmalign/Reach-v0", n_envs=num_envs, seed=0)
        policy = {"net_arch": {"pi": [64, 64], "vf": [64, 64]}}
        if self.fused:  # SB3's own eps (1e-5) is set only when optimizer_kwargs is not given
            policy["optimizer_kwargs"] = {"eps": 1e-5, "fused": True}
        self.model = PPO("MlpPolicy", env, n_steps=ROLLOUT, batch_size=ROLLOUT * num_envs // 4, n_epochs=10, seed=0,
                         device="cpu", policy_kwargs=policy, verbose=0)
        self.n, self.first = ROLLOUT * num_envs, True

    def iteration(self) -> int:
        self.model.learn(self.n, reset_num_timesteps=self.first)
        self.first = False
        return self.n


class SB3Fused(SB3):
    """SB3's PPO with the fused Adam that mmalign's Trainer uses on the CPU: the same optimizer implementation."""

    fused = True


SYSTEMS = {"mmalign": MMAlign, "sb3": SB3, "sb3_fused": SB3Fused, "raw": Raw}
PAIRS = (("mmalign", "sb3"), ("mmalign", "sb3_fused"), ("mmalign", "raw"), ("sb3", "raw"))


def timed(system) -> tuple[float, float]:
    """(env steps per wall second, per process CPU second) of one iteration."""
    t, c = time.perf_counter(), time.process_time()
    steps = system.iteration()
    return steps / (time.perf_counter() - t), steps / (time.process_time() - c)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--passes", type=int, default=16, help="timed passes; each runs one iteration of every system")
    p.add_argument("--warmup", type=int, default=1, help="untimed passes first")
    p.add_argument("--num-envs", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(1)
    systems = {}
    for name, cls in SYSTEMS.items():
        try:
            systems[name] = cls(args.num_envs)
        except ImportError as e:
            print(f"{name} skipped ({e}): pip install -e .[bench]")
    order = list(systems)
    print(f"mmalign/Reach-v0 x {args.num_envs} envs, {ROLLOUT} steps per env per iteration, {args.warmup} warm-up + "
          f"{args.passes} timed passes in ABBA order over {order}, torch threads 1", flush=True)
    runs: dict[str, list[tuple[float, float]]] = {s: [] for s in order}
    for k in range(args.warmup + args.passes):
        for s in order if k % 2 == 0 else order[::-1]:
            r = timed(systems[s])
            if k >= args.warmup:
                runs[s].append(r)

    pairs = [(a, b) for a, b in PAIRS if a in runs and b in runs]
    head = " | ".join(f"{a}/{b} wall | {a}/{b} cpu" for a, b in pairs)
    print(f"\n| pass | {head} |\n|---:|" + "---:|" * 2 * len(pairs))
    ratios = {(a, b, i): [x[i] / y[i] for x, y in zip(runs[a], runs[b])] for a, b in pairs for i in (0, 1)}
    for k in range(args.passes):
        print(f"| {k} | " + " | ".join(f"{ratios[a, b, i][k]:.2f}" for a, b in pairs for i in (0, 1)) + " |")
    print("| **median** | " + " | ".join(f"**{statistics.median(ratios[a, b, i]):.2f}**" for a, b in pairs
                                         for i in (0, 1)) + " |")
    print("\nmedian env steps/s: " + ", ".join(
        f"{s} {statistics.median(x[0] for x in runs[s]):.0f} wall / {statistics.median(x[1] for x in runs[s]):.0f} cpu"
        for s in order))


if __name__ == "__main__":
    main()

"""mmalign's SAC (PEBBLE's learner) vs Stable-Baselines3's SAC on the ground-truth reward: returns and wall clock.

Both learn mmalign/Reach-v0 with the settings of configs/robotics/reach_pebble.yaml, mmalign's through that config
(`task.feedback.reward=ground_truth`, no state-entropy warm-up: plain SAC on the env reward) and its own loop
(`robotics/pebble.py`, one `Pebble.step` per vector step), SB3's built to match:

    8 synchronous envs; actor and twin critics 64x64 ReLU, orthogonal init (SB3's nets re-initialised as
    `policy.mlp` does: gain sqrt 2, last layer 1, zero biases); log-std clamped to [-5, 2] (SB3's module constant
    set to mmalign's); Adam lr 3e-4 (eps 1e-8) for actor, critics and temperature; batch 128; gamma 0.99;
    tau 0.005; temperature tuned from 0.1 towards entropy -|A|; 2 updates per vector step (0.25 per env step);
    1000 env steps of uniform random actions first; 100k-transition buffer; truncation does not zero the
    successor value (SB3's handle_timeout_termination); one torch thread, CPU.

Differences that remain: SB3 halves the critic loss (Adam is nearly invariant to the scale); SB3 updates the
temperature before the critics and reuses one actor sample for it and the actor loss (mmalign samples after the
critic step; same distribution); SB3 starts updating at 1008 env steps, mmalign at 1000; the envs' and the
networks' random streams differ (the same seed number seeds each system's own streams).

Evaluation: every `--eval-every` env steps (and at 0), both policies run the same 20 deterministic episodes through
mmalign's evaluation (`RobotTask.evaluate`: the same seeded evaluation envs). Training runs in chunks of `--chunk`
env steps in ABBA order (mmalign, sb3, sb3, mmalign, ...), so load drifts hit both alike; the wall-clock ratio is
sb3 seconds / mmalign seconds over the training chunks (evaluation excluded), with process CPU time beside it.
Each seed is one process; `--jobs` runs seeds side by side.

    python bench/sac_robot_vs_sb3.py --seeds 0 1 2 3 4 --steps 40000 --eval-every 2500 --chunk 500 [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "robotics" / "reach_pebble.yaml"


class MMAlign:
    """mmalign's SAC through the shipped PEBBLE config on the env reward."""

    def __init__(self, seed: int):
        from mmalign.robotics.pebble import Pebble, load_config

        overrides = [f"seed={seed}", f"task.seed={seed}", "device=cpu", "task.video=false",
                     "task.feedback.reward=ground_truth", "task.feedback.unsup_steps=0"]
        self.pebble = Pebble(load_config(CONFIG, overrides))
        self.cfg = self.pebble.cfg

    @property
    def env_steps(self) -> int:
        return self.pebble.env_steps

    def advance(self, target: int) -> None:
        while self.pebble.env_steps < target:
            self.pebble.step()

    def policy(self, obs: np.ndarray) -> np.ndarray:
        return self.pebble.agent(obs)


def orthogonal_(net: nn.Module, out: nn.Linear) -> None:
    """`policy.mlp`'s init: orthogonal gain sqrt 2 on hidden Linears, 1 on the output layer `out`, zero biases."""
    for m in net.modules():
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, 1.0 if m is out else np.sqrt(2))
            nn.init.zeros_(m.bias)


class SB3:
    """Stable-Baselines3's SAC with mmalign's settings (module docstring)."""

    def __init__(self, seed: int, cfg):
        from stable_baselines3 import SAC
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.sac import policies

        import mmalign.envs  # noqa: F401

        policies.LOG_STD_MIN = -5  # mmalign's clamp (SquashedGaussianActor._squash)
        sac, n = cfg.sac, cfg.task.num_envs
        env = make_vec_env(cfg.task.env_id, n_envs=n, seed=seed)
        self.model = SAC("MlpPolicy", env, learning_rate=sac.lr, buffer_size=sac.buffer_size,
                         learning_starts=sac.learning_starts, batch_size=sac.batch_size, tau=sac.tau, gamma=sac.gamma,
                         train_freq=1, gradient_steps=round(sac.updates_per_step * n),
                         ent_coef=f"auto_{sac.init_alpha}", target_entropy="auto",
                         policy_kwargs={"net_arch": list(sac.hidden), "activation_fn": nn.ReLU}, seed=seed,
                         device="cpu", verbose=0)
        self._init_like_mmalign()
        self.first = True

    def _init_like_mmalign(self) -> None:
        policy = self.model.policy
        actor = policy.actor
        orthogonal_(actor.latent_pi, out=None)
        for head in (actor.mu, actor.log_std):
            orthogonal_(head, out=head)
        for q in policy.critic.q_networks:
            orthogonal_(q, out=q[-1])
        policy.critic_target.load_state_dict(policy.critic.state_dict())

    @property
    def env_steps(self) -> int:
        return self.model.num_timesteps

    def advance(self, target: int) -> None:
        if target > self.model.num_timesteps:
            self.model.learn(target - self.model.num_timesteps, reset_num_timesteps=self.first)
            self.first = False

    def policy(self, obs: np.ndarray) -> np.ndarray:
        return self.model.predict(obs, deterministic=True)[0]


def run_seed(seed: int, steps: int, eval_every: int, chunk: int) -> dict:
    """Both systems on one seed, interleaved; evaluation rows and per-chunk (wall, cpu) seconds per system."""
    torch.set_num_threads(1)
    mm = MMAlign(seed)
    systems = {"mmalign": mm, "sb3": SB3(seed, mm.cfg)}
    task = mm.pebble.task
    evals: dict[str, list] = {s: [] for s in systems}
    times: dict[str, list] = {s: [] for s in systems}

    def evaluate(name: str, at: int) -> None:
        r = task.evaluate(systems[name].policy)
        evals[name].append({"env_steps": at, "success": r["success_rate"], "return": r["return"]})

    for name in systems:
        evaluate(name, 0)
    order, k = list(systems), 0
    for target in range(chunk, steps + 1, chunk):
        for name in order if k % 2 == 0 else order[::-1]:
            t, c = time.perf_counter(), time.process_time()
            systems[name].advance(target)
            times[name].append((time.perf_counter() - t, time.process_time() - c))
            if target % eval_every == 0:
                evaluate(name, target)
        k += 1
    return {"seed": seed, "evals": evals, "times": times,
            "env_steps": {s: systems[s].env_steps for s in systems}}


def table(results: list[dict]) -> str:
    """Success / return per checkpoint, system and seed; mean over seeds."""
    seeds = [r["seed"] for r in results]
    cols = [f"{s} seed {x}" for s in ("mmalign", "sb3") for x in seeds]
    lines = [f"| env steps | {' | '.join(cols)} | mmalign mean | sb3 mean |", "|---:|" + "---|" * (len(cols) + 2)]
    for i, row in enumerate(results[0]["evals"]["mmalign"]):
        cells, means = [], {}
        for s in ("mmalign", "sb3"):
            got = [r["evals"][s][i] for r in results]
            cells += [f"{g['success']:.2f} / {g['return']:.1f}" for g in got]
            means[s] = (f"{statistics.mean(g['success'] for g in got):.2f} / "
                        f"{statistics.mean(g['return'] for g in got):.1f}")
        lines.append(f"| {row['env_steps']} | {' | '.join(cells)} | {means['mmalign']} | {means['sb3']} |")
    return "\n".join(lines)


def speed(results: list[dict]) -> str:
    """sb3 / mmalign seconds per training chunk (wall and CPU), median over chunks, per seed."""
    out = []
    for r in results:
        mm, sb = r["times"]["mmalign"], r["times"]["sb3"]
        wall = statistics.median(b[0] / a[0] for a, b in zip(mm, sb))
        cpu = statistics.median(b[1] / a[1] for a, b in zip(mm, sb))
        total = sum(b[0] for b in sb) / sum(a[0] for a in mm)
        out.append(f"seed {r['seed']}: sb3/mmalign seconds, median per chunk {wall:.2f} wall / {cpu:.2f} cpu; "
                   f"total {total:.2f} (mmalign {sum(a[0] for a in mm):.0f} s, sb3 {sum(b[0] for b in sb):.0f} s "
                   f"for {r['env_steps']['mmalign']} / {r['env_steps']['sb3']} env steps)")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=16_000, help="env steps of training per system")
    p.add_argument("--eval-every", type=int, default=2_000, help="evaluate every this many env steps")
    p.add_argument("--chunk", type=int, default=1_000, help="env steps per interleaved training chunk")
    p.add_argument("--jobs", type=int, default=1, help="seeds run side by side, each in its own process")
    p.add_argument("--results", type=Path, help="JSON lines file: keeps each finished seed, skips those it holds")
    p.add_argument("--one-seed", type=int, help=argparse.SUPPRESS)  # a worker process: print one seed's JSON
    args = p.parse_args()
    if args.eval_every % args.chunk or args.steps % args.chunk:
        p.error("--eval-every and --steps must be multiples of --chunk")
    if args.one_seed is not None:
        print(json.dumps(run_seed(args.one_seed, args.steps, args.eval_every, args.chunk)))
        return
    done = {}
    if args.results and args.results.exists():
        done = {r["seed"]: r for r in map(json.loads, args.results.read_text().splitlines())}

    def worker(seed: int) -> dict:
        cmd = [sys.executable, __file__, "--one-seed", str(seed), "--steps", str(args.steps),
               "--eval-every", str(args.eval_every), "--chunk", str(args.chunk)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            raise RuntimeError(f"seed {seed} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.splitlines()[-1])
        if args.results:
            with args.results.open("a") as f:
                f.write(json.dumps(result) + "\n")
        print(f"seed {seed} done", flush=True)
        return result

    todo = [s for s in args.seeds if s not in done]
    with ThreadPoolExecutor(args.jobs) as pool:
        for r in pool.map(worker, todo):
            done[r["seed"]] = r
    results = [done[s] for s in args.seeds]
    print(f"\nmmalign/Reach-v0, configs/robotics/reach_pebble.yaml on the ground-truth reward, {args.steps} env "
          f"steps, {args.chunk}-step chunks in ABBA order; success / return of 20 deterministic episodes\n")
    print(table(results))
    print("\n" + speed(results))


if __name__ == "__main__":
    main()

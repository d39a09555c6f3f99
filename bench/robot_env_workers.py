"""Env steps per second of the robot samplers: in-process sync (the baseline), async (a subprocess per env), and
1, 2 and 4 Ray workers, each collecting the same rollouts (same seed, same trajectories) with a 64x64 Gaussian
policy. Rounds are interleaved (every sampler once per round, in turn) so that a change of machine load hits all of
them; the median over rounds is reported, with each sampler's ratio to the sync one and the load average.

    python bench/robot_env_workers.py [--num-envs 8] [--steps 128] [--rounds 5] [--workers 1 2 4]
    python bench/robot_env_workers.py --env mmalign/MetaWorld-v3 --env-kwargs '{"task": "reach-v3"}'  # a heavier env

Needs `pip install 'mmalign[ray]'` for the Ray rows (they are left out without it).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch


def build(args) -> dict:
    from mmalign.robotics.sampler import VecEnvSampler

    env = {**json.loads(args.env_kwargs), **({"max_episode_steps": args.episode_steps} if args.episode_steps else {})}
    samplers = {"sync": VecEnvSampler(args.env, args.num_envs, seed=0, env_kwargs=env),
                "async": VecEnvSampler(args.env, args.num_envs, seed=0, vector="async", env_kwargs=env)}
    try:
        import ray

        from mmalign.robotics.ray_sampler import RaySampler
    except ImportError:
        print("Ray is not installed (pip install 'mmalign[ray]'): Ray rows left out", file=sys.stderr)
        return samplers
    ray.init(num_cpus=sum(args.workers), include_dashboard=False, log_to_driver=False)
    for w in args.workers:
        samplers[f"ray_{w}"] = RaySampler(args.env, args.num_envs, seed=0, env_kwargs=env, workers=w)
    return samplers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="mmalign/Reach-v0")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--steps", type=int, default=128, help="vector steps per collect (per env)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--episode-steps", type=int, default=0, help="episode length; 0 = the env's own")
    p.add_argument("--env-kwargs", default="{}", help="JSON keyword arguments of the env")
    args = p.parse_args()
    torch.set_num_threads(1)
    from mmalign.robotics.policy import GaussianActorCritic, GaussianPolicy

    load_before = os.getloadavg()
    samplers = build(args)
    torch.manual_seed(0)
    obs_dim, act_dim = samplers["sync"].observation_space.shape[0], samplers["sync"].action_space.shape[0]
    policy = GaussianPolicy(GaussianActorCritic(obs_dim, act_dim, (64, 64)))
    for s in samplers.values():
        s.collect(policy, 8)  # warm-up: subprocesses and actors started, code paths loaded
    rates: dict[str, list[float]] = {k: [] for k in samplers}
    for _ in range(args.rounds):
        for name, s in samplers.items():
            start, t = s.env_steps, time.perf_counter()
            s.collect(policy, args.steps)
            rates[name].append((s.env_steps - start) / (time.perf_counter() - t))
    for s in samplers.values():
        s.close()
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(json.dumps({"command": " ".join(["python", *sys.argv]), "cpus": os.cpu_count(),
                      "loadavg_before": [round(x, 1) for x in load_before],
                      "loadavg_after": [round(x, 1) for x in os.getloadavg()],
                      "env_steps_per_s": {k: round(v) for k, v in med.items()},
                      "ratio_to_sync": {k: round(v / med["sync"], 2) for k, v in med.items()},
                      "spread_per_s": {k: [round(min(v)), round(max(v))] for k, v in rates.items()}}, indent=1))


if __name__ == "__main__":
    main()

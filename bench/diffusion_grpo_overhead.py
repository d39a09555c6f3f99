"""One diffusion GRPO iteration, split into sampling and training, against its floor: the same number of bare
denoiser forward (sampling) and forward + backward (training) passes on the same rows. Also B2 branch sampling's
saving in denoiser calls, counted by the policy's `net_calls` and timed, against plain sampling of the same batch.

The model is the embedded shapes architecture (`mmalign.diffusion.pretrain.embedded_components`, random weights,
saved to a temporary diffusers folder and loaded through the task like any local pipeline) at `--size` pixels and
`--width` base channels; the rest of the run (CFG, steps, batch, minibatches, lr, clip) comes from `--config`.

What the floor holds: per rollout, T denoiser forwards on B rows (2B with CFG) under no_grad; per minibatch, T
forwards with grad on its rows and one backward of their sum. What the ratio then shows is everything else: the
step arithmetic and log-probs, prompt encoding, decoding, rewards, advantages, masks, the trainer's bookkeeping and
the optimizer step. Medians over `--steps` timed iterations after `--warmup`, one torch thread by default.

    python bench/diffusion_grpo_overhead.py                          # 8 x 8, width 16 (the embedded model)
    python bench/diffusion_grpo_overhead.py --size 32 --width 32     # a larger UNet, same loop
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time


def build(a):
    import torch

    from mmalign.diffusion.models import save_components
    from mmalign.diffusion.pretrain import PretrainConfig, embedded_components
    from mmalign.run_config import load_run_config, task_class
    from mmalign.trainer import Trainer

    model_dir = save_components(embedded_components(PretrainConfig(size=a.size, width=a.width)), tempfile.mkdtemp())
    cfg = load_run_config(a.config)
    targs = cfg.task_args
    no_lora, no_b2 = dataclasses.replace(targs.lora, rank=0), dataclasses.replace(targs.b2, branches=0)
    cfg = dataclasses.replace(
        cfg, task_args=dataclasses.replace(cfg.task_args, model=str(model_dir), lora=no_lora, b2=no_b2,
                                           trained_steps=dataclasses.replace(targs.trained_steps, end=0)),
        trainer=dataclasses.replace(cfg.trainer, output_dir=tempfile.mkdtemp(), steps=a.warmup + a.steps,
                                    cpu=True, save_every=0, eval_every=0))
    task = task_class(cfg.task)(cfg.task_args, torch.device("cpu"))
    return cfg, task, Trainer(cfg, task=task)


def floor(policy, rows: int, minibatches: int) -> tuple[float, float]:
    """Seconds of T bare forwards on `rows` rows (no grad), and of T forwards + one backward per minibatch."""
    import torch

    cfg_rows = 2 if policy.sampling.guidance_scale > 1 else 1
    x = torch.randn(rows * cfg_rows, policy.channels, policy.latent_size, policy.latent_size)
    emb, pooled = policy.encode(["a red circle on the left"] * len(x))
    ts = policy.timesteps
    t0 = time.perf_counter()
    with torch.no_grad():
        for t in ts[:policy.num_steps]:
            policy.net_at(x, t.expand(len(x)), emb, pooled)
    t1 = time.perf_counter()
    for xm, em, pm in zip(x.chunk(minibatches), emb.chunk(minibatches), pooled.chunk(minibatches)):
        total = sum(policy.net_at(xm, t.expand(len(xm)), em, pm).float().square().mean()
                    for t in ts[:policy.num_steps])
        total.backward()
    policy.zero_grad(set_to_none=True)
    return t1 - t0, time.perf_counter() - t1


def branch_saving(policy, contexts: list, num_samples: int, branches: int, branch_step: int) -> dict:
    """Denoiser rows and seconds of plain sampling vs B2 branch sampling of the same batch."""
    import torch

    from mmalign.diffusion.branching import sample_branched

    out = {}
    for name, fn in (("plain", lambda: policy.sample(contexts, num_samples)),
                     ("branched", lambda: sample_branched(policy, contexts, num_samples, branch_step, branches))):
        torch.manual_seed(0)
        calls, t0 = policy.net_calls, time.perf_counter()
        fn()
        out[name] = {"rows": policy.net_calls - calls, "seconds": time.perf_counter() - t0}
    b, cfg_rows = len(contexts) * num_samples, 2 if policy.sampling.guidance_scale > 1 else 1
    out["rows_saved"] = out["plain"]["rows"] - out["branched"]["rows"]
    out["rows_saved_formula"] = (b - b // branches) * branch_step * cfg_rows
    out["time_ratio"] = out["branched"]["seconds"] / out["plain"]["seconds"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/diffusion/shapes_grpo.yaml")
    p.add_argument("--size", type=int, default=8, help="image size in pixels")
    p.add_argument("--width", type=int, default=16, help="UNet base channels")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--branches", type=int, default=4)
    p.add_argument("--branch-step", type=int, default=0, help="0 = half the denoising steps")
    p.add_argument("--out", default="", help="write the figures as JSON here")
    a = p.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    cfg, task, trainer = build(a)
    policy, tc = trainer.policy, cfg.trainer
    rows = tc.contexts_per_step * tc.num_samples
    runs, floors = [], []
    for k in range(a.warmup + a.steps):
        m = trainer.step(k)
        f = floor(policy, rows, tc.minibatches * tc.epochs)
        if k >= a.warmup:
            runs.append(m)
            floors.append(f)
    med = {key: statistics.median(r[key] for r in runs) for key in ("time_sample", "time_train", "time_step")}
    f_sample, f_train = (statistics.median(f[i] for f in floors) for i in (0, 1))
    contexts = task.train_contexts[:tc.contexts_per_step]
    saving = branch_saving(policy, contexts, tc.num_samples, a.branches, a.branch_step or policy.num_steps // 2)
    result = {
        "model": {"size": a.size, "width": a.width, "params": sum(p.numel() for p in policy.denoiser.parameters())},
        "batch": {"images": rows, "steps": policy.num_steps, "cfg": policy.sampling.guidance_scale,
                  "minibatches": tc.minibatches},
        "iteration_s": med, "floor_s": {"sample": f_sample, "train": f_train},
        "overhead": {"sample": med["time_sample"] / f_sample, "train": med["time_train"] / f_train,
                     "iteration": med["time_step"] / (f_sample + f_train)},
        "branching": saving}
    print(json.dumps(result, indent=2))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()

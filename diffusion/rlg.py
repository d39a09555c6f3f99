"""Seeded generation and Reinforcement Learning Guidance (RLG, Jin et al. 2025, arXiv 2508.21016).

RLG mixes the base and the RL fine-tuned model at inference, both with the same CFG scale, through the guided
combination text decoding uses too (`mmalign.decoding.combine.guided`):
pred = base + w (tuned - base), w = 0 the base model, w = 1 the fine-tuned one, w > 1 extrapolation (equivalent to
the KL coefficient beta / w of the RL objective). The base is the same policy in `reference_mode()` (LoRA
disabled), never a second copy. Steps before `rlg_start` use the fine-tuned prediction alone.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmalign.decoding.combine import guided
from mmalign.diffusion.policy import DiffusionPolicy, prompt_of, seeded_noise
from mmalign.diffusion.steps import ddim_mean_std, euler_step


def rlg_predict(policy: DiffusionPolicy, x: Tensor, k: Tensor, emb: Tensor, pooled: Tensor, w: float) -> Tensor:
    """base + w (tuned - base), each guided with the policy's CFG scale, fp32 (B, C, H, W)."""
    tuned = policy.predict(x, k, emb, pooled)
    with policy.reference_mode():
        base = policy.predict(x, k, emb, pooled)
    return guided(base, [(w, tuned, base)])


def _deterministic_step(policy: DiffusionPolicy, out: Tensor, x: Tensor, k: Tensor) -> Tensor:
    """The ODE step: DDIM with eta = 0, or the flow Euler step."""
    if policy.family == "flow":
        return euler_step(out, x, policy.sigmas[k], policy.sigmas[k + 1])
    return ddim_mean_std(out, x, policy.alpha_t[k], policy.alpha_prev[k], 0.0, policy.prediction_type)[0]


@torch.no_grad()
def generate(policy: DiffusionPolicy, contexts: Sequence, seed: int = 0, rlg_scale: float | None = None,
             rlg_start: int = 0, deterministic: bool = False,
             noise: tuple[Tensor, Tensor] | None = None) -> tuple[list[np.ndarray], Tensor]:
    """One image per context from seeded noise (the same noise for every model and guidance setting).

    Args:
        policy: the (fine-tuned) policy.
        contexts: B prompts or rows.
        seed: seed of the initial and step noise.
        rlg_scale: RLG weight w; None = the policy alone (no second forward).
        rlg_start: first step index that uses RLG.
        deterministic: ODE sampling (DDIM eta = 0 / Euler) instead of the policy's stochastic steps.
        noise: (initial latents, step noise) to use instead of drawing them from `seed` (`chunked_noise`).

    Returns:
        (B uint8 images, final latents (B, C, h, w)).
    """
    emb, pooled = policy.encode([prompt_of(c) for c in contexts])
    x, noise = noise if noise is not None else seeded_noise(policy, len(contexts), seed)
    for i in range(policy.num_steps):
        k = torch.full((len(contexts),), i, device=x.device, dtype=torch.long)
        if rlg_scale is None or i < rlg_start:
            out = policy.predict(x, k, emb, pooled)
        else:
            out = rlg_predict(policy, x, k, emb, pooled, rlg_scale)
        if deterministic:
            x = _deterministic_step(policy, out, x, k)
        else:
            x = policy.step(out, x, k, noise=noise[i]).prev_sample
    return policy.decode(x), x


def sweep(task, scales: Sequence[float], out: Path) -> list[dict]:
    """Held-out evaluation of `task.policy` at each RL-guidance weight w (the same seeded noise for every w): one
    metrics row per w, an image grid `rlg_w<w>.png` per w and `rlg_sweep.md` / `rlg_sweep.jsonl` in `out`."""
    from mmalign.diffusion.media import save_grid

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for w in scales:
        rows.append({"w": w, **task.evaluate(task.policy, rlg_scale=w)})
        save_grid(task.eval_records, out / f"rlg_w{w:g}.png", task.cfg.eval_samples)
    keys = [k for k in rows[0] if k != "w"]
    lines = ["| w | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {r['w']:g} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |" for r in rows]
    (out / "rlg_sweep.md").write_text("\n".join(lines) + "\n")
    (out / "rlg_sweep.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m mmalign.diffusion.rlg CONFIG [overrides] --checkpoint CKPT --scales 0 0.5 1 1.5 2 --out DIR`."""
    parser = argparse.ArgumentParser(prog="python -m mmalign.diffusion.rlg", description=main.__doc__)
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint of the fine-tuned run (step_N folder)")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5, 2.0])
    parser.add_argument("--out", required=True, help="folder for the table and the grids")
    args = parser.parse_args(argv)
    from mmalign.cli import build_task

    _, task = build_task(args.config, args.overrides, args.checkpoint)
    sweep(task, args.scales, Path(args.out))
    print((Path(args.out) / "rlg_sweep.md").read_text(), end="")


if __name__ == "__main__":
    main()

"""Diffusion-DPO (Wallace et al. 2023, Eq. 14) through the shared preference losses.

`rollout_from(contexts, images, generator)` makes a one-step rollout per image: the image (VAE-encoded when there is
a VAE) noised at a random training timestep. Its "log-prob" is minus the denoising error, -mean ||target - pred||^2
over latent elements (the ELBO term of Eq. 14 up to constants), so the shared DPO loss on (chosen, rejected)
sequence log-ratios is exactly Diffusion-DPO's with beta_mmalign = beta_paper / 2 (the reference code's
beta_dpo = 5000 for SD 1.5 is beta 2500 here). Chosen and rejected images of the same row share the noise and
timestep, as in the paper: the preference loss draws them, handing every response of a micro-batch a generator in
the same state (`mmalign.algorithms.offline.given_rollouts`); the rollout keeps them, so the policy and its
reference score the same noised image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from mmalign.diffusion import shapes
from mmalign.diffusion.schedule import training_pair
from mmalign.rollout import Rollout


def _encode_images(policy, images: Sequence) -> Tensor:
    """B uint8 (H, W, 3) images -> model-space x0 (B, C, h, w)."""
    x = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float() / 127.5 - 1
    x = x.to(policy.device)
    if policy.vae is None:
        return x
    with torch.no_grad():
        vae_dtype = next(policy.vae.parameters()).dtype
        return policy.vae.encode(x.to(vae_dtype)).latent_dist.mean.float() * policy.vae.config.scaling_factor


def _draws(shape: tuple, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Noise (B, C, h, w) and a training timestep index (B,), drawn row by row on the CPU."""
    noise, steps = torch.empty(shape), torch.empty(shape[0], dtype=torch.long)
    for i in range(shape[0]):
        noise[i] = torch.randn(shape[1:], generator=generator)
        steps[i] = torch.randint(0, 1000, (), generator=generator)
    return noise, steps


def rollout_from(policy, contexts: Sequence, images: Sequence, generator: torch.Generator | None = None) -> Rollout:
    """A one-step "denoising" rollout of given images (offline preference data); `logprobs` left at 0.

    Args:
        policy: the `DiffusionPolicy`.
        contexts: B prompts or rows.
        images: B uint8 images (H, W, 3).
        generator: where the noise and timestep come from (the global RNG when None).
    """
    from mmalign.diffusion.policy import prompt_of

    prompts = [prompt_of(c) for c in contexts]
    x0 = _encode_images(policy, images)
    noise, t = _draws(tuple(x0.shape), generator)
    emb, pooled = policy.encode(prompts)
    b = len(prompts)
    return Rollout(group=torch.arange(b, device=x0.device), logprobs=torch.zeros(b, 1, device=x0.device),
                   mask=torch.ones(b, 1, dtype=torch.bool, device=x0.device), outputs=list(images),
                   state={"kind": "given", "x0": x0, "noise": noise.to(x0.device), "train_t": t.to(x0.device),
                          "prompt_embeds": emb, "pooled": pooled})


def denoising_logprobs(policy, rollout: Rollout) -> Tensor:
    """(B, 1) minus the denoising error at the rollout's timestep, against the target the model predicts: epsilon or
    v (DDPM, its scheduler's prediction_type) or the velocity (flow)."""
    s = rollout.state
    kind = "flow" if policy.family == "flow" else policy.prediction_type
    if kind not in ("flow", "epsilon", "v_prediction"):
        raise ValueError(f"Diffusion-DPO scores epsilon-, v- or flow-predicting models; this scheduler predicts "
                         f"{kind!r}. Use a model trained on one of those targets.")
    schedule = None if kind == "flow" else policy.alphas_cumprod
    xt, target, time = training_pair(s["x0"], s["noise"], s["train_t"], schedule, v_target=kind == "v_prediction")
    pred = policy.net_at(xt, time, s["prompt_embeds"], s["pooled"])
    return -((pred - target) ** 2).mean(dim=tuple(range(1, pred.dim())))[:, None]


def preference_rows(rows: list[dict], pairs: int, policy, seed: int = 0) -> list[dict]:
    """Drawn preference pairs for the shapes task: chosen = the prompt drawn right, rejected = one attribute
    (colour, shape or position) drawn wrong. Rows: {"prompt", ..., "chosen": image, "rejected": image}."""
    rng = np.random.default_rng(seed)
    size = policy.latent_size if policy.vae is None else policy.latent_size * 8
    out = []
    for row in rows:
        for _ in range(pairs):
            key = ["color", "shape", "position"][int(rng.integers(3))] if row.get("position") else "color"
            options = {"color": list(shapes.COLORS), "shape": list(shapes.SHAPES), "position": list(shapes.POSITIONS)}
            wrong = [v for v in options[key] if v != row[key]]
            bad = {**row, key: wrong[int(rng.integers(len(wrong)))]}
            out.append({**row, "chosen": shapes.draw(row, size, rng), "rejected": shapes.draw(bad, size, rng)})
    return out

"""mmalign.diffusion: RL over denoising steps for text-to-image diffusion models (docs/diffusion.md).

- `steps`: stateless DDIM (eta > 0) and flow-SDE steps with Gaussian log-probs.
- `policy.DiffusionPolicy`: a diffusers denoiser as an mmalign `Policy` (CFG, LoRA, reference, B2 branching).
- `schedule`, `algorithms`: timestep masks, B2-DiffuRL schedule / selection, DDPO per-prompt statistics.
- `rlg.generate`: seeded sampling and RL guidance; `dpo`: Diffusion-DPO rollouts of given images.
- `rewards`, `shapes`, `pretrain`, `task`: image rewards, the embedded shapes task and its model, the trainer task.
"""

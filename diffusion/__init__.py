"""mmalign.diffusion: RL over denoising steps for text-to-image diffusion models (docs/diffusion.md).

- `steps`: stateless DDIM (eta > 0) and flow-SDE steps with Gaussian log-probs.
- `policy.DiffusionPolicy`: a diffusers denoiser as an mmalign `Policy` (LoRA, reference); `guidance`: CFG;
  `branching`: B2-DiffuRL branch sampling.
- `schedule`, `algorithms`: the sampling schedule, timestep masks, B2-DiffuRL schedule / selection, DDPO / B2
  advantages with per-prompt statistics (the algorithm's run state).
- `rlg.generate`: seeded sampling and RL guidance; `dpo`: Diffusion-DPO rollouts of given images.
- `rewards`, `shapes`, `pretrain`, `task`: image rewards, the embedded shapes task and its model, the trainer task.
- `media`: image grids and MP4s of clips; `video`: the text-to-video subpackage (world-model reward, docs/video.md).
"""

"""Text-to-image diffusion on the adapter contract: a denoising-step `Policy` over diffusers models.

A step is one denoising step x_t -> x_{t-1}; its log-prob is the Gaussian density of the sampled x_{t-1} given
x_t under the current weights, averaged over latent elements by default (`reduce="mean"`, DDPO / Flow-GRPO; use
clip ranges around 1e-4) or summed (`reduce="sum"`). Two step families, picked from the scheduler's class:
"ddim" (DDIMScheduler, eta > 0; UNet2DConditionModel pipelines, DDPO) and "flow" (FlowMatchEulerDiscreteScheduler
turned into an SDE; SD3/FLUX-style transformers, Flow-GRPO). Both are stateless functions in `steps.py`, used
for sampling and re-scoring alike; the scheduler object is only read once for its schedule (`schedule.py`).

Classifier-free guidance (`guidance.py`) runs inside the step, model outputs are cast to fp32 before the step
arithmetic, the denoiser always runs in eval mode. `Rollout.state` holds the latent chain (B, T+1, ...), the
schedule index of each step (B, T) and the prompt embeddings; `Rollout.mask` marks the steps that train.
B2-DiffuRL branch sampling lives in `branching.py`, rollouts of given images (Diffusion-DPO) in `dpo.py`, saving
the trained denoiser in `models.py`. The policy acts and keeps no run state: reward statistics belong to the
algorithm (`algorithms.py`), the training iteration to the Trainer (`set_progress`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mmalign.diffusion import dpo
from mmalign.diffusion.branching import sample_branched
from mmalign.diffusion.guidance import classifier_free_guidance
from mmalign.diffusion.models import Components, denoiser_forward, save_denoiser
from mmalign.diffusion.schedule import B2Schedule, schedule_tensors, timestep_mask
from mmalign.diffusion.settings import B2Settings, SamplingSettings, TrainedSteps
from mmalign.diffusion.steps import StepOutput, ddim_step, flow_sde_step
from mmalign.rollout import Rollout


def prompt_of(context) -> str:
    """The prompt of a context: a str or a dict row with a "prompt" key."""
    if isinstance(context, str):
        return context
    if isinstance(context, dict) and "prompt" in context:
        return context["prompt"]
    raise ValueError(f"a diffusion context must be a str or a dict with 'prompt', got {type(context).__name__}.")


def to_images(x: Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) in [-1, 1] -> B uint8 RGB arrays (H, W, 3)."""
    arr = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(arr)


class DiffusionPolicy(nn.Module):
    """A diffusers denoiser + frozen text encoder (+ frozen VAE) as an mmalign `Policy`.

    Args:
        comp: the model's components (`models.load_components` / `models.tiny_components`).
        sampling: how a sample is drawn (`settings.SamplingSettings`: steps, guidance, step noise, size, prompt
            tokens); the task config's `sampling` group.
        trained: which steps train and how a step's log-prob reduces (`settings.TrainedSteps`); the task config's
            `trained_steps` group.
        reference: "lora" (adapters disabled), "copy" (frozen copy made now) or "none".
        b2: B2-DiffuRL branch sampling (`settings.B2Settings`); None or 0 branches = independent samples.
    """

    def __init__(self, comp: Components, sampling: SamplingSettings | None = None,
                 trained: TrainedSteps | None = None, reference: str = "none", b2: B2Settings | None = None):
        super().__init__()
        self.sampling, self.trained = sampling or SamplingSettings(), trained or TrainedSteps()
        self.family = "flow" if "FlowMatch" in type(comp.scheduler).__name__ else "ddim"
        if (self.sampling.noise_level if self.family == "flow" else self.sampling.eta) <= 0:
            raise ValueError("RL over denoising steps needs stochastic steps: eta > 0 (DDIM) or noise_level > 0 "
                             "(flow); deterministic sampling is available through "
                             "`generate(..., deterministic=True)`.")
        if reference == "lora" and not getattr(comp.denoiser, "_hf_peft_config_loaded", False):
            raise ValueError("reference='lora' needs LoRA on the denoiser (`add_lora`) or use reference='copy'.")
        self.denoiser = comp.denoiser.eval()
        self.text_encoder = comp.text_encoder.eval().requires_grad_(False)
        self.vae = None if comp.vae is None else comp.vae.eval().requires_grad_(False)
        self.tokenizer, self.scheduler_config, self.reference = comp.tokenizer, dict(comp.scheduler.config), reference
        self.prediction_type = self.scheduler_config.get("prediction_type", "epsilon")
        self.ref_denoiser = copy.deepcopy(self.denoiser).requires_grad_(False) if reference == "copy" else None
        self._use_ref = False
        self.net_calls = 0  # rows through the denoiser (x2 with CFG): what branching saves
        for name, value in schedule_tensors(comp.scheduler, self.num_steps, self.family).items():
            self.register_buffer(name, value, persistent=False)  # timesteps, sigmas / alphas (schedule.py)
        cfg = self.denoiser.config
        self.channels = cfg.in_channels
        factor = 2 ** (len(comp.vae.config.block_out_channels) - 1) if comp.vae is not None else 1
        resolution = self.sampling.resolution
        self.latent_size = resolution // factor if resolution else cfg.sample_size
        self._uncond: Tensor | None = None
        self.b2 = None if b2 is None or not b2.branches else B2Schedule(  # B2-DiffuRL branching (`branching.py`)
            self.num_steps, b2.split_left, min(b2.split_right, self.num_steps), b2.stages, b2.branches)
        self.iteration = 0  # the Trainer's iteration (`set_progress`): picks the B2 branch point

    @property
    def num_steps(self) -> int:
        """Denoising steps T of a sample."""
        return self.sampling.num_steps

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    # --- text ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Prompt embeddings (B, L, D) and pooled embeddings (B, D) from the frozen text encoder."""
        enc = self.tokenizer(list(prompts), padding="max_length", max_length=self.sampling.max_text_length,
                             truncation=True, return_tensors="pt")
        out = self.text_encoder(input_ids=enc["input_ids"].to(self.device), output_hidden_states=False)
        return out.last_hidden_state, out.pooler_output if out.pooler_output is not None else out[0].mean(1)

    def uncond(self) -> tuple[Tensor, Tensor]:
        """Embeddings of the empty prompt, (1, L, D) and (1, D), cached."""
        if self._uncond is None or self._uncond[0].device != self.device:
            self._uncond = self.encode([""])
        return self._uncond

    def uncond_inputs(self, b: int, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """The unconditional CFG branch's inputs for `b` samples: the empty prompt's (B, L, D) and (B, D)."""
        ue, up = self.uncond()
        return ue.expand(b, -1, -1), up.expand(b, -1)

    # --- one step ------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def reference_mode(self):
        """Run the denoiser as the reference: LoRA adapters disabled, or the frozen copy."""
        if self.reference == "lora":
            self.denoiser.disable_adapters()
            try:
                yield
            finally:
                self.denoiser.enable_adapters()
        elif self.reference == "copy":
            self._use_ref = True
            try:
                yield
            finally:
                self._use_ref = False
        else:
            raise ValueError("a KL term (or RLG) needs a reference: set reference to 'lora' (with LoRA) or 'copy'.")

    def _net(self, x: Tensor, k: Tensor, emb: Tensor, pooled: Tensor) -> Tensor:
        return self.net_at(x, self.timesteps[k], emb, pooled)

    def net_at(self, x: Tensor, t: Tensor, emb: Tensor, pooled: Tensor) -> Tensor:
        """Unguided denoiser output in fp32 at model timesteps t (B,) (UNet or SD3-style transformer call)."""
        net = self.ref_denoiser if self._use_ref else self.denoiser
        self.net_calls += x.shape[0]
        dtype = next(net.parameters()).dtype
        return denoiser_forward(net, x.to(dtype), t, emb.to(dtype), pooled.to(dtype)).float()

    def predict(self, x: Tensor, k: Tensor, emb: Tensor, pooled: Tensor) -> Tensor:
        """Guided model output in fp32: u + w (c - u) (`guidance.py`), (B, C, H, W); one forward without CFG.

        Args:
            x: (B, C, H, W) current sample.
            k: (B,) long schedule index of the step.
            emb, pooled: (B, L, D), (B, D) prompt embeddings.
        """
        s = self.sampling
        if s.guidance_scale == 1.0:
            return self._net(x, k, emb, pooled)
        return classifier_free_guidance(self._net, x, k, (emb, pooled), self.uncond_inputs(x.shape[0], pooled),
                                        s.guidance_scale, s.detach_uncond)

    def step(self, out: Tensor, x: Tensor, k: Tensor, prev_sample: Tensor | None = None,
             noise: Tensor | None = None) -> StepOutput:
        """The family's stateless step at schedule indices k (B,): draws x_{t-1} or scores `prev_sample`."""
        reduce = self.trained.reduce
        if self.family == "flow":
            return flow_sde_step(out, x, self.sigmas[k], self.sigmas[k + 1], self.sampling.noise_level, prev_sample,
                                 noise, reduce)
        return ddim_step(out, x, self.alpha_t[k], self.alpha_prev[k], self.sampling.eta, self.prediction_type,
                         prev_sample, noise, reduce)

    # --- sampling ------------------------------------------------------------------------------------------
    def init_noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, C, h, w) standard normal starting latents."""
        shape = (n, self.channels, self.latent_size, self.latent_size)
        return torch.randn(shape, generator=generator, device="cpu" if generator else self.device).to(self.device)

    def denoise(self, x: Tensor, emb: Tensor, pooled: Tensor, start: int, end: int,
                noise: Tensor | None = None) -> tuple[list[Tensor], list[Tensor]]:
        """Run steps start..end-1 from x; returns the latents after each step and each step's log-prob (B,).

        Args:
            noise: optional (T, B, C, H, W) step noise (indexed by step), for reproducible sampling.
        """
        latents, logps = [], []
        for i in range(start, end):
            k = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
            out = self.step(self.predict(x, k, emb, pooled), x, k, noise=None if noise is None else noise[i])
            x = out.prev_sample
            latents.append(x)
            logps.append(out.logprob)
        return latents, logps

    @torch.no_grad()
    def decode(self, x: Tensor) -> list[np.ndarray]:
        """Final latents (B, C, h, w) -> B uint8 images (H, W, 3)."""
        if self.vae is not None:
            x = self.vae.decode(x.to(next(self.vae.parameters()).dtype) / self.vae.config.scaling_factor).sample
        return to_images(x)

    def _contexts(self, contexts: Sequence, num_samples: int) -> tuple[Tensor, Tensor, Tensor]:
        """Group index (B,), prompt embeddings (B, L, D) and pooled embeddings (B, D) of each sample."""
        emb, pooled = self.encode([prompt_of(c) for c in contexts])
        group = torch.arange(len(contexts), device=self.device).repeat_interleave(num_samples)
        return group, emb[group], pooled[group]

    def _rollout(self, contexts: Sequence, group: Tensor, chain: list[Tensor], logps: list[Tensor], emb: Tensor,
                 pooled: Tensor, start: int, extra: dict | None = None) -> Rollout:
        b, t = group.shape[0], self.num_steps
        mask = timestep_mask(b, t, start, self.trained.fraction, device=group.device, end=self.trained.end)
        steps = torch.arange(t, device=group.device).expand(b, t).clone()
        state = {"kind": "chain", "latents": torch.stack(chain, 1), "steps": steps, "prompt_embeds": emb,
                 "pooled": pooled, "prompts": [prompt_of(contexts[g]) for g in group.tolist()], **(extra or {})}
        return Rollout(group=group, logprobs=torch.stack(logps, 1) * mask, mask=mask,
                       outputs=self.decode(chain[-1]), state=state)

    def set_progress(self, iteration: int) -> None:
        """The Trainer's training iteration, announced before each iteration's sampling (and after a resume): the
        B2 schedule's branch point follows it. Sampling never advances it."""
        self.iteration = iteration

    @torch.no_grad()
    def sample(self, contexts: Sequence, num_samples: int, noise: Tensor | None = None) -> Rollout:
        """`num_samples` trajectories per context: independent (DDPO / Flow-GRPO sampling), or branched at the B2
        schedule's branch point of the current iteration when `self.b2` is set (`branching.sample_branched`).

        Args:
            noise: optional (T+1, B, C, h, w) noise: [0] the initial latents, [1 + i] the noise of step i.
        """
        if self.b2 is not None and noise is None:
            return sample_branched(self, contexts, num_samples, self.b2.branch_step(self.iteration), self.b2.branches)
        group, emb, pooled = self._contexts(contexts, num_samples)
        x = self.init_noise(len(group)) if noise is None else noise[0].to(self.device)
        chain, logps = self.denoise(x, emb, pooled, 0, self.num_steps, None if noise is None else noise[1:])
        return self._rollout(contexts, group, [x] + chain, logps, emb, pooled, self.trained.start)

    # --- re-scoring ----------------------------------------------------------------------------------------
    def logprobs(self, rollout: Rollout) -> Tensor:
        """(B, T) log-probs under the current weights, with grad. Each kind of rollout (`state["kind"]`) has one
        scorer: sampled chains score their denoising steps (`chain_logprobs`), rollouts of given images
        (`rollout_from`) minus their denoising error (Diffusion-DPO, `dpo.denoising_logprobs`)."""
        return SCORERS[rollout.state["kind"]](self, rollout)

    def rollout_from(self, contexts: Sequence, outputs: Sequence,
                     generator: torch.Generator | None = None) -> Rollout:
        """Offline preference data: a one-step rollout of given images, noised with draws from `generator`
        (`dpo.rollout_from`)."""
        return dpo.rollout_from(self, contexts, outputs, generator)

    @torch.no_grad()
    def ref_logprobs(self, rollout: Rollout) -> Tensor:
        """(B, T) log-probs under the reference (LoRA disabled or the frozen copy)."""
        with self.reference_mode():
            return self.logprobs(rollout)

    # --- weights -------------------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        """The trained denoiser: its PEFT LoRA adapter or the full model (`models.save_denoiser`)."""
        save_denoiser(self.denoiser, path)


def chain_logprobs(policy: DiffusionPolicy, rollout: Rollout) -> Tensor:
    """(B, T) step log-probs of a sampled chain under the current weights, with grad; 0 off the mask.

    Only masked-in steps run the denoiser (a "train on a subset of timesteps" mask saves their compute).
    """
    s, (b, t) = rollout.state, rollout.mask.shape
    cols = []
    for j in range(t):
        rows = rollout.mask[:, j].nonzero().squeeze(1)
        col = torch.zeros(b, device=rollout.mask.device)
        if rows.numel():
            x, prev, k = s["latents"][rows, j], s["latents"][rows, j + 1], s["steps"][rows, j]
            out = policy.predict(x, k, s["prompt_embeds"][rows], s["pooled"][rows])
            col = col.index_put((rows,), policy.step(out, x, k, prev_sample=prev).logprob)
        cols.append(col)
    return torch.stack(cols, 1)


SCORERS = {"chain": chain_logprobs, "given": dpo.denoising_logprobs}
"""How `DiffusionPolicy.logprobs` scores each kind of rollout (`Rollout.state["kind"]`)."""


DENOISER_LORA_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
"""The denoiser's attention projections (diffusers' names): where its LoRA adapters go by default."""


def add_lora(denoiser: nn.Module, r: int = 4, alpha: int = 4, target_modules: Sequence[str] | None = None,
             init: str | bool = "gaussian") -> nn.Module:
    """Put a peft LoRA adapter on a diffusers denoiser (base weights frozen); returns it."""
    from peft import LoraConfig

    targets = list(target_modules or DENOISER_LORA_MODULES)
    denoiser.requires_grad_(False)
    denoiser.add_adapter(LoraConfig(r=r, lora_alpha=alpha, init_lora_weights=init, target_modules=targets))
    return denoiser


def seeded_noise(policy: DiffusionPolicy, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Initial latents (n, C, h, w) and step noise (num_steps, n, C, h, w), all from one generator seeded `seed`."""
    g = torch.Generator().manual_seed(seed)
    x = policy.init_noise(n, g)
    return x, torch.randn((policy.num_steps, *x.shape), generator=g).to(x.device)


def chunked_noise(policy: DiffusionPolicy, positions: Sequence[int], total: int, seed: int,
                  chunk: int) -> tuple[Tensor, Tensor]:
    """The noise (as `seeded_noise`) of the samples at `positions` (ascending) of a list of `total` that is generated
    in chunks of `chunk`, chunk k from `seeded_noise(policy, its size, seed + k * chunk)`: what one process generating
    the whole list draws for them, so a share of the list, on any process, gets the same samples."""
    xs, zs = [], []
    for k in sorted({p // chunk for p in positions}):
        start = k * chunk
        x, z = seeded_noise(policy, min(chunk, total - start), seed + start)
        rows = [p - start for p in positions if p // chunk == k]
        xs.append(x[rows])
        zs.append(z[:, rows])
    return torch.cat(xs), torch.cat(zs, dim=1)

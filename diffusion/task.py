"""The text-to-image task for the trainer: a diffusers model as a denoising-step policy, prompts, image rewards.

`model: embedded` (default) uses the project's own shapes model (a UNet, or with `embedded_family: flow` an SD3-style
transformer trained by flow matching): pre-trained on the CPU on first use (see
`pretrain.py`) into a folder of `embedded_dir` keyed by its pre-training config (`mmalign.cache`) and reused after by
runs of that config only. `model: <folder>` loads any local diffusers pipeline (SD 1.x / 2.x with DDIMScheduler, or
a flow-matching pipeline). `tiny: true` builds random tiny components (tests).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mmalign.config import ConfigError, check_choice, check_nonempty, check_numbers
from mmalign.diffusion import shapes
from mmalign.diffusion.decoder import CANDIDATE_SEED_STRIDE, ImageDecoder
from mmalign.diffusion.models import load_components, tiny_components
from mmalign.diffusion.policy import DENOISER_LORA_MODULES, DiffusionPolicy, add_lora, chunked_noise
from mmalign.diffusion.rewards import PromptAlignmentReward, build_reward, check_reward_specs
from mmalign.diffusion.rlg import generate
from mmalign.diffusion.settings import B2Settings, SamplingSettings, TrainedSteps, check_trained_steps
from mmalign.settings import LoRASettings


@dataclass
class DiffusionTaskConfig:
    model: str = "embedded"
    """"embedded" (the shapes model, pre-trained on first use) or a local diffusers pipeline folder."""
    embedded_dir: str = "runs/embedded-shapes"
    """Cache of embedded models: one folder `shapes-<key>` per pre-training config (steps, counts, text length)."""
    pretrain_steps: int = 1200
    """Pre-training steps of the embedded model (a model of other steps in `embedded_dir` is not reused)."""
    embedded_family: str = "ddim"
    """The embedded model: "ddim" (a UNet trained on DDPM's epsilon, DDIM steps) or "flow" (an SD3-style transformer
    trained by flow matching, flow-SDE steps; `pretrain.FlowPretrainConfig`)."""
    tiny: bool = False
    """Build tiny random components instead (tests, benchmarks)."""
    scheduler: str = ""
    """Override the pipeline's scheduler family: "ddim" or "flow"; "" = the pipeline's own."""
    dtype: str = "float32"
    """Weights dtype when loading a pipeline (float32, bfloat16, float16); step arithmetic is always fp32."""
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    """How a sample is drawn (`mmalign.diffusion.settings.SamplingSettings`): steps, guidance, noise, size, prompt
    tokens."""
    trained_steps: TrainedSteps = field(default_factory=TrainedSteps)
    """Which denoising steps train (`mmalign.diffusion.settings.TrainedSteps`)."""
    lora: LoRASettings = field(
        default_factory=lambda: LoRASettings(alpha=8, target_modules=list(DENOISER_LORA_MODULES)))
    """LoRA on the denoiser (`mmalign.settings.LoRASettings`); rank 0 trains the denoiser's weights (`trainable`)."""
    trainable: list[str] = field(default_factory=list)
    """Without LoRA: train only the denoiser parameters whose name contains one of these (e.g. ["attn2"]: the UNet's
    cross-attention); [] = the whole denoiser."""
    reference: str = "auto"
    """KL / RLG reference: "lora", "copy", "none" or "auto" (lora with LoRA, else none)."""
    b2: B2Settings = field(default_factory=B2Settings)
    """B2-DiffuRL branch sampling (`mmalign.diffusion.settings.B2Settings`); off unless b2.branches > 0."""
    counts: list[int] = field(default_factory=lambda: [1])
    """Object counts of the shapes prompts."""
    prompts: str = "shapes"
    """"shapes" or a JSONL file of {"prompt", ...} rows."""
    eval_fraction: float = 0.25
    """Held-out fraction of the prompts."""
    eval_split: str = "prompt"
    """Held-out split of the shapes prompts: "prompt" (random prompts) or "pair" (all prompts of held-out
    colour-shape pairs; RL then cannot learn a pair -> position shortcut that a random split rewards)."""
    eval_samples: int = 4
    """Images per held-out prompt in evaluation."""
    eval_seed: int = 1234
    """Seed of the evaluation noise (the same for every evaluation)."""
    rewards: list = field(default_factory=lambda: [{"name": "alignment"}])
    """Reward specs (see mmalign.diffusion.rewards.REWARDS, or {"fn": "package.module:attr"})."""
    preference_pairs: int = 0
    """Offline (Diffusion-DPO) training: this many drawn (correct, wrong-attribute) pairs per train prompt."""

    def __post_init__(self) -> None:
        check_choice(self, "scheduler", ("", "ddim", "flow"))
        check_choice(self, "dtype", ("float32", "bfloat16", "float16"))
        check_choice(self, "embedded_family", ("ddim", "flow"))
        check_choice(self, "reference", ("auto", "lora", "copy", "none"))
        check_choice(self, "eval_split", ("prompt", "pair"))
        check_nonempty(self, "counts")
        check_choice(self, "counts", tuple(shapes.NUMBERS))
        check_numbers(self, "pretrain_steps", "eval_samples", ge=1)
        check_numbers(self, "preference_pairs", "eval_seed", ge=0)
        check_numbers(self, "eval_fraction", gt=0, lt=1)  # evaluation needs held-out prompts
        check_trained_steps(self)
        if self.trainable and self.lora.rank:
            raise ConfigError("picks parameters of the full denoiser; with LoRA (lora.rank > 0) choose the adapted "
                              "modules with lora.target_modules instead.", "trainable")
        b2, steps = self.b2, self.sampling.num_steps
        if b2.branches and b2.split_left > min(b2.split_right, steps):
            raise ConfigError(f"must be <= b2.split_right and sampling.num_steps ({steps}) (B2Schedule), got "
                              f"{b2.split_left}.", "b2.split_left")
        check_reward_specs(self.rewards)


@dataclass
class SampleOptions:
    """Options of `mmalign sample` for images (`--option key=value`)."""

    rlg_scale: float | None = None
    """RL guidance weight w: base + w (tuned - base) (`rlg.generate`); None samples the trained model alone."""
    rlg_start: int = 0
    """First denoising step that uses RL guidance."""

    def __post_init__(self) -> None:
        check_numbers(self, "rlg_start", ge=0)


class DiffusionTask:
    """Builds the diffusion policy, prompts and rewards for the trainer."""

    Config = DiffusionTaskConfig
    SampleOptions = SampleOptions

    def __init__(self, cfg: DiffusionTaskConfig, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.policy = self.build_policy(cfg, device)
        self.train_contexts, held = self.split(self.load_rows(cfg), cfg)
        self.eval_contexts = [{**row, "eval_index": j} for j, row in enumerate(held)]  # its images' noise
        self.eval_total = len(held)
        if cfg.preference_pairs:
            from mmalign.diffusion.dpo import preference_rows

            self.train_contexts = preference_rows(self.train_contexts, cfg.preference_pairs, self.policy)
        self.rewards = [build_reward(s) for s in cfg.rewards]
        self.first_images: list | None = None
        self.eval_records: list = []
        self.eval_counts: dict[str, int] = {}  # every metric is over the whole share
        """(context, image) of the latest evaluation, `eval_samples` per held-out context (`SplitEvaluation`)."""

    @staticmethod
    def split(rows: list[dict], cfg: DiffusionTaskConfig) -> tuple[list[dict], list[dict]]:
        """(train, held-out) rows: a seeded random `eval_fraction` of the prompts, or of the colour-shape pairs."""
        keys = [r["prompt"] for r in rows]
        if cfg.eval_split == "pair":
            if not all("color" in r and "shape" in r for r in rows):
                raise ValueError("eval_split='pair' needs rows with 'color' and 'shape' (the shapes prompts).")
            keys = [(r["color"], r["shape"]) for r in rows]
        unique = list(dict.fromkeys(keys))
        order = np.random.default_rng(0).permutation(len(unique))
        held = {unique[i] for i in order[:max(1, int(round(len(unique) * cfg.eval_fraction)))]}
        return [r for r, k in zip(rows, keys) if k not in held], [r for r, k in zip(rows, keys) if k in held]

    @staticmethod
    def load_rows(cfg: DiffusionTaskConfig) -> list[dict]:
        if cfg.prompts == "shapes":
            return shapes.rows(tuple(cfg.counts))
        from mmalign.data import load_jsonl

        return load_jsonl(cfg.prompts, required=("prompt",))

    @staticmethod
    def components(cfg: DiffusionTaskConfig):
        if cfg.tiny:
            return tiny_components(shapes.WORDS, family=cfg.scheduler or "ddim", sample_size=8, channels=3)
        path = cfg.model
        if cfg.model == "embedded":
            from mmalign.diffusion.pretrain import FlowPretrainConfig, PretrainConfig, embedded_model

            kind = FlowPretrainConfig if cfg.embedded_family == "flow" else PretrainConfig
            path = embedded_model(cfg.embedded_dir, kind(steps=cfg.pretrain_steps, counts=tuple(cfg.counts)),
                                  cfg.sampling.max_text_length)
        comp = load_components(path, getattr(torch, cfg.dtype))
        if cfg.scheduler:
            from mmalign.diffusion.models import ddim_scheduler, flow_scheduler

            comp.scheduler = ddim_scheduler() if cfg.scheduler == "ddim" else flow_scheduler()
        return comp

    @classmethod
    def build_policy(cls, cfg: DiffusionTaskConfig, device) -> DiffusionPolicy:
        comp = cls.components(cfg)
        reference = cfg.reference
        if cfg.lora.rank > 0:
            add_lora(comp.denoiser, cfg.lora.rank, cfg.lora.alpha, cfg.lora.target_modules)
            reference = "lora" if reference == "auto" else reference
        reference = "none" if reference == "auto" else reference
        comp.text_encoder.to(device)
        if comp.vae is not None:
            comp.vae.to(device)
        policy = DiffusionPolicy(comp, cfg.sampling, cfg.trained_steps, reference, cfg.b2).to(device)
        if cfg.trainable:
            for name, p in policy.denoiser.named_parameters():
                p.requires_grad_(any(t in name for t in cfg.trainable))
            if not any(p.requires_grad for p in policy.denoiser.parameters()):
                raise ValueError(f"trainable={cfg.trainable} matches no denoiser parameter (names look like "
                                 f"{next(iter(dict(policy.denoiser.named_parameters())))!r}).")
        return policy

    def decoder(self, method: str, options) -> ImageDecoder:
        """The policy decoded by best-of-N or RL guidance (`mmalign eval --decode bon|rlg`, `Decodes`)."""
        from mmalign.diffusion.decoder import task_image_decoder

        return task_image_decoder(self, method, options)

    def evaluate(self, policy: DiffusionPolicy | ImageDecoder, rlg_scale: float | None = None) -> dict[str, float]:
        """Mean rewards and the strict prompt-alignment rate on held-out prompts, `eval_samples` seeded images each,
        optionally with RL guidance of weight `rlg_scale` (`rlg.generate`). The noise of all held-out images is drawn
        in chunks of 64 from eval_seed + the chunk's start; a share of the prompts (`SplitEvaluation`) takes its rows
        of it, so a split evaluation makes the images of one process. An `ImageDecoder` (best-of-N, RL guidance)
        draws candidate j of each image from the same noise with eval_seed + j * CANDIDATE_SEED_STRIDE."""
        if isinstance(policy, ImageDecoder) and rlg_scale is not None:
            raise ValueError("an ImageDecoder carries its own RL guidance weight (ImageDecoder(rlg_scale=...)); "
                             "leave evaluate's rlg_scale unset.")
        if self.first_images is None and self.eval_records:
            self.first_images = self.eval_records  # the first evaluation's, merged over processes
        decoder = policy if isinstance(policy, ImageDecoder) else ImageDecoder(policy, rlg_scale=rlg_scale)
        n, net = self.cfg.eval_samples, decoder.policy
        contexts = [c for c in self.eval_contexts for _ in range(n)]
        places = [c["eval_index"] * n + s for c in self.eval_contexts for s in range(n)]
        images = []
        for i in range(0, len(contexts), 64):
            def noise(j: int, rows=places[i:i + 64]) -> tuple:
                seed = self.cfg.eval_seed + j * CANDIDATE_SEED_STRIDE
                return chunked_noise(net, rows, self.eval_total * n, seed, 64)

            images += decoder.images(contexts[i:i + 64], noise)
        metrics = {}
        for name, fn, _ in self.rewards:
            metrics[f"reward/{name}"] = float(np.mean(fn(contexts, images)))
        metrics["reward"] = sum(w * metrics[f"reward/{name}"] for name, _, w in self.rewards)
        if all("prompt" in c for c in contexts) and self.cfg.prompts == "shapes":
            metrics["alignment_rate"] = float(np.mean(PromptAlignmentReward(strict=True)(contexts, images)))
        self.eval_records = list(zip(contexts, images))
        return metrics

    def finish(self, policy: DiffusionPolicy, run_dir: Path) -> None:
        """Image grids of the held-out prompts before / after training, and the alignment-rate curve."""
        from mmalign.diffusion.media import save_grid
        from mmalign.tracking import plot_curves

        first = self.first_images or self.eval_records  # one evaluation: it is both
        if first:
            save_grid(first, run_dir / "samples_before.png", self.cfg.eval_samples)
        if self.eval_records:
            save_grid(self.eval_records, run_dir / "samples_after.png", self.cfg.eval_samples)
            with (run_dir / "eval_prompts.jsonl").open("w") as f:
                for c, _ in self.eval_records[:: self.cfg.eval_samples]:
                    f.write(json.dumps(c if isinstance(c, dict) else {"prompt": c}) + "\n")
        if (run_dir / "metrics.jsonl").exists():
            plot_curves(run_dir / "metrics.jsonl", run_dir / "alignment.png", ("alignment_rate",), run_dir.name)

    def save_samples(self, prompts: list[str], out: Path, num_samples: int = 1, seed: int = 0,
                     options: SampleOptions | None = None) -> list[Path]:
        """Seeded images for `prompts` as PNG files (and a grid), optionally with RL guidance (`rlg.generate`)."""
        options = options or SampleOptions()
        import cv2

        from mmalign.diffusion.media import save_grid

        out.mkdir(parents=True, exist_ok=True)
        contexts = [p for p in prompts for _ in range(num_samples)]
        images, _ = generate(self.policy, contexts, seed=seed, rlg_scale=options.rlg_scale,
                             rlg_start=options.rlg_start)
        paths = []
        for i, image in enumerate(images):
            paths.append(out / f"sample_{i:03d}.png")
            cv2.imwrite(str(paths[-1]), cv2.cvtColor(np.asarray(image), cv2.COLOR_RGB2BGR))
        save_grid(list(zip(contexts, images)), out / "grid.png", num_samples)
        return paths

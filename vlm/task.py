"""The SSL task: a VLM policy, unlabeled images turned into verifiable questions (SSL4RL), rewards, evaluation.

Images come from a folder (any PNG/JPEG) or the procedural generator; they are split into train and held-out
images, so evaluation asks questions about images never trained on. Training contexts are generated lazily and
reproducibly from (seed, index), a fresh corruption per pass. `stages` gives LMM-R1's two-stage schedule
(Peng et al. 2025, arXiv 2503.07536): e.g. text-only rule-based questions first, then the multimodal tasks, on
the same adapter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mmalign.config import ConfigError, check_choice, check_numbers, did_you_mean
from mmalign.rewards import build_reward, reward_spec
from mmalign.settings import GenerationSettings, LoRASettings
from mmalign.task import RewardError, check_rewards
from mmalign.text.policy import check_model_folder, with_lora
from mmalign.vlm.images import load_image_folder, procedural_images
from mmalign.vlm.inputs import pil_image_processor, prompt_encoder, qwen2_vl_image_processor
from mmalign.vlm.policy import VLMPolicy
from mmalign.vlm.rewards import SSL_REWARDS, SSLAccuracy
from mmalign.vlm.ssl_tasks import SSLGenerator, build_ssl_task
from mmalign.vlm.tiny import check_tiny_vlm_config


@dataclass
class SSLTaskConfig:
    model: str = ""
    """A local save_pretrained folder of an image-text-to-text model (Qwen2-VL / Qwen2.5-VL, Idefics3 / SmolVLM,
    LLaVA); nothing is downloaded."""
    model_config: dict = field(default_factory=dict)
    """Instead of `model`: a random-init tiny model, `mmalign.vlm.tiny.tiny_vlm_config` keyword arguments
    ({"model_type": "qwen2_vl" | "qwen2_5_vl" | "idefics3" | "smolvlm" | "llava", "hidden": 32, ...}; tests)."""
    dtype: str = "float32"
    """Weights dtype when loading: float32, bfloat16 or float16."""
    lora: LoRASettings = field(default_factory=LoRASettings)
    """LoRA adapters (`mmalign.settings.LoRASettings`); rank 0 trains all weights."""
    reference: str = "auto"
    """KL reference: "lora" (adapters disabled), "copy" (frozen copy), "none", or "auto" (lora if LoRA else none)."""
    generation: GenerationSettings = field(default_factory=lambda: GenerationSettings(max_prompt_length=4096))
    """Decoding (`mmalign.settings.GenerationSettings`): completion and prompt length, temperature, greedy eval."""
    min_pixels: int = 0
    """Qwen2-VL image processor's min_pixels (each image is resized to at least this area); 0 = the model's setting."""
    max_pixels: int = 0
    """Qwen2-VL image processor's max_pixels; 0 = the model's setting. Small values keep prompts short. (Other
    families keep their saved image processor's size.)"""
    image_processor_args: dict = field(default_factory=dict)
    """With `model`: keyword arguments for the saved image processor (e.g. {"do_image_splitting": false} keeps a
    SmolVLM image to one global view instead of tiles)."""
    dataset: str = "procedural"
    """"procedural" (generated scenes, no downloads) or a folder of PNG/JPEG images."""
    num_images: int = 64
    """Procedural images to generate, or the most images read from the folder (0 = all)."""
    image_size: int = 64
    """Images are centre-cropped and resized to this side when loaded or generated."""
    task_size: int = 56
    """Side of the images the SSL generators output (patches are smaller)."""
    tasks: list = field(default_factory=lambda: ["rotation"])
    """SSL tasks: names or {"name": ..., knobs}: rotation, jigsaw, position, contrastive, masked_patch, arithmetic."""
    instruction: bool = True
    """Append the think/answer instruction to every prompt."""
    stages: list[dict] = field(default_factory=list)
    """Curriculum: [{"steps": N, "tasks": [...]}, {"tasks": [...]}]; the last stage runs to the end. Empty: `tasks`."""
    eval_tasks: list = field(default_factory=list)
    """Tasks asked on held-out images only, never trained on (LMM-R1's multimodal-only arm still scores the text
    task it never saw)."""
    views_per_image: int = 8
    """Training contexts per (image, task) in one pass over the data (each a fresh corruption)."""
    eval_fraction: float = 0.25
    """Held-out fraction of the images."""
    eval_views: int = 2
    """Held-out questions per (image, task)."""
    rewards: list = field(default_factory=lambda: [{"name": "accuracy"}, {"name": "format", "weight": 0.1}])
    """Reward specs {"name": accuracy | valid | format, "weight": w, options}."""
    seed: int = 0
    """Seed of the images, the split and the questions."""

    def __post_init__(self) -> None:
        if bool(self.model) == bool(self.model_config):
            raise ValueError("set exactly one of `model` (a local folder) or `model_config` (a tiny random model).")
        check_choice(self, "reference", ("auto", "lora", "copy", "none"))
        check_choice(self, "dtype", ("float32", "bfloat16", "float16"))
        check_numbers(self, "image_size", "task_size", "views_per_image", "eval_views", ge=1)
        check_numbers(self, "min_pixels", "max_pixels", "num_images", "seed", ge=0)
        check_numbers(self, "eval_fraction", gt=0, lt=1)
        if self.generation.backend != "hf":
            raise ConfigError(f"is {self.generation.backend!r}, but a VLM samples with its own model only; set "
                              "generation.backend: hf (the vllm backend is the text task's).", "generation.backend")
        if self.dataset == "procedural":
            train_size(self.num_images, self.eval_fraction, "num_images")
        self._check_specs()
        if self.model_config:
            try:
                check_tiny_vlm_config(self.model_config)
            except ConfigError as e:
                raise e.under("model_config") from e

    def _check_specs(self) -> None:
        """Stages, SSL task specs and reward specs are built once here, so a bad one is a config error."""
        if any("tasks" not in s for s in self.stages) or any("steps" not in s for s in self.stages[:-1]):
            raise ConfigError("each stage needs `tasks`, and every stage but the last needs `steps`.", "stages")
        for j, stage in enumerate(self.stages[:-1]):
            if isinstance(stage["steps"], bool) or not isinstance(stage["steps"], int) or stage["steps"] < 1:
                raise ConfigError(f"must be a whole number >= 1, got {stage['steps']!r}.", f"stages[{j}].steps")
        lists = [(f"stages[{j}].tasks", s["tasks"]) for j, s in enumerate(self.stages)] or [("tasks", self.tasks)]
        lists += [("eval_tasks", self.eval_tasks)] if self.eval_tasks else []
        for key, specs in lists:
            if not isinstance(specs, list) or not specs:
                raise ConfigError(f"expected a non-empty list of SSL tasks, got {specs!r}.", key)
            for i, spec in enumerate(specs):
                try:
                    build_ssl_task(spec, self.task_size, self.instruction)
                except (TypeError, ValueError) as e:
                    raise ConfigError(str(e), f"{key}[{i}]") from e
        if not self.rewards:
            raise ConfigError("is empty; give at least one reward spec, e.g. [{name: accuracy}].", "rewards")
        for i, spec in enumerate(self.rewards):
            try:
                resolve_ssl_reward(spec)
            except RewardError as e:
                raise ConfigError(str(e), f"rewards[{i}]") from e


def train_size(n: int, eval_fraction: float, key: str = "") -> int:
    """How many of `n` images train when `eval_fraction` of them (at least one) are held out.

    Raises:
        ConfigError: (keyed `key`) when no image is left to train on.
    """
    n_train = n - max(1, int(round(n * eval_fraction)))
    if n_train < 1:
        raise ConfigError(f"{n} image(s) leave none to train on once eval_fraction={eval_fraction} of them (at least "
                          "one) is held out; use more images or a smaller eval_fraction.", key)
    return n_train


def resolve_ssl_reward(spec: str | dict) -> tuple[str, object, float]:
    """(name, reward function, weight) of a spec: "accuracy" or {"name": "accuracy", "weight": w, options}.

    Raises:
        RewardError: naming an unknown reward, a bad option or a bad weight.
    """
    spec = reward_spec(spec)
    name, weight = spec.pop("name", None), float(spec.pop("weight", 1.0))
    if name not in SSL_REWARDS:
        raise RewardError(f"unknown SSL reward {name!r}{did_you_mean(name, SSL_REWARDS)}; use one of "
                          f"{sorted(SSL_REWARDS)}.")
    return name, build_reward(SSL_REWARDS[name], spec, repr(name)), weight


class SSLContexts(Sequence):
    """Lazily generated SSL questions: item i asks task (i // n_images) % n_tasks about image i % n_images.

    Each item is {"prompt", "images", "answer", "choices", "task"}; its randomness comes from (seed, i) only, so a
    given index always gives the same question. A distinct second image is drawn for contrastive / distractors.
    """

    def __init__(self, images: list[np.ndarray], tasks: list[SSLGenerator], seed: int, views: int):
        self.images, self.tasks, self.seed, self.views = images, tasks, seed, views

    def __len__(self) -> int:
        return len(self.images) * len(self.tasks) * self.views

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        n = len(self.images)
        rng = np.random.default_rng([self.seed, i])
        k = i % n
        other = self.images[(k + 1 + int(rng.integers(n - 1))) % n] if n > 1 else None
        task = self.tasks[(i // n) % len(self.tasks)]
        s = task(self.images[k], rng, other)
        return {"prompt": s.prompt, "images": s.images, "answer": s.answer, "choices": s.choices, "task": task.name}


class StagedContexts(Sequence):
    """Training contexts that follow a stage schedule (LMM-R1: text-only RL, then multimodal RL).

    The trainer calls the task's `set_progress(k)` before it draws the contexts of step k (also after a resume).
    """

    def __init__(self, stages: list[SSLContexts], ends: list[int]):
        self.stages, self.ends, self.current = stages, ends, 0
        self.stage_of(0)

    def stage_of(self, step: int) -> int:
        self.current = next((j for j, end in enumerate(self.ends) if step < end), len(self.stages) - 1)
        return self.current

    def __len__(self) -> int:
        return len(self.stages[self.current])

    def __getitem__(self, i: int) -> dict:
        return self.stages[self.current][i]


def build_tokenizer_for(tasks: list[SSLGenerator], images: list[np.ndarray], model_type: str = "qwen2_vl"):
    """The in-memory word tokenizer of a tiny model: every word of the tasks' prompts and answers."""
    from mmalign.vlm.tiny import word_tokenizer, words_of

    texts = []
    probe = SSLContexts(images[:4], tasks, seed=0, views=8)
    for i in range(len(probe)):
        c = probe[i]
        texts += [c["prompt"], c["answer"].replace(",", " , "), *c["choices"]]
    texts += [str(i) for i in range(-30, 60)]  # arithmetic answers
    return word_tokenizer(words_of(texts), model_type)


def load_vlm(cfg: SSLTaskConfig):
    """Model, tokenizer and image processor from a local folder (AutoModelForImageTextToText, offline)."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    path = Path(cfg.model).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"model {cfg.model!r} is not a local folder; nothing is downloaded (see docs/vlm.md).")
    check_model_folder(path, cfg.model)
    kw = {"local_files_only": True}
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=getattr(torch, cfg.dtype), **kw)
        tokenizer = AutoTokenizer.from_pretrained(path, **kw)
    except (OSError, ValueError) as e:  # files transformers cannot read, or a model type it does not know
        raise ConfigError(f"transformers cannot load model {cfg.model!r} as an image-text-to-text model: "
                          f"{str(e).splitlines()[0]}", "task_args.model") from e
    model_type = model.config.model_type
    if model_type in ("qwen2_vl", "qwen2_5_vl"):
        pixels = {k: v for k, v in (("min_pixels", cfg.min_pixels), ("max_pixels", cfg.max_pixels)) if v}
        return model, tokenizer, qwen2_vl_image_processor(str(path), **pixels, **cfg.image_processor_args)
    return model, tokenizer, pil_image_processor(model_type, str(path), **cfg.image_processor_args)


class SSLTask:
    """Builds the VLM policy, SSL questions, rewards and per-task evaluation for the trainer."""

    Config = SSLTaskConfig

    def __init__(self, cfg: SSLTaskConfig, device: torch.device | str = "cpu"):
        self.cfg = cfg
        images = self.load_images(cfg)
        order = np.random.default_rng(cfg.seed).permutation(len(images))
        n_eval = len(images) - train_size(len(images), cfg.eval_fraction)
        train = [images[i] for i in order[n_eval:]]
        held = [images[i] for i in order[:n_eval]]
        specs = [s["tasks"] for s in cfg.stages] or [cfg.tasks]
        stages = [[build_ssl_task(t, cfg.task_size, cfg.instruction) for t in ts] for ts in specs]
        eval_only = [build_ssl_task(t, cfg.task_size, cfg.instruction) for t in cfg.eval_tasks]
        # eval-only tasks first: LMM-R1's multimodal-only arm then gets the two-stage arm's tokenizer (words in
        # first-seen order), initial model and held-out questions
        all_tasks = list({t.name: t for ts in [eval_only, *stages] for t in ts}.values())
        self.policy = self.build_policy(cfg, device, all_tasks, train)
        views = [SSLContexts(train, ts, cfg.seed + 1, cfg.views_per_image) for ts in stages]
        ends = list(np.cumsum([s["steps"] for s in cfg.stages[:-1]])) if cfg.stages else []
        self.train_contexts = StagedContexts(views, ends) if cfg.stages else views[0]
        held_ctx = SSLContexts(held, all_tasks, cfg.seed + 2, cfg.eval_views)
        self.eval_contexts = [held_ctx[i] for i in range(len(held_ctx))]
        self.rewards = [resolve_ssl_reward(spec) for spec in cfg.rewards]
        self.accuracy = SSLAccuracy(next((s.get("require_tags", True) for s in cfg.rewards if isinstance(s, dict)
                                          and s.get("name") == "accuracy"), True))
        self.eval_records: list[dict] = []
        self.eval_counts: dict[str, int] = {}

    def set_progress(self, step: int) -> None:
        """Called by the trainer before it draws step `step`'s contexts: selects the LMM-R1 stage of that step."""
        if isinstance(self.train_contexts, StagedContexts):
            self.train_contexts.stage_of(step)

    @staticmethod
    def load_images(cfg: SSLTaskConfig) -> list[np.ndarray]:
        if cfg.dataset == "procedural":
            return procedural_images(cfg.num_images, cfg.image_size, cfg.seed)
        return load_image_folder(cfg.dataset, cfg.image_size, cfg.num_images)

    @staticmethod
    def build_policy(cfg: SSLTaskConfig, device, tasks: list[SSLGenerator], images: list[np.ndarray]) -> VLMPolicy:
        if cfg.model_config:
            from mmalign.vlm.tiny import build_vlm, tiny_image_processor, tiny_vlm_config

            cfg_dict = dict(cfg.model_config)
            model_type = cfg_dict.pop("model_type", "qwen2_vl")
            tokenizer = build_tokenizer_for(tasks, images, model_type)
            if model_type in ("qwen2_vl", "qwen2_5_vl"):
                side = cfg.task_size // 28 * 28 or 28
                processor = qwen2_vl_image_processor(min_pixels=cfg.min_pixels or side * side,
                                                     max_pixels=cfg.max_pixels or side * side)
            else:  # the tower sees the task's images at their size (a multiple of the 14 px patch)
                side = cfg.task_size // 14 * 14 or 14
                cfg_dict.setdefault("image_size", side)
                processor = tiny_image_processor(model_type, side)
            with torch.random.fork_rng(devices=[]):  # a tiny model's init follows the task seed, nothing else
                torch.manual_seed(cfg.seed)
                model = build_vlm(tiny_vlm_config(tokenizer, model_type, **cfg_dict))
        else:
            model, tokenizer, processor = load_vlm(cfg)
        model, reference = with_lora(model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.target_modules, cfg.reference)
        model = model.to(device)
        inputs = prompt_encoder(model, tokenizer, processor, cfg.generation.max_prompt_length)
        gen = cfg.generation
        return VLMPolicy(model, inputs, gen.max_new_tokens, gen.temperature, reference, gen.decoder)

    def evaluate(self, policy: VLMPolicy, batch_size: int = 16) -> dict[str, float]:
        """Per-task accuracy (the task's verifier) and mean rewards on held-out images, one completion each. Each
        acc/<task> is over that task's questions only; `eval_counts` says how many (`SplitEvaluation`)."""
        per_task: dict[str, list[float]] = {}
        totals: dict[str, list[torch.Tensor]] = {name: [] for name, _, _ in self.rewards}
        self.eval_records = []
        for i in range(0, len(self.eval_contexts), batch_size):
            ctx = self.eval_contexts[i:i + batch_size]
            outputs = policy.sample(ctx, 1, greedy=self.cfg.generation.eval_greedy).outputs
            for c, acc in zip(ctx, self.accuracy(ctx, outputs)):
                per_task.setdefault(c["task"], []).append(acc)
            for name, fn, _ in self.rewards:
                totals[name].append(check_rewards(fn(ctx, outputs), len(ctx), name))
            self.eval_records += [{"task": c["task"], "prompt": c["prompt"], "answer": c["answer"], "output": o}
                                  for c, o in zip(ctx, outputs)]
        means = {name: float(torch.cat(v).mean()) for name, v in totals.items()}
        out = {"reward": sum(w * means[name] for name, _, w in self.rewards)}
        out.update({f"reward/{k}": v for k, v in means.items()})
        out.update({f"acc/{k}": float(np.mean(v)) for k, v in per_task.items()})
        self.eval_counts = {f"acc/{k}": len(v) for k, v in per_task.items()}
        return out

    def finish(self, policy: VLMPolicy, run_dir: Path) -> None:
        """Held-out completions (JSONL) and a before/after per-task accuracy chart (PNG)."""
        with (run_dir / "eval_samples.jsonl").open("w") as f:
            for row in self.eval_records:
                f.write(json.dumps(row) + "\n")
        from mmalign.vlm.charts import plot_accuracy

        plot_accuracy(run_dir / "metrics.jsonl", run_dir / "ssl_accuracy.png")

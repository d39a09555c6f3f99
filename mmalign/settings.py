"""Settings groups that several task configs share, each field documented once.

A task config holds a group as one field (`lora: LoRASettings`), written in YAML as a nested section
(`lora: {rank: 8}`) and overridden with dotted keys (`task_args.lora.rank=8`). A section that sets some keys keeps the
task's defaults for the others (`mmalign.config.from_dict`). Diffusion's groups are in `mmalign.diffusion.settings`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mmalign.config import check_choice, check_numbers
from mmalign.generate import DECODERS


@dataclass(frozen=True)
class LoRASettings:
    """LoRA adapters through peft (Hu et al. 2021, Eq. 3): W + (alpha / rank) B A on the named modules, base weights
    frozen."""

    rank: int = 0
    """Adapter rank r; 0 = no adapters, all weights train."""
    alpha: int = 16
    """Scale numerator: the adapter's update is multiplied by alpha / rank."""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Names (or name suffixes) of the modules that get adapters; the default is each domain's attention
    projections (a VLM's language model: q/k/v/o_proj; its vision tower's attention is `qkv`)."""

    def __post_init__(self) -> None:
        check_numbers(self, "rank", ge=0)
        check_numbers(self, "alpha", ge=1)


@dataclass(frozen=True)
class GenerationSettings:
    """How a language policy (text, VLM) decodes a completion; part of the policy's definition."""

    max_new_tokens: int = 64
    """Completion length limit in tokens."""
    temperature: float = 1.0
    """Sampling temperature (> 0)."""
    max_prompt_length: int = 512
    """Longest prompt in tokens: a text prompt is cut on the left to it; a longer VLM prompt is an error (cutting
    would drop image tokens)."""
    eval_greedy: bool = True
    """Evaluate held-out prompts with greedy decoding (deterministic scores) instead of sampling."""
    decoder: str = "eager"
    """"eager" (dynamic KV cache, op by op) or "compiled" (static KV cache and a `torch.compile`d decode step,
    `mmalign.generate.compiled_decode`): same contract, the compiled one pays a compilation per batch shape."""
    backend: str = "hf"
    """Who samples: "hf" (the trained transformers model, `decoder` above) or "vllm" (text only, CUDA, the `vllm`
    extra: a vLLM engine colocated with the trainer, `mmalign.text.vllm_backend`, given the trainer's weights each
    iteration; the trained model re-scores what it sampled, and GRPO/PPO's `tis_cap` corrects the gap)."""
    vllm_gpu_memory_utilization: float = 0.3
    """With backend vllm: the share of GPU memory the engine may take for its weights and KV cache."""
    vllm_sleep: bool = True
    """With backend vllm: the engine sleeps (weights and KV cache released) while the trainer updates, and wakes
    to sample."""
    vllm_enforce_eager: bool = False
    """With backend vllm: run the engine without CUDA graphs (faster start, slower decoding)."""

    def __post_init__(self) -> None:
        check_numbers(self, "max_new_tokens", "max_prompt_length", ge=1)
        check_numbers(self, "temperature", gt=0)
        check_numbers(self, "vllm_gpu_memory_utilization", gt=0, le=1)
        check_choice(self, "decoder", DECODERS)
        check_choice(self, "backend", ("hf", "vllm"))

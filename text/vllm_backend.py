"""A vLLM engine colocated with the trainer as the text policy's sampler (`generation.backend: vllm`).

The engine lives in the trainer's process and GPU (TRL's `vllm_mode="colocate"`, verl's hybrid engine). Each
sampling call wakes it, loads the trainer's current weights into it (LoRA adapters merged into the base weights
first), generates from the policy's own prompt token ids, and puts it back to sleep, so the update has the memory.
vLLM returns each sampled token's log-prob after temperature scaling (`logprobs_mode="processed_logprobs"`), which
is the policy's log-prob as `mmalign.text.policy` defines it; the trained model then re-scores what was sampled,
and GRPO/PPO weight each step by the truncated ratio of the two (`mmalign.losses.truncated_is_weights`).

vLLM is imported here only, when an engine is built (`pip install -e .[vllm]`, CUDA only).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import socket
import tempfile
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from mmalign.config import ConfigError
from mmalign.settings import GenerationSettings

Sample = tuple[list[int], list[float]]
"""One completion: its token ids (EOS included when it stopped there) and each token's log-prob."""


def check_vllm_ready() -> None:
    """Refuse the vllm backend where it cannot run: vllm not installed, or no CUDA GPU.

    Raises:
        ConfigError: keyed "generation.backend", naming the extra to install or the backend to use instead.
    """
    if importlib.util.find_spec("vllm") is None:
        raise ConfigError("is 'vllm', but vllm is not installed; install the extra with `pip install -e .[vllm]` "
                          "(CUDA only) or set generation.backend: hf.", "generation.backend")
    if not torch.cuda.is_available():
        raise ConfigError("is 'vllm', but torch sees no CUDA GPU and vLLM samples on one; run on a GPU machine or "
                          "set generation.backend: hf.", "generation.backend")


def vllm_weights(model: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """(name, tensor) of every weight of `model` under the transformers checkpoint name vLLM's `load_weights`
    expects. A peft model's adapters are merged into the base weights while the names are read (W + (alpha / r) B A)
    and unmerged afterwards; the adapter tensors themselves are left out. Tied weights come once."""
    peft = hasattr(model, "merge_adapter")
    if peft:
        model.merge_adapter()
    try:
        for name, param in model.named_parameters():
            if peft:
                if model.prefix in name:  # "lora_": merged already
                    continue
                name = name.removeprefix("base_model.model.").replace(".base_layer", "")
            yield name, param.data
    finally:
        if peft:
            model.unmerge_adapter()


def weights_version(model: nn.Module) -> int:
    """A number that changes whenever a trainable weight of `model` is written in place (an optimizer step, a loaded
    checkpoint): the sum of the tensors' version counters."""
    return sum(p._version for p in model.parameters() if p.requires_grad)


def completion_tensors(samples: Sequence[Sample], pad_id: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded completion ids, their log-probs and mask, (B, T) each, from per-sample token lists (T is the
    longest completion, at least 1; padding has id `pad_id`, log-prob 0 and mask False)."""
    width = max(1, max(len(tokens) for tokens, _ in samples))
    ids = torch.full((len(samples), width), pad_id, dtype=torch.long)
    lps = torch.zeros(len(samples), width)
    mask = torch.zeros(len(samples), width, dtype=torch.bool)
    for i, (tokens, logprobs) in enumerate(samples):
        if len(tokens) != len(logprobs):
            raise ValueError(f"sample {i} has {len(tokens)} tokens but {len(logprobs)} log-probs.")
        ids[i, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        lps[i, :len(tokens)] = torch.tensor(logprobs)
        mask[i, :len(tokens)] = True
    return ids.to(device), lps.to(device), mask.to(device)


def write_engine_config(model: nn.Module, folder: str):
    """Write the config.json a vLLM engine is built from: the config of `model` (of its base model under peft) with
    `architectures` naming the model class, which vLLM picks its implementation by (a model built from a config
    has none). Returns that config."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = copy.deepcopy(base.config)
    config.architectures = [type(base).__name__]
    config.save_pretrained(folder)
    return config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMSampler:
    """A colocated `vllm.LLM` that samples completions of the trainer's model from prompt token ids.

    The engine is built from the model's config alone (`load_format="dummy"`: no weights read from disk) and gets
    the trainer's weights before its first sample; it has no tokenizer (the policy's tokenizer encodes and decodes).
    It runs in the dtype of the trained weights, and holds prompt + completion up to the model's position limit.

    Args:
        model: the trained transformers causal LM (a peft model when LoRA is on), on the GPU.
        eos_token_id: the token that ends a completion.
        gen: the generation settings (`max_new_tokens`, `temperature`, `max_prompt_length`, `vllm_*`).
    """

    def __init__(self, model: nn.Module, eos_token_id: int, gen: GenerationSettings):
        check_vllm_ready()
        from vllm import LLM

        self.model, self.eos, self.gen = model, eos_token_id, gen
        for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
            os.environ.setdefault(key, value)  # the in-process launcher joins the trainer's process group, if any
        os.environ.setdefault("MASTER_PORT", str(free_port()))
        self.folder = tempfile.TemporaryDirectory(prefix="mmalign-vllm-")
        config = write_engine_config(model, self.folder.name)
        dtype = next(model.parameters()).dtype
        positions = getattr(config.get_text_config(), "max_position_embeddings", None)
        length = gen.max_prompt_length + gen.max_new_tokens
        self.llm = LLM(model=self.folder.name, load_format="dummy", skip_tokenizer_init=True,
                       dtype=str(dtype).removeprefix("torch."), seed=int(os.environ["RANK"]),
                       max_model_len=min(length, positions) if positions else length,
                       gpu_memory_utilization=gen.vllm_gpu_memory_utilization, enable_sleep_mode=gen.vllm_sleep,
                       enforce_eager=gen.vllm_enforce_eager, distributed_executor_backend="external_launcher",
                       logprobs_mode="processed_logprobs")  # log-probs of the temperature-scaled distribution
        self.loaded: int | None = None  # weights_version of the weights the engine holds; None: none yet
        if gen.vllm_sleep:
            self.llm.sleep(level=2)  # level 2 drops the weights too: they are reloaded at every wake-up

    def load_weights(self) -> None:
        """Give the engine the trainer's current weights, unless it holds them already, and clear its prefix cache
        (cached prompts were computed with the old weights)."""
        version = weights_version(self.model)
        if version == self.loaded:
            return
        engine_model = self.llm.llm_engine.model_executor.driver_worker.model_runner.model
        engine_model.load_weights(vllm_weights(self.model))
        self.llm.reset_prefix_cache()
        self.loaded = version

    @torch.no_grad()
    def generate(self, prompts: Sequence[list[int]], num_samples: int, greedy: bool = False) -> list[Sample]:
        """`num_samples` completions of each prompt (token ids), prompt-major, each with its tokens' log-probs.
        Each completion is its own request with a seed drawn from torch's generator, so a seeded run samples the
        same completions again."""
        from vllm import SamplingParams

        if self.gen.vllm_sleep:
            torch.cuda.empty_cache()
            self.llm.wake_up(tags=["weights"])
            self.loaded = None  # the weights were dropped while sleeping
        self.load_weights()
        if self.gen.vllm_sleep:
            self.llm.wake_up(tags=["kv_cache"])
        seeds = torch.randint(2**31 - 1, (len(prompts) * num_samples,)).tolist()
        params = [SamplingParams(n=1, temperature=0.0 if greedy else self.gen.temperature,
                                 max_tokens=self.gen.max_new_tokens, stop_token_ids=[self.eos], logprobs=0,
                                 detokenize=False, seed=seed) for seed in seeds]
        requests = [{"prompt_token_ids": list(p)} for p in prompts for _ in range(num_samples)]
        outputs = self.llm.generate(requests, params, use_tqdm=False)
        if self.gen.vllm_sleep:
            self.llm.sleep(level=2)
        samples = []
        for out in outputs:
            done = out.outputs[0]
            tokens = list(done.token_ids)
            samples.append((tokens, [float(step[t].logprob) for step, t in zip(done.logprobs, tokens)]))
        return samples

"""GPU check: each domain's shipped config for a few Trainer steps on CUDA in bf16, and text GRPO on a random-init
Qwen2.5-0.5B-shaped model beside TRL's `GRPOTrainer` on the same shape, each sampling with transformers and with a
colocated vLLM engine; prints step time and peak memory per row.

    python bench/gpu_check.py [--steps 3] [--only text diffusion ...] [--out gpu_check.json]

Needs a CUDA GPU (it exits with a message on a machine without one). The domain rows run the configs as shipped
(tiny models), so their figures show the loop's overhead on a GPU, not a large model's speed; the 0.5B rows are
the large-model anchor. TRL runs only when the `bench` extra is installed (`pip install -e .[bench]`), the vLLM rows
(`text-vllm`, `text-0.5b-vllm`, `trl-0.5b-vllm`) only with the `vllm` extra; `text-0.5b-vllm` also reports the
mean truncated importance weight and log-prob gap between vLLM and the trainer.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DOMAINS = {
    "text": "configs/text/tiny_grpo.yaml",
    "diffusion": "configs/diffusion/shapes_grpo.yaml",
    "video": "configs/video/push_pfc.yaml",
    "vlm": "configs/vlm/tiny_position.yaml",
    "robot": "configs/robotics/reach_prefppo.yaml",
}
"""One shipped Trainer config per domain."""
QWEN_05B = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
            "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
            "max_position_embeddings": 4096, "tie_word_embeddings": True}
"""Qwen2.5-0.5B's shape (random weights: throughput does not depend on them)."""
GROUP, PROMPTS, MAX_NEW = 8, 2, 256
"""The 0.5B rows' batch: 2 prompts x 8 completions of 256 tokens, one optimizer step per iteration."""


ROWS = [*DOMAINS, "text-fp16", "text-vllm", "text-0.5b", "trl-0.5b", "text-0.5b-vllm", "trl-0.5b-vllm"]
"""The rows, in the order they run."""


def gpu_or_exit() -> str:
    if not torch.cuda.is_available():
        print("bench/gpu_check.py needs a CUDA GPU, and torch sees none here (torch "
              f"{torch.__version__}); run it on a GPU machine. Nothing was measured.", file=sys.stderr)
        sys.exit(2)
    return torch.cuda.get_device_name(0)


def time_trainer(config: Path | str, overrides: list[str], steps: int, precision: str = "bf16") -> dict:
    """Build the Trainer of `config` on CUDA (bf16 unless told) and time `steps` iterations after one warm-up
    iteration; with fp16, also the gradient scaler's scale (accelerate's GradScaler must be there)."""
    from mmalign.run_config import load_run_config
    from mmalign.trainer import Trainer

    out = tempfile.mkdtemp()
    cfg = load_run_config(config, [f"trainer.output_dir={out}", "trainer.device=cuda", "trainer.cpu=false",
                                   f"trainer.mixed_precision={precision}", "trainer.save_every=0",
                                   "trainer.eval_every=0", *overrides])
    trainer = Trainer(cfg)
    trainer.step(0)  # warm-up: kernels, caches
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times, metrics = [], {}
    for k in range(1, steps + 1):
        t = time.perf_counter()
        metrics = trainer.step(k)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    result = {"step_s": sum(times) / len(times), "peak_mem_GB": torch.cuda.max_memory_allocated() / 1e9,
              "loss": metrics.get("loss"), "sample_s": metrics.get("time_sample")}
    result.update({k: metrics[k] for k in ("tis_weight", "tis_clip_frac", "rollout_logprob_gap") if k in metrics})
    if precision == "fp16":
        if trainer.acc.scaler is None:
            raise RuntimeError("fp16 on CUDA ran without a gradient scaler")
        result["fp16_scale"] = trainer.acc.scaler.get_scale()
    return result


VLLM = ["task_args.generation.backend=vllm", "task_args.generation.vllm_gpu_memory_utilization=0.3"]
"""Overrides of a text config that sample with a colocated vLLM engine (`mmalign.text.vllm_backend`)."""
TINY_VLLM = ["task_args.model_config.hidden_size=128", "task_args.model_config.intermediate_size=256",
             "task_args.model_config.num_attention_heads=2", "task_args.model_config.num_key_value_heads=1"]
"""The tiny text model with a head size of 64, which vLLM's attention kernels take (the shipped one has 8)."""


def text_05b(steps: int, vllm: bool = False) -> dict:
    """mmalign's text GRPO on the 0.5B shape: the tiny text config with the model, batch and length replaced;
    sampled with a colocated vLLM engine when `vllm`."""
    model = json.dumps(QWEN_05B).replace('"', "")
    return time_trainer(ROOT / DOMAINS["text"], [
        f"task_args.model_config={model}", "task_args.tokenizer=chars", f"task_args.max_new_tokens={MAX_NEW}",
        f"trainer.contexts_per_step={PROMPTS}", f"trainer.num_samples={GROUP}", "trainer.epochs=1",
        "trainer.minibatches=1", "trainer.lr=1e-6", "trainer.max_grad_norm=1.0", *(VLLM if vllm else [])], steps)


def trl_05b(steps: int, vllm: bool = False) -> dict:
    """TRL's GRPOTrainer on the same shape and batch (bf16, no reference model, one step per generation batch); with
    `vllm`, TRL's colocated vLLM (`use_vllm`, `vllm_mode="colocate"`, sleep mode, its default IS correction), which
    loads the model from a folder, so the random model is saved to one first."""
    try:
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer
    except ImportError as e:
        return {"error": f"TRL is not installed ({e}); pip install -e .[bench]"}
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from mmalign.text.policy import char_tokenizer

    tok = char_tokenizer()
    tok.padding_side = "left"
    shape = {k: v for k, v in QWEN_05B.items() if k != "model_type"}
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**shape, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                                         bos_token_id=tok.bos_token_id)).to("cuda", torch.bfloat16)
    prompts = [f"Write a short poem about the number {i} and the sea." for i in range(PROMPTS)]
    colocate = {}
    if vllm:
        folder = tempfile.mkdtemp()
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        model.name_or_path = folder
        colocate = {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.3,
                    "vllm_enable_sleep_mode": True}
    args = GRPOConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=GROUP * PROMPTS,
                      num_generations=GROUP, max_completion_length=MAX_NEW, max_steps=steps + 1, bf16=True,
                      logging_steps=1, report_to=[], save_strategy="no", learning_rate=1e-6, beta=0.0,
                      gradient_checkpointing=False, **colocate)
    distinct = lambda completions, **kw: [float(len(set(c))) for c in completions]  # noqa: E731
    data = Dataset.from_dict({"prompt": prompts * 50})
    trainer = GRPOTrainer(model=model, reward_funcs=distinct, args=args, train_dataset=data, processing_class=tok)
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - t
    return {"step_s": total / (steps + 1), "peak_mem_GB": torch.cuda.max_memory_allocated() / 1e9,
            "note": "mean over all steps, warm-up included"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3, help="timed iterations per row (after one warm-up)")
    p.add_argument("--only", nargs="*", default=None, choices=ROWS, help="rows to run (default: all)")
    p.add_argument("--out", default="gpu_check.json", help="JSON file of the results")
    args = p.parse_args(argv)
    device = gpu_or_exit()
    rows = {**{name: (lambda n=name: time_trainer(ROOT / DOMAINS[n], [], args.steps)) for name in DOMAINS},
            "text-fp16": lambda: time_trainer(ROOT / DOMAINS["text"], [], args.steps, "fp16"),
            "text-vllm": lambda: time_trainer(ROOT / DOMAINS["text"], [*TINY_VLLM, *VLLM], args.steps),
            "text-0.5b": lambda: text_05b(args.steps), "trl-0.5b": lambda: trl_05b(args.steps),
            "text-0.5b-vllm": lambda: text_05b(args.steps, vllm=True),
            "trl-0.5b-vllm": lambda: trl_05b(args.steps, vllm=True)}
    results = {"device": device, "torch": torch.__version__}
    print(f"{'row':<16}{'step s':>10}{'peak GB':>10}  ({device})")
    for name, run in rows.items():
        if args.only and name not in args.only:
            continue
        try:
            results[name] = run()
        except Exception as e:  # a failing row is reported, the others still run
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        torch.cuda.empty_cache()
        r = results[name]
        print(f"{name:<16}{r.get('step_s', float('nan')):>10.3f}{r.get('peak_mem_GB', float('nan')):>10.2f}"
              f"  {r.get('error', '')}", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One VLM GRPO iteration on a tiny VLM (configs/vlm/tiny_rotation.yaml): mmalign vs TRL's GRPOTrainer.

Both systems train the same tiny random-init model (built from the config with the same seed; a weight checksum
is printed), on the same rotation questions about the same procedural images, with the same batch (contexts x G),
completion length, lr, beta = 0, one epoch, token-mean loss (TRL "dapo"), group-std advantages, fp32 on the CPU.
TRL sees the same prompt tokens: mmalign's prompt layout is given to TRL's processor as a chat template, and the
script checks that TRL's processor produces mmalign's token ids for the first prompt.

TRL's multimodal `processing_class`: transformers 5.x builds the stock `Qwen2VLProcessor` only with torchvision
(its video processor), which does not load beside the CPU torch. An image-only subclass that calls
`ProcessorMixin.__init__` with the image processor and tokenizer (`mmalign.vlm.inputs.qwen2_vl_processor`) runs
the stock processor's code (image token expansion, `mm_token_type_ids`) without it. Idefics3 / SmolVLM and LLaVA
(`--model-type`) use their stock processors, which build without torchvision.

Timing. mmalign: `Trainer.step(k)`; its metrics give generation (`time_sample`), training (`time_train`:
forward/backward and optimizer) and the rest (scoring and advantages). TRL: a callback times on_step_begin ->
on_step_end; wrappers time `_generate` (generation) and `_generate_and_score_completions` (generation + rewards +
old/ref log-probs + advantages); training = step - generate_and_score. Medians over `--steps` timed steps after
`--warmup`, one torch thread by default. Memory: each system runs in its own process; peak RSS (ru_maxrss) above
the RSS after imports (torch, transformers, trl, datasets in both) and model build. Whole runs alternate in ABBA
order over `--rounds` so that load drift on a shared machine hits both alike; figures pool all rounds.

    python bench/vlm_grpo_step.py                           # Qwen2-VL, 2 rounds x (2 warm-up + 8 timed steps)
    python bench/vlm_grpo_step.py --model-type idefics3     # the same with a tiny Idefics3 (or llava, smolvlm)
    python bench/vlm_grpo_step.py --max-new 16              # up to 16 completion tokens
    python bench/vlm_grpo_step.py --max-new 16 --decoder compiled   # with the compiled decoder
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

KEYS = ("step", "gen", "score", "train")


def build(a):
    import torch

    from mmalign.run_config import load_run_config, task_class
    from mmalign.trainer import Trainer

    cfg = load_run_config(a.config)
    targs = cfg.task_args
    if a.max_new is not None:
        targs = dataclasses.replace(targs, generation=dataclasses.replace(targs.generation, max_new_tokens=a.max_new))
    if a.decoder is not None:
        targs = dataclasses.replace(targs, generation=dataclasses.replace(targs.generation, decoder=a.decoder))
    if a.model_type is not None:
        if not targs.model_config:
            raise SystemExit("--model-type needs a config with task_args.model_config (a tiny model).")
        targs = dataclasses.replace(targs, model_config={**targs.model_config, "model_type": a.model_type})
    cfg = dataclasses.replace(cfg, task_args=targs, trainer=dataclasses.replace(
        cfg.trainer, output_dir=tempfile.mkdtemp(), steps=a.warmup + a.steps, cpu=True, save_every=0, eval_every=0))
    if cfg.trainer.minibatches != 1 or cfg.trainer.micro_batch_size:
        raise SystemExit("the TRL comparison assumes one minibatch per step: set trainer.minibatches=1.")
    task = task_class(cfg.task)(cfg.task_args, torch.device("cpu"))  # what Trainer(cfg) would build itself
    return cfg, task, Trainer(cfg, task=task)


def run_mmalign(a, cfg, task, trainer) -> list[dict]:
    out = []
    for k in range(a.warmup + a.steps):
        m = trainer.step(k)
        out.append({"step": m["time_step"], "gen": m["time_sample"], "train": m["time_train"],
                    "score": m["time_step"] - m["time_sample"] - m["time_train"], "reward": m["reward"]})
    return out[a.warmup:]


LAYOUTS = {  # mmalign's default prompt layouts (mmalign.vlm.inputs) as chat templates, so TRL sees the same tokens
    "qwen2_vl": ("<|im_start|>user\n", "<|vision_start|><|image_pad|><|vision_end|>",
                 "<|im_end|>\n<|im_start|>assistant\n"),
    "idefics3": ("<|im_start|>User:", "<image>", "<end_of_utterance>\nAssistant:"),
    "llava": ("USER: ", "<image>", " ASSISTANT:"),
}


def chat_template(model_type: str) -> str:
    """A one-user-turn Jinja chat template that renders exactly as mmalign's prompt encoder of `model_type`."""
    head, image, tail = LAYOUTS[{"qwen2_5_vl": "qwen2_vl", "smolvlm": "idefics3"}.get(model_type, model_type)]
    return ("{% for m in messages %}" + head + "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
            "{% for c in m['content'] %}{% if c['type'] == 'image' %}" + image + "{% else %}{{ c['text'] }}"
            "{% endif %}{% endfor %}{% endif %}{% endfor %}{% if add_generation_prompt %}" + tail + "{% endif %}")


def trl_processor(inputs, model_type: str):
    """A multimodal `processing_class` for TRL from the parts mmalign already has, with no torchvision.

    Qwen2-VL: `mmalign.vlm.inputs.qwen2_vl_processor`, the stock `Qwen2VLProcessor` without its video processor
    (an image-only subclass that calls `ProcessorMixin.__init__`); the rest is the stock processor's code.
    Idefics3 / SmolVLM / LLaVA: mmalign's prompt encoder already holds the stock processor.
    """
    import copy

    if model_type in ("qwen2_vl", "qwen2_5_vl"):
        from mmalign.vlm.inputs import qwen2_vl_processor

        return qwen2_vl_processor(inputs.image_processor, inputs.tokenizer, chat_template(model_type))
    processor = copy.copy(inputs.processor)
    processor.chat_template = chat_template(model_type)
    return processor


def trl_row(r: dict) -> dict:
    """A TRL dataset row (conversational prompt with one image item) from an mmalign SSL context."""
    from mmalign.vlm.inputs import to_pil

    if len(r["images"]) != 1 or not r["prompt"].lstrip().startswith("<image>"):
        raise SystemExit("the TRL comparison takes questions with one leading image (e.g. rotation, "
                         "show_original: false).")
    text = r["prompt"].replace("<image>", "", 1)
    return {"prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}],
            "image": to_pil(r["images"][0]), "answer": r["answer"], "task": r["task"]}


def check_same_prompt(processor, inputs, context: dict, row: dict) -> None:
    """TRL's processor must give mmalign's prompt token ids, else the comparison is not like for like."""
    text = processor.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
    theirs = processor(text=[text], images=[row["image"]], return_tensors="pt")["input_ids"][0]
    ours = inputs.encode([context], "cpu").input_ids[0]
    if theirs.tolist() != ours.tolist():
        raise SystemExit(f"TRL's prompt tokens differ from mmalign's:\n{theirs.tolist()}\n{ours.tolist()}")


def run_trl(a, cfg, task) -> list[dict]:
    """TRL's GRPOTrainer on the same model (a fresh copy of the initial weights) and settings."""
    import copy

    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    inputs, tc = task.policy.inputs, cfg.trainer
    processor = trl_processor(inputs, task.policy.model.config.model_type)
    contexts = [task.train_contexts[i] for i in range(tc.contexts_per_step * (a.warmup + a.steps))]
    rows = [trl_row(r) for r in contexts]
    check_same_prompt(processor, inputs, contexts[0], rows[0])
    _, reward, _ = task.rewards[0]

    def reward_fn(prompts, completions, answer, task, **kw):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return reward([{"answer": x, "task": t} for x, t in zip(answer, task)], texts)

    algo, gen = cfg.algorithm_args, cfg.task_args.generation
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=tc.contexts_per_step * tc.num_samples,
        gradient_accumulation_steps=1, num_generations=tc.num_samples,
        max_completion_length=gen.max_new_tokens, max_steps=a.warmup + a.steps, num_iterations=tc.epochs,
        beta=algo.beta, epsilon=algo.clip_low, loss_type="dapo", scale_rewards="group",
        temperature=gen.temperature, top_k=0, top_p=1.0, learning_rate=tc.lr, lr_scheduler_type="constant",
        weight_decay=tc.weight_decay, max_grad_norm=tc.max_grad_norm, use_cpu=True, logging_steps=1, report_to=[],
        save_strategy="no", disable_tqdm=True, seed=tc.seed, shuffle_dataset=False)
    trainer = GRPOTrainer(model=copy.deepcopy(task.policy.model), reward_funcs=reward_fn, args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=processor)
    times: dict[str, list[float]] = {"_generate": [], "_generate_and_score_completions": []}
    for name in times:
        orig = getattr(trainer, name)

        def timed(*args_, _orig=orig, _name=name, **kw):
            t = time.perf_counter()
            out = _orig(*args_, **kw)
            times[_name].append(time.perf_counter() - t)
            return out

        setattr(trainer, name, timed)
    steps: list[dict] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            wall = time.perf_counter() - self.t0
            gen, gen_score = times["_generate"][-1], times["_generate_and_score_completions"][-1]
            steps.append({"step": wall, "gen": gen, "score": gen_score - gen, "train": wall - gen_score})

    trainer.add_callback(Timer())
    trainer.train()
    if len(times["_generate"]) != a.warmup + a.steps:
        raise RuntimeError(f"expected one generation per step, got {len(times['_generate'])}")
    return steps[a.warmup:]


def child(a) -> None:
    """One system's run in this process; writes its per-step figures and memory to `a.json`."""
    import datasets  # noqa: F401 - imported by both systems, so the baseline RSS is alike
    import torch
    import trl  # noqa: F401

    torch.set_num_threads(a.threads)
    cfg, task, trainer = build(a)
    checksum = float(sum(p.double().sum() for p in task.policy.model.parameters()))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    steps = run_mmalign(a, cfg, task, trainer) if a.system == "mmalign" else run_trl(a, cfg, task)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tc, gen = cfg.trainer, cfg.task_args.generation
    info = (f"{a.config} ({task.policy.model.config.model_type}): "
            f"{sum(p.numel() for p in task.policy.parameters()) / 1e3:.0f}k params, {tc.contexts_per_step} contexts "
            f"x G={tc.num_samples}, max_new_tokens={gen.max_new_tokens}, decoder {gen.decoder}, {a.threads} torch "
            f"thread(s), torch {torch.__version__}, trl {trl.__version__}")
    with open(a.json, "w") as f:
        json.dump({"steps": steps, "base_mb": base, "peak_mb": peak, "checksum": checksum, "info": info}, f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/vlm/tiny_rotation.yaml")
    p.add_argument("--model-type", default=None, help="override task_args.model_config.model_type "
                   "(qwen2_vl, qwen2_5_vl, idefics3, smolvlm, llava)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2, help="ABBA rounds of whole runs (mmalign, TRL, TRL, mmalign)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-new", type=int, default=None, help="override task_args.generation.max_new_tokens")
    p.add_argument("--decoder", choices=["eager", "compiled"], default=None,
                   help="override task_args.generation.decoder (the compiled one compiles in the warm-up steps)")
    p.add_argument("--no-trl", action="store_true")
    p.add_argument("--system", choices=["mmalign", "trl"], help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.system:
        return child(a)

    systems = ["mmalign"] if a.no_trl else ["mmalign", "trl"]
    order = [s for r in range(a.rounds) for s in (systems if r % 2 == 0 else systems[::-1])]
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    passthrough = [x for x in sys.argv[1:] if x != "--no-trl"]
    for s in order:
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            proc = subprocess.run([sys.executable, __file__, *passthrough, "--system", s, "--json", f.name],
                                  capture_output=True, text=True)
            if proc.returncode:
                print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
                raise SystemExit(f"the {s} run failed (exit {proc.returncode}); its output is above.")
            runs[s].append(json.load(open(f.name)))
    print(runs["mmalign"][0]["info"])
    sums = {s: {round(r["checksum"], 6) for r in rs} for s, rs in runs.items()}
    print(f"initial weight checksums: {sums} ({'same' if len(set().union(*sums.values())) == 1 else 'DIFFERENT'})")
    med = {s: {k: statistics.median(x[k] for r in rs for x in r["steps"]) for k in KEYS} for s, rs in runs.items()}
    mem = {s: statistics.median(r["peak_mb"] - r["base_mb"] for r in rs) for s, rs in runs.items()}
    peak = {s: statistics.median(r["peak_mb"] for r in rs) for s, rs in runs.items()}
    print(f"\nmedians over {a.rounds} run(s) per system x {a.steps} timed steps ({a.warmup} warm-up each), "
          f"order {', '.join(order)}")
    cols = systems + (["mmalign/TRL"] if "trl" in systems else [])
    print("| metric | " + " | ".join(c if c != "trl" else "TRL" for c in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    names = {"step": "step (ms)", "gen": "generation (ms)", "score": "score + advantages (ms)",
             "train": "training: forward/backward + optimizer (ms)"}
    rows = [(names[k], {s: med[s][k] * 1e3 for s in systems}) for k in KEYS]
    rows += [("peak RSS above imports + model (MB)", mem), ("peak RSS, absolute (MB)", peak)]
    for name, v in rows:
        ratio = [f"{v['mmalign'] / v['trl']:.2f}x" if v["trl"] > 0 else "n/a"] if "trl" in systems else []
        print(f"| {name} | " + " | ".join(f"{v[s]:.1f}" for s in systems) + " | " + " | ".join(ratio) + " |"
              if ratio else f"| {name} | " + " | ".join(f"{v[s]:.1f}" for s in systems) + " |")


if __name__ == "__main__":
    main()

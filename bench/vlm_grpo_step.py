"""One VLM GRPO iteration on the tiny Qwen2-VL of configs/vlm/tiny_rotation.yaml: generation vs training time.

mmalign: the task is built as `mmalign train` builds it (`SSLTask` from the config's task_args), then
`Trainer(cfg, task=task).step(k)`; its metrics give time_sample (generation), time_train (forward/backward and
optimizer over the epochs x minibatches) and time_step; "score + advantages" = step - sample - train. Medians over
`--steps` timed steps after `--warmup` untimed ones, with one torch thread by default (2 busy cores: more threads
measure OpenMP contention, see bench/README.md).

TRL: `GRPOTrainer` needs a multimodal `processing_class` for images. The script tries to build transformers'
`Qwen2VLProcessor` from the same tokenizer and PIL image processor; where that fails (it needs torchvision for
its video processor, which does not load beside the CPU torch, docs/vlm.md) it prints the exact error and no TRL
column. Where it builds, one TRL run with the same batch, G, completion length, lr, beta=0, token-mean ("dapo")
and group scaling is timed per step (on_step_begin -> on_step_end), with generation from `_generate`.

    python bench/vlm_grpo_step.py                     # CPU: 2 warm-up + 8 timed steps, about a minute
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import tempfile
import time


def build(a):
    import torch

    from mmalign.run_config import load_run_config, task_class
    from mmalign.trainer import Trainer

    cfg = load_run_config(a.config)
    targs = cfg.task_args if a.max_new is None else dataclasses.replace(cfg.task_args, max_new_tokens=a.max_new)
    cfg = dataclasses.replace(cfg, task_args=targs, trainer=dataclasses.replace(
        cfg.trainer, output_dir=tempfile.mkdtemp(), steps=a.warmup + a.steps, cpu=True, save_every=0, eval_every=0))
    task = task_class(cfg.task)(cfg.task_args, torch.device("cpu"))  # what Trainer(cfg) would build itself
    return cfg, task, Trainer(cfg, task=task)


def run_mmalign(a, trainer) -> list[dict]:
    out = []
    for k in range(a.warmup + a.steps):
        m = trainer.step(k)
        out.append({"step": m["time_step"], "gen": m["time_sample"], "train": m["time_train"],
                    "score": m["time_step"] - m["time_sample"] - m["time_train"], "reward": m["reward"]})
    return out[a.warmup:]


def run_trl(a, cfg, task) -> list[dict]:
    """TRL's GRPOTrainer on the same model (a fresh copy of the initial weights) and settings; raises if it cannot."""
    import copy

    from datasets import Dataset
    from transformers import Qwen2VLProcessor, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    inputs, tc = task.policy.inputs, cfg.trainer
    processor = Qwen2VLProcessor(image_processor=inputs.image_processor, tokenizer=inputs.tokenizer)
    rows = [task.train_contexts[i] for i in range(tc.contexts_per_step * (a.warmup + a.steps))]
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": [{"type": "image"}, {
        "type": "text", "text": r["prompt"].replace("<image>", "").strip()}]}], "image": r["images"][0],
        "answer": r["answer"], "task": r["task"]} for r in rows])
    _, reward, _ = task.rewards[0]

    def reward_fn(prompts, completions, answer, task, **kw):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return reward([{"answer": x, "task": t} for x, t in zip(answer, task)], texts)

    algo = cfg.algorithm_args
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=tc.contexts_per_step * tc.num_samples,
        gradient_accumulation_steps=1, num_generations=tc.num_samples, max_completion_length=cfg.task_args
        .max_new_tokens, max_steps=a.warmup + a.steps, num_iterations=tc.epochs, beta=algo.beta, epsilon=algo.clip_low,
        loss_type="dapo", scale_rewards="group", temperature=cfg.task_args.temperature, top_k=0, top_p=1.0,
        learning_rate=tc.lr, lr_scheduler_type="constant", weight_decay=tc.weight_decay,
        max_grad_norm=tc.max_grad_norm, use_cpu=True, logging_steps=1, report_to=[], save_strategy="no",
        disable_tqdm=True, seed=tc.seed)
    model = copy.deepcopy(task.policy.model)
    trainer = GRPOTrainer(model=model, reward_funcs=reward_fn, args=args, train_dataset=ds, processing_class=processor)
    gens: list[float] = []
    orig = trainer._generate

    def timed(*args_, **kw):
        t = time.perf_counter()
        out = orig(*args_, **kw)
        gens.append(time.perf_counter() - t)
        return out

    trainer._generate = timed
    steps: list[dict] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            wall = time.perf_counter() - self.t0
            steps.append({"step": wall, "gen": gens[-1], "train": float("nan"), "score": wall - gens[-1]})

    trainer.add_callback(Timer())
    trainer.train()
    return steps[a.warmup:]


def summary(label: str, steps: list[dict]) -> None:
    med = {k: statistics.median(s[k] for s in steps) for k in ("step", "gen", "train", "score")}
    print(f"| {label:8s} | {med['step'] * 1e3:8.1f} | {med['gen'] * 1e3:10.1f} | {med['train'] * 1e3:8.1f} | "
          f"{med['score'] * 1e3:8.1f} | {100 * med['gen'] / med['step']:5.0f}% |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/vlm/tiny_rotation.yaml")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-new", type=int, default=None, help="override task_args.max_new_tokens")
    p.add_argument("--no-trl", action="store_true")
    a = p.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    cfg, task, trainer = build(a)
    tc = trainer.cfg.trainer
    n_params = sum(p.numel() for p in task.policy.parameters())
    print(f"{a.config}: {n_params / 1e3:.0f}k params, {tc.contexts_per_step} contexts x G={tc.num_samples}, "
          f"max_new_tokens={cfg.task_args.max_new_tokens}, {cfg.algorithm}, {a.threads} torch thread(s), "
          f"torch {torch.__version__}")
    trl_steps, trl_error = None, "skipped (--no-trl)"
    if not a.no_trl:
        try:
            trl_steps = run_trl(a, cfg, task)  # before mmalign trains, so both start from the same weights
        except Exception as e:  # noqa: BLE001 - the reason TRL is not compared is the result
            trl_error = f"{type(e).__name__}: {e}"
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mm_steps = run_mmalign(a, trainer)
    print(f"\nmedians over {a.steps} timed steps ({a.warmup} warm-up), milliseconds; peak RSS {rss0:.0f} MB before "
          f"mmalign's steps, {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB after")
    print("| system   |  step ms | gen ms     | train ms | score ms | gen % |  (TRL: train is in score)")
    print("|----------|----------|------------|----------|----------|-------|")
    summary("mmalign", mm_steps)
    if trl_steps is not None:
        summary("TRL", trl_steps)
    else:
        print(f"\nTRL not compared: its GRPOTrainer needs a Qwen2VLProcessor, which fails here: {trl_error}")


if __name__ == "__main__":
    main()

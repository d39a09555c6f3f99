"""Same GRPO run through mmalign's `Trainer` and TRL's `GRPOTrainer`: step time and peak memory, as mmalign/TRL.

What is held equal (see bench/README.md for the numbers):

- model: a random-init Qwen2 built from `Qwen2Config` with the same seed in both processes (the script prints a
  weight checksum per run so this can be checked); fp32 by default, `--dtype bf16` casts the weights for both.
- tokenizer: one in-memory word-level tokenizer, no chat template; prompts are plain strings (TRL then tokenises
  them as text and applies no template; mmalign gets `chat_template=False`).
- full-length completions: the tokenizer's EOS id is `vocab_size`, one past the model's last logit, so the model
  can never sample EOS and both systems generate exactly `--max-new` tokens for every completion. No logits
  processor or hook is needed, so neither system pays for one.
- GRPO: `--prompts` prompts x `--generations` (G) completions per step, beta=0 (no reference model),
  num_iterations=1 / epochs=1, one optimizer step per generation batch (TRL: per_device_train_batch_size = the
  whole generation batch, gradient_accumulation_steps=1; mmalign: minibatches=1), token-mean loss (TRL "dapo"),
  group-std advantage scaling, clip 0.2, AdamW at the same constant lr, grad clip 1.0, temperature 1, no top-k /
  top-p, no gradient checkpointing.
- reward: `mmalign.text.rewards.BleuReward` (add-one smoothing) against each row's references, wrapped for TRL's
  `f(prompts, completions, **kwargs)` signature.

Timing: `--warmup` untimed steps, then `--steps` timed steps, per run. mmalign: `Trainer.step(k)` returns
time_sample (generation) and time_step; TRL: a callback takes on_step_begin -> on_step_end (generation, scoring,
forward/backward, optimizer; TRL's per-step logging runs after on_step_end and is not counted) and a wrapper
around `GRPOTrainer._generate` times generation (tokenise, `generate`, decode). "rest" = step - generation
(scoring, advantages, forward/backward, optimizer step) in both.

Memory: each system runs in its own process. CPU: peak RSS (ru_maxrss) minus the RSS after imports and model
build. GPU: torch.cuda.max_memory_allocated minus the allocation after model build (absolute peak also kept).

Interleaving: both processes live side by side and each waits at a gate before every step; the driver releases
one step at a time in ABBA order (mmalign, TRL, TRL, mmalign, ...), so slow drifts in the load of a shared
machine hit both systems alike. Each round starts fresh processes (and swaps which system goes first); the table
shows medians over all timed steps of all rounds and the median peak memory over rounds. Process CPU time is
shown beside wall time: with one torch thread per worker (the CPU default) it is less sensitive to other tenants.

`--systems mmalign,compiled,trl` adds mmalign compiled: the compiled decoder (`generation.decoder: compiled`: static
KV cache, `torch.compile`d decode step) and compiled re-scoring (`task_args.scoring: compiled`: the loss's forward
and backward through `torch.compile`); its compilation falls in the warm-up steps (the "first step (cold)" row).

`--policy NAME=module:Class --systems mmalign,NAME,trl` adds a third column: mmalign's Trainer driving another
`CausalLMPolicy`-compatible class, to measure a candidate speed-up against TRL in the same interleaved run.

    python bench/grpo_text_vs_trl.py                          # CPU, tiny preset (about 2-4 min on 2 cores)
    python bench/grpo_text_vs_trl.py --device cuda --shape 0.5b --dtype bf16   # beside the shared GPU baseline
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time

SHAPES = {
    # hidden, layers, heads, kv heads, intermediate, vocab
    "tiny": dict(hidden=256, layers=4, heads=4, kv_heads=2, intermediate=512, vocab=1024),
    "0.5b": dict(hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936),
}
RUN_DEFAULTS = {
    "tiny": dict(prompts=4, generations=8, max_new=64, prompt_len=16, warmup=2, steps=8, rounds=2),
    "0.5b": dict(prompts=2, generations=8, max_new=256, prompt_len=48, warmup=2, steps=4, rounds=1),
}
WORDS = ("the a cat dog sat ran on to mat park red blue big small and is describe tell me about sea poem number "
         "write short long story of in with over under river tree bird sun moon night day green old new").split()
REFERENCES = ["the cat sat on the mat", "the dog ran to the park", "a red bird sat in the old tree",
              "the sun is over the sea", "write a short poem about the moon", "the big dog is in the river"]


# --------------------------------------------------------------------------------------------------------------
# shared set-up (identical in both worker processes)


def build_tokenizer(vocab_size: int):
    """Word-level tokenizer: pad 0, bos 1, unk 2, words, filler words up to `vocab_size`, then EOS = vocab_size.

    The model's vocabulary is `vocab_size`, so EOS lies outside it: it is never sampled (full-length completions).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "<unk>": 2}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    for i in range(len(vocab), vocab_size):
        vocab[f"w{i}"] = i
    vocab["</s>"] = vocab_size
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    out = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>",
                                  unk_token="<unk>", model_max_length=100_000)
    out.chat_template = None
    return out


def build_rows(n: int, prompt_len: int) -> list[dict]:
    """n rows with prompts of exactly `prompt_len` words (no padding differences) and one reference each."""
    rows = []
    for i in range(n):
        words = [WORDS[(7 * i + 3 * j) % len(WORDS)] for j in range(prompt_len)]
        rows.append({"prompt": " ".join(words), "references": [REFERENCES[i % len(REFERENCES)]]})
    return rows


def build_model(a):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.intermediate,
                      num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                      max_position_embeddings=4096, tie_word_embeddings=True, pad_token_id=0, bos_token_id=1,
                      eos_token_id=a.vocab)
    torch.manual_seed(a.seed)
    model = Qwen2ForCausalLM(cfg)  # built on the CPU so both processes get bit-identical weights
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    model = model.to(a.device, dtype)
    model.generation_config.eos_token_id = a.vocab
    with torch.no_grad():
        checksum = float(sum(p.double().sum() for p in model.parameters()))
    return model, checksum


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def mem_baseline(a) -> dict:
    if a.device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return {"base": torch.cuda.memory_allocated() / 2**20}
    return {"base": rss_mb()}


def mem_peak(a, base: dict) -> dict:
    if a.device.startswith("cuda"):
        import torch

        peak = torch.cuda.max_memory_allocated() / 2**20
        return {"mem_kind": "cuda max_memory_allocated", "mem_base_mb": base["base"], "mem_peak_abs_mb": peak,
                "mem_peak_mb": peak - base["base"]}
    peak = maxrss_mb()
    return {"mem_kind": "peak RSS", "mem_base_mb": base["base"], "mem_peak_abs_mb": peak,
            "mem_peak_mb": peak - base["base"]}


# --------------------------------------------------------------------------------------------------------------
# workers: each system runs in its own process and waits at a gate before every step, so the driver can run the
# two systems' steps alternately (ABBA) while the load on a shared machine drifts.


class Gate:
    """Worker side of the lock-step protocol: report the previous step, then block until the driver says go."""

    def __init__(self, conn):
        self.conn = conn

    def ready(self, result: dict | None) -> None:
        self.conn.send(("step", result))
        if self.conn.recv() != "go":
            raise SystemExit(0)

    def done(self, result: dict) -> None:
        self.conn.send(("done", result))


def run_mmalign(a, gate: Gate, policy_cls: str = "mmalign.text.policy:CausalLMPolicy", mode: str = "eager") -> dict:
    from types import SimpleNamespace

    from mmalign.algorithms.grpo import GRPOConfig
    from mmalign.config import resolve
    from mmalign.run_config import RunConfig, TrainerConfig
    from mmalign.text.rewards import BleuReward
    from mmalign.trainer import Trainer

    tok = build_tokenizer(a.vocab)
    rows = build_rows(a.prompts, a.prompt_len)
    model, checksum = build_model(a)
    base = mem_baseline(a)

    extra = {} if mode == "eager" else {"decoder": mode, "scoring": mode}
    policy = resolve(policy_cls, {})(model, tok, max_new_tokens=a.max_new, temperature=1.0, chat_template=False,
                                     reference="none", max_prompt_length=100_000, logprob_chunk=a.logprob_chunk,
                                     **extra)
    task = SimpleNamespace(policy=policy, rewards=[("bleu", BleuReward(), 1.0)], train_contexts=rows,
                           eval_contexts=rows[:1], evaluate=lambda policy: {}, finish=lambda policy, run_dir: None)
    cfg = RunConfig(
        task="text",
        trainer=TrainerConfig(name="bench", output_dir=tempfile.mkdtemp(), seed=a.seed, steps=a.warmup + a.steps,
                              contexts_per_step=a.prompts, num_samples=a.generations, epochs=1, minibatches=1,
                              lr=a.lr, lr_schedule="constant", max_grad_norm=1.0,
                              mixed_precision="bf16" if a.dtype == "bf16" else "no",
                              cpu=not a.device.startswith("cuda"), save_every=0),
        algorithm="grpo",
        algorithm_args=GRPOConfig(beta=0.0, clip_low=0.2, clip_high=0.2, loss_agg="token-mean", scale_rewards="group"),
    )
    trainer = Trainer(cfg, task=task)
    gen_cpu: list[float] = []
    orig_sample = policy.sample

    def timed_sample(*args_, **kwargs):  # process CPU time of generation (its wall time is time_sample)
        c = time.process_time()
        out = orig_sample(*args_, **kwargs)
        gen_cpu.append(time.process_time() - c)
        return out

    policy.sample = timed_sample
    result = None
    for k in range(a.warmup + a.steps):
        gate.ready(result)
        sync(a.device)
        t0, c0 = time.perf_counter(), time.process_time()
        m = trainer.step(k)
        sync(a.device)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        result = {"step": wall, "gen": m["time_sample"], "rest": wall - m["time_sample"], "step_cpu": cpu,
                  "gen_cpu": gen_cpu[-1], "rest_cpu": cpu - gen_cpu[-1], "train": m["time_train"],
                  "len": m["steps_len"], "reward": m["reward"], "loss": m["loss"]}
    return {"checksum": checksum, "last": result, **mem_peak(a, base)}


def run_trl(a, gate: Gate) -> dict:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from mmalign.text.rewards import BleuReward

    tok = build_tokenizer(a.vocab)
    rows = build_rows(a.prompts, a.prompt_len)
    model, checksum = build_model(a)
    base = mem_baseline(a)

    bleu = BleuReward()

    def bleu_reward(prompts, completions, references, **kwargs):
        return bleu([{"references": r} for r in references], completions)

    n_steps = a.warmup + a.steps
    ds = Dataset.from_list(rows * n_steps)
    bs = a.prompts * a.generations
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=bs, gradient_accumulation_steps=1,
        num_generations=a.generations, max_completion_length=a.max_new, max_steps=n_steps, num_iterations=1,
        beta=0.0, epsilon=0.2, loss_type="dapo", scale_rewards="group", temperature=1.0, top_k=0, top_p=1.0,
        learning_rate=a.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        adam_beta1=0.9, adam_beta2=0.999, optim="adamw_torch",
        bf16=a.dtype == "bf16", fp16=False, use_cpu=not a.device.startswith("cuda"), gradient_checkpointing=False,
        logging_steps=1, report_to=[], save_strategy="no", disable_tqdm=True, seed=a.seed,
        dataloader_num_workers=0, log_completions=False, mask_truncated_completions=False,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=bleu_reward, args=args, train_dataset=ds, processing_class=tok)

    gen_times: list[tuple[float, float]] = []
    orig_generate = trainer._generate

    def timed_generate(*args_, **kwargs):
        sync(a.device)
        t, c = time.perf_counter(), time.process_time()
        out = orig_generate(*args_, **kwargs)
        sync(a.device)
        gen_times.append((time.perf_counter() - t, time.process_time() - c))
        return out

    trainer._generate = timed_generate

    class Timer(TrainerCallback):
        """on_step_begin (after the batch is fetched) -> on_step_end (after the optimizer step)."""

        mark: tuple[float, float] | None = None

        def result(self, state) -> dict | None:
            if self.mark is None:
                return None
            (wall, cpu), (g, g_cpu) = self.mark, gen_times[-1]
            log = next((h for h in reversed(state.log_history) if "loss" in h), {})
            return {"step": wall, "gen": g, "rest": wall - g, "step_cpu": cpu, "gen_cpu": g_cpu,
                    "rest_cpu": cpu - g_cpu, "trl_step_time": log.get("step_time"),
                    "len": log.get("completions/mean_length"), "reward": log.get("reward"), "loss": log.get("loss")}

        def on_step_begin(self, args, state, control, **kw):
            gate.ready(self.result(state))  # the previous step's logging has finished by now
            sync(a.device)
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            sync(a.device)
            self.mark = (time.perf_counter() - self.t0, time.process_time() - self.c0)

    timer = Timer()
    trainer.add_callback(timer)
    trainer.train()
    if len(gen_times) != n_steps:
        raise RuntimeError(f"TRL generated {len(gen_times)} times in {n_steps} steps; expected once per step.")
    return {"checksum": checksum, "last": timer.result(trainer.state), **mem_peak(a, base)}


def worker(a, system: str, conn) -> None:
    """Process entry point: quiet stdout/stderr into a log file, run one system, send its summary."""
    import traceback

    log = open(os.path.join(tempfile.gettempdir(), f"grpo_bench_{system}_{os.getpid()}.log"), "w")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    os.environ.update(TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error")
    try:
        import torch

        if a.threads:
            torch.set_num_threads(a.threads)
        if system == "trl":
            out = run_trl(a, Gate(conn))
        elif system == "compiled":
            out = run_mmalign(a, Gate(conn), mode="compiled")
        else:
            out = run_mmalign(a, Gate(conn), a.policy.get(system, "mmalign.text.policy:CausalLMPolicy"))
        out.update(system=system, torch_threads=torch.get_num_threads())
        Gate(conn).done(out)
        log.close()
        os.unlink(log.name)  # kept only when the worker fails
    except BaseException:
        conn.send(("error", traceback.format_exc()[-6000:] + f"\n(log: {log.name})"))


# --------------------------------------------------------------------------------------------------------------
# driver


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def recv(system: str, conn, want: str):
    kind, payload = conn.recv()
    if kind == "error":
        raise SystemExit(f"{system} worker failed:\n{payload}")
    if kind != want:
        raise SystemExit(f"{system} worker sent {kind!r}, expected {want!r}")
    return payload


def run_round(a, systems: list[str], first: int) -> dict[str, dict]:
    """Start one process per system, then run their steps alternately: ABBA ABBA ... (A = systems[first])."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs, conns = {}, {}
    for s in systems:  # build one after the other, so model builds do not overlap
        parent, child = ctx.Pipe()
        procs[s] = ctx.Process(target=worker, args=(a, s, child), daemon=True)
        procs[s].start()
        conns[s] = parent
        recv(s, parent, "step")  # ready for step 0
    steps: dict[str, list[dict]] = {s: [] for s in systems}
    order = systems[first:] + systems[:first]
    for k in range(a.warmup + a.steps):
        for s in order if k % 2 == 0 else order[::-1]:
            conns[s].send("go")
            kind, payload = conns[s].recv()
            if kind == "error":
                raise SystemExit(f"{s} worker failed:\n{payload}")
            if kind == "step":
                steps[s].append(payload)
            else:  # "done": the last step's result comes with the summary
                steps[s].append(payload["last"])
                procs[s].summary = payload
    outs = {}
    for s in systems:
        summary = getattr(procs[s], "summary", None) or recv(s, conns[s], "done")
        procs[s].join(timeout=60)
        outs[s] = {**summary, "steps": steps[s]}
    return outs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="weights (and TRL bf16 / mmalign "
                   "mixed_precision) for both systems")
    p.add_argument("--shape", default="tiny", choices=sorted(SHAPES), help="model shape preset")
    for k in ("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab"):
        p.add_argument(f"--{k.replace('_', '-')}", type=int, help=f"override the preset's {k}")
    for k in ("prompts", "generations", "max_new", "prompt_len", "warmup", "steps", "rounds"):
        p.add_argument(f"--{k.replace('_', '-')}", type=int, help=f"override the preset's {k}")
    p.add_argument("--logprob-chunk", type=int, default=None, help="mmalign's re-scoring chunk in positions "
                   "(CausalLMPolicy(logprob_chunk=)); default 0 (one pass, as TRL) below a 32k vocabulary, where the "
                   "whole pass's logits are small, else 512 (the policy's default)")
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker; default 1 on the CPU (stable "
                   "timings on a shared machine), torch's default on a GPU; 0 = torch's default")
    p.add_argument("--systems", default="mmalign,trl", help="comma list of systems to run: trl, mmalign, compiled "
                   "(mmalign with the compiled decoder and re-scoring), or a name given to --policy")
    p.add_argument("--policy", action="append", default=[], metavar="NAME=module:Class",
                   help="run mmalign with another CausalLMPolicy-compatible class as system NAME (to try a candidate "
                   "speed-up against TRL in the same run); repeatable")
    p.add_argument("--json", default="", help="write all raw per-step results here")
    a = p.parse_args()
    for k, v in {**SHAPES[a.shape], **RUN_DEFAULTS[a.shape]}.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.threads is None:
        a.threads = 0 if a.device.startswith("cuda") else 1
    if a.logprob_chunk is None:
        a.logprob_chunk = 0 if a.vocab < 32768 else 512

    a.policy = dict(x.split("=", 1) for x in a.policy)
    systems = a.systems.split(",")
    others = [s for s in systems if s != "trl"] if "trl" in systems else []
    print(f"shape={a.shape} hidden={a.hidden} layers={a.layers} heads={a.heads}/{a.kv_heads} "
          f"inter={a.intermediate} vocab={a.vocab} | {a.prompts} prompts x {a.generations} gens x {a.max_new} tokens, "
          f"prompt {a.prompt_len} tokens, re-scoring chunk {a.logprob_chunk} | {a.warmup} warm-up + {a.steps} "
          f"timed steps x {a.rounds} rounds, steps "
          f"alternated | {a.device} {a.dtype}, torch threads {a.threads or 'default'}", flush=True)
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    for r in range(a.rounds):
        t = time.perf_counter()
        outs = run_round(a, systems, first=r % len(systems))
        for s in systems:
            out = outs[s]
            runs[s].append(out)
            timed = out["steps"][a.warmup:]
            print(f"round {r} {s:8s} step {median([x['step'] for x in timed]):.3f}s "
                  f"(cpu {median([x['step_cpu'] for x in timed]):.3f}s) gen {median([x['gen'] for x in timed]):.3f}s "
                  f"peak +{out['mem_peak_mb']:.0f} MB (len {median([x['len'] for x in timed]):.0f}, "
                  f"checksum {out['checksum']:.6f})", flush=True)
        print(f"round {r} took {time.perf_counter() - t:.0f}s", flush=True)

    sums = {}
    for s, outs in runs.items():
        timed = [x for o in outs for x in o["steps"][a.warmup:]]
        keys = ("step", "gen", "rest", "step_cpu", "gen_cpu", "rest_cpu")
        sums[s] = {k: median([x[k] for x in timed]) for k in keys}
        sums[s]["mem"] = median([o["mem_peak_mb"] for o in outs])
        sums[s]["mem_abs"] = median([o["mem_peak_abs_mb"] for o in outs])
        sums[s]["n"] = len(timed)
        sums[s]["first"] = median([o["steps"][0]["step"] for o in outs])
    if len({round(o["checksum"], 4) for outs in runs.values() for o in outs}) != 1:
        print("WARNING: weight checksums differ between runs", flush=True)

    kind = next(iter(runs.values()))[0]["mem_kind"]
    n = min(v["n"] for v in sums.values())
    print(f"\nmedians over {n} timed steps per system; memory: {kind} minus after model build")
    w = max(9, *map(len, systems))
    print(f"| {'metric':32s} | " + " | ".join(f"{s:>{w}s}" for s in systems) + " | "
          + " | ".join(f"{s + '/TRL':>{w + 4}s}" for s in others) + " |")
    print("|" + "-" * 34 + "|" + "|".join("-" * (w + 2) for _ in systems) + "|"
          + "|".join("-" * (w + 6) for _ in others) + "|")
    rows = (("step", "step time", "s"), ("gen", "generation", "s"), ("rest", "score + update (step - gen)", "s"),
            ("step_cpu", "step, process CPU time", "s"), ("gen_cpu", "generation, CPU time", "s"),
            ("rest_cpu", "score + update, CPU time", "s"), ("first", "first step (cold)", "s"),
            ("mem", "peak memory", "MB"), ("mem_abs", "peak memory, absolute", "MB"))
    for key, label, unit in rows:
        vals = [sums[s][key] for s in systems]
        ratios = " | ".join(f"{sums[o][key] / sums['trl'][key]:>{w + 3}.2f}x" for o in others)
        cells = " | ".join(f"{v:{w}.3f}" if unit == "s" else f"{v:{w}.0f}" for v in vals)
        print(f"| {label + ' (' + unit + ')':32s} | {cells} | {ratios} |")
    print(f"\n`python {' '.join(sys.argv)}`\n")
    step_goal, mem_goal = (0.5, 0.9) if a.vocab > 100_000 else (0.6, 1.0)  # the CPU goals in bench/README.md
    for o in others:
        r_step = sums[o]["step"] / sums["trl"]["step"]
        r_mem = sums[o]["mem"] / sums["trl"]["mem"]
        print(f"goal for {o}: step <= {step_goal:.2f}x TRL -> {r_step:.2f}x "
              f"{'MET' if r_step <= step_goal else 'NOT MET'}; memory <= {mem_goal:.2f}x TRL -> {r_mem:.2f}x "
              f"{'MET' if r_mem <= mem_goal else 'NOT MET'}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), "summary": sums, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()

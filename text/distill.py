"""A shallow copy of a causal LM distilled from it over the same vocabulary: the small base model that RAST's
logit shift needs beside a large model (docs/decoding.md).

The student is the teacher's architecture with `layers` of its decoder layers, started from evenly spaced teacher
layers (the first and the last included) with the teacher's embeddings and final norm. The embeddings stay frozen
(with tied embeddings they are also the LM head), so student and teacher score tokens in one output space. The
student learns the forward KL to the teacher's next-token distribution at every position of the training prompts
followed by the teacher's own sampled answers, the sequences a decoder reads:

    KL(q_t || p_S,t) = sum_{v in K_t} q_t(v) (log q_t(v) - log p_S,t(v))

with K_t the teacher's top-k tokens at position t and q_t its distribution renormalised on them (sparse knowledge
distillation: the teacher's targets are computed once and kept as k log-probs a position).

    python -m mmalign.text.distill configs/text/bleuberi_smollm2.yaml --layers 6 --steps 150 --out runs/smollm2_small

reads the run config's model, dataset, held-out split and generation settings, and writes a save_pretrained folder
with the tokenizer (`load_causal_lm` reads it; a config's `task_args.model` can name it) and `distill.json` (the
settings, the loss curve, the held-out KL before and after).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from mmalign.data import load_jsonl, train_eval_split
from mmalign.run_config import load_run_config
from mmalign.text.policy import CausalLMPolicy


@dataclass
class DistillSettings:
    """The student's size and its training."""

    layers: int = 6
    """Decoder layers of the student (taken evenly from the teacher's)."""
    samples: int = 1
    """Teacher answers sampled per training prompt."""
    top_k: int = 64
    """Teacher tokens kept a position (its distribution renormalised on them)."""
    steps: int = 150
    batch_size: int = 16
    """Sequences per optimizer step."""
    lr: float = 3e-4
    seed: int = 0


def topk_kl(student_logits: Tensor, top_logprobs: Tensor, top_ids: Tensor, mask: Tensor) -> Tensor:
    """Mean over the positions where `mask` is True of KL(q || p_S), q the teacher's top-k log-probs renormalised.

    Args:
        student_logits: (B, L, V).
        top_logprobs: (B, L, K) teacher log-probs of its top-k tokens (any normalisation: they are renormalised).
        top_ids: (B, L, K) those tokens.
        mask: (B, L) bool, the positions that count.
    """
    log_q = torch.log_softmax(top_logprobs.float(), -1)
    log_p = torch.log_softmax(student_logits.float(), -1).gather(-1, top_ids.long())
    kl = (log_q.exp() * (log_q - log_p)).sum(-1)
    return (kl * mask).sum() / mask.sum().clamp(min=1)


def layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """The teacher layer each student layer starts from: evenly spaced, the first and the last included."""
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(f"a student of {student_layers} layers from a teacher of {teacher_layers}: give 1 to "
                         f"{teacher_layers} layers.")
    if student_layers == 1:
        return [0]
    return [round(i * (teacher_layers - 1) / (student_layers - 1)) for i in range(student_layers)]


def shallow_copy(teacher: torch.nn.Module, layers: int) -> torch.nn.Module:
    """The teacher's architecture with `layers` decoder layers, every weight copied from the teacher (the layers
    from `layer_map`); the embeddings frozen. Per-layer config lists (e.g. Qwen2's `layer_types`) follow the map."""
    config = copy.deepcopy(teacher.config)
    n = config.num_hidden_layers
    taken = layer_map(n, layers)
    for key, value in list(config.to_dict().items()):
        if isinstance(value, list) and len(value) == n:
            setattr(config, key, [value[i] for i in taken])
    config.num_hidden_layers = layers
    if hasattr(config, "quantization_config"):  # a de-quantized GGUF model: the copy is a plain float model
        del config.quantization_config
    student = type(teacher)(config)
    source = teacher.state_dict()

    def teacher_key(key: str) -> str:
        return re.sub(r"layers\.(\d+)\.", lambda m: f"layers.{taken[int(m.group(1))]}.", key, count=1)

    student.load_state_dict({k: source[teacher_key(k)] for k in student.state_dict()})
    student.get_input_embeddings().requires_grad_(False)
    return student.to(next(teacher.parameters()).dtype)


def teacher_sequences(policy: CausalLMPolicy, rows: Sequence, samples: int, batch_size: int = 32) -> list[Tensor]:
    """The real tokens of each rendered prompt followed by one of the teacher's sampled answers (its EOS
    included), `samples` sequences per row."""
    sequences = []
    for i in range(0, len(rows), batch_size):
        state = policy.sample(rows[i:i + batch_size], samples).state
        sequences += [ids[keep.bool()] for ids, keep in zip(state["input_ids"], state["attention_mask"])]
    return sequences


def right_padded(sequences: Sequence[Tensor], pad: int) -> tuple[Tensor, Tensor]:
    """(B, L) ids padded on the right with `pad`, and the (B, L) bool mask of real tokens."""
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad, dtype=torch.long)
    mask = torch.zeros(ids.shape, dtype=torch.bool)
    for i, s in enumerate(sequences):
        ids[i, :len(s)], mask[i, :len(s)] = s, True
    return ids, mask


@torch.no_grad()
def teacher_targets(teacher, sequences: Sequence[Tensor], top_k: int, pad: int, batch_size: int = 16):
    """Per sequence, the teacher's (L, k) top-k log-probs and token ids at each position."""
    targets = []
    for i in range(0, len(sequences), batch_size):
        chunk = sequences[i:i + batch_size]
        ids, mask = right_padded(chunk, pad)
        logp = torch.log_softmax(teacher(input_ids=ids, attention_mask=mask.long()).logits.float(), -1)
        values, tokens = logp.topk(top_k, -1)
        targets += [(values[j, :len(s)], tokens[j, :len(s)].int()) for j, s in enumerate(chunk)]
    return targets


def batch_kl(student, sequences: Sequence[Tensor], targets: Sequence, pad: int) -> Tensor:
    """`topk_kl` of the student over a batch of sequences and their teacher targets."""
    ids, mask = right_padded(sequences, pad)
    k = targets[0][0].shape[-1]
    values = torch.zeros((*ids.shape, k))
    tokens = torch.zeros((*ids.shape, k), dtype=torch.int32)
    for i, (v, t) in enumerate(targets):
        values[i, :len(v)], tokens[i, :len(t)] = v, t
    logits = student(input_ids=ids, attention_mask=mask.long()).logits
    return topk_kl(logits, values, tokens, mask)


@torch.no_grad()
def mean_kl(student, sequences: Sequence[Tensor], targets: Sequence, pad: int, batch_size: int = 16) -> float:
    """The student's KL to the teacher over `sequences`, a mean over their positions."""
    total = count = 0.0
    for i in range(0, len(sequences), batch_size):
        positions = sum(len(s) for s in sequences[i:i + batch_size])
        total += float(batch_kl(student, sequences[i:i + batch_size], targets[i:i + batch_size], pad)) * positions
        count += positions
    return total / count


def distill(teacher_policy: CausalLMPolicy, train_rows: Sequence, eval_rows: Sequence, s: DistillSettings,
            log=print) -> tuple[torch.nn.Module, dict]:
    """A `shallow_copy` of the policy's model trained on `topk_kl` to it; and a record of the run (the loss at each
    step, the held-out KL before and after)."""
    torch.manual_seed(s.seed)
    teacher, pad = teacher_policy.model.eval(), teacher_policy.tokenizer.pad_token_id
    start = time.perf_counter()
    train = teacher_sequences(teacher_policy, list(train_rows), s.samples)
    held = teacher_sequences(teacher_policy, list(eval_rows), 1)
    train_t, held_t = (teacher_targets(teacher, x, s.top_k, pad) for x in (train, held))
    log(f"distill: {len(train)} training sequences, {len(held)} held-out, teacher targets in "
        f"{time.perf_counter() - start:.0f} s")
    student = shallow_copy(teacher, s.layers)
    record = {"settings": asdict(s), "held_out_kl_before": mean_kl(student, held, held_t, pad), "loss": []}
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=s.lr)
    passes = max(1, -(-s.steps * s.batch_size // len(train)))
    order = torch.cat([torch.randperm(len(train)) for _ in range(passes)])  # shuffled passes over the sequences
    for step in range(s.steps):
        pick = order[step * s.batch_size:(step + 1) * s.batch_size].tolist()
        loss = batch_kl(student.train(), [train[i] for i in pick], [train_t[i] for i in pick], pad)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        record["loss"].append(round(loss.item(), 4))
        if step % 10 == 0 or step == s.steps - 1:
            log(f"distill step {step}: KL {loss.item():.4f} ({time.perf_counter() - start:.0f} s)")
    record["held_out_kl_after"] = mean_kl(student.eval(), held, held_t, pad)
    log(f"distill: held-out KL {record['held_out_kl_before']:.4f} -> {record['held_out_kl_after']:.4f}")
    return student, record


def main(argv: Sequence[str] | None = None) -> Path:
    from mmalign.text.task import TextTask, load_causal_lm

    p = argparse.ArgumentParser(prog="python -m mmalign.text.distill", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="a text run config: its model is the teacher, its dataset the prompts")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides of the config")
    p.add_argument("--out", required=True, help="folder the student is saved to (save_pretrained + tokenizer)")
    for name, default in asdict(DistillSettings()).items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = p.parse_args(argv)
    settings = DistillSettings(**{k: getattr(args, k) for k in asdict(DistillSettings())})
    cfg = load_run_config(args.config, args.overrides).task_args
    model, tokenizer = load_causal_lm(cfg.model, cfg.dtype, cfg.trust_remote_code)
    gen = cfg.generation
    policy = CausalLMPolicy(model, tokenizer, gen.max_new_tokens, gen.temperature, cfg.chat_template,
                            max_prompt_length=gen.max_prompt_length)
    rows = load_jsonl(TextTask.dataset_path(cfg.dataset), required=tuple(cfg.required_keys))
    train_rows, eval_rows = train_eval_split(rows, cfg.eval_fraction, seed=0)
    student, record = distill(policy, train_rows, eval_rows[: cfg.eval_size or None], settings)
    out = Path(args.out)
    student.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "distill.json").write_text(json.dumps({"teacher": cfg.model, **record}, indent=1))
    return out


if __name__ == "__main__":
    main()

"""A text policy behind a decoding-time method, with the interface evaluation uses: `sample(contexts, n, greedy)`.

`Decoder(policy, "bon", reward, n=16).sample(contexts, 1).outputs` gives best-of-16 outputs; `task.evaluate(decoder)`
scores a method on the task's held-out rows like a trained policy. `decoder.cost` sums model forwards, generated
tokens and seconds over every call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from mmalign.config import apply_overrides, from_dict
from mmalign.decoding.combine import GuidedLM, Source
from mmalign.decoding.search import Cost, best_of_n
from mmalign.rewards import weighted_sum
from mmalign.text.policy import CausalLMPolicy
from mmalign.text.search import lookahead_decode, value_guided_decode
from mmalign.text.task import load_causal_lm

METHODS = ("sample", "greedy", "bon", "deal", "tq", "rast", "genarm", "aligned")


@dataclass
class DecodeSettings:
    """Knobs of the methods; each reads its own."""

    n: int = 4
    """best-of-N: samples per prompt."""
    k: int = 4
    """deal, tq: candidate tokens expanded per step."""
    depth: int = 4
    """deal: lookahead tokens per candidate."""
    rollout: int = 0
    """tq: tokens the aligned model rolls out per candidate to estimate Q; 0 = to the end (the paper's estimate)."""
    alpha: float = 1.0
    """tq: pi_ref(y) exp(alpha Q(y)); 0 = top-k sampling."""
    weight: float = 1.0
    """rast: lambda of the small models' logit shift; genarm: weight of each ARM (divided by beta)."""
    beta: float = 1.0
    """genarm: the KL coefficient; the ARM log-probs enter as (weight / beta) log pi_ARM."""
    small: str = ""
    """rast: the small RL-tuned model (a local folder or .gguf); small_base its base before RL."""
    small_base: str = ""
    arm: list[str] = field(default_factory=list)
    """genarm: autoregressive reward models (causal LMs trained with loss: arm), one weight each."""
    aligned: str = ""
    """tq: the baseline-aligned model that rolls out continuations (e.g. a GRPO-tuned policy); aligned: the model
    sampled instead of the policy (with its tokenizer and generation settings), the trained model's own row."""


class Decoded(NamedTuple):
    outputs: list[str]


class Decoder:
    """`policy` (a `CausalLMPolicy`) decoded by `method`.

    Args:
        policy: the frozen model decoded from (the large model for RAST, the base for GenARM).
        method: one of METHODS.
        reward: `fn(contexts, outputs) -> floats` for the searches (bon, deal, tq).
        settings: `DecodeSettings`.
        load: spec -> causal LM, for the models the settings name (the text task's loader).
    """

    def __init__(self, policy, method: str, reward: Callable | None = None, settings: DecodeSettings | None = None,
                 load: Callable | None = None):
        if method not in METHODS:
            raise ValueError(f"unknown decoding method {method!r}; use one of {', '.join(METHODS)}.")
        s = self.settings = settings or DecodeSettings()
        if method in ("bon", "deal", "tq") and reward is None:
            raise ValueError(f"decoding method {method!r} searches under a reward; the task has none to give.")
        self.policy, self.method, self.reward, self.cost, self.seconds = policy, method, reward, Cost(), 0.0
        need = {"rast": ["small", "small_base"], "tq": ["aligned"], "genarm": ["arm"], "aligned": ["aligned"]}.get(
            method, [])
        missing = [k for k in need if not getattr(s, k)]
        if missing:
            raise ValueError(f"decoding method {method!r} needs {' and '.join(missing)} (--decode-arg "
                             f"{missing[0]}=PATH): the model folder(s) it combines with the policy.")
        models = {k: [load(p) for p in v] if isinstance(v, list) else load(v) for k in need if (v := getattr(s, k))}
        for name, m in models.items():
            for model in m if isinstance(m, list) else [m]:
                _check_vocab(policy, model, name)
        self.guide = None
        if method == "rast":
            self.guide = GuidedLM(policy.model, [Source(s.weight, models["small"], models["small_base"])])
        elif method == "genarm":
            self.guide = GuidedLM(policy.model, [Source(s.weight / s.beta, m, logprobs=True) for m in models["arm"]])
        self.aligned = models.get("aligned")

    def sample(self, contexts: Sequence, num_samples: int = 1, greedy: bool = False) -> Decoded:
        """`num_samples` outputs per context by the method. `greedy` (evaluation's `eval_greedy`) is ignored: the
        method says how tokens are drawn (`greedy` and the searches' greedy lookahead decode greedily, the others
        sample), so an evaluation compares the methods as they are."""
        start, outputs = time.perf_counter(), []
        for _ in range(num_samples):
            outs, cost = self._decode(contexts)
            outputs.append(outs)
            self.cost.model_calls += cost.model_calls
            self.cost.tokens += cost.tokens
        self.seconds += time.perf_counter() - start
        return Decoded([o[i] for i in range(len(contexts)) for o in outputs])

    def _decode(self, contexts: Sequence) -> tuple[list[str], Cost]:
        s, m = self.settings, self.method
        if m == "bon":
            return best_of_n(self.policy, contexts, self.reward, s.n)
        if m == "deal":
            return lookahead_decode(self.policy, contexts, self.reward, s.k, s.depth)
        if m == "tq":
            return value_guided_decode(self.policy, contexts, self.reward, self.aligned, s.k, s.alpha,
                                       s.rollout or None)
        calls = self.guide.calls if self.guide else 0
        model = self.aligned if m == "aligned" else self.guide
        rollout = self.policy.sample(contexts, 1, greedy=m == "greedy", model=model)
        steps = rollout.mask.shape[1]
        return rollout.outputs, Cost((self.guide.calls - calls) if self.guide else steps, int(rollout.mask.sum()))

    def report(self) -> dict[str, float]:
        return {"cost/model_calls": self.cost.model_calls, "cost/tokens": self.cost.tokens,
                "cost/seconds": round(self.seconds, 3)}


def _check_vocab(policy, model, name: str) -> None:
    ours, theirs = policy.model.get_output_embeddings().weight.shape[0], model.get_output_embeddings().weight.shape[0]
    if ours != theirs:
        raise ValueError(f"the {name} model has a vocabulary of {theirs} tokens, the policy {ours}: guided decoding "
                         "combines logits token by token, so both must share one tokenizer.")


def task_decoder(task, method: str, options: Sequence[str]) -> Decoder:
    """A `Decoder` over a text task's policy from the CLI's `--decode METHOD --decode-arg KEY=VALUE ...`: the
    searches score with the task's weighted rewards; named models load with the text task's loader."""
    if not isinstance(task.policy, CausalLMPolicy):
        raise ValueError(f"decoding methods steer a text policy; the {type(task).__name__} task's is a "
                         f"{type(task.policy).__name__} (diffusion: mmalign eval --decode bon|rlg).")

    settings = from_dict(DecodeSettings, apply_overrides({}, list(options)))
    def load(spec: str):  # a LoRA run's final/ is an adapter over the task's own model
        return load_causal_lm(spec, base=task.cfg.model)[0].to(task.policy.device).eval()

    return Decoder(task.policy, method, weighted_sum(task.rewards) if task.rewards else None, settings, load)

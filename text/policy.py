"""Text LLMs on the adapter contract: a transformers causal LM as a `Policy`.

A step is one completion token. Its log-prob is log softmax(logits / temperature) at the sampled token, with no
reduction over tokens (losses aggregate steps with the mask). Prompts are left-padded; the mask covers the
completion up to and including EOS. The model always runs in eval mode, so dropout never makes the re-scored
log-probs differ from the sampled ones; gradients flow all the same.
"""

from __future__ import annotations

import contextlib
import copy
import zlib
from collections.abc import Collection, Sequence
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from mmalign.config import ConfigError, did_you_mean, join_key
from mmalign.generate import CACHE_ARG, DECODERS, sample_tokens, scaled_logits
from mmalign.rollout import Rollout
from mmalign.text.nlpo import NLPOSettings, NucleusMaskedLM, masked_logits
from mmalign.text.vllm_backend import completion_tensors

SCORINGS = ("eager", "compiled")
"""What `CausalLMPolicy(scoring=)` (`task_args.scoring`) accepts."""


def prompt_text(context) -> str:
    """The prompt of a context: a string, or a dict row with a "prompt" key."""
    if isinstance(context, str):
        return context
    if isinstance(context, dict) and "prompt" in context:
        return context["prompt"]
    raise ValueError(f"a text context must be a str or a dict with a 'prompt' key, got {type(context).__name__}.")


@contextlib.contextmanager
def own_rng(policy, seed: int):
    """Draws seeded by `seed` on RNG streams of their own: the caller's generators are restored afterwards."""
    devices = [policy.device.index or 0] if policy.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def token_logprobs(logits: Tensor, tokens: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(logits / temperature) at `tokens`: (B, T, V), (B, T) -> (B, T), computed in fp32."""
    logits = scaled_logits(logits, temperature)
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def head_logprobs(hidden: Tensor, tokens: Tensor, head: nn.Module, temperature: float = 1.0) -> Tensor:
    """`token_logprobs(head(hidden), tokens)`: one chunk of `chunked_token_logprobs`."""
    return token_logprobs(head(hidden), tokens, temperature)


compiled_head_logprobs = torch.compile(head_logprobs)
"""`head_logprobs` through `torch.compile`: the LM head's product, log-softmax and gather, and their backward, with the
elementwise passes over the (chunk, V) logits fused (at a 152k vocabulary a third less time than eager)."""


def chunked_token_logprobs(hidden: Tensor, head: nn.Module, tokens: Tensor, temperature: float = 1.0,
                           chunk: int = 512, compiled: bool = False) -> Tensor:
    """`token_logprobs(head(hidden), tokens)` over chunks of `chunk` positions with activation checkpointing, so
    only one chunk's (chunk, V) logits live at a time, forward or backward (TRL's chunked log-probs do the same).

    Args:
        hidden: (B, L, H) final hidden states; head: the LM head; tokens: (B, L). Returns (B, L).
        compiled: run each chunk through `compiled_head_logprobs`.
    """
    from torch.utils.checkpoint import checkpoint

    part = compiled_head_logprobs if compiled else head_logprobs
    flat_h, flat_t = hidden.reshape(-1, hidden.shape[-1]), tokens.reshape(-1)
    parts = [checkpoint(part, h, t, head, temperature, use_reentrant=False) if torch.is_grad_enabled()
             else part(h, t, head, temperature) for h, t in zip(flat_h.split(chunk), flat_t.split(chunk))]
    return torch.cat(parts).view(tokens.shape)


def encode_completions(tokenizer, outputs: Sequence[str], device) -> tuple[Tensor, Tensor]:
    """Given completions as right-padded ids with EOS appended, and their mask (B, T) (EOS included)."""
    enc = tokenizer(list(outputs), add_special_tokens=False, padding=True, padding_side="right", return_tensors="pt")
    comp, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device).bool()
    comp = torch.cat([comp, torch.full_like(comp[:, :1], tokenizer.pad_token_id)], 1)
    mask = torch.cat([mask, torch.zeros_like(mask[:, :1])], 1)
    rows, lengths = torch.arange(len(comp), device=device), mask.sum(1)
    comp[rows, lengths], mask[rows, lengths] = tokenizer.eos_token_id, True
    return comp, mask


def with_lora(model, r: int, alpha: int, target_modules, reference: str = "auto"):
    """(model, reference): the model with a peft LoRA adapter when r > 0, and the reference mode an "auto"
    reference resolves to ("lora" with an adapter, else "none"); an explicit reference is kept."""
    if r > 0:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0,
                                                 target_modules=target_modules))
    return model, (("lora" if r > 0 else "none") if reference == "auto" else reference)


def is_adapter_folder(path: Path) -> bool:
    """A PEFT adapter folder (a LoRA run's final/): adapter_config.json and no config.json of a whole model."""
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def check_model_folder(path: Path, spec: str) -> None:
    """Refuse a folder that is not a `save_pretrained` model folder (no config.json, or no tokenizer files), before
    transformers tries it and fails far from the cause.

    Raises:
        FileNotFoundError: naming the folder, what it lacks and what to pass instead.
    """
    if not (path / "config.json").is_file() and not is_adapter_folder(path):
        raise FileNotFoundError(f"model {spec!r} is not a model folder: it has no config.json (nor "
                                "adapter_config.json). Give a folder written by save_pretrained (a model or a LoRA "
                                "run's final/ adapter, with tokenizer files) or a .gguf file.")
    if not any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise FileNotFoundError(f"model folder {spec!r} has no tokenizer (tokenizer.json or tokenizer_config.json); "
                                "save one there with tokenizer.save_pretrained(folder).")


def check_model_type(model_type: str, known: Collection[str], what: str, examples: Sequence[str] = ()) -> None:
    """Refuse a `model_type` outside `known` (e.g. the causal LM types transformers knows), naming the close ones.

    Raises:
        ConfigError: keyed "model_type"; it lists `examples` (or all of `known` when short), not hundreds of names.
    """
    if model_type not in known:
        shown = sorted(known) if len(known) <= 12 else [e for e in examples if e in known]
        raise ConfigError(f"{model_type!r} is not a {what} model_type transformers knows"
                          f"{did_you_mean(model_type, known)}; use one of its {len(known)}, e.g. {', '.join(shown)}.",
                          "model_type")


def transformers_config(model_type: str, kwargs: dict, knobs: Collection[str] = ()):
    """The transformers config of `model_type` built from `kwargs`, refusing keys its class does not know.

    `PretrainedConfig` keeps any keyword as an attribute, so a misspelt key ("hiden_size") would be silently ignored;
    here the built config's `to_dict()` is compared with its class's defaults, sub-configs included (keys that
    transformers converts, such as "rope_theta", leave nothing behind and pass).

    Args:
        model_type: a transformers model type ("qwen2").
        kwargs: the config's keys.
        knobs: keys of `kwargs` that are not config fields but the caller's own (left out, allowed).

    Raises:
        ConfigError: keyed by the first unknown key, or when transformers refuses a value.
    """
    from transformers import AutoConfig

    try:
        config = AutoConfig.for_model(model_type, **{k: v for k, v in kwargs.items() if k not in knobs})
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"transformers refuses this {model_type} config: {e}") from e
    unknown = unknown_config_keys(config)
    if unknown:
        key, fields = unknown[0]
        also = f" or one of {sorted(knobs)}" if knobs and "." not in key else ""
        more = f" (unknown too: {[k for k, _ in unknown[1:]]})" if len(unknown) > 1 else ""
        raise ConfigError(f"unknown key{did_you_mean(key.rpartition('.')[2], [*fields, *knobs])}: not a field of "
                          f"{type(config).__name__} (model_type {model_type!r}){also}; check its spelling{more}.", key)
    return config


def unknown_config_keys(config, prefix: str = "", defaults: Sequence = ()) -> list[tuple[str, list[str]]]:
    """(dotted key, the known keys beside it) of every attribute of transformers `config` that neither its class's
    defaults nor `defaults` (the sub-config a composite config makes by default) have, sub-configs included."""
    from transformers import PretrainedConfig

    default = type(config)()
    known = list(dict.fromkeys(k for d in (default, *defaults) for k in d.to_dict()))
    found = [(join_key(prefix, k), known) for k in config.to_dict() if k not in known]
    for name in getattr(config, "sub_configs", {}):
        sub, base = getattr(config, name, None), getattr(default, name, None)
        if isinstance(sub, PretrainedConfig):
            same = (base,) if type(base) is type(sub) else ()
            found += unknown_config_keys(sub, join_key(prefix, name), same)
    return found


@torch.no_grad()
def reference_logprobs(policy, rollout: Rollout) -> Tensor:
    """(B, T) reference log-probs of a token policy with `model`, `reference` ("lora" | "copy" | "none"),
    `ref_model` and `logprobs(rollout, model)`: the policy with LoRA adapters disabled, or the frozen copy."""
    if policy.reference == "lora":
        with policy.model.disable_adapter():
            return policy.logprobs(rollout, policy.model)  # the model itself: never NLPO's action mask
    if policy.ref_model is None:
        raise ValueError("a KL term needs a reference model: set reference to 'copy' or turn LoRA on.")
    return policy.logprobs(rollout, policy.ref_model)


def completion_rollout(group: Tensor, ids: Tensor, attn: Tensor, completion: Tensor, mask: Tensor, logprobs: Tensor,
                       outputs: list[str]) -> Rollout:
    """A text rollout: prompt tokens `ids` (left-padded, `attn`) followed by `completion` (its real steps `mask`)."""
    return Rollout(group=group, logprobs=logprobs, mask=mask, outputs=outputs,
                   state={"input_ids": torch.cat([ids, completion], 1),
                          "attention_mask": torch.cat([attn, mask.to(attn.dtype)], 1), "prompt_length": ids.shape[1]})


def positions(attention_mask: Tensor) -> Tensor:
    """Position ids that skip left padding."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def group_firsts(group: Tensor, prompts: Tensor) -> tuple[Tensor, Tensor] | None:
    """(first row of each group, each row's group index) when rows of a group hold the same prompt and some group
    has several rows; else None (nothing to share)."""
    _, inverse = torch.unique(group, return_inverse=True)
    n = int(inverse.max()) + 1 if len(inverse) else 0
    if n == len(group):
        return None
    rows = torch.arange(len(group), device=group.device)
    first = torch.full((n,), len(group), device=group.device).scatter_reduce(0, inverse, rows, "amin")
    return (first, inverse) if torch.equal(prompts[first][inverse], prompts) else None


def shared_prompt_forward(forward, ids: Tensor, attn: Tensor, prompt_length: int, firsts: tuple[Tensor, Tensor],
                          hidden: bool, logits: bool) -> CausalLMOutputWithPast:
    """The forward over prompt + completion with each group's prompt run once: the prompt's keys and values are
    copied out to the group's rows (gradients of the copies sum back through the index), then the completions run
    on them. Returns what the plain forward gives at positions prompt_length - 1 .. end - 1 (what predicts the
    completion tokens): `logits` (B, L + 1, V) if asked, `hidden_states` (the last layer's only) if asked."""
    first, inverse = firsts
    p, pos = prompt_length, positions(attn)
    head = forward(input_ids=ids[first, :p], attention_mask=attn[first, :p], position_ids=pos[first, :p],
                   use_cache=True, output_hidden_states=hidden, logits_to_keep=1)
    cache = getattr(head, CACHE_ARG)
    cache.batch_select_indices(inverse)
    out = forward(input_ids=ids[:, p:], attention_mask=attn, position_ids=pos[:, p:], use_cache=False,
                  output_hidden_states=hidden, logits_to_keep=0 if logits else 1, **{CACHE_ARG: cache})
    return CausalLMOutputWithPast(
        logits=torch.cat([head.logits[inverse], out.logits], 1) if logits else None,
        hidden_states=(torch.cat([head.hidden_states[-1][inverse, -1:], out.hidden_states[-1]], 1),) if hidden
        else None)


class CausalLMPolicy(nn.Module):
    """A transformers causal LM (optionally with LoRA and a value head) as an mmalign `Policy`.

    Args:
        model: any `AutoModelForCausalLM` model (a peft model when LoRA is on).
        tokenizer: its tokenizer; needs a pad token (EOS is used when it has none).
        max_new_tokens: completion length limit.
        temperature: sampling temperature; it defines the policy, so it also divides the re-scored logits.
        chat_template: render prompts with the tokenizer's chat template when it has one.
        reference: "lora" (the policy with adapters disabled), "copy" (a frozen copy made now) or "none".
        value_head: add a linear critic on the last hidden state (for PPO).
        max_prompt_length: prompts are truncated on the left to this many tokens.
        logprob_chunk: re-score through the LM head in chunks of this many positions (`chunked_token_logprobs`),
            so full (B, T, V) logits are never held; 0 = one full-logits pass. Models with logit soft-capping
            always take the full pass.
        decoder: "eager" or "compiled" (`mmalign.generate.sample_tokens`).
        scoring: "eager" or "compiled": the re-scoring forward that gradients flow through (the loss's forward and
            backward) runs the model through `torch.compile` (inductor fuses its norms, rotary embeddings and
            activations) and runs each group's shared prompt once (`shared_prompt_forward`); scoring without
            gradients (reference, old log-probs) stays eager. The first step pays the compilations, and the first
            change of batch shape more (they then serve any shape).
        nlpo: NLPO's action mask (`mmalign.text.nlpo`): with top_p > 0 the policy samples and re-scores only the
            tokens in the top-p nucleus of a masking copy of itself, synchronised every `sync_every` iterations.
        sampler: an engine that samples for the policy from prompt token ids instead of `model`
            (`mmalign.text.vllm_backend.VLLMSampler`); None samples with `model`.
    """

    def __init__(self, model, tokenizer, max_new_tokens: int = 64, temperature: float = 1.0,
                 chat_template: bool = True, reference: str = "none", value_head: bool = False,
                 max_prompt_length: int = 512, logprob_chunk: int = 512, decoder: str = "eager",
                 nlpo: NLPOSettings | None = None, sampler=None, scoring: str = "eager"):
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be positive; use sample(..., greedy=True) for greedy decoding.")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1 (a completion of no tokens), got {max_new_tokens}.")
        self.model, self.tokenizer = model.eval(), tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.chat_template = chat_template and getattr(tokenizer, "chat_template", None) is not None
        self.max_prompt_length = max_prompt_length
        if decoder not in DECODERS:
            raise ValueError(f"decoder {decoder!r} is not one of {list(DECODERS)}")
        if scoring not in SCORINGS:
            raise ValueError(f"scoring {scoring!r} is not one of {list(SCORINGS)}")
        self.decoder, self.sampler, self.scoring = decoder, sampler, scoring
        self._compiled_forward = None  # made at the first compiled re-scoring
        softcap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
        self.nlpo = nlpo if nlpo is not None and nlpo.top_p > 0 else None
        self.mask_model = copy.deepcopy(model).requires_grad_(False).eval() if self.nlpo else None
        self._mask_synced = False
        self.logprob_chunk = 0 if softcap or self.nlpo else logprob_chunk  # the mask needs the full logits
        if reference == "lora" and not hasattr(model, "disable_adapter"):
            raise ValueError("reference='lora' needs a peft model (turn LoRA on) or use reference='copy'.")
        self.reference = reference
        self.ref_model = copy.deepcopy(model).requires_grad_(False).eval() if reference == "copy" else None
        hidden = model.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, 1) if value_head else None
        if self.value_head is not None:
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
            self.value_head.to(next(model.parameters()).device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def render(self, context) -> str:
        text = prompt_text(context)
        if self.chat_template:
            msgs = [{"role": "user", "content": text}]
            return self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return text

    def encode(self, contexts: Sequence) -> tuple[Tensor, Tensor]:
        """Left-padded prompt ids and mask, (B, P)."""
        tok = self.tokenizer
        texts = [self.render(c) for c in contexts]
        enc = tok(texts, add_special_tokens=not self.chat_template, padding=True, padding_side="left",
                  truncation=True, max_length=self.max_prompt_length, truncation_side="left", return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    @torch.no_grad()
    def sample(self, contexts: Sequence, num_samples: int, greedy: bool = False, model=None) -> Rollout:
        """Generate `num_samples` completions per context with a KV cache (`generate.sample_tokens`); stop each row
        at EOS. `model` decodes instead of the policy's own (a `mmalign.decoding.GuidedLM` over it, always eagerly:
        it is not one transformers model). With a `sampler` (and no `model`), the sampler draws them
        (`sample_with_engine`)."""
        if model is None and self.sampler is not None:
            return self.sample_with_engine(contexts, num_samples, greedy)
        ids, attn = self.encode(contexts)
        ids, attn = ids.repeat_interleave(num_samples, 0), attn.repeat_interleave(num_samples, 0)
        pad, pos = self.tokenizer.pad_token_id, positions(attn)
        inputs = {"input_ids": ids, "attention_mask": attn, "position_ids": pos}
        if model is None and self.nlpo:
            model = NucleusMaskedLM(self.model, self.mask_model, self.nlpo.top_p, self.temperature)
        completion, lps, mask = sample_tokens(model or self.model, inputs, pos[:, -1:], self.max_new_tokens,
                                              self.tokenizer.eos_token_id, pad,
                                              partial(scaled_logits, temperature=self.temperature), greedy,
                                              decoder=self.decoder if model is None else "eager")
        return self._completed(contexts, num_samples, ids, attn, completion, mask, lps)

    @torch.no_grad()
    def sample_with_engine(self, contexts: Sequence, num_samples: int, greedy: bool = False) -> Rollout:
        """Sample with the policy's `sampler` (a vLLM engine) from the same prompt tokens, then re-score the sampled
        tokens with the trained model: `logprobs` are the trained model's (the behaviour log-probs the losses' ratios
        start from, as `sample` gives), `extras["rollout_logprobs"]` the sampler's, for the truncated importance
        weights (`mmalign.algorithms.rollout_correction`). Greedy rollouts (evaluation) keep the sampler's."""
        ids, attn = self.encode(contexts)
        prompts = [row[keep.bool()].tolist() for row, keep in zip(ids, attn)]
        samples = self.sampler.generate(prompts, num_samples, greedy)
        pad = self.tokenizer.pad_token_id
        completion, sampler_lps, mask = completion_tensors(samples, pad, ids.device)
        ids, attn = ids.repeat_interleave(num_samples, 0), attn.repeat_interleave(num_samples, 0)
        rollout = self._completed(contexts, num_samples, ids, attn, completion, mask, sampler_lps)
        if not greedy:
            rollout.extras["rollout_logprobs"] = sampler_lps
            rollout.logprobs = self.logprobs(rollout).detach()
        return rollout

    def rollout_from(self, contexts: Sequence, outputs: Sequence[str],
                     generator: torch.Generator | None = None) -> Rollout:
        """A teacher-forced rollout of given completions (offline data), EOS appended; `logprobs` are left at 0
        since no behaviour policy sampled them: call `logprobs(rollout)` to score them. Scoring given text draws
        nothing, so `generator` is unused."""
        ids, attn = self.encode(contexts)
        comp, mask = encode_completions(self.tokenizer, outputs, ids.device)
        return completion_rollout(torch.arange(len(comp), device=ids.device), ids, attn, comp, mask,
                                  torch.zeros(mask.shape, device=ids.device), list(outputs))

    def _completed(self, contexts: Sequence, num_samples: int, ids: Tensor, attn: Tensor, completion: Tensor,
                   mask: Tensor, logprobs: Tensor) -> Rollout:
        """The rollout of `num_samples` sampled completions per context (rows of `ids` already repeated), decoded."""
        texts = self.tokenizer.batch_decode(completion.masked_fill(~mask, self.tokenizer.pad_token_id),
                                            skip_special_tokens=True)
        group = torch.arange(len(contexts), device=ids.device).repeat_interleave(num_samples)
        return completion_rollout(group, ids, attn, completion, mask, logprobs, texts)

    def _forward(self, rollout: Rollout, model=None, hidden: bool = False, logits: bool = True):
        """Forward over prompt + completion; returns the output and the slice of positions that predict steps.
        Compiled scoring runs each group's shared prompt once (`shared_prompt_forward`)."""
        s = rollout.state
        p, attn = s["prompt_length"], s["attention_mask"]
        end = int(attn.sum(0).nonzero().max()) + 1  # drop all-padding columns at the end of this minibatch
        ids, attn, sl = s["input_ids"][:, :end], attn[:, :end], slice(-(end - p) - 1, -1)
        forward = model or self._scoring_forward()
        if forward is self._compiled_forward and (firsts := group_firsts(rollout.group, ids[:, :p])) is not None:
            return shared_prompt_forward(forward, ids, attn, p, firsts, hidden, logits), sl, end
        out = forward(input_ids=ids, attention_mask=attn, position_ids=positions(attn), output_hidden_states=hidden,
                      logits_to_keep=end - p + 1 if logits else 1)
        return out, sl, end

    def _compiles(self) -> bool:
        """Re-scoring runs compiled now: scoring "compiled" while gradients are on (the loss's forward, backward)."""
        return self.scoring == "compiled" and torch.is_grad_enabled()

    def _scoring_forward(self):
        """The forward re-scoring runs on the policy's own model: `self.model`, or its compiled forward."""
        if not self._compiles():
            return self.model
        if self._compiled_forward is None:
            from torch.distributed.fsdp import FSDPModule

            if any(isinstance(m, FSDPModule) for m in self.model.modules()):
                raise ConfigError("compiled re-scoring does not run under FSDP (its first update hangs there): set "
                                  "task_args.scoring: eager, or launch without FSDP (DDP).", "task_args.scoring")
            self._compiled_forward = torch.compile(self.model.forward)
        return self._compiled_forward

    def _pad(self, rollout: Rollout, x: Tensor) -> Tensor:
        """(B, L) per-step values -> (B, T), zero on padding."""
        return nn.functional.pad(x, (0, rollout.mask.shape[1] - x.shape[1])) * rollout.mask

    def logprobs(self, rollout: Rollout, model=None) -> Tensor:
        """(B, T) log-probs of the completion tokens under the current weights, with grad (under NLPO's action mask
        when it is on and `model` is not given)."""
        if model is None and self.nlpo:
            out, sl, end = self._forward(rollout)
            tokens = rollout.state["input_ids"][:, rollout.state["prompt_length"]:end]
            logp = token_logprobs(self._masked(rollout, out.logits[:, sl]), tokens, self.temperature)
            # padding after EOS may fall outside the nucleus (-inf): zero it before the mask multiplies it
            return self._pad(rollout, logp.masked_fill(~rollout.mask[:, :logp.shape[1]], 0.0))
        if self.logprob_chunk:
            out, sl, end = self._forward(rollout, model, hidden=True, logits=False)
            tokens = rollout.state["input_ids"][:, rollout.state["prompt_length"]:end]
            head = (model or self.model).get_output_embeddings()
            return self._pad(rollout, chunked_token_logprobs(out.hidden_states[-1][:, sl], head, tokens,
                                                             self.temperature, self.logprob_chunk, self._compiles()))
        out, sl, end = self._forward(rollout, model)
        tokens = rollout.state["input_ids"][:, rollout.state["prompt_length"]:end]
        return self._pad(rollout, token_logprobs(out.logits[:, sl], tokens, self.temperature))

    def _masked(self, rollout: Rollout, logits: Tensor) -> Tensor:
        """NLPO: the policy's step logits (B, L, V), -inf outside the masking policy's nucleus at the same steps."""
        with torch.no_grad():
            out, sl, _ = self._forward(rollout, self.mask_model)
            mask_logits = scaled_logits(out.logits[:, sl], self.temperature)
        return masked_logits(logits, mask_logits, self.nlpo.top_p)

    def set_progress(self, step: int) -> None:
        """NLPO: copy the policy into the masking policy every `sync_every` iterations (Alg. 1's mu), and at the
        first iteration this object runs, so a resumed run masks with its resumed weights."""
        if self.nlpo and (step % self.nlpo.sync_every == 0 or not self._mask_synced):
            self.mask_model.load_state_dict(self.model.state_dict())
            self._mask_synced = True

    def prompt_sampler(self, reference: bool = False):
        """`sample(context, m)`: m outputs for one context, of the policy as it is now or of its `reference` (LoRA
        disabled, or the frozen copy), seeded by the prompt and on RNG streams of their own, so training's draws are
        untouched and a resumed run gets the same ones."""
        if reference and self.reference == "none":
            raise ConfigError("CTRL and the best-of-N win rate compare with the reference policy's samples, and this "
                              "policy has none: turn LoRA on (lora.rank > 0) or set reference: copy.", "reference")

        def sample(context, m: int) -> list[str]:
            with own_rng(self, zlib.crc32(prompt_text(context).encode())):
                if not reference:
                    return self.sample([context], m).outputs
                if self.reference == "copy":
                    return self.sample([context], m, model=self.ref_model).outputs
                with self.model.disable_adapter():
                    return self.sample([context], m).outputs

        return sample

    def mask_state(self) -> dict[str, Tensor]:
        """NLPO: the masking copy's values of the parameters that train (the others never differ from the policy's),
        for checkpoints: a resumed run masks with the copy it had, not with a fresh sync."""
        trained = {n for n, p in self.model.named_parameters() if p.requires_grad}
        return {n: p.detach().cpu().clone() for n, p in self.mask_model.named_parameters() if n in trained}

    def load_mask_state(self, state: dict[str, Tensor]) -> None:
        params = dict(self.mask_model.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)
        self._mask_synced = True

    def ref_logprobs(self, rollout: Rollout) -> Tensor:
        """(B, T) log-probs under the reference: adapters disabled (LoRA) or the frozen copy."""
        return reference_logprobs(self, rollout)

    def values(self, rollout: Rollout) -> Tensor:
        """(B, T) V(s_t), the value of the state before completion token t (needs value_head=True)."""
        if self.value_head is None:
            raise ValueError("PPO needs a critic: build the policy with value_head=True.")
        out, sl, _ = self._forward(rollout, hidden=True)
        return self._pad(rollout, self.value_head(out.hidden_states[-1][:, sl].float()).squeeze(-1))

    def entropy(self, rollout: Rollout) -> Tensor:
        """(B, T) entropy of the next-token distribution at each completion step, with grad."""
        out, sl, _ = self._forward(rollout)
        logits = self._masked(rollout, out.logits[:, sl]) if self.nlpo else out.logits[:, sl]
        logp = torch.log_softmax(logits.float() / self.temperature, -1)
        return self._pad(rollout, -(logp.exp() * logp.nan_to_num(neginf=0.0)).sum(-1))

    def save_pretrained(self, path: str | Path) -> None:
        """The model (or its PEFT adapter) and tokenizer as a `save_pretrained` folder, plus the value head."""
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        if self.value_head is not None:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in self.value_head.state_dict().items()},
                      Path(path) / "value_head.safetensors")


def char_tokenizer(alphabet: str = "", model_max_length: int = 1024):
    """An in-memory character-level tokenizer (tests, tiny models): pad 0, eos 1, bos 2, unk 3, then characters.

    Args:
        alphabet: characters besides printable ASCII to include.
        model_max_length: maximum sequence length.
    """
    import string

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable[:95]) | set(alphabet))
    vocab = {"<pad>": 0, "</s>": 1, "<s>": 2, "<unk>": 3, **{c: i + 4 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>",
                                   unk_token="<unk>", model_max_length=model_max_length)


def word_tokenizer(words: Sequence[str], model_max_length: int = 1024):
    """An in-memory word-level tokenizer over `words` (tests, tiny models): pad 0, eos 1, bos 2, unk 3."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<s>": 2, "<unk>": 3}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>",
                                   unk_token="<unk>", model_max_length=model_max_length)

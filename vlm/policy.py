"""Vision-language models on the adapter contract: a transformers image-text-to-text model as a `Policy`.

A step is one completion token, exactly as in `mmalign.text.policy.CausalLMPolicy`: its log-prob is
log softmax(logits / temperature) at the sampled token, with no reduction over tokens. Prompts (text and image
tokens) are left-padded; the mask covers the completion up to and including EOS. Image tensors (the prompt
encoder's `image_keys`, e.g. `pixel_values`, `image_grid_thw`), the token types and the positions (3-D M-RoPE for
Qwen2-VL, 1-D otherwise) stay in `Rollout.state`, one entry per sample, so
minibatch slicing carries each sample's images; the cores never read them. Positions are computed once, at
sampling, and reused when re-scoring, so sampling and re-scoring see the same positions by construction (no
reliance on the model's cached `rope_deltas`). The model stays in eval mode (no dropout); gradients still flow.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from mmalign.generate import DECODERS, sample_tokens, scaled_logits
from mmalign.rollout import Rollout
from mmalign.text.policy import encode_completions, reference_logprobs, token_logprobs


def _position_arg(pos: Tensor) -> Tensor:
    """(B, R, L) positions -> the forward's `position_ids`: (R, B, L) for M-RoPE (R = 3), (B, L) for 1-D."""
    return pos.transpose(0, 1) if pos.shape[1] > 1 else pos[:, 0]


class VLMPolicy(nn.Module):
    """An image-text-to-text model (optionally a peft model with LoRA) and its prompt encoder as a `Policy`.

    Args:
        model: e.g. `Qwen2VLForConditionalGeneration`, `Idefics3ForConditionalGeneration`,
            `LlavaForConditionalGeneration` (or its peft wrapper).
        inputs: a prompt encoder from `mmalign.vlm.inputs` (`prompt_encoder(model, ...)` picks the family's).
        max_new_tokens: completion length limit.
        temperature: sampling temperature; it defines the policy, so it also divides the re-scored logits.
        reference: "lora" (adapters disabled), "copy" (a frozen copy made now) or "none".
        decoder: "eager" or "compiled" (`mmalign.generate.sample_tokens`).
    """

    def __init__(self, model, inputs, max_new_tokens: int = 64, temperature: float = 1.0, reference: str = "none",
                 decoder: str = "eager"):
        super().__init__()
        if temperature <= 0:
            raise ValueError("temperature must be positive; use sample(..., greedy=True) for greedy decoding.")
        if reference == "lora" and not hasattr(model, "disable_adapter"):
            raise ValueError("reference='lora' needs a peft model (turn LoRA on) or use reference='copy'.")
        if decoder not in DECODERS:
            raise ValueError(f"decoder {decoder!r} is not one of {list(DECODERS)}")
        self.model, self.inputs, self.decoder = model.eval(), inputs, decoder
        self.tokenizer = inputs.tokenizer
        self.max_new_tokens, self.temperature, self.reference = max_new_tokens, temperature, reference
        self.ref_model = copy.deepcopy(model).requires_grad_(False).eval() if reference == "copy" else None
        # the policy never emits image/vision tokens (EasyR1 biases the image token by -100); part of its definition,
        # so re-scoring masks them too
        self.banned = torch.tensor(inputs.banned_token_ids, dtype=torch.long)

    def _logits(self, logits: Tensor) -> Tensor:
        """fp32 logits / temperature with the banned (image) tokens at -inf: (..., V) -> (..., V)."""
        return scaled_logits(logits, self.temperature, self.banned)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @torch.no_grad()
    def sample(self, contexts: Sequence, num_samples: int, greedy: bool = False) -> Rollout:
        """Generate `num_samples` completions per context with a KV cache (`generate.sample_tokens`); stop each
        row at EOS.

        Returns:
            Rollout with logprobs/mask (B, T), B = len(contexts) * num_samples; state: input_ids, attention_mask,
            token_types (B, P + T), position_ids (B, R, P + T), prompt_length P, and per-sample image tensors.
        """
        prompt = self.inputs.encode(contexts, self.device)
        rep = lambda x: x.repeat_interleave(num_samples, 0)  # noqa: E731
        ids, attn, types, pos = rep(prompt.input_ids), rep(prompt.attention_mask), rep(prompt.token_types), \
            rep(prompt.position_ids)
        images = {k: [t for t in v for _ in range(num_samples)] for k, v in prompt.images.items()}
        inputs = {"input_ids": ids, "attention_mask": attn, "position_ids": _position_arg(pos),
                  **self.inputs.model_inputs(self.model, images, types, self.dtype)}
        # text after the prompt: all three M-RoPE axes advance together
        completion, lps, mask = sample_tokens(self.model, inputs, pos[:, :, -1:], self.max_new_tokens,
                                              self.tokenizer.eos_token_id, self.tokenizer.pad_token_id, self._logits,
                                              greedy, _position_arg, self.decoder)
        return self._rollout(len(contexts), num_samples, ids, attn, types, pos, images, completion, mask, lps)

    def _rollout(self, n_contexts: int, num_samples: int, ids: Tensor, attn: Tensor, types: Tensor, pos: Tensor,
                 images: dict, completion: Tensor, mask: Tensor, logprobs: Tensor) -> Rollout:
        """Pack prompt + completion into a Rollout; completion positions continue after each prompt's last one."""
        t = completion.shape[1]
        steps = torch.arange(1, t + 1, device=ids.device)
        comp_pos = pos[:, :, -1:] + steps.view(1, 1, t)
        texts = self.tokenizer.batch_decode(completion.masked_fill(~mask, self.tokenizer.pad_token_id),
                                            skip_special_tokens=True)
        return Rollout(
            group=torch.arange(n_contexts, device=ids.device).repeat_interleave(num_samples),
            logprobs=logprobs, mask=mask, outputs=texts,
            state={"input_ids": torch.cat([ids, completion], 1), "attention_mask": torch.cat([attn, mask.long()], 1),
                   "token_types": torch.cat([types, torch.zeros_like(completion)], 1),  # Qwen2-VL wants them all
                   "position_ids": torch.cat([pos, comp_pos], 2), "prompt_length": ids.shape[1], **images},
        )

    def rollout_from(self, contexts: Sequence, outputs: Sequence[str],
                     generator: torch.Generator | None = None) -> Rollout:
        """A teacher-forced rollout of given completions (offline data), EOS appended; `logprobs` are left at 0.
        Scoring given text draws nothing, so `generator` is unused."""
        prompt = self.inputs.encode(contexts, self.device)
        comp, mask = encode_completions(self.tokenizer, outputs, self.device)
        roll = self._rollout(len(contexts), 1, prompt.input_ids, prompt.attention_mask, prompt.token_types,
                             prompt.position_ids, prompt.images, comp, mask, torch.zeros(mask.shape))
        roll.outputs = list(outputs)
        return roll

    def _forward(self, rollout: Rollout, model=None):
        """Forward over prompt + completion; returns logits at the positions that predict completion steps."""
        s = rollout.state
        attn, p = s["attention_mask"], s["prompt_length"]
        end = int(attn.sum(0).nonzero().max()) + 1  # drop all-padding columns at the end of this minibatch
        images = {k: s[k] for k in self.inputs.image_keys}
        model = model or self.model
        out = model(input_ids=s["input_ids"][:, :end], attention_mask=attn[:, :end],
                    position_ids=_position_arg(s["position_ids"][:, :, :end]), logits_to_keep=end - p + 1,
                    **self.inputs.model_inputs(model, images, s["token_types"][:, :end], self.dtype))
        return out.logits[:, :-1], s["input_ids"][:, p:end]

    def _pad(self, rollout: Rollout, x: Tensor) -> Tensor:
        """(B, L) per-step values -> (B, T), zero on padding."""
        return nn.functional.pad(x, (0, rollout.mask.shape[1] - x.shape[1])) * rollout.mask

    def logprobs(self, rollout: Rollout, model=None) -> Tensor:
        """(B, T) log-probs of the completion tokens under the current weights, with grad."""
        logits, tokens = self._forward(rollout, model)
        return self._pad(rollout, token_logprobs(self._logits(logits), tokens))

    def ref_logprobs(self, rollout: Rollout) -> Tensor:
        """(B, T) log-probs under the reference: adapters disabled (LoRA) or the frozen copy."""
        return reference_logprobs(self, rollout)

    def entropy(self, rollout: Rollout) -> Tensor:
        """(B, T) entropy of the next-token distribution at each completion step, with grad."""
        logits, _ = self._forward(rollout)
        logp = torch.log_softmax(self._logits(logits), -1)
        finite = torch.where(torch.isfinite(logp), logp, torch.zeros_like(logp))  # banned tokens: 0 * -inf -> 0,
        return self._pad(rollout, -(logp.exp() * finite).sum(-1))  # and no NaN gradient through them

    def save_pretrained(self, path: str | Path) -> None:
        """The model (or its PEFT adapter), tokenizer and image processor as a `save_pretrained` folder."""
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        self.inputs.image_processor.save_pretrained(path)

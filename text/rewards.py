"""Text rewards: plain callables `fn(contexts, outputs, **kwargs) -> B floats` over generated strings.

`contexts[i]` is the dataset row (a dict such as {"prompt": str, "references": [str, ...]}) that produced
`outputs[i]`.

- `BleuReward`: sentence BLEU against the row's references. The default "add-one" smoothing reproduces BLEUBERI
  (Chang et al. 2025, arXiv 2505.11080), which scores with HF `evaluate`'s `bleu(smooth=True)`: Lin & Och (2004)
  add-one on all four orders, max-over-references clipping, brevity penalty against the *shortest* reference.
  "exp" / "add-k" / "floor" / "none" use `sacrebleu.sentence_bleu` (closest-reference brevity penalty). A garbage
  answer scores ~0.087 under add-one and 0 under exp: the choice changes how many GRPO groups have zero std.
- `ChrfReward`, `ExactMatchReward`, `RegexReward`, `think_answer_format`.
- `SequenceClassifierReward`: a learned reward model (transformers, num_labels=1) is just another callable.

Configs name them through `mmalign.rewards.REWARDS` ("bleu", "chrf", ...). Bad options and bad rows raise
`mmalign.task.RewardError`.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import sacrebleu
import torch
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from mmalign.rollout import RewardFn
from mmalign.task import RewardError

BLEU_SMOOTHINGS = ("add-one", "exp", "add-k", "floor", "none")
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_FORMAT_RE = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL)
_tokenize_13a = Tokenizer13a()


# ---------------------------------------------------------------------------------------------------------------
# Text helpers and metrics


def extract_answer(text: str) -> str:
    """Text inside the first <answer>...</answer>, stripped; the whole text (stripped) when there is none."""
    match = _ANSWER_RE.search(text)
    return (match.group(1) if match else text).strip()


def _ngrams(tokens: list[str], max_order: int) -> Counter:
    """Counts of all n-grams of orders 1..max_order."""
    return Counter(tuple(tokens[i : i + n]) for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1))


def bleu_add_one(hypothesis: str, references: Sequence[str], max_order: int = 4) -> float:
    """Sentence BLEU exactly as HF `evaluate.load("bleu").compute(..., smooth=True)["bleu"]`, in [0, 1].

    13a tokenisation, no lowercasing; clipped counts are the max over references; p_n = (m_n + 1) / (c_n + 1) on
    every order including unigrams (Lin & Och 2004); brevity penalty exp(1 - r / c) with r the length of the
    shortest reference (sacrebleu uses the closest).
    """
    hyp = _tokenize_13a(hypothesis).split()
    refs = [_tokenize_13a(r).split() for r in references]
    ref_len = min(len(r) for r in refs)
    if not hyp or ref_len == 0:
        return 0.0
    merged: Counter = Counter()
    for ref in refs:
        merged |= _ngrams(ref, max_order)
    matches = [0] * max_order
    for ngram, count in (_ngrams(hyp, max_order) & merged).items():
        matches[len(ngram) - 1] += count
    log_p = sum(math.log((matches[n] + 1) / (max(len(hyp) - n, 0) + 1)) for n in range(max_order)) / max_order
    ratio = len(hyp) / ref_len
    brevity = 1.0 if ratio > 1.0 else math.exp(1 - 1 / ratio)
    return math.exp(log_p) * brevity


@functools.cache
def _sacrebleu_metric(smoothing: str) -> sacrebleu.BLEU:
    """A cached sentence-level sacrebleu scorer (effective order, as `sacrebleu.sentence_bleu`)."""
    return sacrebleu.BLEU(smooth_method=smoothing, effective_order=True)


def bleu(hypothesis: str, references: Sequence[str], smoothing: str = "add-one") -> float:
    """Sentence BLEU of `hypothesis` against `references`, in [0, 1]; an empty hypothesis scores 0.

    Args:
        hypothesis: the text to score.
        references: one or more reference texts.
        smoothing: "add-one" (BLEUBERI / HF evaluate smooth=True, shortest-reference brevity penalty), or a
            `sacrebleu.sentence_bleu` method: "exp" (sacrebleu's default), "add-k" (k=1, orders > 1 only),
            "floor" or "none" (closest-reference brevity penalty). Scores are divided by 100.
    """
    if smoothing not in BLEU_SMOOTHINGS:
        raise RewardError(f"unknown BLEU smoothing {smoothing!r}; use one of {list(BLEU_SMOOTHINGS)}.")
    if isinstance(references, str) or not references:
        raise RewardError(f"references must be a non-empty list of strings, got {references!r}.")
    if not hypothesis.strip():
        return 0.0
    if smoothing == "add-one":
        return bleu_add_one(hypothesis, references)
    return _sacrebleu_metric(smoothing).sentence_score(hypothesis, list(references)).score / 100.0


def _references(context: Any, key: str) -> list[str]:
    """The references of one row: `context[key]` as a list of strings."""
    if not isinstance(context, Mapping) or key not in context:
        keys = sorted(context) if isinstance(context, Mapping) else type(context).__name__
        raise RewardError(f"reference-based reward needs a {key!r} field in every row; this row has {keys}.")
    refs = context[key]
    return [refs] if isinstance(refs, str) else list(refs)


# ---------------------------------------------------------------------------------------------------------------
# Reference-based and rule-based rewards


class BleuReward:
    """Sentence BLEU of each output against its row's references (BLEUBERI's reward with the defaults).

    Args:
        references_key: row field holding the reference (a str) or references (a list of str).
        smoothing: see `bleu`; "add-one" is BLEUBERI's.
        extract_answer: score only the text inside <answer>...</answer> when present.
    """

    name = "bleu"

    def __init__(self, references_key: str = "references", smoothing: str = "add-one", extract_answer: bool = True):
        if smoothing not in BLEU_SMOOTHINGS:
            raise RewardError(f"unknown BLEU smoothing {smoothing!r}; use one of {list(BLEU_SMOOTHINGS)}.")
        self.references_key, self.smoothing, self.extract_answer = references_key, smoothing, extract_answer

    def __call__(self, contexts: Sequence, outputs: Sequence[str], **kwargs: Any) -> list[float]:
        texts = [extract_answer(o) if self.extract_answer else o for o in outputs]
        return [
            bleu(t, _references(c, self.references_key), self.smoothing) for c, t in zip(contexts, texts, strict=True)
        ]


class ChrfReward:
    """Sentence chrF (sacrebleu, Popovic 2015) against the row's references, in [0, 1]; empty answers score 0.

    Args:
        references_key: row field holding the reference(s).
        word_order: 0 for chrF, 2 for chrF++.
        extract_answer: score only the text inside <answer>...</answer> when present.
    """

    name = "chrf"

    def __init__(self, references_key: str = "references", word_order: int = 0, extract_answer: bool = True):
        self.references_key, self.extract_answer = references_key, extract_answer
        self.metric = sacrebleu.CHRF(word_order=word_order)

    def __call__(self, contexts: Sequence, outputs: Sequence[str], **kwargs: Any) -> list[float]:
        texts = [extract_answer(o) if self.extract_answer else o for o in outputs]
        return [
            self.metric.sentence_score(t, _references(c, self.references_key)).score / 100.0 if t.strip() else 0.0
            for c, t in zip(contexts, texts, strict=True)
        ]


def normalize_text(text: str) -> str:
    """Collapse whitespace runs to one space, strip, and casefold."""
    return " ".join(text.split()).casefold()


class ExactMatchReward:
    """1.0 when the output equals one of the row's references, else 0.0.

    Args:
        references_key: row field holding the accepted answer(s).
        normalize: compare after `normalize_text` (whitespace and case); False compares exactly.
        extract_answer: compare only the text inside <answer>...</answer> when present (always stripped).
    """

    name = "exact_match"

    def __init__(self, references_key: str = "references", normalize: bool = True, extract_answer: bool = True):
        self.references_key, self.normalize, self.extract_answer = references_key, normalize, extract_answer

    def _norm(self, text: str) -> str:
        return normalize_text(text) if self.normalize else text

    def __call__(self, contexts: Sequence, outputs: Sequence[str], **kwargs: Any) -> list[float]:
        scores = []
        for context, output in zip(contexts, outputs, strict=True):
            answer = self._norm(extract_answer(output) if self.extract_answer else output)
            refs = {self._norm(r) for r in _references(context, self.references_key)}
            scores.append(float(answer in refs))
        return scores


class RegexReward:
    """1.0 when the output matches a regular expression (`re.search`, or `re.fullmatch` with fullmatch=True).

    Args:
        pattern: the expression, the same for every row.
        pattern_key: instead of `pattern`, read each row's own expression from this field.
        fullmatch: require the whole (stripped) text to match.
        ignore_case: match case-insensitively.
        extract_answer: match only the text inside <answer>...</answer> when present.
    """

    name = "regex"

    def __init__(
        self,
        pattern: str | None = None,
        pattern_key: str | None = None,
        fullmatch: bool = False,
        ignore_case: bool = False,
        extract_answer: bool = False,
    ):
        if (pattern is None) == (pattern_key is None):
            raise RewardError(
                "RegexReward needs exactly one of `pattern` (one expression) or `pattern_key` (per row)."
            )
        self.flags = re.IGNORECASE if ignore_case else 0
        self.pattern = None if pattern is None else re.compile(pattern, self.flags)
        self.pattern_key, self.fullmatch, self.extract_answer = pattern_key, fullmatch, extract_answer

    def __call__(self, contexts: Sequence, outputs: Sequence[str], **kwargs: Any) -> list[float]:
        scores = []
        for context, output in zip(contexts, outputs, strict=True):
            text = extract_answer(output) if self.extract_answer else output
            pattern = self.pattern or re.compile(context[self.pattern_key], self.flags)
            match = pattern.fullmatch(text.strip()) if self.fullmatch else pattern.search(text)
            scores.append(float(match is not None))
        return scores


def think_answer_format(contexts: Sequence, outputs: Sequence[str], **kwargs: Any) -> list[float]:
    """1.0 when the output is exactly "<think>...</think><answer>...</answer>" (whitespace around tags allowed)."""
    return [float(_FORMAT_RE.fullmatch(o) is not None) for o in outputs]


think_answer_format.name = "format"  # type: ignore[attr-defined]


def think_answer_format_reward() -> RewardFn:
    """The factory of the "format" reward name: `think_answer_format`, which takes no options."""
    return think_answer_format


# ---------------------------------------------------------------------------------------------------------------
# Learned reward model


class SequenceClassifierReward:
    """A transformers sequence classifier with one output (a reward model) as a reward function.

    Each (prompt, output) pair is rendered with the tokenizer's chat template as a user turn and an assistant turn
    when the tokenizer has one, else as the plain concatenation prompt + output (as TRL does for plain-text
    prompts). The reward is the model's single logit at the last non-padding token.

    Args:
        model_or_path: a loaded `PreTrainedModel` for sequence classification, or a local directory holding one
            (loaded with `local_files_only=True`; no remote code is run).
        tokenizer: the matching tokenizer; loaded from `model_or_path` when that is a path.
        prompt_key: row field holding the prompt (a str, or a list of chat messages).
        batch_size: pairs per forward pass.
        max_length: truncate longer inputs to this many tokens.
        extract_answer: score only the text inside <answer>...</answer> when present.
    """

    name = "reward_model"

    def __init__(
        self,
        model_or_path: Any,
        tokenizer: Any = None,
        prompt_key: str = "prompt",
        batch_size: int = 8,
        max_length: int = 2048,
        extract_answer: bool = False,
    ):
        if isinstance(model_or_path, str) or hasattr(model_or_path, "__fspath__"):
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            path = str(model_or_path)
            model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(path, local_files_only=True)
        else:
            model = model_or_path
        if tokenizer is None:
            raise RewardError("SequenceClassifierReward got a model object but no tokenizer; pass `tokenizer=`.")
        if model.config.num_labels != 1:
            raise RewardError(
                f"a reward model needs num_labels=1 (one scalar per text); this one has {model.config.num_labels}."
            )
        pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else tokenizer.pad_token_id
        if pad_id is None:
            raise RewardError(
                "the reward model and its tokenizer have no pad token; set `tokenizer.pad_token` (e.g. "
                "to the eos token) and `model.config.pad_token_id` so batches can be padded."
            )
        model.config.pad_token_id = pad_id
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token_id = pad_id
        self.model, self.tokenizer = model.eval(), tokenizer
        self.prompt_key, self.batch_size, self.max_length = prompt_key, batch_size, max_length
        self.extract_answer = extract_answer

    def format_text(self, context: Any, output: str) -> str:
        """The text the classifier reads for one (row, output) pair."""
        prompt = context[self.prompt_key] if isinstance(context, Mapping) else context
        if self.extract_answer:
            output = extract_answer(output)
        if getattr(self.tokenizer, "chat_template", None):
            messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            messages.append({"role": "assistant", "content": output})
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        if not isinstance(prompt, str):
            raise RewardError("chat-message prompts need a tokenizer with a chat template; this one has none.")
        return prompt + output

    @torch.no_grad()
    def __call__(self, contexts: Sequence, outputs: Sequence[str], **kwargs: Any) -> list[float]:
        texts = [self.format_text(c, o) for c, o in zip(contexts, outputs, strict=True)]
        templated = bool(getattr(self.tokenizer, "chat_template", None))
        device = next(self.model.parameters()).device
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                add_special_tokens=not templated,  # the chat template already adds them
                return_tensors="pt",
            ).to(device)
            scores += self.model(**batch).logits[:, 0].float().tolist()
        return scores

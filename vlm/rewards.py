"""Rewards of the SSL tasks: plain callables `fn(contexts, outputs) -> B floats`.

A context is the dict an SSL generator produced ({"prompt", "images", "answer", "choices", "task"}); the reward
reads its "answer", which the policy never sees. SSL4RL (arXiv 2510.16416) scores 1.0 on an exact match of the
<answer> content (partial credit per position for jigsaw) and has no format reward; `ValidChoice` and the
think/answer format reward are optional shaping terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmalign.text.rewards import think_answer_format
from mmalign.vlm.ssl_tasks import SSL_TASKS, parse_answer


def _task_of(context: Any) -> str:
    if not isinstance(context, dict) or "answer" not in context or "task" not in context:
        raise ValueError("SSL rewards need contexts made by an SSL generator (dicts with 'task' and 'answer').")
    return context["task"]


class SSLAccuracy:
    """The task's verifier on the parsed answer: exact match (1/0), or jigsaw's fraction of right positions.

    Args:
        require_tags: parse only <answer>...</answer> (SSL4RL); False also accepts a bare answer (tiny models).
    """

    name = "accuracy"

    def __init__(self, require_tags: bool = True):
        self.require_tags = require_tags

    def __call__(self, contexts: Sequence, outputs: Sequence[str], **kwargs: Any) -> list[float]:
        return [SSL_TASKS[_task_of(c)].score(parse_answer(o, self.require_tags), c["answer"])
                for c, o in zip(contexts, outputs, strict=True)]


class ValidChoice:
    """1.0 when the parsed answer is one of the question's allowed answers (any parsable answer when it lists none).

    Args:
        require_tags: as in `SSLAccuracy`.
    """

    name = "valid"

    def __init__(self, require_tags: bool = True):
        self.require_tags = require_tags

    def __call__(self, contexts: Sequence, outputs: Sequence[str], **kwargs: Any) -> list[float]:
        scores = []
        for c, o in zip(contexts, outputs, strict=True):
            _task_of(c)
            pred = parse_answer(o, self.require_tags)
            scores.append(float(pred is not None and (not c.get("choices") or pred in c["choices"])))
        return scores


def format_reward(contexts: Sequence, outputs: Sequence[str], **kwargs: Any) -> list[float]:
    """1.0 for exactly "<think>...</think><answer>...</answer>" (mmalign.text.rewards.think_answer_format)."""
    return think_answer_format(contexts, outputs)


format_reward.name = "format"  # type: ignore[attr-defined]

SSL_REWARDS = {"accuracy": SSLAccuracy, "valid": ValidChoice, "format": lambda: format_reward}
"""Reward names usable in the SSL task config."""

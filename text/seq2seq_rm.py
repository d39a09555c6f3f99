"""Sequence-to-sequence reward modelling (Zhou et al. 2024, "Sequence to Sequence Reward Modeling: Improving RLHF by
Language Feedback", arXiv 2409.00162).

The reward model is a causal LM trained by sequence MLE instead of the Bradley-Terry binary MLE, on the same
preference pairs: for a pair (chosen y_w, rejected y_l) of prompt x it learns

    correction mapping  (x, y_l) -> y_w        and        identity mapping  (x, y_w) -> y_w        (Sec. 3.1)

so it rewrites a response into the one people prefer and leaves a preferred one as it is. Its language feedback is
turned into token-level rewards (Sec. 3.2): the response y is read back token by token, the model conditioned on
(x, y, y_<t); a token the model would write itself (its greedy token) gets a positive reward, a token where the
response diverges from the model's rewrite a negative one:

    r_t = match     if argmax_v p(v | x, y, y_<t) == y_t,        r_t = diverge     otherwise.

`level: token` hands these to PPO as per-step rewards (the text task's policy tokenizer is the model's, so step t
is token t; `mmalign.task.StepRewards`); `level: sequence` trains on their sum per response (GRPO), which is also
what evaluation reports at either level. Here the pairs are the BLEU-ranked
pairs of the BT proxy (`mmalign.text.reward_models.bleu_pairs`), so the two reward models see the same data.
The stop token is judged like any other (the model predicts EOS after its rewrite), so an empty or cut-short
response is not free of feedback. Token rewards follow the re-tokenised response: a special token the policy sampled
mid-response (dropped when the response is decoded) shifts the later steps' rewards by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mmalign.task import RewardError
from mmalign.text.reward_models import bleu_pairs, data_rows

LEVELS = ("token", "sequence")


def mapping_examples(pairs: Sequence[tuple]) -> list[tuple[str, str, str]]:
    """(prompt, response, target) of each pair ((x, y_w), (x, y_l)): the correction and the identity mapping."""
    return [ex for (x, chosen), (_, rejected) in pairs for ex in ((x, rejected, chosen), (x, chosen, chosen))]


class Seq2SeqRewardModel:
    """The "seq2seq_rm" reward: a tiny causal LM over the policy's tokenizer, trained by `learn` on the mapping
    examples of `num_pairs` BLEU-ranked pairs of the train split (the text task calls `learn` at construction).

    Args:
        level: "token" (per-step rewards, PPO) or "sequence" (their sum per response, GRPO).
        match, diverge: the reward of a token the model agrees with, and of one where the response diverges.
        num_pairs, seed: the pairs (as the "bt_rm" reward's, for a matched comparison) and the model's init.
        epochs, lr, batch_size, hidden_size, layers: the model and its sequence-MLE training.
        dataset, eval_fraction: the data and its held-out share, as the task's.
    """

    def __init__(self, level: str = "token", match: float = 1.0, diverge: float = -1.0, num_pairs: int = 64,
                 seed: int = 0, epochs: int = 30, lr: float = 3e-3, batch_size: int = 16, hidden_size: int = 32,
                 layers: int = 2, dataset: str = "instructions", eval_fraction: float = 0.1):
        if level not in LEVELS:
            raise RewardError(f"seq2seq_rm level {level!r} is not one of {list(LEVELS)}: token for PPO's per-step "
                              "rewards, sequence for one reward per response (GRPO).")
        self.level, self.match, self.diverge = level, match, diverge
        rows, _ = data_rows(dataset, eval_fraction)
        self.examples = mapping_examples(bleu_pairs(rows, num_pairs, seed))
        self.seed, self.epochs, self.lr, self.batch_size = seed, epochs, lr, batch_size
        self.hidden_size, self.layers = hidden_size, layers
        self.model = self.tokenizer = None
        self.history: list[float] = []

    # --- the model ------------------------------------------------------------------------------------------
    def attach(self, policy) -> None:
        """`mmalign.task.PolicyBound`: build and train the model over the policy's tokenizer and length limit."""
        self.learn(policy.tokenizer, policy.max_new_tokens)

    def learn(self, tokenizer, max_new_tokens: int) -> None:
        """Build the model over `tokenizer` (the policy's) and train it by sequence MLE on its own RNG stream;
        `max_new_tokens` is the policy's length limit (an output that reaches it has no stop token to judge)."""
        from transformers import Qwen2Config, Qwen2ForCausalLM

        self.tokenizer, self.max_new_tokens = tokenizer, max_new_tokens
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            cfg = Qwen2Config(vocab_size=len(tokenizer), hidden_size=self.hidden_size,
                              intermediate_size=2 * self.hidden_size, num_hidden_layers=self.layers,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                              tie_word_embeddings=True)
            self.model = Qwen2ForCausalLM(cfg)
            opt = torch.optim.AdamW(self.model.parameters(), lr=self.lr)
            for _ in range(self.epochs):
                order = torch.randperm(len(self.examples)).tolist()
                total = 0.0
                for i in range(0, len(order), self.batch_size):
                    batch = [self.examples[j] for j in order[i:i + self.batch_size]]
                    loss = self.nll(batch)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += loss.item() * len(batch)
                self.history.append(total / len(self.examples))
        self.model.eval()

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def batch(self, items: Sequence[tuple[str, str, str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Right-padded ids of x SEP y SEP target EOS, their attention mask, and a mask of the positions whose next
        token is a target token (or the closing EOS)."""
        tok = self.tokenizer
        sep = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        rows, starts = [], []
        for x, y, target in items:
            head = self._ids(x) + [sep] + self._ids(y) + [sep]
            rows.append(head + self._ids(target) + [tok.eos_token_id])
            starts.append(len(head))
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tok.pad_token_id)
        attn = torch.zeros_like(ids)
        scored = torch.zeros(len(rows), width - 1, dtype=torch.bool)
        for i, (row, start) in enumerate(zip(rows, starts)):
            ids[i, :len(row)], attn[i, :len(row)] = torch.tensor(row), 1
            scored[i, start - 1:len(row) - 1] = True  # position p predicts token p + 1
        return ids, attn, scored

    def nll(self, items: Sequence[tuple[str, str, str]]) -> torch.Tensor:
        """Mean negative log-likelihood of the target tokens (sequence MLE)."""
        ids, attn, scored = self.batch(items)
        logits = self.model(input_ids=ids, attention_mask=attn).logits[:, :-1]
        return F.cross_entropy(logits[scored], ids[:, 1:][scored])

    # --- rewards --------------------------------------------------------------------------------------------
    @property
    def per_step(self) -> bool:
        """Token level: the trainer takes `step_rewards` (`mmalign.task.StepRewards`)."""
        return self.level == "token"

    @torch.no_grad()
    def step_rewards(self, contexts: Sequence, outputs: Sequence[str]) -> list[list[float]]:
        """Per token of each output (re-tokenised by the policy's tokenizer), then its stop token unless the output
        reached the length limit: `match` where the model's greedy token reading (x, y, y_<t) is y_t, `diverge`
        where it is not (the module docstring)."""
        if self.model is None:
            raise RewardError("seq2seq_rm has no model yet: the text task trains it at construction (`learn`).")
        items = [(c["prompt"] if isinstance(c, dict) else c, o, o) for c, o in zip(contexts, outputs, strict=True)]
        ids, attn, scored = self.batch(items)
        greedy = self.model(input_ids=ids, attention_mask=attn).logits[:, :-1].argmax(-1)
        agree = greedy == ids[:, 1:]
        out = []
        for i in range(len(items)):
            steps = agree[i][scored[i]]  # the output's tokens, then its stop token (EOS)
            if len(steps) - 1 >= self.max_new_tokens:
                steps = steps[:-1]  # cut at the length limit: no stop token was sampled
            out.append([self.match if a else self.diverge for a in steps.tolist()])
        return out

    def __call__(self, contexts: Sequence, outputs: Sequence[str], **kwargs: Any) -> list[float]:
        """The sequence reward: each output's token rewards summed (what GRPO trains on, and evaluation reports)."""
        return [float(sum(r)) for r in self.step_rewards(contexts, outputs)]

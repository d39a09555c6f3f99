"""Learned text rewards trained on data built from a prompt set with references (the shipped instruction set).

Two data sets, both from the train split of the task's data (the held-out rows never reach a reward model):

- BLEU-ranked pairs (`bleu_pairs`): for each prompt, `candidates` makes responses between garbage and a reference
  (a reference, the reference with some words replaced by random words of the data's vocabulary, truncated, random
  words); two of them form a pair, the one with the higher sentence BLEU against the row's references (add-one
  smoothing) is chosen, ties are dropped. A reward model fit to few such pairs is a proxy of BLEU that a policy can
  exploit: BLEU on held-out prompts stays the true metric.
- Principle examples (`principle_examples`): RLBFF's entailment data (Wang et al. 2025, arXiv 2509.21319, Sec. 2):
  (prompt, response, principle) -> yes / no, with verifiable principles (`PRINCIPLES`), so every label is computed
  by `satisfies` and a model's accuracy can be measured.

Reward callables for configs (`mmalign.rewards.REWARDS`): "bt_rm" (one Bradley-Terry head), "brme" (the Bayesian
ensemble scored with `mmalign.preference.brme_reward`), "principles" (mean P(yes) over a chosen principle set) and
"principle_pass" (the verifiers themselves: the fraction of the chosen principles a response meets). The models are
tiny Qwen2 sequence classifiers over the data's words (punctuation split off), trained when the reward is built, on
their own RNG stream.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch

from mmalign.algorithms.reward_model import (
    BRMEConfig,
    RewardModelConfig,
    gaussian_heads,
    text_scorer,
    train_brme,
    train_principle_model,
    train_reward_model,
)
from mmalign.data import load_jsonl, shipped_dataset, train_eval_split
from mmalign.preference import brme_reward
from mmalign.task import RewardError
from mmalign.text.rewards import bleu

SEPARATOR = "|"
"""Word between prompt, response and principle in what a reward model reads."""

# ---------------------------------------------------------------------------------------------------------------
# Data


def data_rows(dataset: str = "instructions", eval_fraction: float = 0.1) -> tuple[list[dict], list[dict]]:
    """(train, held-out) rows of a shipped dataset or .jsonl file, split as the text task splits them."""
    path = dataset if dataset.endswith(".jsonl") else shipped_dataset(dataset)
    return train_eval_split(load_jsonl(path, required=("prompt", "references")), eval_fraction, seed=0)


def vocabulary(rows: Sequence[dict]) -> list[str]:
    """Sorted whitespace words of the rows' prompts and references."""
    return sorted({w for r in rows for t in [r["prompt"], *_refs(r)] for w in t.split()})


def _refs(row: dict) -> list[str]:
    refs = row["references"]
    return [refs] if isinstance(refs, str) else list(refs)


def candidates(row: dict, vocab: Sequence[str], rng: random.Random) -> list[str]:
    """Responses from a reference to garbage: the reference, 25/50/75% of its words replaced, its first half, its
    words shuffled, a reference with a question appended, and 3-10 random words."""
    ref = rng.choice(_refs(row)).split()
    out = [" ".join(ref), " ".join(ref[: max(1, len(ref) // 2)]), " ".join(rng.sample(ref, len(ref))),
           " ".join(ref) + " " + " ".join(rng.choices(vocab, k=2)) + " why?"]
    for frac in (0.25, 0.5, 0.75):
        out.append(" ".join(rng.choice(vocab) if rng.random() < frac else w for w in ref))
    out.append(" ".join(rng.choices(vocab, k=rng.randint(3, 10))))
    return out


def bleu_pairs(rows: Sequence[dict], num_pairs: int, seed: int = 0) -> list[tuple]:
    """`num_pairs` ((prompt, chosen), (prompt, rejected)) pairs, one per prompt in a seeded order (cycling when
    there are fewer prompts), the chosen response having the higher BLEU against the row's references."""
    rng, vocab, pairs = random.Random(seed), vocabulary(rows), []
    order = list(range(len(rows)))
    rng.shuffle(order)
    for k in range(100 * num_pairs):
        if len(pairs) == num_pairs:
            break
        row = rows[order[k % len(order)]]
        a, b = rng.sample(candidates(row, vocab, rng), 2)
        sa, sb = bleu(a, _refs(row)), bleu(b, _refs(row))
        if sa != sb:
            hi, lo = (a, b) if sa > sb else (b, a)
            pairs.append(((row["prompt"], hi), (row["prompt"], lo)))
    return pairs


# ---------------------------------------------------------------------------------------------------------------
# Verifiable principles (RLBFF)


def key_term(row: dict) -> str:
    """The longest word of the row's shortest reference that is not in the prompt (punctuation stripped)."""
    words = [w.strip(".,;:!?'\"()") for w in min(_refs(row), key=len).split()]
    prompt = {w.strip(".,;:!?'\"()").lower() for w in row["prompt"].split()}
    fresh = [w for w in words if w and w.lower() not in prompt]
    return max(fresh or words or [""], key=len)


def _words(text: str) -> list[str]:
    return [w.strip(".,;:!?'\"()").lower() for w in text.split()]


PRINCIPLES: dict[str, tuple[str, Callable[[dict, str], bool]]] = {
    "one_sentence": ("the response is one sentence that ends with a full stop",
                     lambda row, r: bool(r.strip()) and len(re.findall(r"[.!?](\s|$)", r.strip())) == 1
                     and r.strip().endswith(".")),
    "key_term": ("the response mentions {term}", lambda row, r: key_term(row).lower() in _words(r)),
    "number": ("the response answers with a number", lambda row, r: re.search(r"\d", r) is not None),
    "no_question": ("the response asks no question back", lambda row, r: "?" not in r),
    "short": ("the response has at most six words", lambda row, r: 0 < len(r.split()) <= 6),
}
"""Principle name -> (its text, with {term} the row's key term; its verifier (row, response) -> bool)."""


def check_principles(names: Sequence[str]) -> list[str]:
    """The names as a list, each a key of `PRINCIPLES`; an unknown or empty set is a `RewardError`."""
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in PRINCIPLES]
    if unknown or not names:
        raise RewardError(f"unknown or no principles {unknown or names}; choose from {sorted(PRINCIPLES)}.")
    return names


def principle_text(name: str, row: dict) -> str:
    return PRINCIPLES[name][0].format(term=key_term(row))


def satisfies(name: str, row: dict, response: str) -> bool:
    """Whether `response` to `row` meets principle `name`: the entailment label (1 yes, 0 no)."""
    return PRINCIPLES[name][1](row, response)


def entailment_item(row: dict, response: str, name: str) -> tuple[str, str]:
    """What a principle model reads: (prompt, response | principle)."""
    return row["prompt"], f"{response} {SEPARATOR} {principle_text(name, row)}"


def principle_examples(rows: Sequence[dict], names: Sequence[str], seed: int = 0) -> list[tuple]:
    """(entailment_item, label) for every candidate response of every row under every principle in `names`."""
    rng, vocab = random.Random(seed), vocabulary(rows)
    return [(entailment_item(row, resp, n), int(satisfies(n, row, resp)))
            for row in rows for resp in candidates(row, vocab, rng) for n in names]


def principle_pairs(rows: Sequence[dict], names: Sequence[str], seed: int = 0) -> list[tuple]:
    """Bradley-Terry pairs over the same responses as `principle_examples(rows, names, seed)`: within a row, the
    response that meets more of `names` is chosen (ties dropped); as many pairs as a response has neighbours."""
    rng, vocab, pairs = random.Random(seed), vocabulary(rows), []
    for row in rows:
        resp = candidates(row, vocab, rng)
        score = [sum(satisfies(n, row, r) for n in names) for r in resp]
        for i in range(len(resp)):
            for j in range(i + 1, len(resp)):
                if score[i] != score[j]:
                    hi, lo = (i, j) if score[i] > score[j] else (j, i)
                    pairs.append(((row["prompt"], resp[hi]), (row["prompt"], resp[lo])))
    rng.shuffle(pairs)
    return pairs


# ---------------------------------------------------------------------------------------------------------------
# Models and reward callables


def split_tokenizer(texts: Sequence[str]):
    """A word-level tokenizer that splits punctuation off words ("Canberra." -> "Canberra", "."), over the tokens of
    `texts`: a principle can then name a word the way a response writes it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<s>": 2, "<unk>": 3}
    for w in sorted({w for t in texts for w in _TOKEN_RE.findall(t)}):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # the same \w+|[^\w\s]+ split as _TOKEN_RE
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", bos_token="<s>",
                                   unk_token="<unk>")


_TOKEN_RE = re.compile(r"\w+|[^\w\s]+")


def tiny_classifier(texts: Sequence[str], num_labels: int, hidden_size: int = 32, layers: int = 1):
    """A random-init Qwen2 sequence classifier and its `split_tokenizer` over `texts`."""
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    tok = split_tokenizer([*texts, SEPARATOR])
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, num_labels=num_labels,
                      pad_token_id=tok.pad_token_id, max_position_embeddings=256)
    return Qwen2ForSequenceClassification(cfg), tok


def model_texts(rows: Sequence[dict]) -> list[str]:
    """Every prompt, reference and principle text of `rows`: what the reward models' tokenizer knows."""
    return [t for r in rows for t in [r["prompt"], *_refs(r), *(principle_text(n, r) for n in PRINCIPLES)]]


class TrainedClassifier:
    """A tiny classifier trained at construction on its own RNG stream (the caller's stream is left as it was)."""

    def fit(self, texts: Sequence[str], num_labels: int, train: Callable, seed: int, hidden_size: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, tok = tiny_classifier(texts, num_labels, hidden_size)
            self.score_fn = text_scorer(model, tok, max_length=model.config.max_position_embeddings)
            self.history = train(self.score_fn, model.parameters())
        self.model = model.eval()

    @torch.no_grad()
    def outputs(self, items: Sequence[tuple[str, str]], batch_size: int = 64) -> torch.Tensor:
        return torch.cat([self.score_fn(items[i:i + batch_size]) for i in range(0, len(items), batch_size)])


class PreferenceRewardModel(TrainedClassifier):
    """A proxy of BLEU: a reward model fit to `num_pairs` BLEU-ranked pairs of the train split (`bleu_pairs`).

    Args:
        heads: 0 for one Bradley-Terry head; K >= 1 for a BRME ensemble of K Gaussian heads, rewarded with
            lam * (mean of the most confident head) + (1 - lam) * (smallest mean).
        lam: BRME's nominal weight (Eq. 2 of arXiv 2409.15360).
        num_pairs: preference pairs (few: the proxy is meant to be exploitable).
        seed: seed of the pairs, the model's initialisation, the shuffling and the bootstrap.
        epochs, lr, batch_size: reward-model training (`RewardModelConfig`).
        beta, sigma0, bootstrap: BRME's head training (`BRMEConfig`).
        hidden_size: width of the classifier.
        dataset, eval_fraction: the data and its held-out share, as the task's.
    """

    def __init__(self, heads: int = 0, lam: float = 0.5, num_pairs: int = 64, seed: int = 0, epochs: int = 20,
                 lr: float = 3e-3, batch_size: int = 16, beta: float = 0.01, sigma0: float = 1.0,
                 bootstrap: bool = True, hidden_size: int = 32, dataset: str = "instructions",
                 eval_fraction: float = 0.1):
        rows, held_out = data_rows(dataset, eval_fraction)
        self.pairs = bleu_pairs(rows, num_pairs, seed)
        cfg = RewardModelConfig(lr=lr, epochs=epochs, batch_size=batch_size, seed=seed)
        self.brme = BRMEConfig(heads=heads, lam=lam, sigma0=sigma0, beta=beta, bootstrap=bootstrap) if heads else None
        if self.brme:
            train = lambda fn, params: train_brme(fn, params, self.pairs, cfg, self.brme)  # noqa: E731
        else:
            train = lambda fn, params: train_reward_model(fn, params, self.pairs, cfg)  # noqa: E731
        self.fit(model_texts(rows + held_out), 2 * heads if heads else 1, train, seed, hidden_size)

    def __call__(self, contexts: Sequence, outputs: Sequence[str], **kwargs: Any) -> list[float]:
        scores = self.outputs([(c["prompt"], o) for c, o in zip(contexts, outputs, strict=True)])
        if self.brme is None:
            return scores.tolist()
        return brme_reward(*gaussian_heads(scores), self.brme.lam).tolist()


def bt_reward_model(**kwargs: Any) -> PreferenceRewardModel:
    """The "bt_rm" reward: one Bradley-Terry head on BLEU-ranked pairs (`PreferenceRewardModel`, heads=0)."""
    return PreferenceRewardModel(heads=0, **kwargs)


def brme_reward_model(heads: int = 4, **kwargs: Any) -> PreferenceRewardModel:
    """The "brme" reward: K Gaussian heads on BLEU-ranked pairs (`PreferenceRewardModel`)."""
    if heads < 1:
        raise RewardError(f"brme needs heads >= 1, got {heads}; for one Bradley-Terry head use the 'bt_rm' reward.")
    return PreferenceRewardModel(heads=heads, **kwargs)


class PrincipleReward(TrainedClassifier):
    """RLBFF's reward: a binary principle model trained on the entailment examples of all `PRINCIPLES` (train
    split), scored at inference with the chosen `principles` as the mean P(yes) over them.

    Args:
        principles: names of the principles the reward asks about (chosen per run, not per model).
        seed, epochs, lr, batch_size, hidden_size, dataset, eval_fraction: as `PreferenceRewardModel`.
        train_rows: train on this many rows of the train split (0 = all).
    """

    def __init__(self, principles: Sequence[str] = ("one_sentence", "no_question"), seed: int = 0, epochs: int = 4,
                 lr: float = 3e-3, batch_size: int = 32, hidden_size: int = 32, dataset: str = "instructions",
                 eval_fraction: float = 0.1, train_rows: int = 0):
        self.principles = check_principles(principles)
        rows, held_out = data_rows(dataset, eval_fraction)
        train = rows[:train_rows] if train_rows else rows
        self.examples = principle_examples(train, list(PRINCIPLES), seed)
        cfg = RewardModelConfig(lr=lr, epochs=epochs, batch_size=batch_size, seed=seed)
        train_fn = lambda fn, params: train_principle_model(fn, params, self.examples, cfg)  # noqa: E731
        self.fit(model_texts(rows + held_out), 1, train_fn, seed, hidden_size)

    def probabilities(self, contexts: Sequence, outputs: Sequence[str], names: Sequence[str]) -> torch.Tensor:
        """(B, P) P(yes) of each output under each named principle."""
        items = [entailment_item(c, o, n) for c, o in zip(contexts, outputs, strict=True) for n in names]
        return torch.sigmoid(self.outputs(items)).view(len(outputs), len(names))

    def __call__(self, contexts: Sequence, outputs: Sequence[str], **kwargs: Any) -> list[float]:
        return self.probabilities(contexts, outputs, self.principles).mean(1).tolist()


class PrincipleCheck:
    """The fraction of the chosen principles a response meets, by their verifiers (a true metric to log).

    Args:
        principles: names in `PRINCIPLES`.
    """

    name = "principle_pass"

    def __init__(self, principles: Sequence[str] = ("one_sentence", "no_question")):
        self.principles = check_principles(principles)

    def __call__(self, contexts: Sequence, outputs: Sequence[str], **kwargs: Any) -> list[float]:
        return [sum(satisfies(n, c, o) for n in self.principles) / len(self.principles)
                for c, o in zip(contexts, outputs, strict=True)]

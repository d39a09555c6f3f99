"""BLEUBERI's selection as a text-task option (`task_args.selection`) and held-out eval metrics (`eval_metrics`)."""

import json
from pathlib import Path

import pytest
import torch

from mmalign.config import ConfigError, from_dict
from mmalign.text.rewards import ChrfReward
from mmalign.text.task import TextTask, TextTaskConfig

TINY = {"model_type": "qwen2", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "max_position_embeddings": 64}
WORDS = "the cat dog sat ran on to mat park red blue is a big".split()


def known_score(contexts, outputs):
    """A reward that is each row's own "score" field: which rows a mode keeps is known in advance."""
    return [c["score"] for c in contexts]


@pytest.fixture
def dataset(tmp_path):
    """20 rows; row i scores (7 i) mod 20 / 20, so the ranking is not the row order."""
    rows = [{"prompt": f"{WORDS[i % 14]} {WORDS[(3 * i) % 14]}", "references": [" ".join(WORDS[i % 5:i % 5 + 4])],
             "score": (7 * i % 20) / 20, "id": i} for i in range(20)]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def task(dataset, selection=None, rewards=({"fn": "test_text_selection:known_score"},), seed=0, **kw):
    torch.manual_seed(seed)  # the base model's weights, as the trainer's set_seed gives them
    cfg = {"model_config": TINY, "tokenizer": "words", "dataset": dataset, "eval_fraction": 0.25,
           "generation": {"max_new_tokens": 4}, "rewards": list(rewards), "selection": selection or {}, **kw}
    return TextTask(from_dict(TextTaskConfig, cfg))


def ids(rows):
    return [r["id"] for r in rows]


def test_selection_keeps_the_k_hardest_easiest_or_a_seeded_random_set(dataset, tmp_path):
    full = task(dataset)
    train, held_out = full.train_contexts, ids(full.eval_contexts)
    by_score = sorted(train, key=lambda r: r["score"])
    hard = task(dataset, {"k": 5, "mode": "hard"})
    assert ids(hard.train_contexts) == ids(by_score[:5])
    assert ids(task(dataset, {"k": 5, "mode": "easy"}).train_contexts) == ids(by_score[::-1][:5])
    assert ids(hard.eval_contexts) == held_out  # evaluation stays on the held-out rows
    draws = [ids(task(dataset, {"k": 5, "mode": "random", "seed": s}).train_contexts) for s in (0, 0, 1, 2)]
    assert draws[0] == draws[1] and len({tuple(d) for d in draws}) > 1
    assert all(len(d) == 5 and not set(d) & set(held_out) for d in draws)
    assert hard.selection_stats["base_reward_kept"] == pytest.approx(sum(r["score"] for r in by_score[:5]) / 5)
    hard.finish(hard.policy, tmp_path)
    assert json.loads((tmp_path / "selection.json").read_text())["prompts"] == [r["prompt"] for r in by_score[:5]]


def test_bleu_selection_is_deterministic_by_seed_and_orders_the_base_reward(dataset):
    bleu = [{"name": "bleu", "smoothing": "add-one"}]
    spec = {"k": 6, "num_samples": 2, "seed": 3}
    hard = task(dataset, {**spec, "mode": "hard"}, bleu)
    assert ids(hard.train_contexts) == ids(task(dataset, {**spec, "mode": "hard"}, bleu).train_contexts)
    easy = task(dataset, {**spec, "mode": "easy"}, bleu).selection_stats
    stats = hard.selection_stats
    assert stats["base_reward_kept"] < stats["base_reward_all"] < easy["base_reward_kept"]


def test_selection_errors(dataset):
    with pytest.raises(ConfigError, match=r"task_args.selection.k: is 16, more than the 15 training rows.*15 or less"):
        task(dataset, {"k": 16})
    with pytest.raises(ConfigError, match="selection.num_samples: is 2, but greedy"):
        from_dict(TextTaskConfig, {"model_config": TINY, "selection": {"k": 1, "greedy": True, "num_samples": 2}})
    with pytest.raises(ConfigError, match="selection.mode: must be one of"):
        from_dict(TextTaskConfig, {"model_config": TINY, "selection": {"k": 1, "mode": "hardest"}})


def test_eval_metrics_are_measured_on_held_out_rows_but_not_rewarded(dataset):
    t = task(dataset, rewards=[{"name": "bleu", "weight": 2.0}], eval_metrics=[{"name": "chrf"}])
    metrics = t.evaluate(t.policy)
    outputs = [r["output"] for r in t.eval_records]
    chrf = ChrfReward()(t.eval_contexts, outputs)
    assert metrics["metric/chrf"] == pytest.approx(sum(chrf) / len(chrf))
    assert metrics["reward"] == pytest.approx(2.0 * metrics["reward/bleu"])
    with pytest.raises(ConfigError, match="share a name"):
        task(dataset, eval_metrics=[{"name": "chrf"}, {"name": "chrf", "word_order": 2}])


def test_select_command_refuses_a_config_that_already_selects(tmp_path, capsys):
    from mmalign.cli import main

    cfg = str(Path(__file__).resolve().parents[1] / "configs/text/bleuberi_hard.yaml")
    args = ["select", cfg, "task_args.selection.k=3", "task_args.selection.num_samples=1",
            "task_args.eval_fraction=0.98", "task_args.eval_size=1"]  # 8 training rows
    assert main([*args, "--k", "2", "--out", str(tmp_path / "kept.jsonl")]) == 2
    assert "task_args.selection.k=0" in capsys.readouterr().err and not (tmp_path / "kept.jsonl").exists()

"""LIMR's learning impact measurement (mmalign/text/limr.py) against its formula by hand, the reward trajectories the
trainer records, and `selection: {mode: lim}` keeping the rows of highest score."""

import json

import pytest
import torch
from tiny import WORDS

from mmalign.config import ConfigError
from mmalign.data import write_jsonl
from mmalign.run_config import RunConfig, TrainerConfig
from mmalign.settings import GenerationSettings
from mmalign.text.limr import RewardTrajectories, lim_scores
from mmalign.text.selection import SelectionSettings
from mmalign.text.task import TextTask, TextTaskConfig
from mmalign.trainer import Trainer

CURVES = {"follows": [0.0, 0.5, 1.0], "flat low": [0.0, 0.0, 0.0], "flat high": [1.0, 1.0, 1.0]}


def test_lim_score_by_hand():
    # rbar = (1/3, 1/2, 2/3); sum_k (1 - rbar^k)^2 = 4/9 + 1/4 + 1/9 = 29/36
    denom = 29 / 36
    scores = lim_scores(CURVES)
    assert scores["follows"] == pytest.approx(1 - (1 / 9 + 0 + 1 / 9) / denom)  # 0.724
    assert scores["flat low"] == pytest.approx(1 - (1 / 9 + 1 / 4 + 4 / 9) / denom)  # 0: all distance, no learning
    assert scores["flat high"] == pytest.approx(1 - (4 / 9 + 1 / 4 + 1 / 9) / denom)
    assert scores["follows"] > scores["flat low"]


def test_rewards_are_min_max_normalised_and_later_visits_ignored():
    scaled = {k: [0.2 + 0.1 * r for r in v] for k, v in CURVES.items()}  # BLEU-like range: same scores
    scaled["follows"] = scaled["follows"] + [0.0]  # a 4th visit: only the 3 epochs every prompt completed count
    assert lim_scores(scaled) == pytest.approx(lim_scores(CURVES))


def test_one_epoch_is_refused():
    with pytest.raises(ConfigError, match="at least 2"):
        lim_scores({"a": [0.1], "b": [0.2, 0.3]})


def test_trajectories_keep_each_visit_mean():
    t = RewardTrajectories()
    t.add(["p", {"prompt": "q"}], torch.tensor([0, 0, 1, 1]), torch.tensor([1.0, 0.0, 0.25, 0.75]))
    t.add(["q", "q"], torch.tensor([0, 1]), torch.tensor([0.2, 0.4]))  # a pass boundary inside one iteration
    assert t.visits == {"p": [0.5], "q": pytest.approx([0.5, 0.2, 0.4])}


def test_selection_settings_need_trajectories_exactly_for_lim():
    with pytest.raises(ConfigError, match="trajectories"):
        SelectionSettings(k=2, mode="lim")
    with pytest.raises(ConfigError, match="trajectories"):
        SelectionSettings(k=2, mode="hard", trajectories="t.json")


ROWS = [{"prompt": f"{a} {b}", "references": [f"the {a} {b}"]} for a in WORDS[:5] for b in WORDS[5:9]]
"""20 rows with distinct prompts."""


def task_config(tmp_path, **kwargs) -> TextTaskConfig:
    data = write_jsonl(ROWS, tmp_path / "rows.jsonl")
    return TextTaskConfig(model_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                        "num_attention_heads": 2, "num_key_value_heads": 1},
                          tokenizer="words", dataset=str(data), eval_fraction=0.2,
                          generation=GenerationSettings(max_new_tokens=4), **kwargs)


def test_lim_selection_keeps_the_highest_scores(tmp_path):
    """The kept rows are the k of highest LIM score, highest first: those nearest the average curve, not the flat
    or reversed ones (a selection by lowest score would keep those)."""
    train = [r["prompt"] for r in TextTask(task_config(tmp_path)).train_contexts]
    curves = {p: [0.0, 0.4 + 0.01 * i, 0.8 + 0.02 * i] for i, p in enumerate(train)}
    curves[train[0]], curves[train[1]] = [0.0, 0.0, 0.0], [1.0, 0.5, 0.0]
    path = tmp_path / "reward_trajectories.json"
    path.write_text(json.dumps({"visits": curves}))
    task = TextTask(task_config(tmp_path, selection=SelectionSettings(k=3, mode="lim", trajectories=str(path))))
    scores = lim_scores(curves)
    assert [r["prompt"] for r in task.train_contexts] == sorted(train, key=lambda p: -scores[p])[:3]
    assert not {train[0], train[1]} & {r["prompt"] for r in task.train_contexts}
    assert task.selection_stats["lim_score_kept"] > task.selection_stats["lim_score_all"]


def test_lim_selection_refuses_trajectories_of_other_prompts(tmp_path):
    path = tmp_path / "reward_trajectories.json"
    path.write_text(json.dumps({"visits": {"another prompt": [0.0, 1.0]}}))
    with pytest.raises(ConfigError, match="no trajectory"):
        TextTask(task_config(tmp_path, selection=SelectionSettings(k=2, mode="lim", trajectories=str(path))))


def test_trainer_records_every_iterations_rewards(tmp_path):
    task = TextTask(task_config(tmp_path, record_rewards=True))
    cfg = RunConfig(task="text", algorithm="grpo", trainer=TrainerConfig(
        output_dir=str(tmp_path), name="pass", steps=2, contexts_per_step=4, num_samples=2, save_every=0,
        eval_every=0))
    trainer = Trainer(cfg, task=task)
    rewards = [trainer.step(k)["reward"] for k in range(2)]
    visits = [v for vs in task.trajectories.visits.values() for v in vs]
    assert len(visits) == 8  # 2 iterations x 4 prompts, one mean each
    assert sum(visits) / 8 == pytest.approx(sum(rewards) / 2)  # equal group sizes: mean of means = mean
    task.finish(task.policy, tmp_path)
    assert json.loads((tmp_path / "reward_trajectories.json").read_text())["visits"] == task.trajectories.visits


def test_mmalign_select_takes_a_pass_trajectories(tmp_path, capsys):
    from test_cli import CFG, error_line

    from mmalign.cli import main

    data = write_jsonl(ROWS, tmp_path / "rows.jsonl")
    args = ["select", CFG, f"task_args.dataset={data}", "task_args.eval_fraction=0.2", "--k", "2", "--mode", "lim"]
    assert main([*args, "--out", str(tmp_path / "none.jsonl")]) == 2
    assert "--trajectories" in error_line(capsys)
    train = [r["prompt"] for r in TextTask(task_config(tmp_path)).train_contexts]  # the same split
    curves = {p: [0.0, 0.4 + 0.01 * i, 0.8 + 0.02 * i] for i, p in enumerate(train)}
    path = tmp_path / "reward_trajectories.json"
    path.write_text(json.dumps({"visits": curves}))
    assert main([*args, "--trajectories", str(path), "--out", str(tmp_path / "lim.jsonl")]) == 0
    scores = lim_scores(curves)
    kept = [json.loads(line)["prompt"] for line in (tmp_path / "lim.jsonl").read_text().splitlines()]
    assert kept == sorted(train, key=lambda p: -scores[p])[:2]

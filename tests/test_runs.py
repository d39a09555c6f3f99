"""The run folder: every entry point refuses an existing run untouched with one message; config.yaml records what
runs; the tracker writes strict JSON."""

import json
import math
from pathlib import Path

import pytest
import yaml
from files import strict_rows, tree_digest

from mmalign.cli import main
from mmalign.config import ConfigError
from mmalign.runs import RunExistsError, check_new_run, check_resume_config, config_changes, open_run
from mmalign.tracking import plot_curves, read_metrics

ROOT = Path(__file__).resolve().parents[1]
REFUSED = "already holds a run"


def _started_run(folder: Path) -> dict[str, str]:
    """A run folder as a run killed before its first checkpoint leaves it; returns its digest."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("name: earlier\n")
    (folder / "metrics.jsonl").write_text('{"step": 0, "eval/reward": 0.5}\n')
    return tree_digest(folder)


def test_check_new_run_refuses_any_started_run_and_says_what_to_do(tmp_path):
    check_new_run(tmp_path / "new")  # no folder: fine
    (tmp_path / "empty").mkdir()
    check_new_run(tmp_path / "empty")  # nothing of a run in it: fine
    for marker in ("config.yaml", "metrics.jsonl", "checkpoints", "final"):
        run = tmp_path / marker.replace(".", "_")
        run.mkdir()
        (run / marker).mkdir() if "." not in marker else (run / marker).write_text("")
        with pytest.raises(RunExistsError, match=f"{REFUSED} .*pass --resume.*nothing was changed"):
            check_new_run(run)
        with pytest.raises(RunExistsError, match="choose a new name") as e:
            check_new_run(run, resumable=False)
        assert "--resume" not in str(e.value)
    assert issubclass(RunExistsError, ConfigError)  # the CLIs' one-line error


def test_trainer_refuses_a_run_killed_before_its_first_checkpoint(tmp_path, capsys):
    before = _started_run(tmp_path / "runs/killed")
    cfg = str(ROOT / "configs/text/tiny_grpo.yaml")
    assert main(["train", cfg, "trainer.name=killed", f"trainer.output_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmalign: error: ") and REFUSED in err and "--resume" in err, err
    assert tree_digest(tmp_path / "runs/killed") == before


def test_pearl_refuses_a_run_without_results_yet(tmp_path, capsys):
    pytest.importorskip("mujoco")
    before = _started_run(tmp_path / "killed")
    tiny = ["pearl.episodes_per_policy=2", "pearl.segments=12", "pearl.reward_pairs=50", "pearl.few_labels=5",
            "pearl.rrl.epochs=1", "pearl.iql.steps=20", "pearl.eval_episodes=1", "seeds=[0]", "methods=[cpa-rrl]"]
    cfg = str(ROOT / "configs/robotics/pearl_planar.yaml")
    assert main(["train", cfg, "name=killed", f"output_dir={tmp_path}", *tiny]) == 2
    err = capsys.readouterr().err
    assert REFUSED in err and "nothing was changed" in err, err
    assert tree_digest(tmp_path / "killed") == before


def test_tracker_writes_null_for_non_finite_values(tmp_path):
    with open_run(tmp_path / "run", {"lr": 1e-3}) as tracker:
        tracker.log(1, {"reward": float("nan"), "loss": float("inf"), "grad_norm": -float("inf"), "skipped": 2})
        tracker.log(2, {"reward": 0.5, "method": "cpa-rrl"})
    rows = strict_rows(tmp_path / "run/metrics.jsonl")
    assert rows == [{"step": 1, "reward": None, "loss": None, "grad_norm": None, "skipped": 2},
                    {"step": 2, "reward": 0.5, "method": "cpa-rrl"}]
    assert yaml.safe_load((tmp_path / "run/config.yaml").read_text()) == {"lr": 1e-3}
    assert plot_curves(tmp_path / "run/metrics.jsonl", tmp_path / "r.png").stat().st_size > 0
    with open_run(tmp_path / "run", {"lr": 1e-3}, resume_step=1):  # resuming rewrites the kept rows strictly
        pass
    assert read_metrics(tmp_path / "run/metrics.jsonl") == rows[:1]


def test_config_changes_and_fixed_settings(tmp_path):
    old = {"task": "text", "task_args": {"model": "a", "rewards": [{"name": "bleu"}]},
           "trainer": {"lr": 1e-3, "seed": 0}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    new = json.loads(json.dumps(old))
    new["trainer"]["lr"], new["task_args"]["rewards"] = 1e-6, [{"name": "chrf"}]
    assert config_changes(old, new) == {"task_args.rewards": ([{"name": "bleu"}], [{"name": "chrf"}]),
                                        "trainer.lr": (1e-3, 1e-6)}
    fixed, changeable = ("task", "task_args", "trainer.seed"), ("task_args.rewards",)
    assert set(check_resume_config(tmp_path, new, fixed, changeable)) == {"task_args.rewards", "trainer.lr"}
    new["task_args"]["model"], new["trainer"]["seed"] = "b", 1
    with pytest.raises(ConfigError, match=r"task_args.model: 'a' -> 'b'; trainer.seed: 0 -> 1"):
        check_resume_config(tmp_path, new, fixed, changeable)
    assert math.isclose(yaml.safe_load((tmp_path / "config.yaml").read_text())["trainer"]["lr"], 1e-3)


def test_pearl_resume_runs_only_what_the_stopped_comparison_lacks(tmp_path, capsys):
    pytest.importorskip("mujoco")
    tiny = ["pearl.episodes_per_policy=2", "pearl.segments=12", "pearl.reward_pairs=50", "pearl.few_labels=5",
            "pearl.rrl.epochs=1", "pearl.iql.steps=20", "pearl.eval_episodes=1", "methods=[cpa-rrl, random-bt]",
            f"output_dir={tmp_path}"]
    cfg = str(ROOT / "configs/robotics/pearl_planar.yaml")
    assert main(["train", cfg, "name=whole", "seeds=[0, 1]", *tiny]) == 0
    assert main(["train", cfg, "name=cut", "seeds=[0, 1]", *tiny]) == 0
    metrics = tmp_path / "cut/metrics.jsonl"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:3]))  # stopped after 3 of 4 runs
    (tmp_path / "cut/results.json").unlink()
    assert main(["train", cfg, "name=cut", "seeds=[0, 1]", *tiny, "--resume"]) == 0
    whole, cut = ([{k: v for k, v in row.items() if k != "seconds"} for row in read_metrics(run / "metrics.jsonl")]
                  for run in (tmp_path / "whole", tmp_path / "cut"))
    assert cut == whole and json.loads((tmp_path / "cut/results.json").read_text())["runs"][3]["seed"] == 1
    assert main(["train", cfg, "name=cut", "seeds=[0, 2]", *tiny, "--resume"]) == 2  # what ran may not change
    assert "seeds" in capsys.readouterr().err


def test_pebble_leaves_its_actor_in_the_run_helpers_final_folder(tmp_path):
    """The SAC loop's final/ is `Run.save_final`'s (checksummed, loadable as a checkpoint); the task's reward
    ensemble sits beside it."""
    pytest.importorskip("mujoco")
    from safetensors.torch import load_file

    from mmalign.checkpoint import load_checkpoint

    small = ["task.num_envs=2", "task.eval_episodes=2", "task.video=false", "total_env_steps=16", "eval_every=8",
             "save_every=8", "task.feedback.unsup_steps=4", "task.feedback.segment_length=4",
             "task.feedback.queries_per_round=2", "task.feedback.query_every=8", "task.feedback.max_feedback=4",
             "task.feedback.large_batch=2", "task.feedback.reward_model.epochs=1", "sac.hidden=[8]",
             "sac.batch_size=4", "sac.learning_starts=4"]
    config = str(ROOT / "configs/robotics/reach_pebble.yaml")
    assert main(["train", config, f"output_dir={tmp_path}", "name=run", *small]) == 0
    final = tmp_path / "run/final"
    actor = load_checkpoint(final, ["actor"])["actor"]  # verified against the manifest
    assert actor and "actor.safetensors" in json.loads((final / "manifest.json").read_text())["sha256"]
    assert load_file(final / "reward_ensemble.safetensors")

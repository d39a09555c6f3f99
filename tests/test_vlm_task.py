"""The SSL task end to end: configs load strictly, a tiny run evaluates per task and leaves a chart; stages switch."""

from pathlib import Path

import pytest

from mmalign.run_config import load_run_config
from mmalign.trainer import Trainer
from mmalign.vlm.task import SSLTask

CONFIGS = sorted((Path(__file__).parent.parent / "configs" / "vlm").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_configs_load(path):
    cfg = load_run_config(path, ["task_args.model=some/local/folder"] if "local" in path.stem else [])
    assert cfg.task_args.tasks or cfg.task_args.stages


def test_two_stage_run_switches_tasks_and_leaves_a_chart(tmp_path):
    cfg = load_run_config(CONFIGS[[p.stem for p in CONFIGS].index("tiny_lmm_r1_two_stage")], [
        f"trainer.output_dir={tmp_path}", "trainer.steps=4", "trainer.eval_every=0", "trainer.num_samples=2",
        "task_args.num_images=8", "task_args.stages=[{steps: 2, tasks: [arithmetic]}, {tasks: [rotation]}]"])
    trainer = Trainer(cfg)
    seen = []
    real = trainer.contexts_for
    trainer.contexts_for = lambda step: seen.append([c["task"] for c in real(step)]) or real(step)
    run = trainer.train()
    assert [set(s) for s in seen] == [{"arithmetic"}, {"arithmetic"}, {"rotation"}, {"rotation"}]
    assert (run / "ssl_accuracy.png").stat().st_size > 1000 and (run / "eval_samples.jsonl").exists()
    metrics = (run / "metrics.jsonl").read_text()
    assert "eval/acc/rotation" in metrics and "eval/acc/arithmetic" in metrics
    assert isinstance(trainer.task, SSLTask)


def test_bad_specs_are_rejected():
    from mmalign.vlm.task import SSLTaskConfig

    with pytest.raises(ValueError, match="exactly one"):
        SSLTaskConfig()
    with pytest.raises(ValueError, match="steps"):
        SSLTaskConfig(model_config={"hidden": 32}, stages=[{"tasks": ["rotation"]}, {"tasks": ["jigsaw"]}])

"""The SSL task end to end: configs load strictly, a tiny run evaluates per task and leaves a chart; stages switch."""

import json
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


TINY = [p for p in CONFIGS if p.stem.startswith("tiny_")]


@pytest.mark.parametrize("path", TINY, ids=lambda p: p.stem)
def test_each_tiny_config_runs_a_step_and_scores_its_tasks(path, tmp_path):
    """Every shipped tiny config trains one step (on few images) and evaluates each of its tasks."""
    cfg = load_run_config(path, [f"trainer.output_dir={tmp_path}", "trainer.steps=1", "trainer.eval_every=0",
                                 "trainer.contexts_per_step=2", "trainer.num_samples=2", "task_args.num_images=8",
                                 "task_args.eval_views=1"])
    args = cfg.task_args
    names = {t["name"] for ts in [args.tasks if not args.stages else [], *[s["tasks"] for s in args.stages],
                                  args.eval_tasks] for t in ts}
    run = Trainer(cfg).train()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evaluated = {k.removeprefix("eval/acc/") for r in rows for k in r if k.startswith("eval/acc/")}
    assert evaluated == names and any("loss" in r for r in rows), (evaluated, names)


def test_eval_tasks_are_asked_on_held_out_images_but_never_trained_on():
    from mmalign.config import ConfigError
    from mmalign.vlm.task import SSLTaskConfig

    arithmetic = {"name": "arithmetic", "max_operand": 2, "ops": "+"}
    cfg = SSLTaskConfig(model_config={"hidden": 32}, tasks=["rotation"], eval_tasks=[arithmetic], num_images=8,
                        task_size=28, image_size=32)
    task = SSLTask(cfg)
    assert {task.train_contexts[i]["task"] for i in range(len(task.train_contexts))} == {"rotation"}
    assert sorted(c["task"] for c in task.eval_contexts) == ["arithmetic"] * 4 + ["rotation"] * 4
    with pytest.raises(ConfigError, match=r"eval_tasks\[0\].*unknown SSL task 'arithmatic'"):
        SSLTaskConfig(model_config={"hidden": 32}, eval_tasks=["arithmatic"])


def test_lmm_r1_arms_start_from_the_same_model_and_questions():
    """The two-stage arm and the multimodal-only arm (its text task eval-only) share tokenizer, initial weights and
    held-out questions for a seed, so the comparison in docs/vlm.md differs in the schedule alone."""
    import torch

    arms = [SSLTask(load_run_config(CONFIGS[[p.stem for p in CONFIGS].index(name)], ["task_args.num_images=8"])
                    .task_args) for name in ("tiny_lmm_r1_two_stage", "tiny_lmm_r1_multimodal_only")]
    (a, b) = arms
    assert a.policy.tokenizer.get_vocab() == b.policy.tokenizer.get_vocab()
    assert [c["prompt"] for c in a.eval_contexts] == [c["prompt"] for c in b.eval_contexts]
    assert {c["task"] for c in b.eval_contexts} == {"arithmetic", "rotation"}
    weights = zip(a.policy.model.state_dict().values(), b.policy.model.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in weights)

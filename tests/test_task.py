"""The Task contract: a task that lacks a member is named when the run is built; optional parts (schedules, sampling
options) are found once, through their protocols, and the CLI's `sample` takes the task's own options."""

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
from tiny import ROWS, TinyTask, tiny_policy

from mmalign.cli import main
from mmalign.run_config import RunConfig, TrainerConfig
from mmalign.task import Task, check_task, merged_mean
from mmalign.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


class NoFinish:
    def __init__(self):
        self.policy, self.rewards, self.train_contexts, self.eval_contexts = tiny_policy(), [], ROWS, ROWS

    def evaluate(self, policy):
        return {}


@dataclass
class NoConfig:
    pass


class CustomNoFinish(NoFinish):
    """A custom task named by a config ("test_task:CustomNoFinish") that lacks `finish`."""

    Config = NoConfig

    def __init__(self, cfg: NoConfig, device="cpu"):
        super().__init__()


class Staged(TinyTask):
    """A task with a schedule: records the steps the trainer announced."""

    def __init__(self, policy):
        super().__init__(policy)
        self.seen: list[int] = []

    def set_progress(self, step: int) -> None:
        self.seen.append(step)


def test_a_task_that_lacks_a_member_is_named_when_the_run_is_built(tmp_path):
    cfg = RunConfig(task="text", trainer=TrainerConfig(output_dir=str(tmp_path), contexts_per_step=2))
    with pytest.raises(TypeError, match=r"NoFinish is not an mmalign Task: it lacks \['finish'\]"):
        Trainer(cfg, task=NoFinish())
    task = TinyTask(tiny_policy())
    task.policy = "not a policy"
    with pytest.raises(TypeError, match="is not an mmalign Policy"):
        check_task(task)
    assert isinstance(TinyTask(tiny_policy()), Task)


def test_the_cli_names_what_a_custom_task_lacks_in_one_line(tmp_path, capsys):
    config = tmp_path / "custom.yaml"
    config.write_text(f"task: test_task:CustomNoFinish\ntrainer: {{output_dir: {tmp_path}, name: custom}}\n")
    for command in (["train", str(config)], ["sample", str(config), "--prompt", "x"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith("mmalign: error: CustomNoFinish is not an mmalign Task: it lacks ['finish']"), err
    assert not (tmp_path / "custom").exists()


def test_scheduled_tasks_hear_every_step_before_it_is_sampled(tmp_path):
    cfg = RunConfig(task="text", trainer=TrainerConfig(output_dir=str(tmp_path), contexts_per_step=2, num_samples=2,
                                                       save_every=0))
    task = Staged(tiny_policy())
    trainer = Trainer(cfg, task=task)
    for k in (0, 1, 2):
        trainer.step(k)
    assert task.seen == [0, 1, 2]


def test_sample_takes_the_tasks_own_options(capsys):
    cfg = str(ROOT / "configs/text/tiny_grpo.yaml")
    prompt = ["--prompt", "Give the plural of 'mouse'."]
    assert main(["sample", cfg, *prompt, "--num-samples", "2", "--option", "greedy=true"]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first == second  # greedy: the same completion twice
    assert main(["sample", cfg, *prompt, "--option", "greedyy=true"]) == 2
    assert "--option: " in (err := capsys.readouterr().err) and "'greedyy'" in err and "greedy" in err


def test_image_tasks_take_rl_guidance_options(tmp_path, capsys):
    cfg = str(ROOT / "configs/diffusion/shapes_grpo.yaml")
    args = ["sample", cfg, "task_args.tiny=true", "task_args.sampling.num_steps=2",
            "task_args.trained_steps.end=2",
            "--prompt", "a red circle", "--out", str(tmp_path)]
    assert main([*args, "--num-samples", "2", "--option", "rlg_start=1"]) == 0
    assert len(list(tmp_path.glob("sample_*.png"))) == 2 and (tmp_path / "grid.png").exists()
    assert main([*args, "--option", "rlg_start=-1"]) == 2
    assert "rlg_start" in capsys.readouterr().err


def test_decoding_and_selection_are_protocols_of_the_task(tmp_path, capsys):
    """`--decode` and `mmalign select` ask the task (`Decodes`, `SelectsRows`): the text task has both; a task
    without them is refused with a line naming it, not an AttributeError deep in the command."""
    from tiny import TinyTask as Plain

    from mmalign.cli import build_task
    from mmalign.task import Decodes, SelectsRows

    text = build_task(str(ROOT / "configs/text/tiny_grpo.yaml"))[1]
    assert isinstance(text, Decodes) and isinstance(text, SelectsRows)
    assert not isinstance(Plain(tiny_policy()), Decodes) and not isinstance(Plain(tiny_policy()), SelectsRows)
    image = [str(ROOT / "configs/diffusion/shapes_grpo.yaml"), "task_args.tiny=true", "task_args.sampling.num_steps=2",
             "task_args.trained_steps.end=2"]
    assert main(["sample", *image, "--prompt", "a red circle", "--decode", "bon"]) == 2  # images: eval --decode
    assert "DiffusionTask task's decoding methods run in `mmalign eval" in capsys.readouterr().err
    vlm = [str(ROOT / "configs/vlm/tiny_rotation.yaml"), "task_args.num_images=20", "task_args.eval_fraction=0.5"]
    assert main(["eval", *vlm, "--decode", "bon"]) == 2
    assert "SSLTask task has no decoding-time methods" in capsys.readouterr().err
    assert main(["select", *image, "--k", "1", "--out", str(tmp_path / "kept.jsonl")]) == 2
    assert "DiffusionTask task does not select training rows" in capsys.readouterr().err
    assert not (tmp_path / "kept.jsonl").exists()


def test_the_core_loads_no_domain_package():
    """The trainer, the CLI and the decoding core import no domain package (text, vlm, diffusion, robotics, envs):
    those load when a config names their task, reward or loop."""
    import subprocess
    import sys

    code = ("import sys, mmalign.trainer, mmalign.cli, mmalign.decoding, mmalign.rewards\n"
            "domains = ('text', 'vlm', 'diffusion', 'robotics', 'envs')\n"
            "loaded = [m for m in sys.modules if m.split('.')[:2] in [['mmalign', d] for d in domains]]\n"
            "assert not loaded, f'importing the core loaded {loaded}'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_split_means_merge_by_their_counts():
    """Shares of a split evaluation merge into the mean over all contexts: a per-kind accuracy over 1 of one share's
    3 contexts and 2 of the other's counts 1 and 2, not 3 and 3; a share without the kind (count 0, NaN) adds
    nothing."""
    scores = [[1.0], [0.0, 0.0]]  # one kind's accuracy per context, in each share
    assert merged_mean([(len(s), sum(s) / len(s)) for s in scores]) == pytest.approx(1 / 3)
    assert merged_mean([(0, float("nan")), (2, 0.5)]) == 0.5
    assert math.isnan(merged_mean([(0, float("nan"))]))

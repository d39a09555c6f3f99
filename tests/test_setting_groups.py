"""Settings groups shared by task configs (`lora`, `generation`, `sampling`, `trained_steps`, `b2`): they load from
YAML sections and dotted overrides, a partial section keeps the task's defaults, a key that moved into a group is an
error naming the file or override, the old key and its new place, and `--resume` of a run folder that recorded the
old keys reads them at their new places."""

import json
from pathlib import Path

import pytest
import yaml

from mmalign.cli import main
from mmalign.config import MOVED_KEYS, ConfigError, from_dict, move_recorded_keys, to_dict
from mmalign.diffusion.settings import B2Settings, SamplingSettings, TrainedSteps
from mmalign.diffusion.task import DiffusionTaskConfig
from mmalign.diffusion.video.task import VideoTaskConfig
from mmalign.run_config import load_run_config
from mmalign.settings import GenerationSettings, LoRASettings
from mmalign.text.task import TextTaskConfig
from mmalign.vlm.task import SSLTaskConfig

ROOT = Path(__file__).resolve().parents[1]
TEXT = ROOT / "configs/text/tiny_grpo.yaml"
TINY_LM = {"model_type": "qwen2", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
           "num_attention_heads": 2, "num_key_value_heads": 1}


def test_groups_load_from_yaml_sections_and_dotted_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    data = yaml.safe_load(TEXT.read_text())
    data["task_args"]["lora"] = {"rank": 4, "target_modules": ["q_proj"]}
    path.write_text(yaml.safe_dump(data))
    cfg = load_run_config(path, ["task_args.lora.rank=8", "task_args.generation.temperature=0.5"]).task_args
    assert cfg.lora == LoRASettings(rank=8, alpha=16, target_modules=["q_proj"])  # alpha: the default, kept
    assert cfg.generation == GenerationSettings(max_new_tokens=12, temperature=0.5)  # the file's 12 kept
    diffusion = load_run_config(ROOT / "configs/diffusion/shapes_b2_grpo.yaml", ["task_args.b2.stages=7"]).task_args
    assert diffusion.b2 == B2Settings(branches=8, split_left=7, split_right=10, stages=7)
    assert diffusion.sampling == SamplingSettings(num_steps=10, guidance_scale=2.0)


def test_a_partial_section_keeps_the_tasks_own_defaults():
    video = from_dict(VideoTaskConfig, {"sampling": {"eta": 0.5}, "trained_steps": {"end": 5}})
    assert video.sampling == SamplingSettings(num_steps=10, eta=0.5, max_text_length=6)  # video's, not the class's
    assert video.trained_steps == TrainedSteps(end=5)
    diffusion = from_dict(DiffusionTaskConfig, {"lora": {"rank": 4}})
    assert diffusion.lora == LoRASettings(rank=4, alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    vlm = from_dict(SSLTaskConfig, {"model_config": {"hidden": 32}, "generation": {"max_new_tokens": 2}})
    assert vlm.generation.max_prompt_length == 4096  # the VLM's default, not text's 512
    text = from_dict(TextTaskConfig, {"model_config": TINY_LM, "lora": {"rank": 2}})
    assert text.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_a_bad_value_inside_a_group_is_keyed_by_its_dotted_place():
    with pytest.raises(ConfigError) as e:
        load_run_config(TEXT, ["task_args.lora.rank=-1"])
    assert str(e.value).startswith("command-line override task_args.lora.rank=-1: task_args.lora.rank: must be >= 0")
    with pytest.raises(ConfigError, match="unknown key 'rnak' for LoRASettings.*did you mean 'rank'") as e:
        load_run_config(TEXT, ["task_args.lora.rnak=8"])
    assert e.value.key == "task_args.lora.rnak"


@pytest.mark.parametrize("config, old, value, new", [
    ("text/tiny_grpo.yaml", "lora_r", 8, "lora.rank"),
    ("text/tiny_grpo.yaml", "max_new_tokens", 4, "generation.max_new_tokens"),
    ("vlm/tiny_rotation.yaml", "eval_greedy", False, "generation.eval_greedy"),
    ("diffusion/shapes_grpo.yaml", "train_end", 3, "trained_steps.end"),
    ("diffusion/shapes_grpo.yaml", "timestep_fraction", 0.5, "trained_steps.fraction"),
    ("diffusion/shapes_b2_grpo.yaml", "b2_branches", 2, "b2.branches"),
    ("video/push_pfc.yaml", "guidance_scale", 2.0, "sampling.guidance_scale"),
])
def test_a_moved_key_names_the_override_or_the_file_and_its_new_place(tmp_path, config, old, value, new):
    override = f"task_args.{old}={json.dumps(value)}"
    with pytest.raises(ConfigError) as e:
        load_run_config(ROOT / "configs" / config, [override])
    assert str(e.value).startswith(f"command-line override {override}: task_args.{old}: moved into the settings "
                                   f"group '{new.split('.')[0]}': write task_args.{new} instead"), e.value
    path = tmp_path / "old.yaml"
    data = yaml.safe_load((ROOT / "configs" / config).read_text())
    data["task_args"][old] = value
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        load_run_config(path)
    assert str(e.value).startswith(f"{path}: task_args.{old}: moved into the settings group"), e.value
    assert f"write task_args.{new} instead" in str(e.value)


def test_a_config_with_several_moved_keys_names_them_all_in_one_line(tmp_path, capsys):
    path = tmp_path / "old.yaml"
    data = yaml.safe_load((ROOT / "configs/diffusion/shapes_grpo.yaml").read_text())
    ta = data["task_args"]
    ta.pop("sampling"), ta.pop("trained_steps"), ta.pop("lora")
    ta.update(num_steps=10, guidance_scale=2.0, train_end=5, lora_r=0)
    path.write_text(yaml.safe_dump(data))
    assert main(["train", str(path), f"trainer.output_dir={tmp_path}/runs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"mmalign: error: {path}: task_args.guidance_scale: moved"), err
    assert "also moved: lora_r -> lora.rank, num_steps -> sampling.num_steps, train_end -> trained_steps.end" in err
    assert not (tmp_path / "runs").exists()


def test_a_key_moves_only_where_its_new_place_exists():
    """A robot config has no `sampling` group: its unknown `num_steps` is just unknown."""
    from mmalign.robotics.task import RobotTaskConfig

    with pytest.raises(ConfigError, match="unknown key 'num_steps' for RobotTaskConfig"):
        from_dict(RobotTaskConfig, {"num_steps": 3})


def test_every_moved_key_lands_in_a_group_of_a_task_config():
    configs = [TextTaskConfig(model_config=TINY_LM), SSLTaskConfig(model_config={"hidden": 32}),
               DiffusionTaskConfig(), VideoTaskConfig()]
    places = {f"{group}.{leaf}" for c in configs for group, v in to_dict(c).items() if isinstance(v, dict)
              for leaf in v}
    assert set(MOVED_KEYS.values()) <= places, set(MOVED_KEYS.values()) - places


def test_recorded_old_keys_map_to_their_new_places():
    current = {"task": "text", "task_args": {"lora": {"rank": 0, "alpha": 16}, "generation": {"max_new_tokens": 4},
                                             "dataset": "instructions"}, "trainer": {"lr": 1e-3}}
    recorded = {"task": "text", "task_args": {"lora_r": 0, "lora_alpha": 16, "max_new_tokens": 4,
                                              "dataset": "instructions"}, "trainer": {"lr": 1e-3}}
    assert move_recorded_keys(recorded, current) == current
    assert move_recorded_keys(current, current) == current  # a new folder is left as it is
    # a key that moved elsewhere is no moved key here: a config without the group keeps it (and the resume check
    # then names it as a change)
    assert move_recorded_keys({"num_steps": 3}, {"steps": 3}) == {"num_steps": 3}


LATER = {"decoder": "eager", "backend": "hf", "vllm_gpu_memory_utilization": 0.3, "vllm_sleep": True,
         "vllm_enforce_eager": False}
"""Generation settings added after the settings groups, with their defaults: an old record lacks them."""


def _as_recorded_before_the_groups(config_yaml: Path) -> None:
    """Rewrite a run's config.yaml in the flat layout runs recorded before the settings groups."""
    data = yaml.safe_load(config_yaml.read_text())
    ta = data["task_args"]
    for old, new in MOVED_KEYS.items():
        group, leaf = new.split(".")
        if leaf in ta.get(group, {}):
            ta[old] = ta[group].pop(leaf)
    for later in LATER:
        ta["generation"].pop(later)  # added after the groups: an old record lacks them
    for group in ("lora", "generation"):
        assert ta.pop(group) == {}
    config_yaml.write_text(yaml.safe_dump(data, sort_keys=False))


def test_resume_reads_a_recorded_config_with_the_old_keys(tmp_path, capsys):
    run = ["train", str(TEXT), f"trainer.output_dir={tmp_path}", "trainer.name=old", "trainer.eval_every=0",
           "trainer.save_every=1", "task_args.eval_size=2"]
    assert main([*run, "trainer.steps=1"]) == 0
    recorded = tmp_path / "old" / "config.yaml"
    _as_recorded_before_the_groups(recorded)
    assert "lora_r: 0" in recorded.read_text() and "max_new_tokens: 12" in recorded.read_text()
    capsys.readouterr()
    assert main([*run, "trainer.steps=2", "--resume"]) == 0
    err = capsys.readouterr().err
    assert "resume: recorded key task_args.lora_r is now task_args.lora.rank" in err
    assert "resume: recorded key task_args.max_new_tokens is now task_args.generation.max_new_tokens" in err
    assert "resume: trainer.steps changed from 1 to 2" in err
    rest = err.replace("resume: trainer.steps changed from 1 to 2", "")
    for key, value in LATER.items():  # settings newer than the record
        newer = f"resume: task_args.generation.{key} changed from None to {value!r}"
        assert newer in err
        rest = rest.replace(newer, "")
    assert "changed from" not in rest
    again = yaml.safe_load(recorded.read_text())["task_args"]
    assert again["lora"]["rank"] == 0 and "lora_r" not in again  # the folder now records the groups
    rows = [json.loads(line) for line in (tmp_path / "old" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 2


def test_resume_still_refuses_a_changed_setting_recorded_under_its_old_key(tmp_path, capsys):
    run = ["train", str(TEXT), f"trainer.output_dir={tmp_path}", "trainer.name=old", "trainer.eval_every=0",
           "trainer.save_every=1", "task_args.eval_size=2", "trainer.steps=1"]
    assert main(run) == 0
    _as_recorded_before_the_groups(tmp_path / "old" / "config.yaml")
    capsys.readouterr()
    assert main([*run, "task_args.generation.max_new_tokens=5", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "task_args.generation.max_new_tokens: 12 -> 5 differ from" in err, err

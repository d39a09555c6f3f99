"""Config checks of the domain packages (diffusion, video, robotics): every checked field refuses a bad value with a
`ConfigError` keyed by the field, `mmalign train` blames a bad override on the override and stops before building
anything, and every shipped config (configs/, bench/configs/) still loads."""

import importlib
import re
from pathlib import Path

import pytest
import yaml

from mmalign.cli import LOOPS, main
from mmalign.config import ConfigError, from_dict
from mmalign.diffusion.algorithms import B2Config, DDPOConfig
from mmalign.diffusion.pretrain import PretrainConfig
from mmalign.diffusion.settings import B2Settings, SamplingSettings, TrainedSteps
from mmalign.diffusion.task import DiffusionTaskConfig
from mmalign.diffusion.video.pretrain import VideoPretrainConfig
from mmalign.diffusion.video.task import VideoTaskConfig
from mmalign.diffusion.video.world_model import JEPAConfig, PFCConfig, WorldModelTrainConfig
from mmalign.envs.clips import ClipConfig
from mmalign.robotics.cpa import CPAConfig
from mmalign.robotics.feedback import FeedbackConfig
from mmalign.robotics.iql import IQLConfig
from mmalign.robotics.pearl import PearlConfig
from mmalign.robotics.pearl_run import PearlRunConfig
from mmalign.robotics.pebble import PebbleConfig
from mmalign.robotics.reward_ensemble import RewardEnsembleConfig
from mmalign.robotics.rrl import RRLConfig
from mmalign.robotics.sac import SACConfig
from mmalign.robotics.task import RobotTaskConfig
from mmalign.robotics.teachers import TeacherConfig
from mmalign.run_config import load_run_config
from mmalign.settings import LoRASettings

ROOT = Path(__file__).resolve().parents[1]
CONFIG_CLASSES = [DDPOConfig, B2Config, ClipConfig, PretrainConfig, VideoPretrainConfig, PFCConfig, JEPAConfig,
                  WorldModelTrainConfig, SamplingSettings, TrainedSteps, B2Settings, LoRASettings, DiffusionTaskConfig,
                  VideoTaskConfig, FeedbackConfig, RobotTaskConfig,
                  PebbleConfig, RewardEnsembleConfig, SACConfig, TeacherConfig, IQLConfig, RRLConfig, CPAConfig,
                  PearlConfig, PearlRunConfig]


def bad(cls: type, key: str, **kwargs) -> tuple:
    """A case: `cls(**kwargs)` must raise a ConfigError keyed `key`."""
    return pytest.param(cls, kwargs, key, id=f"{cls.__name__}-{key}")


def bad_values(cls: type, **values) -> list:
    """One case per field: `cls(field=value)` must raise a ConfigError keyed by the field."""
    return [bad(cls, field, **{field: value}) for field, value in values.items()]


CASES = [
    *bad_values(DDPOConfig, history=0, min_count=-1, adv_clip=0.0, clip_low=1.0, clip_high=0.0, beta=-0.1,
                kl_estimator="k2", loss_agg="tokenmean", fixed_length=-1, entropy_coef=-1.0),
    *bad_values(B2Config, mode="best", history=0),
    *bad_values(ClipConfig, tasks=(), episodes=0, clips_per_episode=0, frames=0, frame_every=0, episode_steps=0,
                size=0, noise_std=-0.1, seed=-1),
    bad(ClipConfig, "tasks[1]", tasks=("push", "pull")),
    *bad_values(PretrainConfig, steps=0, batch_size=0, lr=0.0, size=0, width=0, text_hidden=0, counts=(),
                uncond_prob=1.5, caption_noise=-0.1, seed=-1),
    bad(PretrainConfig, "counts[1]", counts=(1, 4)),
    *bad_values(VideoPretrainConfig, steps=0, batch_size=0, lr=-1.0, width=0, text_hidden=0, uncond_prob=2.0,
                seed=-1),
    *bad_values(PFCConfig, context=0, future=0, stride=0, tau=0.0),
    *bad_values(JEPAConfig, size=2, dim=0, width=0, context=0, future=0, hidden=0),
    *bad_values(WorldModelTrainConfig, steps=0, batch_size=0, lr=0.0, weight_decay=-1.0, ema=1.5, var_weight=-1.0,
                order_weight=-1.0, order_temp=0.0, seed=-1),
    *bad_values(SamplingSettings, num_steps=0, max_text_length=0, guidance_scale=-1.0, eta=-0.5, noise_level=-0.1,
                resolution=-1),
    *bad_values(TrainedSteps, start=-1, end=-1, fraction=0.0, reduce="max"),
    bad(TrainedSteps, "fraction", fraction=1.5),
    *bad_values(B2Settings, branches=-1, split_left=0, split_right=0, stages=0),
    *bad_values(LoRASettings, rank=-1, alpha=0),
    *bad_values(DiffusionTaskConfig, scheduler="euler", dtype="fp16", reference="ref", eval_split="colour", counts=[],
                pretrain_steps=0, eval_samples=0, preference_pairs=-1, eval_seed=-1, eval_fraction=1.0, rewards=[]),
    bad(DiffusionTaskConfig, "counts[0]", counts=[5]),
    bad(DiffusionTaskConfig, "trained_steps.end", trained_steps=TrainedSteps(end=21)),
    bad(DiffusionTaskConfig, "trained_steps.start", trained_steps=TrainedSteps(start=20)),
    bad(DiffusionTaskConfig, "trained_steps.start", trained_steps=TrainedSteps(start=5, end=5)),
    bad(DiffusionTaskConfig, "trainable", trainable=["attn2"], lora=LoRASettings(rank=4)),
    bad(DiffusionTaskConfig, "b2.split_left", b2=B2Settings(branches=2, split_left=15, split_right=12)),
    bad(DiffusionTaskConfig, "b2.split_left", b2=B2Settings(branches=2), sampling=SamplingSettings(num_steps=10)),
    bad(DiffusionTaskConfig, "rewards[1]", rewards=[{"name": "alignment"}, {"name": "alignmnt"}]),
    bad(DiffusionTaskConfig, "rewards[0]", rewards=[{"name": "clip_score"}]),  # no local CLIP folder given
    bad(DiffusionTaskConfig, "rewards[0]", rewards=[{"name": "alignment", "strict": True, "sharp": True}]),
    bad(DiffusionTaskConfig, "rewards[0]", rewards=[{"name": "alignment", "weight": "heavy"}]),
    bad(DiffusionTaskConfig, "rewards[0]", rewards=[{"name": "alignment", "fn": "pkg.mod:fn"}]),
    *bad_values(VideoTaskConfig, episodes=0, pretrain_steps=0, world_model_steps=0, context=0, future=0, stride=0,
                eval_conditions=0, world_model_extra_episodes=-1, num_frames=-1, eval_seed=-1, tau=0.0,
                world_model_loader="pkg.mod:Loader", rewards=[]),
    bad(VideoTaskConfig, "trained_steps.start", trained_steps=TrainedSteps(start=10)),
    bad(VideoTaskConfig, "trained_steps.end", trained_steps=TrainedSteps(end=11)),
    bad(VideoTaskConfig, "sampling.resolution", sampling=SamplingSettings(resolution=64)),
    bad(VideoTaskConfig, "rewards[0]", rewards=[{"name": "pfc", "context": 3}]),
    *bad_values(FeedbackConfig, reward="learned", selection="random", teacher="expert", segment_length=0,
                queries_per_round=0, query_every=0, large_batch=0, heldout_every=0, heldout_pairs=0, unsup_steps=-1,
                max_feedback=-1, store_episodes=-1, surf_unlabelled=-1),
    bad(FeedbackConfig, "teacher_overrides.gama", teacher_overrides={"gama": 0.9}),
    bad(FeedbackConfig, "teacher_overrides.eps_mistake", teacher_overrides={"eps_mistake": 1.5}),
    *bad_values(RobotTaskConfig, num_envs=0, eval_episodes=0, torch_threads=0, seed=-1),
    bad(RobotTaskConfig, "hidden[1]", hidden=[64, 0]),
    *bad_values(PebbleConfig, total_env_steps=0, eval_every=0, save_every=0, keep_checkpoints=0, seed=-1),
    *bad_values(RewardEnsembleConfig, members=0, batch_size=0, epochs=0, lr=0.0, min_std=0.0, surf_threshold=1.5,
                surf_ratio=-1, crop_min=-1, crop_max=-1),
    bad(RewardEnsembleConfig, "hidden[0]", hidden=[0]),
    bad(RewardEnsembleConfig, "crop_min", crop_min=5, crop_max=3),
    *bad_values(SACConfig, batch_size=0, buffer_size=0, lr=0.0, init_alpha=0.0, updates_per_step=0.0,
                learning_starts=-1, gamma=1.5, tau=0.0),
    bad(SACConfig, "hidden[1]", hidden=[256, -1]),
    *bad_values(TeacherConfig, gamma=0.0, eps_mistake=-0.1, eps_skip=1.5, eps_equal=2.0),
    bad(TeacherConfig, "gamma", gamma=1.5),
    *bad_values(IQLConfig, batch_size=0, steps=0, expectile=1.0, beta=-1.0, seed=-1, max_weight=0.0, lr=0.0,
                gamma=1.5, polyak=0.0),
    bad(IQLConfig, "hidden[1]", hidden=(64, 0)),
    *bad_values(RRLConfig, likelihood="exact", num_samples=0, epochs=0, batch_size=0, sigma0=0.0, lr=0.0, beta=-1.0,
                mean_bound=-1.0, weight_decay=-1.0, seed=-1),
    bad(RRLConfig, "hidden[0]", hidden=(0,)),
    *bad_values(CPAConfig, representation="raw", method="sinkhorn", epsilon=0.0, max_iter=0),
    *bad_values(PearlConfig, episodes_per_policy=0, segment_length=0, reward_pairs=0, eval_episodes=0,
                max_episode_steps=0, segments=1, few_labels=0),
    bad(PearlConfig, "few_labels", segments=10, few_labels=46),  # 45 target pairs
    *bad_values(PearlRunConfig, source=[], methods=[], seeds=[], torch_threads=0, target="reach"),
    bad(PearlRunConfig, "methods[1]", methods=["oracle-rrl", "cpa-dpo"]),
    bad(PearlRunConfig, "seeds[1]", seeds=[0, -1]),
]


@pytest.mark.parametrize("cls, kwargs, key", CASES)
def test_a_bad_value_is_a_config_error_keyed_by_its_field(cls, kwargs, key):
    with pytest.raises(ConfigError) as e:
        cls(**kwargs)
    assert e.value.key == key and e.value.problem, e.value


@pytest.mark.parametrize("cls", CONFIG_CLASSES)
def test_defaults_pass_the_checks(cls):
    cls()


def test_errors_nest_under_their_section():
    with pytest.raises(ConfigError) as e:
        from_dict(RobotTaskConfig, {"feedback": {"reward_model": {"members": 0}}})
    assert e.value.key == "feedback.reward_model.members"
    with pytest.raises(ConfigError) as e:
        from_dict(PearlRunConfig, {"pearl": {"iql": {"expectile": 1.0}}})
    assert e.value.key == "pearl.iql.expectile"
    with pytest.raises(ConfigError, match="unknown method 'cpa-dpo'; choose from") as e:
        PearlRunConfig(methods=["cpa-dpo"])
    assert e.value.key == "methods[0]"


@pytest.mark.parametrize("config, override, message", [
    ("robotics/reach_prefppo.yaml", "trainer.lr=-1", "trainer.lr: must be > 0, got -1"),
    ("robotics/reach_prefppo.yaml", "task_args.feedback.reward_model.crop_min=5",
     "task_args.feedback.reward_model.crop_min: must be <= crop_max"),
    ("robotics/reach_pebble.yaml", "task.feedback.selection=disagrement", "task.feedback.selection: must be one of"),
    ("robotics/pearl_planar.yaml", "seeds=[]", "seeds: is empty"),
    ("robotics/pearl_planar.yaml", "pearl.cpa.method=sinkhorn", "pearl.cpa.method: must be one of"),
    ("diffusion/shapes_grpo.yaml", "task_args.sampling.num_steps=-4",
     "task_args.sampling.num_steps: must be >= 1, got -4"),
    ("video/push_pfc.yaml", "task_args.trained_steps.reduce=max",
     "task_args.trained_steps.reduce: must be one of ['mean', 'sum'], got 'max'"),
    ("diffusion/shapes_grpo.yaml", "task_args.num_steps=4",
     "task_args.num_steps: moved into the settings group 'sampling': write task_args.sampling.num_steps instead"),
])
def test_cli_blames_the_override_and_builds_nothing(tmp_path, capsys, config, override, message):
    """The check runs when the config loads: exit 2, one line naming the override, no run folder, no model."""
    data = yaml.safe_load((ROOT / "configs" / config).read_text())
    outputs = [f"output_dir={tmp_path}/runs"] if "loop" in data else [f"trainer.output_dir={tmp_path}/runs"]
    if data.get("task") in ("diffusion", "video"):
        outputs.append(f"task_args.embedded_dir={tmp_path}/embedded")
    assert main(["train", str(ROOT / "configs" / config), *outputs, override]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mmalign: error: command-line override {override}: {message}"), err
    assert err.count("\n") == 1
    assert not list(tmp_path.iterdir())  # nothing rendered, pre-trained or trained


def load_shipped(path: Path):
    """A shipped config through the loader that reads it: its loop's, the run config's, accelerate's
    (configs/accelerate/), or (the benchmark settings bench/configs/pearl_rrl.yaml and pearl_transfer.yaml) the
    dataclasses its comment names."""
    data = yaml.safe_load(path.read_text())
    if "loop" in data:
        return importlib.import_module(LOOPS[data["loop"]].partition(":")[0]).load_config(path, [])
    if "task" in data:  # a folder model that the config leaves to the command line gets a stand-in path
        need_model = data["task_args"].get("model") == ""
        return load_run_config(path, ["task_args.model=path/to/model"] if need_model else [])
    if path.parent.name == "accelerate":  # a launch config: accelerate's own loader
        from accelerate.commands.config.config_args import load_config_from_file

        return load_config_from_file(str(path))
    if path.name == "pearl_rrl.yaml":
        return from_dict(RRLConfig, data)
    if path.name == "pearl_transfer.yaml":
        return from_dict(CPAConfig, data["cpa"], "cpa"), from_dict(PearlConfig, data["data"], "data")
    raise AssertionError(f"{path}: no loader known for this config; add it here.")


SHIPPED_CONFIGS = sorted([*(ROOT / "configs").rglob("*.yaml"), *(ROOT / "bench" / "configs").rglob("*.yaml")])


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_loads(path):
    assert load_shipped(path) is not None


def test_no_shipped_config_forces_the_cpu_without_saying_why():
    """A shipped config that pins the CPU (`device: cpu`, or the older `cpu: true`) says why on that line; every other
    run takes the device `auto` picks."""
    paths = sorted(ROOT.glob("configs/**/*.yaml")) + sorted(ROOT.glob("bench/configs/**/*.yaml"))
    assert len(paths) > 20
    for path in paths:
        for line in path.read_text().splitlines():
            if re.match(r"\s*(device:\s*cpu|cpu:\s*true)\b", line):
                assert "#" in line, f"{path.relative_to(ROOT)}: {line.strip()!r} gives no reason"

"""Config checks: numeric ranges of every config dataclass, errors keyed and blamed on the file or the override,
GRPO's group size, transformers model configs and VLM task specs checked at config time."""

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mmalign.algorithms.grpo import GRPOConfig
from mmalign.algorithms.offline import PreferenceConfig
from mmalign.algorithms.ppo import PPOConfig
from mmalign.config import ConfigError, check_choice, check_nonempty, check_numbers, from_dict
from mmalign.run_config import RunConfig, TrainerConfig, load_run_config
from mmalign.text.task import TextTaskConfig, build_causal_lm
from mmalign.vlm.task import SSLTaskConfig

ROOT = Path(__file__).resolve().parents[1]
TINY_LM = {"model_type": "qwen2", "hidden_size": 16, "num_attention_heads": 2, "num_key_value_heads": 1,
           "num_hidden_layers": 1, "intermediate_size": 16}


@dataclass
class Knobs:
    rate: float = 0.5
    count: int = 1
    pair: tuple = (0.1, 0.2)
    mode: str = "fast"


def test_check_numbers_and_check_choice_key_their_errors():
    check_numbers(Knobs(), "rate", gt=0, lt=1)
    with pytest.raises(ConfigError, match=r"must be > 0 and < 1, got 1\.5") as e:
        check_numbers(Knobs(rate=1.5), "rate", gt=0, lt=1)
    assert e.value.key == "rate"
    with pytest.raises(ConfigError, match="got nan") as e:
        check_numbers(Knobs(rate=float("nan")), "count", "rate", ge=0)
    assert e.value.key == "rate"
    with pytest.raises(ConfigError, match=r"must be >= 0, got -1") as e:
        check_numbers(Knobs(pair=(0.1, -1)), "pair", ge=0)
    assert e.value.key == "pair[1]"
    with pytest.raises(ConfigError, match="expected a number >= 0, got 'x'"):
        check_numbers(Knobs(count="x"), "count", ge=0)
    with pytest.raises(ConfigError, match=r"one of \['fast', 'slow'\], got 'fsat' \(did you mean 'fast'\?\)"):
        check_choice(Knobs(mode="fsat"), "mode", ("fast", "slow"))


def test_check_choice_checks_each_entry_of_a_list_and_check_nonempty_refuses_empty_lists():
    check_choice(Knobs(pair=("fast", "slow")), "pair", ("fast", "slow"))
    with pytest.raises(ConfigError, match=r"got 'slwo' \(did you mean 'slow'\?\)") as e:
        check_choice(Knobs(pair=("fast", "slwo")), "pair", ("fast", "slow"))
    assert e.value.key == "pair[1]"
    check_nonempty(Knobs(), "pair")
    with pytest.raises(ConfigError, match="is empty") as e:
        check_nonempty(Knobs(pair=()), "pair")
    assert e.value.key == "pair"


def test_from_dict_refuses_non_finite_floats_and_keys_nested_errors():
    with pytest.raises(ConfigError, match="finite") as e:
        from_dict(TrainerConfig, {"lr": float("nan")}, where="trainer")
    assert e.value.key == "trainer.lr"
    with pytest.raises(ConfigError, match="finite"):
        from_dict(TrainerConfig, {"max_grad_norm": float("inf")})
    with pytest.raises(ConfigError, match=r"did you mean 'steps'") as e:
        from_dict(TrainerConfig, {"stepz": 3}, where="trainer")
    assert e.value.key == "trainer.stepz"


@pytest.mark.parametrize("field, value", [
    ("steps", 0), ("contexts_per_step", 0), ("num_samples", 0), ("epochs", 0), ("minibatches", 0), ("log_every", 0),
    ("seed", -1), ("micro_batch_size", -1), ("micro_steps", -1), ("warmup_steps", -1), ("eval_every", -1),
    ("save_every", -1), ("keep_checkpoints", -1), ("weight_decay", -0.1), ("max_grad_norm", -1.0), ("lr", 0.0),
    ("lr", -1e-3), ("adam_betas", [0.9, 1.0]), ("adam_betas", [0.9]), ("lr_schedule", "cosin"),
])
def test_every_trainer_field_is_checked(field, value):
    with pytest.raises(ConfigError) as e:
        TrainerConfig(**{field: value})
    assert e.value.key.startswith(field) and (repr(value) in str(e.value) or field == "adam_betas"), e.value


@pytest.mark.parametrize("cls, field, value", [
    (GRPOConfig, "beta", -0.1), (GRPOConfig, "entropy_coef", -1.0), (GRPOConfig, "fixed_length", -1),
    (GRPOConfig, "clip_low", 1.0), (GRPOConfig, "estimator", "rlo"), (PPOConfig, "vf_coef", -1.0),
    (PPOConfig, "kl_coef", -0.1), (PPOConfig, "lam", 1.5), (GRPOConfig, "tis_cap", -1.0), (PPOConfig, "tis_cap", -2.0),
    (PreferenceConfig, "label_smoothing", 0.7),
    (PreferenceConfig, "robust_eps", 0.5), (PreferenceConfig, "alpha", -1.0),
])
def test_algorithm_configs_check_their_fields(cls, field, value):
    with pytest.raises(ConfigError, match="must be") as e:
        cls(**{field: value})
    assert e.value.key == field


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_grpo_refuses_groups_of_one_sample(estimator):
    with pytest.raises(ConfigError, match="advantage 0 and nothing trains") as e:
        RunConfig(task="text", trainer=TrainerConfig(num_samples=1), algorithm_args=GRPOConfig(estimator=estimator))
    assert e.value.key == "trainer.num_samples"
    RunConfig(task="text", trainer=TrainerConfig(num_samples=2), algorithm_args=GRPOConfig(estimator=estimator))
    RunConfig(task="text", algorithm="ppo", trainer=TrainerConfig(num_samples=1))  # PPO learns from one sample


def write_config(tmp_path, **changes) -> Path:
    data = yaml.safe_load((ROOT / "configs/text/tiny_grpo.yaml").read_text())
    for section, values in changes.items():
        data[section] = {**data.get(section, {}), **values} if isinstance(values, dict) else values
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_errors_are_blamed_on_the_override_or_the_file(tmp_path):
    path = write_config(tmp_path, trainer={"lr": -1.0})
    with pytest.raises(ConfigError) as e:
        load_run_config(path)
    assert (e.value.source, e.value.key) == (str(path), "trainer.lr")
    with pytest.raises(ConfigError) as e:
        load_run_config(path, ["trainer.lr=1e-3", "trainer.steps=0"])
    assert (e.value.source, e.value.key) == ("command-line override trainer.steps=0", "trainer.steps")
    with pytest.raises(ConfigError) as e:
        load_run_config(path, ["trainer={lr: 1e-3, steps: 0}"])
    assert e.value.source == "command-line override trainer={lr: 1e-3, steps: 0}"
    with pytest.raises(ConfigError) as e:  # the file's model_config and the override's model clash
        load_run_config(path, ["trainer.lr=1e-3", "task_args.model=x.gguf"])
    assert e.value.source == f"{path} with command-line override task_args.model=x.gguf"
    with pytest.raises(ConfigError, match="not valid YAML") as e:
        load_run_config(path, ["trainer.name=[unclosed"])
    assert e.value.source == "command-line override 'trainer.name=[unclosed'"


def test_an_unknown_algorithm_is_named_before_its_section(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown name 'grpoo' \(did you mean 'grpo'\?\)") as e:
        load_run_config(write_config(tmp_path, algorithm="grpoo"))
    assert e.value.key == "algorithm"
    with pytest.raises(ConfigError, match="rename 'grpo' to 'ppo'"):
        load_run_config(ROOT / "configs/text/tiny_grpo.yaml", ["algorithm=ppo"])


def test_text_model_config_is_checked_against_transformers():
    TextTaskConfig(model_config={**TINY_LM, "rope_theta": 100.0})  # converted by transformers, not unknown
    with pytest.raises(ConfigError, match=r"did you mean 'hidden_size'.*unknown too: \['num_layer'\]") as e:
        TextTaskConfig(model_config={**TINY_LM, "hiden_size": 8, "num_layer": 2})
    assert e.value.key == "model_config.hiden_size"
    with pytest.raises(ConfigError, match="'qwen9' is not a causal LM model_type") as e:
        TextTaskConfig(model_config={**TINY_LM, "model_type": "qwen9"})
    assert e.value.key == "model_config.model_type" and len(str(e.value)) < 300, e.value
    with pytest.raises(ConfigError, match="not a causal LM"):
        TextTaskConfig(model_config={**TINY_LM, "model_type": "qwen2_vl"})
    from mmalign.text.policy import char_tokenizer

    with pytest.raises(ConfigError, match="num_hiden_layers"):  # building from code is checked the same way
        build_causal_lm({**TINY_LM, "num_hiden_layers": 1}, char_tokenizer())


@pytest.mark.parametrize("key, value", [
    ("generation.max_new_tokens", 0), ("generation.temperature", 0.0), ("generation.max_prompt_length", 0),
    ("eval_fraction", 0.0), ("lora.rank", -1), ("lora.alpha", 0), ("dtype", "fp32"), ("tokenizer", "bytes"),
    ("rewards", []), ("generation.backend", "vlm"), ("generation.vllm_gpu_memory_utilization", 0.0),
])
def test_text_task_fields_are_checked(key, value):
    group, _, name = key.rpartition(".")
    with pytest.raises(ConfigError) as e:
        from_dict(TextTaskConfig, {"model_config": TINY_LM, **({group: {name: value}} if group else {name: value})})
    assert e.value.key == key


@pytest.mark.parametrize("changes, key, message", [
    ({"model_config": {"hiden": 32}}, "model_config.hiden", "did you mean 'hidden'"),
    ({"model_config": {"hidden": 30}}, "model_config.hidden", "M-RoPE"),
    ({"model_config": {"model_type": "qwen9"}}, "model_config.model_type", "llava"),
    ({"model_config": {"vision_config": {"depht": 2}}}, "model_config.vision_config.depht", "did you mean 'depth'"),
    ({"tasks": ["rotaton"]}, "tasks[0]", "unknown SSL task 'rotaton'"),
    ({"tasks": [{"name": "jigsaw", "grids": 2}]}, "tasks[0]", "bad options"),
    ({"stages": [{"steps": 0, "tasks": ["rotation"]}, {"tasks": ["jigsaw"]}]}, "stages[0].steps", ">= 1"),
    ({"rewards": [{"name": "acuracy"}]}, "rewards[0]", "did you mean 'accuracy'"),
    ({"rewards": [{"name": "accuracy", "weight": "heavy"}]}, "rewards[0]", "weight must be a finite number"),
    ({"rewards": []}, "rewards", "at least one reward"),
    ({"generation": {"max_new_tokens": 0}}, "generation.max_new_tokens", ">= 1"),
    ({"num_images": 1}, "num_images", "none to train on"),
])
def test_vlm_task_specs_are_checked_at_config_time(changes, key, message):
    cfg = {"model_config": {"hidden": 32}, **changes}
    with pytest.raises(ConfigError, match=message) as e:
        from_dict(SSLTaskConfig, cfg)
    assert e.value.key == key


@pytest.mark.parametrize("model_type", ["qwen2_5_vl", "idefics3", "smolvlm", "llava"])
def test_vlm_families_take_their_knobs(model_type):
    SSLTaskConfig(model_config={"model_type": model_type, "hidden": 32, "layers": 2, "merge": 2})

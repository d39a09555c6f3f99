"""The offline preference algorithm: every loss of the `LOSSES` registry trains through the Trainer's offline step on
the tiny text model, and a config names its loss or gets one clear error listing the known ones."""

from pathlib import Path

import pytest
import torch
from tiny import TinyTask, tiny_policy

from mmalign.algorithms.offline import LOSSES, PreferenceConfig, preference_loss
from mmalign.cli import main
from mmalign.config import ConfigError
from mmalign.run_config import RunConfig, TrainerConfig, load_run_config
from mmalign.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
ROWS = [  # listwise rows with rewards and a gold answer: what every registered loss can read
    {"prompt": "describe the cat", "responses": ["the cat sat on the mat", "the dog ran", "a big red park"],
     "rewards": [1.0, 0.2, 0.0], "gold": "the cat sat on the mat", "gold_reward": 1.0},
    {"prompt": "tell me about the dog", "responses": ["the dog ran to the park", "a cat", "blue mat"],
     "rewards": [0.9, 0.1, 0.3], "references": ["the dog ran to the park"], "gold_reward": 0.8},
]


def test_registry_names_every_direct_loss_with_its_needs():
    assert sorted(LOSSES) == ["arm", "copg", "dpo", "grao", "ipo", "pro", "robust", "tpo", "tpo-l"]
    assert {n for n, s in LOSSES.items() if s.needs_reference} == {"dpo", "ipo", "robust", "copg"}
    assert {n for n, s in LOSSES.items() if s.average} == {"tpo-l", "pro", "grao"}
    assert {n for n, s in LOSSES.items() if s.needs_gold} == {"tpo", "tpo-l", "grao"}


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_registered_loss_trains_through_the_offline_step(loss, tmp_path):
    policy = tiny_policy(lora=True)
    cfg = RunConfig("text", trainer=TrainerConfig(contexts_per_step=2, micro_batch_size=1, lr=1e-2, cpu=True,
                                                  output_dir=str(tmp_path)),
                    algorithm="preference", algorithm_args=PreferenceConfig(loss=loss, sft_weight=0.1))
    trainer = Trainer(cfg, task=TinyTask(policy, ROWS))
    before = {n: p.detach().clone() for n, p in policy.named_parameters() if p.requires_grad}
    metrics = trainer.step(0)
    assert torch.isfinite(torch.tensor(metrics["loss"])) and metrics["grad_norm"] > 0, metrics
    assert 0.0 <= metrics["pref_acc"] <= 1.0
    after = dict(policy.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before)


def test_grao_needs_the_rows_rewards():
    policy = tiny_policy()
    with pytest.raises(ValueError, match="gold_reward"):
        preference_loss(policy, [{k: v for k, v in r.items() if k != "gold_reward"} for r in ROWS],
                        PreferenceConfig(loss="grao"))


def test_a_config_names_any_registered_loss_and_an_unknown_one_lists_them(capsys):
    config = ROOT / "configs/diffusion/shapes_dpo.yaml"
    assert load_run_config(config, ["preference.loss=grao"]).algorithm_args.loss == "grao"
    with pytest.raises(ConfigError, match="preference.loss|preference loss"):
        load_run_config(config, ["preference.loss=kto"])
    assert main(["train", str(config), "preference.loss=kto"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmalign: error:") and "'kto'" in err and "Traceback" not in err, err
    assert all(repr(name) in err for name in LOSSES), err


@pytest.mark.parametrize("config, loss", [("tiny_grao", "grao"), ("tiny_lite_ppo", None)])
def test_shipped_text_configs_train_two_steps(config, loss, tmp_path):
    """GRAO (and, by `preference.loss`, every direct loss) and Lite PPO run from their shipped configs."""
    cfg = load_run_config(ROOT / f"configs/text/{config}.yaml", [f"trainer.output_dir={tmp_path}", "trainer.steps=2",
                                                                 "task_args.eval_size=2"])
    trainer = Trainer(cfg)
    if loss:  # ranked rows: the reference first, three other prompts' references after it, each with its BLEU
        assert cfg.algorithm_args.loss == loss
        row = trainer.task.train_contexts[0]
        assert row["responses"][0] == row["gold"] == row["references"][0] and len(row["responses"]) == 4
        assert row["gold_reward"] == row["rewards"][0] > max(row["rewards"][1:])
    else:
        assert cfg.algorithm_args.scale_rewards == "batch" and cfg.algorithm_args.loss_agg == "token-mean"
    for step in range(2):
        metrics = trainer.step(step)
        assert torch.isfinite(torch.tensor(metrics["loss"])) and metrics["grad_norm"] > 0, metrics
    assert 0 <= trainer.evaluate()["eval/reward"] <= 1


def test_preference_rejects_needs_enough_other_rows():
    from mmalign.text.rewards import BleuReward
    from mmalign.text.task import preference_rows

    with pytest.raises(ConfigError, match="preference_rejects.*only 2 training rows"):
        preference_rows(ROWS, 2, [("bleu", BleuReward(), 1.0)])

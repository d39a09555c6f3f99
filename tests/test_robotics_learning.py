"""Learning tests of the online preference-RL recipe on mmalign/Reach-v0, and smoke tests of its pieces."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmalign.robotics.recipe import PrefRL, PrefRLConfig, knn_state_entropy, load_config, train
from mmalign.robotics.reward_ensemble import RewardEnsembleConfig
from mmalign.robotics.sac import SACConfig

from mmalign.tracking import read_metrics

CONFIG = Path(__file__).parent.parent / "configs" / "robotics" / "reach_prefppo.yaml"


def test_config_loads_strictly():
    cfg = load_config(CONFIG, ["total_env_steps=1000", "teacher=mistake"])
    assert cfg.total_env_steps == 1000 and cfg.reward_model.members == 3 and cfg.segment_length == 50
    from mmalign.config import ConfigError

    with pytest.raises(ConfigError, match="segment_len"):
        load_config(CONFIG, ["segment_len=10"])


def test_knn_state_entropy_is_kth_neighbour_distance():
    obs = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    torch.testing.assert_close(knn_state_entropy(obs, k=1), torch.tensor([1.0, 1.0, 2.0, 4.0]))


def test_replay_buffer_relabels_every_transition():
    run = PrefRL(PrefRLConfig(learner="sac", num_envs=2, sac=SACConfig(hidden=[8], buffer_size=4), video=False))
    rollout = run.sampler.collect(run.agent, 3)  # 6 transitions into a ring of 4
    buf = run.buffer
    buf.add_rollout(rollout)
    assert len(buf) == 4 and buf.pos == 2
    buf.relabel(lambda s, a: s[:, 0] + a[:, 1])
    torch.testing.assert_close(buf.rewards, buf.obs[:, 0] + buf.actions[:, 1])


def test_pebble_sac_smoke_with_warmup_feedback_and_relabel(tmp_path):
    cfg = PrefRLConfig(name="pebble", output_dir=str(tmp_path), learner="sac", num_envs=2, total_env_steps=600,
                       unsup_steps=300, segment_length=20, max_feedback=20, queries_per_round=10, query_every=100,
                       large_batch=2, selection="kcenter_disagreement", eval_every=300, eval_episodes=2,
                       sac=SACConfig(hidden=[16], batch_size=32, learning_starts=100, updates_per_step=0.25),
                       reward_model=RewardEnsembleConfig(members=2, hidden=[16], epochs=2), video=False)
    run_dir = train(cfg)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert rows[-1]["feedback"] == 20 and "eval/reward_model_accuracy" in rows[-1]
    assert (run_dir / "curves.png").exists() and (run_dir / "final" / "trainable.safetensors").exists()


@pytest.mark.slow
def test_prefppo_with_oracle_labels_learns_reach(tmp_path):
    """About 60-80 s on a 2-core CPU: 300 oracle labels, PPO on the learned reward solves Reach (random policy: 0).

    Measured (docs/robotics.md): success 0.9 (seed 0) and 1.0 (seed 1) at 40k env steps, held-out reward-model
    accuracy 0.92 and 0.89; PPO on the ground-truth reward: 1.0 at 30k.
    """
    cfg = load_config(CONFIG, [f"output_dir={tmp_path}", "video=true", "eval_every=40000"])
    run_dir = train(cfg)
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "eval/success_rate" in r]
    first, last = rows[0], rows[-1]
    print({k: v for k, v in last.items() if k.startswith("eval/")})
    assert first["eval/success_rate"] <= 0.1 and last["feedback"] == 300
    assert last["eval/success_rate"] >= 0.7  # solved: the tip held inside the 2.5 cm radius on most episodes
    assert last["eval/return"] > first["eval/return"] + 15
    assert last["eval/reward_model_accuracy"] >= 0.85  # learned reward ranks held-out segments like the ground truth
    assert (run_dir / "final_policy.mp4").stat().st_size > 1000 and (run_dir / "curves.png").exists()

"""Online preference RL for robots on the shared run system: PrefPPO through the Trainer (`task: robot`), PEBBLE's
SAC loop (`loop: pebble`), their pieces, and kill / resume on the same curve."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from kill import TWO_PROCESSES, kill_when, same_rows, train

from mmalign.cli import main
from mmalign.run_config import load_run_config
from mmalign.tracking import read_metrics

pytest.importorskip("mujoco")

ROOT = Path(__file__).resolve().parents[1]
PREFPPO = str(ROOT / "configs/robotics/reach_prefppo.yaml")
PEBBLE = str(ROOT / "configs/robotics/reach_pebble.yaml")
SMALL_PREFPPO = ["task_args.num_envs=2", "task_args.eval_episodes=2", "task_args.video=false",
                 "trainer.num_samples=64", "task_args.feedback.segment_length=20",
                 "task_args.feedback.queries_per_round=10",
                 "task_args.feedback.query_every=200", "task_args.feedback.max_feedback=30",
                 "task_args.feedback.large_batch=2", "task_args.feedback.reward_model.epochs=2",
                 "trainer.epochs=2", "trainer.minibatches=2", "trainer.eval_every=2", "trainer.save_every=2"]
SMALL_PEBBLE = ["task.num_envs=2", "task.eval_episodes=2", "task.video=false", "total_env_steps=600",
                "eval_every=200", "save_every=200", "task.feedback.unsup_steps=100", "task.feedback.segment_length=20",
                "task.feedback.queries_per_round=10", "task.feedback.query_every=100", "task.feedback.max_feedback=20",
                "task.feedback.large_batch=2", "task.feedback.reward_model.epochs=2",
                "task.feedback.selection=kcenter_disagreement", "sac.hidden=[16]", "sac.batch_size=32",
                "sac.learning_starts=100"]


def test_prefppo_config_is_a_trainer_run():
    cfg = load_run_config(PREFPPO, ["task_args.feedback.teacher=mistake"])
    assert cfg.task == "robot" and cfg.algorithm == "ppo" and cfg.task_args.feedback.reward_model.members == 3
    from mmalign.config import ConfigError

    with pytest.raises(ConfigError, match="segment_len"):
        load_run_config(PREFPPO, ["task_args.feedback.segment_len=10"])


def test_knn_state_entropy_is_kth_neighbour_distance():
    from mmalign.robotics.feedback import knn_state_entropy

    obs = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    torch.testing.assert_close(knn_state_entropy(obs, k=1), torch.tensor([1.0, 1.0, 2.0, 4.0]))


def test_replay_buffer_relabels_every_transition_and_keeps_its_state():
    from mmalign.robotics.sac import SAC, ReplayBuffer, SACConfig
    from mmalign.robotics.sampler import VecEnvSampler

    sampler = VecEnvSampler("mmalign/Reach-v0", 2)
    buf = ReplayBuffer(sampler.observation_space.shape[0], 2, capacity=4)
    buf.add_rollout(sampler.collect(SAC(buf.obs.shape[1], 2, SACConfig(hidden=[8])), 3))  # 6 into a ring of 4
    assert len(buf) == 4 and buf.pos == 2
    buf.relabel(lambda s, a: s[:, 0] + a[:, 1])
    torch.testing.assert_close(buf.rewards, buf.obs[:, 0] + buf.actions[:, 1])
    copy = ReplayBuffer(buf.obs.shape[1], 2, capacity=4)
    copy.load_state_dict(buf.state_dict())
    assert copy.pos == 2 and torch.equal(copy.rewards, buf.rewards) and torch.equal(copy.obs, buf.obs)


def test_prefppo_through_the_trainer_leaves_its_run_folder(tmp_path):
    assert main(["train", PREFPPO, f"trainer.output_dir={tmp_path}", "trainer.steps=6", *SMALL_PREFPPO,
                 "task_args.video=true"]) == 0
    run = tmp_path / "reach_prefppo"
    rows = read_metrics(run / "metrics.jsonl")
    last = [r for r in rows if "eval/success_rate" in r][-1]
    assert last["eval/feedback"] == 30 and "eval/reward_model_accuracy" in last and last["eval/env_steps"] > 400
    assert any("reward_model/loss" in r for r in rows)  # the feedback rounds' metrics are logged
    for name in ("curves.png", "success.png", "final/policy.safetensors", "final/reward_ensemble.safetensors"):
        assert (run / name).is_file(), name
    assert (run / "final_policy.mp4").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.parametrize("how", ["local", "two processes", "two processes on ray workers"])
def test_prefppo_sigkill_then_resume_continues_the_same_curve(tmp_path, how):
    """Weights, optimizer, RNG streams, the envs (restarted at each checkpoint), the episode stores, every label and
    the reward ensemble come back, so the resumed run logs exactly the rows of an uninterrupted one: in one process
    and on 2 processes. With the envs of each of 2 processes on a Ray worker, the rows are those of the in-process
    run. Where the envs step may change on resume: the in-process run resumes with async vector envs, the Ray run
    in-process."""
    args = [f"trainer.output_dir={tmp_path}", "trainer.steps=8", *SMALL_PREFPPO]
    launcher = TWO_PROCESSES if how.startswith("two processes") else ()
    if launcher:  # the env is the context: one per process, each with its own envs and labels
        args.append("trainer.contexts_per_step=2")
    killed, moved = list(args), ["task_args.vector=async"] if how == "local" else []
    if how.endswith("ray workers"):  # every process starts a local Ray instance of its own
        pytest.importorskip("ray")
        killed += ["task_args.sampler=ray", "task_args.ray_workers=1"]
        moved = ["task_args.sampler=local"]
    assert train(PREFPPO, *args, "trainer.name=whole", launcher=launcher).wait(timeout=600) == 0
    proc = train(PREFPPO, *killed, "trainer.name=killed", launcher=launcher)
    kill_when(proc, (tmp_path / "killed/checkpoints/step_000004").exists)
    assert max(r["step"] for r in read_metrics(tmp_path / "killed/metrics.jsonl")) < 8, "killed too late"
    resumed = train(PREFPPO, *killed, *moved, "trainer.name=killed", "--resume", launcher=launcher)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-3000:]
    same_rows(read_metrics(tmp_path / "whole/metrics.jsonl"), read_metrics(tmp_path / "killed/metrics.jsonl"))


@pytest.mark.slow
def test_pebble_warms_up_asks_relabels_and_resumes_on_the_same_curve(tmp_path):
    args = [f"output_dir={tmp_path}", *SMALL_PEBBLE]
    assert train(PEBBLE, *args, "name=whole").wait(timeout=600) == 0
    whole = read_metrics(tmp_path / "whole/metrics.jsonl")
    assert whole[-1]["feedback"] == 20 and "eval/reward_model_accuracy" in whole[-1] and "q_loss" in whole[-1]
    assert (tmp_path / "whole/curves.png").exists() and (tmp_path / "whole/final/reward_ensemble.safetensors").exists()
    proc = train(PEBBLE, *args, "name=killed")
    kill_when(proc, (tmp_path / "killed/checkpoints/step_000400").exists)
    assert max(r["step"] for r in read_metrics(tmp_path / "killed/metrics.jsonl")) < 600, "killed too late"
    # resumed with its envs in subprocesses: where the envs step changes no trajectory
    assert train(PEBBLE, *args, "name=killed", "task.vector=async", "--resume").wait(timeout=600) == 0
    same_rows(whole, read_metrics(tmp_path / "killed/metrics.jsonl"))


def test_every_robot_entry_point_refuses_an_existing_run_untouched(tmp_path, capsys):
    from files import tree_digest

    assert main(["train", PEBBLE, f"output_dir={tmp_path}", "name=taken", *SMALL_PEBBLE, "total_env_steps=16"]) == 0
    before = tree_digest(tmp_path / "taken")
    assert main(["train", PEBBLE, f"output_dir={tmp_path}", "name=taken", *SMALL_PEBBLE]) == 2
    assert "already holds a run" in capsys.readouterr().err and tree_digest(tmp_path / "taken") == before
    assert main(["train", PREFPPO, f"trainer.output_dir={tmp_path}", "trainer.name=taken", *SMALL_PREFPPO]) == 2
    assert "already holds a run" in capsys.readouterr().err and tree_digest(tmp_path / "taken") == before

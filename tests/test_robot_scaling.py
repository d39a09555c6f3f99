"""Robot envs beyond one process: per-env seeding, async vector envs and Ray workers give the rollouts of the
in-process sampler, bit for bit, and a PrefPPO run on Ray workers learns as the in-process one does."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from mmalign.robotics.policy import GaussianActorCritic, GaussianPolicy, rowwise
from mmalign.robotics.sampler import VecEnvSampler, make_vec_env

pytest.importorskip("mujoco")
REACH, SHORT = "mmalign/Reach-v0", {"max_episode_steps": 20}  # short episodes: several ends and autoresets


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _run(sampler, policy) -> tuple[list, list]:
    """Two collects with a restart between them (as a checkpoint does); the rollouts and the finished episodes."""
    episodes: list = []
    sampler.on_episode = episodes.append
    rollouts = [sampler.collect(policy, 30)]
    sampler.restart(11)
    rollouts.append(sampler.collect(policy, 30))
    sampler.close()
    return rollouts, episodes


def _assert_same(a: tuple[list, list], b: tuple[list, list]) -> None:
    for x, y in zip(a[0], b[0]):
        assert torch.equal(x.logprobs, y.logprobs) and torch.equal(x.mask, y.mask)
        for k in x.state:
            assert torch.equal(x.state[k], y.state[k]), k
        for k in x.extras:
            assert torch.equal(x.extras[k], y.extras[k]), k
    assert len(a[1]) == len(b[1]) > 5
    for e, f in zip(a[1], b[1]):
        assert np.array_equal(e.obs, f.obs) and np.array_equal(e.actions, f.actions)


def _policy() -> GaussianPolicy:
    torch.manual_seed(0)
    return GaussianPolicy(GaussianActorCritic(10, 2, (32, 32), log_std_init=0.0))


def test_rowwise_rows_do_not_depend_on_the_batch():
    net = _policy().net.actor
    x = torch.randn(7, 10)
    full = rowwise(net, x)
    assert torch.equal(torch.cat([rowwise(net, x[:3]), rowwise(net, x[3:4]), rowwise(net, x[4:])]), full)
    torch.testing.assert_close(full, net(x))


def test_env_resets_follow_the_env_not_its_place_in_a_vector_env():
    whole, part = make_vec_env(REACH, 4, seed=5), make_vec_env(REACH, 2, seed=5, indices=[2, 3])
    assert np.array_equal(whole.reset(seed=[5] * 4)[0][2:], part.reset(seed=[5] * 2)[0])
    assert not np.array_equal(whole.reset(seed=[6] * 4)[0][2:], part.reset(seed=[5] * 2)[0])


def test_async_vector_env_gives_the_sync_trajectories():
    policy = _policy()
    sync = _run(VecEnvSampler(REACH, 3, seed=7, env_kwargs=SHORT), policy)
    _assert_same(sync, _run(VecEnvSampler(REACH, 3, seed=7, vector="async", env_kwargs=SHORT), policy))


def test_ray_workers_give_the_in_process_trajectories(local_ray):
    """5 envs on 2 workers (3 + 2): the same rollouts, episodes and bootstrap values as one in-process vector env,
    for the PPO policy and for SAC (PEBBLE's learner), across a restart."""
    from mmalign.robotics.ray_sampler import RaySampler
    from mmalign.robotics.sac import SAC, SACConfig

    policy = _policy()
    local = _run(VecEnvSampler(REACH, 5, seed=7, env_kwargs=SHORT), policy)
    _assert_same(local, _run(RaySampler(REACH, 5, seed=7, env_kwargs=SHORT, workers=2), policy))
    with pytest.raises(ValueError, match=r"ray_workers=3 needs 3 CPUs .* has 2"):
        RaySampler(REACH, 5, workers=3)  # on the 2-CPU instance: refused, not left waiting
    sac = SAC(10, 2, SACConfig(hidden=[16]))
    sac.random_actions = False
    local = _run(VecEnvSampler(REACH, 3, seed=1, env_kwargs=SHORT), sac)
    _assert_same(local, _run(RaySampler(REACH, 3, seed=1, vector="async", env_kwargs=SHORT, workers=2), sac))


def test_ray_sampler_says_how_to_install_ray(monkeypatch):
    from mmalign.robotics.ray_sampler import import_ray, shares

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    with pytest.raises(ImportError, match=r"pip install 'mmalign\[ray\]'"):
        import_ray()
    assert shares(5, 2) == [[0, 1, 2], [3, 4]] and shares(4, 4) == [[0], [1], [2], [3]]
    with pytest.raises(ValueError, match="ray_workers=3 must be between 1 and num_envs=2"):
        shares(2, 3)


def test_sampler_settings_are_checked():
    from mmalign.config import ConfigError
    from mmalign.robotics.task import RobotTaskConfig

    with pytest.raises(ConfigError, match="ray_workers"):
        RobotTaskConfig(num_envs=2, ray_workers=3)
    with pytest.raises(ConfigError, match="'async'"):
        RobotTaskConfig(vector="threads")
    with pytest.raises(ConfigError, match="sampler"):
        RobotTaskConfig(sampler="dask")


@pytest.mark.slow
def test_prefppo_on_ray_workers_learns_reach_as_the_in_process_run_does(local_ray, tmp_path):
    """The shipped PrefPPO config (40 iterations, 8 envs, 300 oracle labels) with its envs on 2 Ray workers: its first
    10 iterations log the rows of the in-process run exactly, and it learns (2.7x the time of a 10-iteration check;
    the in-process run of all 40 logs the same rows, docs/robotics.md)."""
    from pathlib import Path

    from mmalign.cli import main
    from mmalign.tracking import read_metrics

    config = str(Path(__file__).parents[1] / "configs/robotics/reach_prefppo.yaml")
    args = ["train", config, f"trainer.output_dir={tmp_path}", "task_args.video=false"]
    assert main([*args, "trainer.name=ray", "task_args.sampler=ray", "task_args.ray_workers=2"]) == 0
    assert main([*args, "trainer.name=local", "trainer.steps=10"]) == 0
    ray_rows, local_rows = read_metrics(tmp_path / "ray/metrics.jsonl"), read_metrics(tmp_path / "local/metrics.jsonl")
    strip = lambda r: {k: v for k, v in r.items() if "time" not in k}  # noqa: E731
    assert [strip(r) for r in ray_rows if r["step"] <= 10] == [strip(r) for r in local_rows]
    evals = [r for r in ray_rows if "eval/success_rate" in r]
    first, last = evals[0], evals[-1]
    assert last["eval/feedback"] == 300 and last["eval/reward_model_accuracy"] >= 0.85
    assert last["eval/success_rate"] >= first["eval/success_rate"] + 0.3  # 0.0 -> 0.35 on seed 0
    assert last["eval/return"] >= first["eval/return"] + 8  # -27.2 -> -15.8


def test_device_settings_are_checked():
    from mmalign.config import ConfigError
    from mmalign.robotics.pearl_run import PearlRunConfig
    from mmalign.robotics.pebble import PebbleConfig

    with pytest.raises(ConfigError, match="device: device 'tpu' is not one of auto, cpu, cuda"):
        PebbleConfig(device="tpu")
    assert PearlRunConfig(device="cpu").device == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="torch sees no GPU here: use device=cpu"):
            PearlRunConfig(device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_robot_learners_run_on_cuda(tmp_path):
    """PrefPPO (the Trainer's device), PEBBLE and PEARL with their networks on the GPU, a few steps each."""
    from pathlib import Path

    from test_robot_task import PEBBLE, PREFPPO, SMALL_PEBBLE, SMALL_PREFPPO

    from mmalign.cli import main

    pearl = str(Path(__file__).parents[1] / "configs/robotics/pearl_planar.yaml")
    assert main(["train", PREFPPO, f"trainer.output_dir={tmp_path}", "trainer.cpu=false", "trainer.steps=2",
                 *SMALL_PREFPPO]) == 0
    assert main(["train", PEBBLE, f"output_dir={tmp_path}", "device=cuda", *SMALL_PEBBLE, "total_env_steps=300"]) == 0
    assert main(["train", pearl, f"output_dir={tmp_path}", "device=cuda", "seeds=[0]", "methods=[cpa-rrl]",
                 "pearl.episodes_per_policy=2", "pearl.segments=12", "pearl.reward_pairs=50", "pearl.iql.steps=50",
                 "pearl.eval_episodes=1"]) == 0

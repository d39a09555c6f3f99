"""The video task through the shared trainer on a tiny config: clips rendered from MuJoCo, a model pre-trained and a
world model trained on first use, GRPO steps, held-out evaluation with the physics check, MP4s and curves."""


import imageio_ffmpeg
import numpy as np
import pytest

from mmalign.cache import read_made_with
from mmalign.config import ConfigError
from mmalign.diffusion.video.task import FramewiseReward, VideoTask
from mmalign.envs.clips import ClipConfig
from mmalign.run_config import load_run_config
from mmalign.trainer import Trainer


@pytest.mark.slow
def test_tiny_video_grpo_run_leaves_mp4s_and_curves(tmp_path):
    cfg = load_run_config("configs/video/push_pfc.yaml", [
        "task_args.tiny=true", f"task_args.embedded_dir={tmp_path}/emb", "task_args.sampling.num_steps=2",
        "task_args.eval_conditions=4", "task_args.trained_steps.end=1",
        "trainer.steps=2", "trainer.contexts_per_step=2", "trainer.num_samples=2",
        "trainer.eval_every=0", f"trainer.output_dir={tmp_path}/runs"])
    run = Trainer(cfg).train()
    assert (run / "samples_before.mp4").exists() and (run / "samples_after.mp4").exists()
    assert (run / "pfc.png").exists() and (run / "rewards.png").exists() and (run / "samples.png").exists()
    frames = imageio_ffmpeg.read_frames(str(run / "samples_after.mp4"))
    assert next(frames)["codec"].startswith("h264") and len(list(frames)) == 8  # H.264, every frame of the clips
    rows = (run / "metrics.jsonl").read_text()
    assert "eval/reward/pfc" in rows and "eval/physics/jerk" in rows


def test_missing_world_model_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="world_model: embedded"):
        VideoTask(VideoTask.Config(tiny=True, embedded_dir=str(tmp_path), world_model=str(tmp_path / "nope")))


def test_world_model_loader_needs_a_world_model_folder(tmp_path):
    with pytest.raises(ConfigError, match="world_model_loader: loads a world_model folder"):
        VideoTask(VideoTask.Config(tiny=True, embedded_dir=str(tmp_path), world_model_loader="pkg.mod:Loader"))


def test_embedded_video_model_is_keyed_by_its_config(tmp_path):
    from mmalign.diffusion.video.pretrain import VideoPretrainConfig, embedded_video_model

    data = {"frames": np.random.default_rng(0).integers(0, 256, (4, 3, 8, 8, 3), dtype=np.uint8),
            "prompts": np.array(["push block up", "push block down"] * 2)}
    clips, train = ClipConfig(episodes=1, frames=3, size=8), np.arange(4)

    def model(steps: int):
        cfg = VideoPretrainConfig(steps=steps, batch_size=2, width=8, text_hidden=8)
        return embedded_video_model(tmp_path, data, train, clips, cfg)

    one, two = model(1), model(2)
    assert one != two and read_made_with(two)["pretrain"]["steps"] == 2 and read_made_with(one)["clips"]["size"] == 8
    assert model(1) == one and len(list(tmp_path.glob("base-*"))) == 2


def test_framewise_reward_averages_each_clip():
    clips = [np.full((3, 4, 4, 3), v, np.uint8) for v in (10, 200)]
    fn = FramewiseReward(lambda c, imgs: [float(im.mean()) for im in imgs])
    assert fn([{}, {}], clips) == [10.0, 200.0]


@pytest.mark.slow
def test_staged_evaluation_chains_stages_and_keeps_the_critics_pick(tmp_path):
    """`staged: {stages: 2, candidates: 3}`: each held-out clip is a chain of 2 stages from the held-out first frame,
    scored with the physics check; one candidate is the chain without selection; a bad setting is a config error."""
    from mmalign.diffusion.video.staged import StagedSettings

    def task(candidates: int) -> VideoTask:
        return VideoTask(VideoTask.Config(tiny=True, embedded_dir=str(tmp_path), eval_conditions=1,
                                          staged=StagedSettings(stages=2, candidates=candidates)))

    staged, chain = task(3), task(1)
    m3, m1 = staged.evaluate(staged.policy), chain.evaluate(chain.policy)
    frames = chain.policy.num_frames
    assert all(len(c) == 1 + 2 * frames for c in staged.eval_records + chain.eval_records)
    assert "physics/jerk" in m3 and "reward/pfc" in m1
    for long3, long1 in zip(staged.eval_records, chain.eval_records):
        assert np.array_equal(long3[0], long1[0])  # the same held-out first frame
    with pytest.raises(ConfigError, match="candidates"):
        load_run_config("configs/video/push_pfc.yaml", ["task_args.staged.candidates=0"])

"""The video task through the shared trainer on a tiny config: clips rendered from MuJoCo, a model pre-trained and a
world model trained on first use, GRPO steps, held-out evaluation with the physics check, MP4s and curves."""

import cv2
import pytest
from mmalign.diffusion.video_task import FramewiseReward, VideoTask

from mmalign.run_config import load_run_config
from mmalign.trainer import Trainer


@pytest.mark.slow
def test_tiny_video_grpo_run_leaves_mp4s_and_curves(tmp_path):
    cfg = load_run_config("configs/video/push_pfc.yaml", [
        "task_args.tiny=true", f"task_args.embedded_dir={tmp_path}/emb", "task_args.num_steps=2",
        "task_args.eval_conditions=4", "task_args.train_end=1",
        "trainer.steps=2", "trainer.contexts_per_step=2", "trainer.num_samples=2",
        "trainer.eval_every=0", f"trainer.output_dir={tmp_path}/runs"])
    run = Trainer(cfg).train()
    assert (run / "samples_before.mp4").exists() and (run / "samples_after.mp4").exists()
    assert (run / "pfc.png").exists() and (run / "rewards.png").exists()
    cap = cv2.VideoCapture(str(run / "samples_after.mp4"))
    assert cap.read()[0]
    rows = (run / "metrics.jsonl").read_text()
    assert "eval/reward/pfc" in rows and "eval/physics/jerk" in rows


def test_missing_world_model_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="world_model: embedded"):
        VideoTask(VideoTask.Config(tiny=True, embedded_dir=str(tmp_path), world_model=str(tmp_path / "nope")))


def test_framewise_reward_averages_each_clip():
    import numpy as np

    clips = [np.full((3, 4, 4, 3), v, np.uint8) for v in (10, 200)]
    fn = FramewiseReward(lambda c, imgs: [float(im.mean()) for im in imgs])
    assert fn([{}, {}], clips) == [10.0, 200.0]

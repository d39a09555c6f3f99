"""The PFC reward (MIND-V Eq. 4-5) by hand, the world model's save / load, and its separation on real MuJoCo clips:
clips played in order score above the same clips shuffled, reversed or with a teleported block (held-out episodes)."""

import json
import math
import sys

import numpy as np
import pytest
import torch

from mmalign.config import ConfigError
from mmalign.diffusion.video.task import VideoTask
from mmalign.diffusion.video.world_model import (
    JEPA,
    JEPAConfig,
    PFCConfig,
    PFCReward,
    WorldModelTrainConfig,
    auroc,
    embedded_world_model,
    load_world_model,
    pfc_aggregate,
    save_world_model,
    to_video,
    train_world_model,
    training_frames,
    window_starts,
)
from mmalign.envs.clips import ClipConfig, corrupted, load_clips, motion_continuity, split_episodes


def test_pfc_aggregate_by_hand_weights_the_worst_window_most():
    s = torch.tensor([[0.9, 0.5]])
    w = [math.exp(0.1 / 0.5), math.exp(0.5 / 0.5)]  # softmax((1 - s) / tau), tau = 0.5
    expected = (w[0] * 0.9 + w[1] * 0.5) / sum(w)
    assert torch.allclose(pfc_aggregate(s, 0.5), torch.tensor([expected]))
    assert pfc_aggregate(s, 0.01) < pfc_aggregate(s, 100.0) < s.max()  # low tau -> the worst window
    assert torch.allclose(pfc_aggregate(s, 1e4), s.mean(1), atol=1e-4)
    assert window_starts(8, PFCConfig(3, 2, 1)) == [0, 1, 2, 3]
    assert window_starts(8, PFCConfig(3, 2, 2)) == [0, 2]
    with pytest.raises(ValueError, match="shorter than one PFC window"):
        window_starts(4, PFCConfig(3, 2))


def test_auroc_by_hand():
    assert auroc([3, 4], [1, 2]) == 1.0 and auroc([1], [2]) == 0.0 and auroc([1, 2], [2, 0]) == 0.625


def test_training_frames_add_rendered_episodes_none_shared_with_the_set(tmp_path):
    data, idx = load_clips(ClipConfig(episodes=2), tmp_path), np.array([0, 2, 5])
    np.testing.assert_array_equal(training_frames(data, idx, 0, tmp_path), data["frames"][idx])
    frames = training_frames(data, idx, 1, tmp_path)
    assert len(list(tmp_path.glob("clips-*/clips.npz"))) == 2 and len(frames) == 3 + ClipConfig.clips_per_episode
    np.testing.assert_array_equal(frames[:3], data["frames"][idx])
    assert not any(np.array_equal(a, b) for a in frames[3:] for b in data["frames"])


def test_world_model_round_trips_and_errors(tmp_path):
    torch.manual_seed(0)
    model = JEPA(JEPAConfig(size=8, dim=8, width=8))
    clips = np.random.default_rng(0).integers(0, 256, (2, 6, 8, 8, 3), dtype=np.uint8)
    path = save_world_model(model, tmp_path / "wm")
    assert json.loads((path / "config.json").read_text())["model_type"] == "mmalign-jepa"
    assert not list(path.glob("*.bin")) and not list(path.glob("*.pt"))
    a, b = PFCReward(model)(None, list(clips)), PFCReward(path)(None, list(clips))
    assert np.allclose(a, b) and len(a) == 2
    plain = save_world_model(JEPA(JEPAConfig(size=8, dim=8, width=8, norm=False)), tmp_path / "plain")
    assert not load_world_model(plain).cfg.norm and load_world_model(path).cfg.norm
    with pytest.raises(FileNotFoundError, match="train one"):
        load_world_model(tmp_path / "missing")
    with pytest.raises(ValueError, match="make them agree"):
        PFCReward(model, context=2)(None, list(clips))
    with pytest.raises(ValueError, match="uint8 clips"):
        PFCReward(model)(None, [c.astype(np.float32) for c in clips])


def test_clips_and_world_model_are_keyed_by_the_config_that_made_them(tmp_path):
    cfg = ClipConfig(episodes=2, episode_steps=30)
    data = load_clips(cfg, tmp_path)
    (file,) = tmp_path.glob("clips-*/clips.npz")
    made = file.stat().st_mtime_ns
    np.testing.assert_array_equal(load_clips(cfg, tmp_path)["frames"], data["frames"])
    assert file.stat().st_mtime_ns == made  # reused, not rendered again
    other = load_clips(ClipConfig(episodes=1, episode_steps=30), tmp_path)  # another config: rendered beside it
    assert len(list(tmp_path.glob("clips-*/clips.npz"))) == 2 and len(other["frames"]) < len(data["frames"])
    train, small = np.arange(len(data["frames"])), JEPAConfig(dim=8, width=8)
    short = embedded_world_model(tmp_path, data, train, cfg, 0, small, WorldModelTrainConfig(steps=2, batch_size=4))
    longer = embedded_world_model(tmp_path, data, train, cfg, 0, small, WorldModelTrainConfig(steps=3, batch_size=4))
    assert short != longer and json.loads((longer / "made_with.json").read_text())["train"]["steps"] == 3
    a, b = load_world_model(short).state_dict(), load_world_model(longer).state_dict()
    assert not all(torch.equal(a[k], b[k]) for k in a)  # the 2-step model was not reused for 3 steps
    again = embedded_world_model(tmp_path, data, train, cfg, 0, small, WorldModelTrainConfig(steps=2, batch_size=4))
    assert again == short and len(list(tmp_path.glob("world_model-*"))) == 2


def test_a_model_folder_never_names_code_to_import(tmp_path, monkeypatch):
    model = JEPA(JEPAConfig(size=8, dim=8, width=8))
    folder = tmp_path / "wm"
    save_world_model(model, folder / "inner")
    (folder / "config.json").write_text(json.dumps({"class": "wm_loader_for_test:Loader"}))
    (tmp_path / "wm_loader_for_test.py").write_text(
        "from pathlib import Path\n\nfrom mmalign.diffusion.video.world_model import load_world_model\n\n\n"
        "class Loader:\n    @staticmethod\n    def from_pretrained(path):\n"
        "        return load_world_model(Path(path) / 'inner')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "wm_loader_for_test", raising=False)
    for load in (load_world_model, PFCReward):
        with pytest.raises(ConfigError, match=r"names code to import.*world_model_loader=wm_loader_for_test:Loader"):
            load(folder)
    with pytest.raises(ConfigError, match="names code to import"):
        VideoTask(VideoTask.Config(tiny=True, embedded_dir=str(tmp_path / "emb"), world_model=str(folder)))
    assert "wm_loader_for_test" not in sys.modules and not (tmp_path / "emb").exists()  # nothing imported or built
    (tmp_path / "videomae").mkdir()
    (tmp_path / "videomae" / "config.json").write_text(json.dumps({"model_type": "videomae"}))
    with pytest.raises(ConfigError, match="model_type must be one of"):
        load_world_model(tmp_path / "videomae")
    clips = list(np.random.default_rng(0).integers(0, 256, (2, 6, 8, 8, 3), dtype=np.uint8))
    named = PFCReward(folder, loader="wm_loader_for_test:Loader")  # the user's run config names the loader
    assert np.allclose(named(None, clips), PFCReward(model)(None, clips))


@pytest.mark.slow
def test_pfc_separates_real_clips_from_shuffled_reversed_and_teleported(tmp_path):
    cfg = ClipConfig(episodes=40)
    data = load_clips(cfg, tmp_path)
    train, held = split_episodes(data)
    model = train_world_model(data["frames"][train], JEPAConfig(), WorldModelTrainConfig())
    reward = PFCReward(model)
    pos = reward(None, data["frames"][held])
    # measured here: shuffled 0.82, reversed 0.79, teleport 0.87 (chance 0.5; 0.71 / 0.71 / 0.78 with the narrower
    # encoder of 16 channels and embedding 32, reversed 0.61 without the arrow-of-time term); floors leave room for
    # other CPUs' BLAS
    for kind, floor in [("shuffled", 0.75), ("reversed", 0.72), ("teleport", 0.8)]:
        idx = held[:20] if kind == "teleport" else held
        neg = reward(None, corrupted(data, idx, cfg, kind))
        assert auroc(pos, neg) > floor, (kind, auroc(pos, neg))
    tele = corrupted(data, held[:4], cfg, "teleport")
    assert max(motion_continuity(c)["jump"] for c in tele) > 2.0  # the OpenCV check sees the teleport too


def tiny_vjepa2_folder(path):
    """A tiny transformers V-JEPA 2 (4 x 4 patches, tubelets of 2 frames) saved as a model folder."""
    from transformers import VJEPA2Config, VJEPA2Model

    torch.manual_seed(0)
    cfg = VJEPA2Config(patch_size=4, crop_size=8, frames_per_clip=4, tubelet_size=2, hidden_size=16,
                       num_attention_heads=2, num_hidden_layers=1, pred_hidden_size=16, pred_num_attention_heads=2,
                       pred_num_hidden_layers=1, num_pooler_layers=1)
    VJEPA2Model(cfg).save_pretrained(path)
    return path


def test_transformers_vjepa2_folders_load_as_the_pfc_world_model(tmp_path):
    """A `VJEPA2Model.save_pretrained` folder is a built-in world model: PFCReward scores clips with it, its forecast
    reads the context frames only, and windows that tubelets cannot cut are a clear error."""
    from mmalign.diffusion.video.vjepa2 import VJEPA2WorldModel

    folder = tiny_vjepa2_folder(tmp_path / "vjepa2")
    model = load_world_model(folder)
    assert isinstance(model, VJEPA2WorldModel) and not any(p.requires_grad for p in model.parameters())
    clips = np.random.default_rng(0).integers(0, 256, (3, 6, 8, 8, 3), dtype=np.uint8)
    reward = PFCReward(folder, context=2, future=2)
    scores = reward.window_scores(clips)
    assert scores.shape == (3, 3) and bool((scores.abs() <= 1 + 1e-5).all())
    assert len(reward(None, clips)) == 3
    windows = to_video(clips)[:, :4]
    other = windows.clone()
    other[:, 2:] = -other[:, 2:]  # another future, the same context
    (pred, target), (pred2, target2) = model.forecast(windows, 2), model.forecast(other, 2)
    assert torch.equal(pred, pred2) and not torch.equal(target, target2)
    with pytest.raises(ValueError, match="tubelets of 2"):
        PFCReward(folder, context=3, future=2).window_scores(clips)

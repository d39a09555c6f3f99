"""Cached artefacts are keyed by the config that made them (mmalign.cache): the helper itself, and the offline
datasets of the robotics adapter, which record the request that collected them."""

from dataclasses import dataclass

import numpy as np
import pytest

from mmalign.cache import MADE_WITH, CacheError, cached, config_key, differences, made_with, read_made_with


@dataclass
class _Cfg:
    steps: int = 3
    counts: tuple = (1,)


def _build(calls: list):
    def build(out):
        calls.append(out)
        (out / "weights.txt").write_text(str(len(calls)))

    return build


def test_record_key_and_differences():
    a, b = made_with(pretrain=_Cfg(), max_text_length=8), made_with(max_text_length=8, pretrain=_Cfg())
    assert a == {"pretrain": {"steps": 3, "counts": [1]}, "max_text_length": 8}
    assert config_key(a) == config_key(b) and len(config_key(a)) == 12
    assert config_key(made_with(pretrain=_Cfg(steps=30))) != config_key(made_with(pretrain=_Cfg()))
    assert differences(made_with(p=_Cfg(steps=30)), made_with(p=_Cfg(steps=1200))) == ["p.steps: 30 -> 1200"]


def test_cached_builds_once_per_config_and_keeps_both(tmp_path):
    calls: list = []
    short, long = made_with(pretrain=_Cfg(steps=30)), made_with(pretrain=_Cfg(steps=1200))
    a = cached(tmp_path, "shapes", short, _build(calls), "model")
    assert cached(tmp_path, "shapes", short, _build(calls), "model") == a and len(calls) == 1  # reused
    b = cached(tmp_path, "shapes", long, _build(calls), "model")
    assert b != a and len(calls) == 2 and a.exists()  # built beside the first, never the first reused
    assert read_made_with(a) == short and read_made_with(b) == long
    assert a.name == f"shapes-{config_key(short)}"


def test_cached_refuses_an_edited_record(tmp_path):
    calls: list = []
    rec = made_with(pretrain=_Cfg())
    folder = cached(tmp_path / "a", "wm", rec, _build(calls), "world model")
    (folder / MADE_WITH).write_text('{"pretrain": {"steps": 30, "counts": [1]}}')
    with pytest.raises(CacheError, match=r"pretrain.steps: 30 -> 3.*delete it"):
        cached(tmp_path / "a", "wm", rec, _build(calls), "world model")
    assert len(calls) == 1  # nothing built for the refused request


def test_offline_dataset_is_reused_only_for_the_request_that_collected_it(tmp_path):
    pytest.importorskip("mujoco")
    from mmalign.robotics.offline_data import collect_dataset, load_dataset, save_dataset
    from mmalign.robotics.pearl import PearlConfig, get_dataset

    ds = collect_dataset("reach", episodes_per_policy=1, seed=0, max_episode_steps=20)
    path = save_dataset(ds, tmp_path / "reach.npz")
    back = load_dataset(path)
    assert back.made_with == ds.made_with and back.made_with["episodes_per_policy"] == 1
    same = PearlConfig(episodes_per_policy=1, max_episode_steps=20)
    assert get_dataset("reach", same, {"reach": back}) is back
    assert get_dataset("mmalign/Reach-v0", same, {"mmalign/Reach-v0": back}) is back  # the id names the same task
    with pytest.raises(CacheError, match=rf"{path}.*episodes_per_policy: 1 -> 25.*delete it"):
        get_dataset("reach", PearlConfig(max_episode_steps=20), {"reach": back})
    with pytest.raises(CacheError, match="max_episode_steps: 20 -> 100"):
        get_dataset("reach", PearlConfig(episodes_per_policy=1), {"reach": back})
    back.made_with = None  # a file of unknown provenance
    with pytest.raises(CacheError, match="no record of the settings"):
        get_dataset("reach", same, {"reach": back})
    fresh: dict = {}
    assert np.array_equal(get_dataset("reach", same, fresh).observations, ds.observations)  # collected on a miss


def test_pearl_recipe_refuses_a_data_dir_of_other_settings(tmp_path, capsys):
    pytest.importorskip("mujoco")
    from pathlib import Path

    from mmalign.cli import main
    from mmalign.robotics.offline_data import collect_dataset, save_dataset

    save_dataset(collect_dataset("reach", episodes_per_policy=1, seed=0), tmp_path / "data" / "reach.npz")
    cfg = str(Path(__file__).parents[1] / "configs" / "robotics" / "pearl_planar.yaml")
    assert main(["train", cfg, "name=stale", f"data_dir={tmp_path / 'data'}", f"output_dir={tmp_path}",
                 "pearl.episodes_per_policy=2"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "episodes_per_policy: 1 -> 2" in err and "reach.npz" in err

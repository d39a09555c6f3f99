"""PEARL pieces: cross-task preference alignment (GW-OT), robust reward learning, offline datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("ot")

from mmalign.robotics.cpa import (  # noqa: E402
    CPAConfig,
    SourceTask,
    all_pairs,
    cross_task_labels,
    gw_plan,
    intra_task_cost,
    label_matrix,
    segment_features,
    transfer_labels,
)


def _source(n: int = 30, dim: int = 12, seed: int = 0) -> tuple[SourceTask, np.ndarray]:
    """n random segment vectors with a hidden 'return' per segment; every pair labelled by return."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, dim)) * np.linspace(0.5, 2.0, dim)  # anisotropic: no accidental symmetries
    ret = feats[:, 0] + 0.5 * feats[:, 1]
    a, b = all_pairs(n)
    return SourceTask(feats, a, b, (ret[a] > ret[b]).astype(float)), ret


# ---------------------------------------------------------------------------------------------------------------------
# CPA


def test_identity_coupling_returns_source_labels_exactly():
    src, _ = _source(20)
    z, m = label_matrix(20, src.idx_a, src.idx_b, src.labels)
    labels, mass = transfer_labels(np.eye(20) / 20, z, m, src.idx_a, src.idx_b)
    np.testing.assert_array_equal(labels, src.labels)
    np.testing.assert_allclose(mass, 1.0)


def test_unnormalised_transfer_would_shrink_by_n_squared():
    """Reviewer 3's point: without the marginal normalisation an identity coupling gives label / n^2."""
    src, _ = _source(20)
    z, m = label_matrix(20, src.idx_a, src.idx_b, src.labels)
    t = np.eye(20) / 20
    raw = np.einsum("kp,kl,lp->p", t[:, src.idx_a], m * z, t[:, src.idx_b])
    np.testing.assert_allclose(raw, src.labels / 400)


@pytest.mark.parametrize("method", ["exact", "entropic"])
def test_identical_sets_give_back_source_labels(method):
    src, _ = _source(30)
    res = cross_task_labels([src], src.features, src.idx_a, src.idx_b, CPAConfig(method=method))
    np.testing.assert_allclose(res.labels, src.labels, atol=1e-6)


@pytest.mark.parametrize("method", ["exact", "entropic"])
def test_permuted_copy_is_matched_back(method):
    src, _ = _source(30)
    perm = np.random.default_rng(1).permutation(30)  # target segment i is source segment perm[i]
    tgt = src.features[perm]
    plan = gw_plan(intra_task_cost(src.features), intra_task_cost(tgt), CPAConfig(method=method))
    np.testing.assert_array_equal(plan.argmax(0), perm)
    a, b = all_pairs(30)
    res = cross_task_labels([src], tgt, a, b, CPAConfig(method=method))
    z, _ = label_matrix(30, src.idx_a, src.idx_b, src.labels)
    np.testing.assert_allclose(res.labels, z[perm[a], perm[b]], atol=1e-6)


def test_target_may_live_in_another_space():
    """GW only compares intra-task distances: an isometric copy (rotated, shifted, padded) is matched too."""
    src, _ = _source(25, dim=6)
    rng = np.random.default_rng(2)
    rot, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    tgt = np.concatenate([src.features @ rot + 3.0, np.zeros((25, 4))], 1)  # (25, 10)
    res = cross_task_labels([src], tgt, src.idx_a, src.idx_b, CPAConfig(standardise=False))
    np.testing.assert_allclose(res.labels, src.labels, atol=1e-6)


def test_labels_lie_in_unit_interval_with_soft_labels_and_partial_coverage():
    src, _ = _source(20)
    rng = np.random.default_rng(3)
    keep = rng.random(len(src.labels)) < 0.3  # only 30% of source pairs labelled, soft labels
    soft = SourceTask(src.features, src.idx_a[keep], src.idx_b[keep], rng.random(keep.sum()))
    tgt = rng.normal(size=(25, 7))
    a, b = all_pairs(25)
    for cfg in (CPAConfig(), CPAConfig(method="entropic", max_iter=100)):
        res = cross_task_labels([soft, src], tgt, a, b, cfg)
        assert res.labels.min() >= 0.0 and res.labels.max() <= 1.0
        assert res.mass.min() >= 0.0 and res.mass.max() <= 1.0 + 1e-9
        assert len(res.plans) == 2


def test_label_antisymmetry():
    src, _ = _source(20)
    tgt = np.random.default_rng(4).normal(size=(25, 5))
    a, b = all_pairs(25)
    cfg = CPAConfig(method="entropic", max_iter=100)
    ab = cross_task_labels([src], tgt, a, b, cfg).labels
    ba = cross_task_labels([src], tgt, b, a, cfg).labels
    np.testing.assert_allclose(ab + ba, 1.0, atol=1e-6)


def test_entropic_epsilon_choice():
    """At n = 100 on [0, 1] costs, epsilon = 1e-2 washes the plan out; the default 1e-3 keeps it sharp."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 20))
    perm = rng.permutation(100)
    cs, ct = intra_task_cost(x), intra_task_cost(x[perm])
    washed = gw_plan(cs, ct, CPAConfig(method="entropic", epsilon=1e-2))
    sharp = gw_plan(cs, ct, CPAConfig(method="entropic"))
    assert washed.max() * 100 < 0.5  # a column's largest entry holds < half of its mass
    assert sharp.max(0).min() * 100 > 0.99
    assert (sharp.argmax(0) == perm).all()


def test_real_target_labels_override():
    src, _ = _source(20)
    tgt = np.random.default_rng(5).normal(size=(20, 4))
    a, b = all_pairs(20)
    res = cross_task_labels([src], tgt, a, b, target_labels=(np.array([0, 3]), np.array([1.0, 0.0])))
    assert res.labels[0] == 1.0 and res.labels[3] == 0.0 and res.mass[0] == 1.0


def test_segment_features_relative_is_task_agnostic_for_reach():
    """For reach (no object) the interaction point is the tip: obj - goal becomes ee - goal."""
    obs = np.zeros((2, 3, 10))
    obs[..., 0:2] = [0.1, 0.2]
    obs[..., 8:10] = [0.0, 0.05]
    f = segment_features(obs, np.zeros((2, 3, 2))).reshape(2, 3, 8)
    np.testing.assert_allclose(f[0, 0, :2], [0.1, 0.15])
    np.testing.assert_allclose(f[0, 0, 2:4], 0.0)
    assert segment_features(obs, np.zeros((2, 3, 2)), "flat").shape == (2, 36)


# ---------------------------------------------------------------------------------------------------------------------
# RRL

from mmalign.robotics.rrl import RRLConfig, fit_reward, gaussian_kl_to_scale, ranking_accuracy, rrl_loss  # noqa: E402


def _regions(n: int, h: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Segments wholly in one of two regions of state space (obs[..., 0] near +1 or -1); true step reward obs[..., 1].

    Returns:
        obs (n, h, 4), actions (n, h, 1), true returns (n,), region (n,) bool (True = the region with noisy labels).
    """
    g = torch.Generator().manual_seed(seed)
    region = torch.rand(n, generator=g) < 0.5
    obs = torch.randn(n, h, 4, generator=g)
    obs[..., 0] = torch.where(region[:, None], 1.0, -1.0) + 0.3 * torch.randn(n, h, generator=g)
    return obs, 0.1 * torch.randn(n, h, 1, generator=g), obs[..., 1].sum(-1), region


def _noisy_pairs(obs, act, ret, region, seed: int, flip_noisy: float, flip_clean: float):
    """Pairs within one region, labelled by true return, flipped with a region-dependent probability."""
    g = torch.Generator().manual_seed(seed + 100)
    a, b = torch.randint(0, len(ret), (2, 2 * len(ret)), generator=g)
    keep = region[a] == region[b]
    a, b = a[keep], b[keep]
    y = (ret[a] > ret[b]).float()
    flip = torch.rand(len(y), generator=g) < torch.where(region[a], flip_noisy, flip_clean)
    return obs[a], act[a], obs[b], act[b], torch.where(flip, 1 - y, y)


def test_kl_regulariser_is_zero_at_target_scale_and_positive_elsewhere():
    std = torch.tensor([0.25, 0.5, 1.0])
    kl = gaussian_kl_to_scale(std, 0.5)
    assert kl[1] == pytest.approx(0.0, abs=1e-7) and kl[0] > 0 and kl[2] > 0
    assert kl[2] == pytest.approx(torch.log(torch.tensor(0.5)).item() + 2.0 - 0.5, abs=1e-6)


def test_rrl_gradient_reaches_the_variance_and_bt_has_none():
    obs, act, ret, region = _regions(16, 5, 0)
    batch = _noisy_pairs(obs, act, ret, region, 0, 0.0, 0.0)
    from mmalign.robotics.rrl import GaussianReward

    model = GaussianReward(4, 1, (8,))
    rrl_loss(model, *batch, RRLConfig())["loss"].backward()
    assert model.head.weight.grad[1].abs().sum() > 0  # the log-std row learns
    model.zero_grad()
    out = rrl_loss(model, *batch, RRLConfig(stochastic=False))
    out["loss"].backward()
    assert model.head.weight.grad[1].abs().sum() == 0 and out["kl"] == 0


def test_rrl_predicts_larger_variance_where_labels_are_noisier(learning):
    seed = learning.seed
    obs, act, ret, region = _regions(200, 10, seed)
    pairs = _noisy_pairs(obs, act, ret, region, seed, 0.4, 0.0)
    model, _ = fit_reward(*pairs, RRLConfig(epochs=30, hidden=(32, 32), seed=seed))
    ho, hact, _, hreg = _regions(200, 10, seed + 50)
    with torch.no_grad():
        std = model(ho, hact).std
    ratio = (std[hreg].mean() / std[~hreg].mean()).item()
    learning.report(std_ratio=ratio)
    assert ratio > 1.15  # measured 1.33 / 1.48 at seeds 0 / 1 (docs/pearl.md); a std that never learns gives 1.0


def test_rrl_ranks_held_out_segments_as_well_as_bt_under_label_noise(learning):
    """30% of labels flipped everywhere; mean held-out ranking accuracy over 3 seeds, RRL vs plain BT."""
    acc = {True: [], False: []}
    for seed in range(3 * learning.seed, 3 * learning.seed + 3):
        obs, act, ret, region = _regions(200, 10, seed)
        pairs = _noisy_pairs(obs, act, ret, region, seed, 0.3, 0.3)
        ho, hact, hret, _ = _regions(200, 10, seed + 50)
        for stochastic in (True, False):
            cfg = RRLConfig(stochastic=stochastic, epochs=30, hidden=(32, 32), seed=seed)
            acc[stochastic].append(ranking_accuracy(fit_reward(*pairs, cfg)[0], ho, hact, hret))
    rrl, bt = np.mean(acc[True]), np.mean(acc[False])
    learning.report(rrl=rrl, bt=bt)
    assert rrl > 0.55 and bt > 0.55  # both learn through the noise
    assert rrl >= bt - 0.02  # at least as good, up to seed noise


# ---------------------------------------------------------------------------------------------------------------------
# offline datasets


def test_offline_dataset_round_trip_and_mixed_quality(tmp_path):
    pytest.importorskip("mujoco")
    from mmalign.robotics.offline_data import collect_dataset, load_dataset, save_dataset

    ds = collect_dataset("mmalign/Reach-v0", episodes_per_policy=2, policies=("expert", "random"), seed=0)
    back = load_dataset(save_dataset(ds, tmp_path / "reach.npz"))
    assert back.task == "reach" and back.policies == ["expert", "random"] and len(back) == 4
    for k in ("observations", "actions", "rewards", "success", "lengths", "policy"):
        np.testing.assert_array_equal(getattr(back, k), getattr(ds, k))
    assert back.observations.shape == (4, 100, 10) and back.actions.shape == (4, 100, 2)
    ret = back.rewards.sum(1)
    assert ret[back.policy == 0].min() > ret[back.policy == 1].max()  # expert beats random
    seg = back.sample_segments(5, 20, np.random.default_rng(0))
    assert seg["obs"].shape == (5, 20, 10) and seg["rewards"].shape == (5, 20)


# ---------------------------------------------------------------------------------------------------------------------
# End to end: CPA + RRL labels -> IQL on the relabelled target dataset


@pytest.mark.slow
def test_zero_shot_iql_beats_random_labels(learning):
    """reach -> button-press at the default budget: CPA + RRL labels against random labels, same pipeline. The
    transferred labels are accurate and the IQL policy trained on them ends with a higher return than random labels'
    on every measured seed and thread count (docs/pearl.md); its success is not asserted (the policy stays at success
    0 on some seeds: an open robustness gap of the IQL step)."""
    pytest.importorskip("mujoco")
    from mmalign.robotics.pearl import run_pearl

    data: dict = {}
    cpa, rnd = (run_pearl("reach", "button-press", method, seed=learning.seed, data=data)
                for method in ("cpa-rrl", "random-rrl"))
    keys = ("label_accuracy", "success", "return")
    learning.report(**{f"{name}_{k}": r[k] for name, r in (("cpa", cpa), ("random", rnd)) for k in keys})
    assert cpa["label_accuracy"] > 0.7 and abs(rnd["label_accuracy"] - 0.5) < 0.1, (cpa, rnd)
    assert cpa["return"] > rnd["return"], (cpa, rnd)


# ---------------------------------------------------------------------------------------------------------------------
# Meta-World datasets and features, few-label methods, the `mmalign train` recipe


def test_metaworld_dataset_and_relative_features(tmp_path):
    pytest.importorskip("metaworld")
    from mmalign.robotics.offline_data import collect_dataset, load_dataset, save_dataset

    ds = collect_dataset("drawer-close-v3", episodes_per_policy=1, policies=("expert", "random"), max_episode_steps=40)
    back = load_dataset(save_dataset(ds, tmp_path / "dc.npz"))
    assert back.task == "drawer-close-v3" and back.observations.shape == (2, 40, 39) and back.actions.shape[-1] == 4
    assert back.rewards[0].sum() > back.rewards[1].sum()  # Meta-World's scripted policy beats random actions
    seg = back.sample_segments(3, 10, np.random.default_rng(0))
    f = segment_features(seg["obs"], seg["actions"]).reshape(3, 10, 17)
    np.testing.assert_allclose(f[..., 0:3], seg["obs"][..., 0:3] - seg["obs"][..., 36:39], atol=1e-6)  # hand - goal
    with pytest.raises(ValueError, match="exceeds the shortest episode"):
        back.sample_segments(3, 41, np.random.default_rng(0))


def test_unknown_task_and_relative_features_of_other_envs_are_clear_errors():
    from mmalign.robotics.offline_data import make_env

    with pytest.raises(ValueError, match="unknown task 'sweep'"):
        make_env("sweep")
    with pytest.raises(ValueError, match="representation='flat'"):
        segment_features(np.zeros((2, 3, 7)), np.zeros((2, 3, 1)))


def test_cpa_few_labels_keep_the_real_ones():
    from mmalign.robotics.pearl import PearlConfig, _labels, oracle_labels

    rng = np.random.default_rng(0)
    seg = lambda: {"obs": rng.normal(size=(12, 5, 10)), "actions": rng.normal(size=(12, 5, 2)),  # noqa: E731
                   "rewards": rng.normal(size=(12, 5))}
    s, t = seg(), seg()
    a, b = all_pairs(12)
    cfg = PearlConfig(segments=12, few_labels=7)
    truth = oracle_labels(t["rewards"].sum(1)[a], t["rewards"].sum(1)[b])
    few_labels, few = _labels("few", [s], t, a, b, cfg, np.random.default_rng(1))
    assert len(few) == 7 and np.array_equal(few_labels[few], truth[few])
    mixed, none = _labels("cpa-few", [s], t, a, b, cfg, np.random.default_rng(1))
    assert none is None and np.array_equal(mixed[few], truth[few])  # same rng: the same 7 pairs


def test_pearl_recipe_writes_the_run_folder(tmp_path, capsys):
    pytest.importorskip("mujoco")
    import json

    from mmalign.cli import main

    tiny = ["pearl.episodes_per_policy=2", "pearl.segments=12", "pearl.reward_pairs=50", "pearl.few_labels=5",
            "pearl.rrl.epochs=1", "pearl.iql.steps=20", "pearl.eval_episodes=1", f"output_dir={tmp_path}"]
    from pathlib import Path

    cfg = str(Path(__file__).parents[1] / "configs" / "robotics" / "pearl_planar.yaml")
    assert main(["train", cfg, "name=smoke", "seeds=[0, 1]", "methods=[cpa-rrl, random-bt]", *tiny]) == 0
    run = tmp_path / "smoke"
    for name in ("config.yaml", "metrics.jsonl", "results.json", "comparison.png", "summary.md",
                 "datasets/reach.npz", "datasets/button-press.npz"):
        assert (run / name).is_file(), name
    res = json.loads((run / "results.json").read_text())
    assert len(res["runs"]) == 4 and set(res["summary"]) == {"cpa-rrl", "random-bt"}
    assert res["summary"]["cpa-rrl"]["seeds"] == 2 and 0.0 <= res["summary"]["cpa-rrl"]["success_mean"] <= 1.0
    assert "| cpa-rrl |" in (run / "summary.md").read_text()
    assert main(["train", cfg, "name=smoke", *tiny]) == 2  # results already there: refused, not overwritten
    assert main(["train", cfg, "methods=[cpa-dpo]", *tiny]) == 2
    assert "unknown method 'cpa-dpo'" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["pearl_planar", "pearl_metaworld", "pearl_metaworld_button", "pearl_orbit"])
def test_shipped_recipe_configs_load(name):
    from pathlib import Path

    from mmalign.robotics.pearl_run import load_config

    cfg = load_config(Path(__file__).parents[1] / "configs" / "robotics" / f"{name}.yaml", [])
    assert cfg.target and cfg.methods and cfg.seeds


@pytest.mark.slow
def test_pearl_sigkill_then_resume_gives_the_uninterrupted_results(tmp_path):
    """Killed after its first (method, seed) row, a resumed comparison reruns only the missing ones and ends with the
    rows and summary of an uninterrupted run (datasets recollected from seed 0, each run seeded by its seed)."""
    pytest.importorskip("mujoco")
    import json
    from pathlib import Path

    from kill import kill_when, same_rows, train

    from mmalign.tracking import read_metrics

    cfg = str(Path(__file__).parents[1] / "configs" / "robotics" / "pearl_planar.yaml")
    args = ["pearl.episodes_per_policy=2", "pearl.segments=12", "pearl.reward_pairs=50", "pearl.rrl.epochs=2",
            "pearl.iql.steps=300", "pearl.eval_episodes=2", "seeds=[0]", "methods=[cpa-rrl, random-bt, oracle-rrl]",
            "device=cpu", f"output_dir={tmp_path}"]
    assert train(cfg, *args, "name=whole").wait(timeout=600) == 0
    proc = train(cfg, *args, "name=killed")
    metrics = tmp_path / "killed/metrics.jsonl"
    kill_when(proc, lambda: metrics.exists() and metrics.read_text().count("\n") >= 1)
    assert len(read_metrics(metrics)) < 3, "killed too late"
    resumed = train(cfg, *args, "name=killed", "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-3000:]
    same_rows(read_metrics(tmp_path / "whole/metrics.jsonl"), read_metrics(metrics), volatile=("seconds",))
    whole, killed = (json.loads((tmp_path / f"{n}/results.json").read_text()) for n in ("whole", "killed"))
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(whole["runs"]) == drop(killed["runs"]) and whole["summary"] == killed["summary"]

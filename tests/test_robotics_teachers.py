"""B-Pref scripted teachers (each knob on constructed segment pairs), segments, queries and the reward ensemble."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmalign.robotics.queries import SELECTIONS, disagreement, entropy, kcenter, select_queries
from mmalign.robotics.reward_ensemble import RewardEnsemble, RewardEnsembleConfig
from mmalign.robotics.sampler import Episode
from mmalign.robotics.segments import EpisodeStore, Segments, sample_segments, temporal_crop
from mmalign.robotics.teachers import TEACHERS, ScriptedTeacher, TeacherConfig, teacher_config

N, H = 4000, 10


def _pairs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Reward rows (N, H) for a and b; a's return exceeds b's on about half of the pairs."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(N, H, generator=g), torch.rand(N, H, generator=g)


def test_presets_are_b_pref_table():
    assert set(TEACHERS) == {"oracle", "mistake", "noisy", "skip", "myopic", "equal"}
    assert TEACHERS["mistake"].eps_mistake == 0.1 and TEACHERS["noisy"].beta == 1.0
    assert TEACHERS["myopic"].gamma == 0.9 and TEACHERS["skip"].eps_skip == TEACHERS["equal"].eps_equal == 0.1
    assert teacher_config("mistake", eps_mistake=0.3).eps_mistake == 0.3
    with pytest.raises(ValueError, match="unknown teacher"):
        teacher_config("perfect")


def test_oracle_prefers_higher_return():
    ra, rb = _pairs()
    keep, labels = ScriptedTeacher(TEACHERS["oracle"])(ra, rb)
    assert len(keep) == N
    assert torch.equal(labels, (ra.sum(1) > rb.sum(1)).float())


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_mistake_flips_about_its_rate(rate):
    ra, rb = _pairs()
    _, labels = ScriptedTeacher(TeacherConfig(eps_mistake=rate), seed=1)(ra, rb)
    flipped = float((labels != (ra.sum(1) > rb.sum(1)).float()).float().mean())
    assert abs(flipped - rate) < 0.03  # binomial std at N = 4000 is under 0.008


def test_noisy_follows_bradley_terry_probability():
    # every pair has return gap exactly 1: the beta = 1 teacher prefers a with probability sigmoid(1) = 0.731
    ra = torch.full((N, H), 0.2)
    rb = torch.full((N, H), 0.1)
    _, labels = ScriptedTeacher(TEACHERS["noisy"], seed=0)(ra, rb)
    assert abs(float(labels.mean()) - float(torch.sigmoid(torch.tensor(1.0)))) < 0.03
    _, sharp = ScriptedTeacher(TeacherConfig(beta=20.0), seed=0)(ra, rb)  # large beta -> nearly rational
    assert float(sharp.mean()) > 0.99


def test_myopic_weighs_recent_steps():
    # a is good early, b is good late, equal undiscounted returns: rational ties (a loses on >), myopic picks b
    ra = torch.zeros(1, H)
    ra[0, 0] = 1.0
    rb = torch.zeros(1, H)
    rb[0, -1] = 0.9
    assert ScriptedTeacher(TEACHERS["oracle"])(ra, rb).labels.item() == 1.0
    assert ScriptedTeacher(TEACHERS["myopic"])(ra, rb).labels.item() == 0.0  # 0.9 ** 9 = 0.39 < 0.9
    t = ScriptedTeacher(TEACHERS["myopic"])
    torch.testing.assert_close(t.discounted_returns(torch.ones(1, 3)), torch.tensor([0.81 + 0.9 + 1.0]))


def test_skip_drops_pairs_where_both_returns_are_low():
    t = ScriptedTeacher(TEACHERS["skip"], thres_skip=2.0)
    ra = torch.tensor([[1.0, 0.5], [3.0, 0.0], [0.0, 0.1]])
    rb = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.5]])
    keep, labels = t(ra, rb)
    assert keep.tolist() == [1, 2] and labels.tolist() == [1.0, 0.0]


def test_equal_labels_close_pairs_half():
    t = ScriptedTeacher(TEACHERS["equal"], thres_equal=0.5)
    ra = torch.tensor([[1.0, 1.0], [3.0, 0.0]])
    rb = torch.tensor([[1.0, 0.8], [0.0, 0.0]])
    assert t(ra, rb).labels.tolist() == [0.5, 1.0]


def test_calibrate_follows_b_pref_margin():
    t = ScriptedTeacher(TeacherConfig(eps_skip=0.1, eps_equal=0.2))
    t.calibrate(np.array([100.0, 300.0]), segment_length=50, episode_length=100)  # margin = 200 * 50 / 100
    assert t.thres_skip == pytest.approx(10.0) and t.thres_equal == pytest.approx(20.0)
    t.calibrate(np.array([-100.0, -300.0]), segment_length=50, episode_length=100)  # negative rewards: margin -100
    assert t.thres_skip == pytest.approx(-190.0) and t.thres_equal == pytest.approx(20.0)  # below the mean


def _episodes(n: int = 6, length: int = 30) -> list[Episode]:
    rng = np.random.default_rng(0)
    return [Episode(rng.normal(size=(length, 10)).astype(np.float32), rng.normal(size=(length, 2)).astype(np.float32),
                    np.arange(length, dtype=np.float32) + 100 * i, np.zeros(length, bool)) for i in range(n)]


def test_segments_are_contiguous_slices_and_roundtrip_on_disk(tmp_path):
    eps = _episodes()
    seg = sample_segments(eps, 20, 8, np.random.default_rng(0))
    assert seg.obs.shape == (20, 8, 10) and seg.actions.shape == (20, 8, 2)
    diffs = seg.rewards[:, 1:] - seg.rewards[:, :-1]
    assert torch.all(diffs == 1)  # consecutive steps of one episode
    store = EpisodeStore(max_episodes=4)
    for e in eps:
        store.add(e)
    assert len(store) == 4 and store.episodes[0] is eps[2]
    loaded = EpisodeStore.load(store.save(tmp_path / "eps.npz"))
    assert len(loaded) == 4 and np.array_equal(loaded.episodes[1].obs, eps[3].obs)
    with pytest.raises(ValueError, match="no episode has 40 steps"):
        sample_segments(eps, 1, 40, np.random.default_rng(0))


def test_temporal_crop_keeps_contiguity_and_length():
    seg = sample_segments(_episodes(), 16, 10, np.random.default_rng(1))
    a, b = temporal_crop(seg, seg[torch.arange(16).flip(0)], 6, 8, torch.Generator().manual_seed(0))
    assert a.length == b.length and 6 <= a.length <= 8
    assert torch.all(a.rewards[:, 1:] - a.rewards[:, :-1] == 1)
    start = (a.rewards[:, 0] - seg.rewards[:, 0]).long()
    torch.testing.assert_close(a.obs[3, 0], seg.obs[3, start[3]])


def test_query_scores_and_kcenter():
    probs = torch.tensor([[0.5, 0.9, 0.1], [0.5, 0.1, 0.1]])
    assert disagreement(probs).argmax() == 1 and entropy(probs).argmax() == 0
    pts = torch.tensor([[0.0], [0.1], [10.0], [5.0]])
    assert kcenter(pts, 3).tolist() == [0, 2, 3]


@pytest.mark.parametrize("rule", SELECTIONS)
def test_select_queries_returns_distinct_indices(rule):
    torch.manual_seed(0)
    seg = sample_segments(_episodes(), 40, 5, np.random.default_rng(0))
    ens = RewardEnsemble(10, 2, RewardEnsembleConfig(members=3, hidden=[16]))
    idx = select_queries(rule, seg[:20], seg[20:], 6, ens, labelled=(seg[:2], seg[2:4]))
    assert len(idx) == 6 and len(set(idx.tolist())) == 6 and int(idx.max()) < 20


def _linear_task(n: int, seed: int) -> tuple[Segments, Segments]:
    g = torch.Generator().manual_seed(seed)
    mk = lambda: Segments(torch.randn(n, 5, 10, generator=g), torch.randn(n, 5, 2, generator=g),  # noqa: E731
                          torch.zeros(n, 5))
    a, b = mk(), mk()
    for s in (a, b):
        s.rewards = s.obs[..., 0] - s.actions[..., 1]  # a linear ground truth
    return a, b


@pytest.mark.parametrize("surf", [False, True])
def test_ensemble_learns_ground_truth_ranking(surf):
    torch.manual_seed(0)
    a, b = _linear_task(300, 0)
    labels = ScriptedTeacher(TEACHERS["oracle"])(a.rewards, b.rewards).labels
    cfg = RewardEnsembleConfig(members=3, hidden=[32], epochs=12, batch_size=100, lr=1e-2,
                               surf_threshold=0.95 if surf else 0.0, crop_min=4 if surf else 0,
                               crop_max=5 if surf else 0)
    ens = RewardEnsemble(10, 2, cfg)
    ta, tb = _linear_task(500, 1)
    true = (ta.rewards.sum(1) > tb.rewards.sum(1)).float()
    before = ens.accuracy(ta, tb, true)
    metrics = ens.fit(a, b, labels, unlabelled=_linear_task(300, 2) if surf else None)
    after = ens.accuracy(ta, tb, true)
    assert after > 0.85 and after > before + 0.2, (before, after)
    assert (metrics["pseudo_labels"] > 0) == surf

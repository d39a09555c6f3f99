"""GCSL, the temporal augmentation (Ghugare et al., ICLR 2024), goal-conditioned IQL data and the stitching split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmalign.envs.scripted import GAIN
from mmalign.robotics.gcsl import (
    GCSLConfig,
    TemporalAugmenter,
    as_policy,
    future_index,
    gcsl_loss,
    goal_transitions,
    kmeans,
    sample_batch,
    train_gcsl,
)
from mmalign.robotics.iql import DeterministicActor
from mmalign.robotics.stitching import (
    ENV_ID,
    REGION_RADIUS,
    REGIONS,
    SEEN_PAIRS,
    UNSEEN_PAIRS,
    collect_routes,
    evaluate_pairs,
)


def _coded_states(episodes: int, horizon: int) -> np.ndarray:
    """States (E, T + 1, 4) whose goal part names its place: x = episode, y = time."""
    s = np.zeros((episodes, horizon + 1, 4), np.float32)
    s[..., 0] = np.arange(episodes)[:, None]
    s[..., 1] = np.arange(horizon + 1)[None]
    return s


# ---------------------------------------------------------------------------------------------------------------------
# hindsight relabelling


def test_future_index_is_strictly_later_and_covers_the_whole_future():
    rng = np.random.default_rng(0)
    t = np.repeat(np.arange(5), 2000)
    g = future_index(t, 5, rng)
    assert np.all(g > t) and np.all(g <= 5)  # a past or present goal (g <= t) fails here
    for k in range(5):
        assert set(g[t == k]) == set(range(k + 1, 6))
    assert np.all(future_index(np.array([4]), 5, rng) == 5)
    with pytest.raises(ValueError, match="future"):
        future_index(np.array([5]), 5, rng)


def test_gcsl_goals_come_from_the_same_trajectorys_future():
    states = _coded_states(episodes=6, horizon=9)
    ep, t, goal = sample_batch(states, 4000, np.random.default_rng(1))
    assert np.array_equal(goal[:, 0], ep)  # same trajectory
    assert np.all(goal[:, 1] > t) and np.all(goal[:, 1] <= 9)  # its future, never its past


# ---------------------------------------------------------------------------------------------------------------------
# temporal augmentation


def _hand_clusters() -> np.ndarray:
    """Three trajectories of horizon 4: 0 and 1 share cluster 2 at time 2; 2 stays in its own cluster 9; cluster 4
    holds only trajectory 0's last state (no future)."""
    return np.array([[0, 1, 2, 3, 4], [5, 6, 2, 7, 8], [9, 9, 9, 9, 9]])


def test_augmentation_jumps_only_through_a_shared_cluster_to_a_waypoints_future():
    aug, rng = TemporalAugmenter(_hand_clusters()), np.random.default_rng(0)
    ep, t = aug(np.zeros(3000, np.int64), np.full(3000, 2), rng)  # goal (0, 2): cluster 2 = waypoints (0, 2), (1, 2)
    assert set(zip(ep.tolist(), t.tolist())) == {(0, 3), (0, 4), (1, 3), (1, 4)}
    ep, t = aug(np.full(2000, 2), np.full(2000, 1), rng)  # cluster 9: trajectory 2 alone, any of its waypoints
    assert set(ep.tolist()) == {2} and set(t.tolist()) == {1, 2, 3, 4}
    ep, t = aug(np.array([0]), np.array([4]), rng)  # cluster 4 has no waypoint with a future: goal kept
    assert (ep[0], t[0]) == (0, 4)


def test_augmented_batches_mix_original_and_cross_trajectory_goals():
    states = _coded_states(episodes=3, horizon=4)
    aug = TemporalAugmenter(_hand_clusters())
    ep, t, goal = sample_batch(states, 6000, np.random.default_rng(2), aug, augment_prob=0.5)
    crossed = goal[:, 0] != ep
    # only trajectories 0 and 1 meet (cluster 2), so only they exchange goals, and a crossed goal lies after time 2
    assert crossed.any() and set(ep[crossed].tolist()) <= {0, 1} and np.all(goal[crossed, 1] >= 3)
    assert not crossed[ep == 2].any()
    _, _, plain = sample_batch(states, 2000, np.random.default_rng(2), aug, augment_prob=0.0)
    assert np.all(plain[:, 1] >= 1)


def test_kmeans_separates_two_blobs():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.01, (50, 2)), rng.normal(1, 0.01, (50, 2))])
    centres, labels = kmeans(x, 2, rng)
    assert len(set(labels[:50])) == 1 and len(set(labels[50:])) == 1 and labels[0] != labels[-1]
    assert np.allclose(np.sort(centres[:, 0]), [0, 1], atol=0.01)
    with pytest.raises(ValueError, match="clusters"):
        kmeans(x, 101, rng)


# ---------------------------------------------------------------------------------------------------------------------
# losses and IQL data


def test_gcsl_loss_is_the_squared_error_to_the_data_action():
    actor = DeterministicActor(4 + 2, 2, (8,))
    with torch.no_grad():
        actor.net[-1].weight.zero_()
        actor.net[-1].bias.fill_(float(np.arctanh(0.5)))  # pi(s, g) = (0.5, 0.5)
    loss = gcsl_loss(actor, torch.zeros(2, 4), torch.zeros(2, 2), torch.tensor([[1.0, 0.0], [0.5, -0.5]]))
    assert loss.item() == pytest.approx(((0.25 + 0.25) + (0.0 + 1.0)) / 2)


def test_goal_transitions_reward_reaching_the_hindsight_goal():
    states = np.zeros((1, 4, 4), np.float32)
    states[0, :, 0] = [0.0, 0.01, 0.1, 0.2]  # tip x along the trajectory
    data = {"states": states, "actions": np.ones((1, 3, 2), np.float32)}
    tr = goal_transitions(data, relabels=50, random_goal_prob=0.0, tol=0.025, seed=0)
    s, s2, g = tr["obs"][:, 0], tr["next_obs"][:, 0], tr["obs"][:, 4]
    assert torch.all(g > s)  # future goals only (x grows along the trajectory)
    reached = (s2 - g).abs() < 0.025
    assert torch.equal(tr["done"], reached.float()) and torch.equal(tr["rew"], reached.float() - 1)
    assert reached.any() and (~reached).any()
    assert torch.equal(tr["next_obs"][:, 4:], tr["obs"][:, 4:])


# ---------------------------------------------------------------------------------------------------------------------
# the stitching split in MuJoCo


def test_routes_end_in_their_last_region_and_reset_places_tip_and_goal():
    from mmalign.robotics.offline_data import make_env

    data = collect_routes(episodes_per_route=3, noise_std=0.1, steps=30, seed=0)
    assert data["states"].shape == (6, 31, 4) and data["actions"].shape == (6, 30, 2)
    for r, end in enumerate(("D", "C")):
        last = data["states"][data["route"] == r, -1, :2]
        assert np.all(np.linalg.norm(last - np.asarray(REGIONS[end]), axis=-1) < REGION_RADIUS + 0.02)
    env = make_env(ENV_ID, 5)
    obs, _ = env.reset(seed=0, options={"ee_start": [0.1, -0.1], "goal": [-0.1, 0.1]})
    assert np.allclose(obs[:2], [0.1, -0.1], atol=1e-6) and np.allclose(obs[8:10], [-0.1, 0.1])
    with pytest.raises(ValueError, match="reset options"):
        env.reset(options={"start": [0, 0]})
    env.close()


def test_the_wall_blocks_the_straight_line_of_an_unseen_pair():
    """Heading straight from A to C stops at the wall; through the doorway (the data's first leg, then the other
    route's second leg) it arrives: the unseen pairs need stitching, not a straight line."""
    straight = evaluate_pairs(lambda s, g: np.clip(GAIN * (g - s[:2]), -1, 1), UNSEEN_PAIRS, episodes=5)
    assert straight["success"] == 0.0

    def via_doorway(s: np.ndarray, g: np.ndarray) -> np.ndarray:
        target = g if s[1] > 0.02 else np.array([0.0, 0.03])
        return np.clip(GAIN * (target - s[:2]), -1, 1)

    assert evaluate_pairs(via_doorway, UNSEEN_PAIRS, episodes=5)["success"] == 1.0


def test_gcsl_learns_the_seen_pairs():
    torch.manual_seed(0)
    data = collect_routes(episodes_per_route=30, seed=0)
    before = evaluate_pairs(as_policy(DeterministicActor(6, 2, (64, 64))), SEEN_PAIRS, episodes=10)
    after = evaluate_pairs(as_policy(train_gcsl(data, GCSLConfig(steps=800))), SEEN_PAIRS, episodes=10)
    assert before["success"] <= 0.1 and after["success"] >= 0.7


def test_config_run_writes_its_table(tmp_path, capsys):
    from pathlib import Path

    from mmalign.cli import main

    config = str(Path(__file__).resolve().parents[1] / "configs" / "robotics" / "gcsl_stitch.yaml")
    args = ["train", config, f"output_dir={tmp_path}", "seeds=[0]", "gcsl.steps=20", "iql.steps=20",
            "data.episodes_per_route=5", "eval.episodes=1"]
    assert main(args) == 0
    summary = (tmp_path / "gcsl_stitch" / "summary.md").read_text()
    assert f"mmalign train {config}" in summary
    assert all(f"| {m} |" in summary for m in ("untrained", "gcsl", "gcsl+aug", "iql"))
    assert main(["train", config, f"output_dir={tmp_path}/b", "gcsl.augment_prob=2"]) == 2
    assert "command-line override gcsl.augment_prob=2" in capsys.readouterr().err


def test_augmentation_reaches_unseen_pairs_that_gcsl_misses():
    """The paper's claim on the reach-wall split, one seed: GCSL scores 0 on the unseen pairs, the augmentation
    (same data, same steps) reaches a good part of them."""
    data = collect_routes(seed=1)
    plain = evaluate_pairs(as_policy(train_gcsl(data, GCSLConfig(seed=1))), episodes=10)
    augmented = evaluate_pairs(as_policy(train_gcsl(data, GCSLConfig(augment=True, seed=1))), episodes=10)
    assert plain["success"] <= 0.1 and augmented["success"] >= plain["success"] + 0.3

"""Online preference feedback (PEBBLE / PrefPPO, Lee et al. 2021): what any online learner needs to train on a reward
learned from a teacher's preferences, whatever it is (PPO through the Trainer, SAC in `pebble.py`).

Finished episodes go to an episode store (every `heldout_every`-th to a held-out store, never queried). Every
`query_every` env steps until `max_feedback` labels: sample candidate segment pairs -> select queries -> scripted
teacher labels -> refit the Bradley-Terry reward ensemble on every label so far (B-Pref `learn_reward`). The learner's
per-step reward is the ensemble mean r_hat(s, a) (or the env reward for `reward: ground_truth`), after an optional
warm-up on the k-NN state-entropy reward (PEBBLE, Eq. 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import Tensor

from mmalign.checkpoint import load_optimizer_state, optimizer_state
from mmalign.config import ConfigError, check_choice, check_numbers, did_you_mean
from mmalign.robotics.queries import SELECTIONS, select_queries
from mmalign.robotics.reward_ensemble import RewardEnsemble, RewardEnsembleConfig
from mmalign.robotics.sampler import Episode
from mmalign.robotics.segments import EpisodeStore, Segments
from mmalign.robotics.teachers import TEACHERS, ScriptedTeacher, TeacherConfig, teacher_config


@dataclass
class FeedbackConfig:
    reward: str = "preference"
    """"preference" (learned from the teacher's labels) or "ground_truth" (the env reward; the baseline)."""
    unsup_steps: int = 0
    """Env steps of unsupervised warm-up on the k-NN state-entropy reward (PEBBLE, Eq. 3); 0 = none."""
    teacher: str = "oracle"
    """B-Pref teacher preset: oracle, mistake, noisy, skip, myopic, equal."""
    teacher_overrides: dict[str, float] = field(default_factory=dict)
    """Knobs changed on the preset (beta, gamma, eps_mistake, eps_skip, eps_equal)."""
    segment_length: int = 50
    """Steps per queried segment (B-Pref: 50)."""
    max_feedback: int = 300
    """Total labels the teacher gives."""
    queries_per_round: int = 50
    """Labels per feedback round (B-Pref `reward_batch`)."""
    query_every: int = 5000
    """Env steps between feedback rounds (B-Pref `num_interact`)."""
    selection: str = "disagreement"
    """Query selection: uniform, disagreement, entropy, kcenter, kcenter_disagreement, kcenter_entropy."""
    large_batch: int = 10
    """Candidates per selected query (B-Pref `large_batch`)."""
    store_episodes: int = 200
    """Newest episodes kept for segment sampling."""
    heldout_every: int = 5
    """Every this many-th finished episode is held out for reward-model accuracy, never queried."""
    heldout_pairs: int = 500
    """Held-out segment pairs (ground-truth labelled) scored at each evaluation."""
    reward_normalize: bool = False
    """Standardise the learned reward: after every reward update, shift and scale r_hat to mean 0 and std 1 over the
    steps of the stored episodes (one affine map per reward model). docs/robotics.md has what it did on Reach."""
    surf_unlabelled: int = 0
    """SURF: unlabelled pairs sampled for pseudo-labels at each reward update (needs reward_model.surf_threshold)."""
    reward_model: RewardEnsembleConfig = field(default_factory=RewardEnsembleConfig)
    """The Bradley-Terry ensemble."""

    def __post_init__(self) -> None:
        check_choice(self, "reward", ("preference", "ground_truth"))
        check_choice(self, "teacher", tuple(TEACHERS))
        check_choice(self, "selection", SELECTIONS)
        check_numbers(self, "segment_length", "queries_per_round", "query_every", "large_batch", "heldout_every",
                      "heldout_pairs", ge=1)
        check_numbers(self, "unsup_steps", "max_feedback", "store_episodes", "surf_unlabelled", ge=0)
        knobs = [f.name for f in fields(TeacherConfig)]
        for key in self.teacher_overrides:
            if key not in knobs:
                raise ConfigError(f"unknown teacher knob{did_you_mean(key, knobs)}; knobs: {knobs}.",
                                  f"teacher_overrides.{key}")
        try:
            teacher_config(self.teacher, **self.teacher_overrides)
        except ConfigError as e:
            raise e.under("teacher_overrides") from e


def knn_state_entropy(obs: Tensor, reference: Tensor | None = None, k: int = 5) -> Tensor:
    """PEBBLE's intrinsic reward (Eq. 3; Liu & Abbeel 2021): distance of each state to its k-th nearest neighbour.

    Args:
        obs: (N, obs_dim) states to reward.
        reference: (R, obs_dim) states the neighbours come from (PEBBLE: the replay buffer); None = `obs` itself,
            where each state's nearest neighbour is itself (distance 0), so the k-th is the k-th other state.
        k: neighbour rank.

    Returns:
        (N,) distances (0 when there are no neighbours).
    """
    ref = obs if reference is None else torch.cat([reference, obs])
    if len(obs) == 0 or len(ref) < 2:
        return torch.zeros(len(obs), device=obs.device)
    d = torch.cdist(obs, ref)
    return d.topk(min(k + 1, len(ref)), largest=False).values[:, -1]


class PreferenceFeedback:
    """The feedback state of one run: episode stores, teacher, reward ensemble and every label so far.

    Args:
        cfg: feedback settings.
        obs_dim: observation size.
        act_dim: action size.
        seed: seed of the teacher, segment sampling and reward fitting.
        device: where the reward ensemble lives and trains (episodes and labels stay on the CPU).
    """

    def __init__(self, cfg: FeedbackConfig, obs_dim: int, act_dim: int, seed: int = 0,
                 device: torch.device | str = "cpu"):
        self.cfg, self.seed = cfg, seed
        self.rng = np.random.default_rng(seed)
        self.store, self.heldout = EpisodeStore(cfg.store_episodes), EpisodeStore(cfg.store_episodes)
        self.episodes = 0  # finished episodes seen
        self.ensemble = RewardEnsemble(obs_dim, act_dim, cfg.reward_model, device)
        self.teacher = ScriptedTeacher(TeacherConfig(**vars(teacher_config(cfg.teacher, **cfg.teacher_overrides))),
                                       seed=seed)
        self.oracle = ScriptedTeacher(teacher_config("oracle"))
        self.labelled: list[tuple[Segments, Segments, Tensor]] = []  # (a, b, labels) per round
        self.feedback = self.reward_updates = 0
        self.reward_shift, self.reward_scale = 0.0, 1.0

    def add_episode(self, episode: Episode) -> None:
        """A finished episode: every `heldout_every`-th is held out, the others can be queried."""
        self.episodes += 1
        (self.heldout if self.episodes % self.cfg.heldout_every == 0 else self.store).add(episode)

    # --- rewards --------------------------------------------------------------------------------------
    def warming_up(self, env_steps: int) -> bool:
        return env_steps <= self.cfg.unsup_steps

    def reward(self, obs: Tensor, actions: Tensor, env_steps: int, reference: Tensor | None = None) -> Tensor:
        """The learner's per-step reward of (..., obs_dim), (..., act_dim) -> (...): the state-entropy reward during
        warm-up (neighbours from `reference` states, e.g. a replay buffer), else the learned one."""
        if self.warming_up(env_steps):
            return knn_state_entropy(obs.reshape(-1, obs.shape[-1]), reference).reshape(obs.shape[:-1])
        return (self.ensemble.step_reward(obs, actions) - self.reward_shift) / self.reward_scale

    # --- feedback rounds ------------------------------------------------------------------------------
    def due(self, env_steps: int) -> bool:
        """Whether a feedback round is due after `env_steps` env steps."""
        cfg = self.cfg
        if cfg.reward != "preference" or self.feedback >= cfg.max_feedback or env_steps < cfg.unsup_steps:
            return False
        return env_steps >= cfg.unsup_steps + self.reward_updates * cfg.query_every and len(self.store) >= 2

    def round(self) -> dict[str, float]:
        """Query -> label -> reward update (B-Pref `learn_reward`); returns the reward model's metrics."""
        cfg, h = self.cfg, self.cfg.segment_length
        n = min(cfg.queries_per_round, cfg.max_feedback - self.feedback)
        cand = self.store.sample(2 * n * cfg.large_batch, h, self.rng)
        a, b = cand[: n * cfg.large_batch], cand[n * cfg.large_batch:]
        prev = self.all_labelled()
        idx = select_queries(cfg.selection, a, b, n, self.ensemble, None if prev is None else prev[:2])
        a, b = a[idx], b[idx]
        recent = self.store.episodes[-10:]  # B-Pref: thresholds from the last 10 episodes' true returns
        self.teacher.calibrate(np.array([e.ret for e in recent]), h, np.mean([len(e.rewards) for e in recent]))
        keep, labels = self.teacher(a.rewards, b.rewards)
        self.feedback += n  # skipped queries still cost the teacher's time
        self.labelled.append((a[keep], b[keep], labels))
        la, lb, ly = self.all_labelled()
        unlabelled = None
        if cfg.surf_unlabelled:
            u = self.store.sample(2 * cfg.surf_unlabelled, h, self.rng)
            unlabelled = (u[: cfg.surf_unlabelled], u[cfg.surf_unlabelled:])
        self.reward_updates += 1
        if not len(ly):  # every query skipped so far: nothing to fit (B-Pref trains only once it has labels)
            return {"reward_model/labels": 0.0}
        metrics = self.ensemble.fit(la, lb, ly, unlabelled, seed=self.seed + self.reward_updates - 1)
        if cfg.reward_normalize:
            obs = torch.as_tensor(np.concatenate([e.obs for e in self.store.episodes]))
            act = torch.as_tensor(np.concatenate([e.actions for e in self.store.episodes]))
            r = self.ensemble.step_reward(obs, act)
            self.reward_shift, self.reward_scale = float(r.mean()), float(r.std().clamp(min=1e-6))
        return {f"reward_model/{k}": v for k, v in metrics.items()} | {
            "reward_model/train_accuracy": self.ensemble.accuracy(la, lb, ly), "reward_model/labels": float(len(ly))}

    def all_labelled(self) -> tuple[Segments, Segments, Tensor] | None:
        """Every labelled pair so far: (a, b, labels), or None before the first round."""
        if not self.labelled:
            return None
        return (Segments.cat([x[0] for x in self.labelled]), Segments.cat([x[1] for x in self.labelled]),
                torch.cat([x[2] for x in self.labelled]))

    def heldout_accuracy(self) -> dict[str, float]:
        """The ensemble's accuracy on held-out segment pairs labelled by the ground truth (none before feedback)."""
        cfg = self.cfg
        if cfg.reward != "preference" or not len(self.heldout):
            return {}
        pairs = self.heldout.sample(2 * cfg.heldout_pairs, cfg.segment_length, np.random.default_rng(1))
        a, b = pairs[: cfg.heldout_pairs], pairs[cfg.heldout_pairs:]
        return {"reward_model_accuracy": self.ensemble.accuracy(a, b, self.oracle(a.rewards, b.rewards).labels)}

    def recent_return(self, n: int = 20) -> float:
        """Mean env return of the newest `n` stored episodes (NaN before the first)."""
        eps = self.store.episodes[-n:]
        return float(np.mean([e.ret for e in eps])) if eps else float("nan")

    # --- checkpoints ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue the same feedback (tensors and JSON values)."""
        state = {"ensemble": self.ensemble.state_dict(),
                 "optimizers": {str(i): optimizer_state(o) for i, o in enumerate(self.ensemble.optimizers)},
                 "store": self.store.state_dict(), "heldout": self.heldout.state_dict(),
                 "rng": self.rng.bit_generator.state, "teacher_rng": self.teacher.generator.get_state(),
                 "counters": [self.episodes, self.feedback, self.reward_updates],
                 "reward_affine": [self.reward_shift, self.reward_scale], "rounds": {}}
        for i, (a, b, y) in enumerate(self.labelled):
            state["rounds"][str(i)] = {"a": vars(a), "b": vars(b), "labels": y}
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` captured."""
        self.ensemble.load_state_dict(state["ensemble"])
        for i, opt in enumerate(self.ensemble.optimizers):
            load_optimizer_state(opt, state["optimizers"][str(i)])
        self.store.load_state_dict(state["store"])
        self.heldout.load_state_dict(state["heldout"])
        self.rng.bit_generator.state = state["rng"]
        self.teacher.generator.set_state(state["teacher_rng"])
        self.episodes, self.feedback, self.reward_updates = state["counters"]
        self.reward_shift, self.reward_scale = state["reward_affine"]
        rounds = state.get("rounds", {})
        self.labelled = [(Segments(**rounds[k]["a"]), Segments(**rounds[k]["b"]), rounds[k]["labels"])
                         for k in sorted(rounds, key=int)]

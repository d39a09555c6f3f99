"""Online preference-based RL (PEBBLE / PrefPPO, Lee et al. 2021): the recipe loop over the shared cores.

Loop, by env steps: (0 optional unsupervised warm-up on a state-entropy reward) then repeatedly
1 collect steps with the policy, 2 every `query_every` env steps until `max_feedback`: sample candidate segment
pairs -> select queries -> scripted teacher labels -> refit the reward ensemble (shared Bradley-Terry core) ->
relabel (SAC's replay buffer), 3 policy update on the learned reward (shared `ppo_prepare` / `ppo_loss`, or SAC),
4 log / evaluate on the ground truth. `reward: ground_truth` trains on the env reward (the sanity baseline).

Run folder: config.yaml, metrics.jsonl (+ TensorBoard) with `env_steps` and `feedback`, curves.png (success and
return against env steps and against feedback), final/ (safetensors via mmalign.checkpoint), final_policy.mp4.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from mmalign.robotics.policy import GaussianActorCritic, GaussianPolicy
from mmalign.robotics.queries import SELECTIONS, select_queries
from mmalign.robotics.reward_ensemble import RewardEnsemble, RewardEnsembleConfig
from mmalign.robotics.sac import SAC, ReplayBuffer, SACConfig
from mmalign.robotics.sampler import VecEnvSampler, make_vec_env
from mmalign.robotics.segments import EpisodeStore, Segments
from mmalign.robotics.teachers import TEACHERS, ScriptedTeacher, TeacherConfig, teacher_config

from mmalign import config
from mmalign.algorithms.ppo import PPOConfig, ppo_loss, ppo_prepare
from mmalign.config import ConfigError, check_choice, check_numbers, did_you_mean, from_dict, to_dict
from mmalign.runs import check_new_run, open_run


@dataclass
class PrefRLConfig:
    name: str = "pref_rl"
    """Run name: outputs go to `<output_dir>/<name>/`."""
    output_dir: str = "runs"
    """Folder that holds run folders."""
    seed: int = 0
    """Seed of envs, networks, teacher and queries."""
    env_id: str = "mmalign/Reach-v0"
    """A gymnasium id (the mmalign/ planar tasks report info["success"])."""
    num_envs: int = 8
    """Parallel envs (synchronous vector env)."""
    total_env_steps: int = 100_000
    """Env steps of training (autoreset steps excluded)."""
    learner: str = "ppo"
    """"ppo" (shared PPO core; PrefPPO) or "sac" (PEBBLE)."""
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
    """Standardise the learned reward fed to the learner: after every reward update, shift and scale r_hat to mean 0
    and std 1 over the steps of the stored episodes (one affine map per reward model). Off by default: on Reach it
    made PrefPPO worse (one seed: success 0.1 vs 0.9 at 40k steps), the larger value loss eating the shared
    gradient-norm clip."""
    surf_unlabelled: int = 0
    """SURF: unlabelled pairs sampled for pseudo-labels at each reward update (needs reward_model.surf_threshold)."""
    reward_model: RewardEnsembleConfig = field(default_factory=RewardEnsembleConfig)
    """The Bradley-Terry ensemble."""
    hidden: list[int] = field(default_factory=lambda: [64, 64])
    """PPO actor and critic widths."""
    ppo: PPOConfig = field(default_factory=PPOConfig)
    """Shared PPO core settings."""
    ppo_steps: int = 128
    """Rollout length per env per PPO iteration."""
    ppo_epochs: int = 10
    """Passes over each rollout."""
    ppo_minibatches: int = 4
    """Minibatches (of env rows) per epoch."""
    lr: float = 3e-4
    """PPO Adam learning rate."""
    max_grad_norm: float = 0.5
    """PPO gradient clipping."""
    sac: SACConfig = field(default_factory=SACConfig)
    """SAC settings."""
    eval_every: int = 10_000
    """Evaluate every this many env steps."""
    eval_episodes: int = 10
    """Deterministic episodes per evaluation; success = max over the episode of info["success"] (B-Pref)."""
    video: bool = True
    """Write final_policy.mp4 of one deterministic episode."""
    torch_threads: int = 1
    """torch CPU threads; small networks run fastest on one (more threads cost ~10x on a loaded 2-core machine)."""

    def __post_init__(self) -> None:
        check_choice(self, "learner", ("ppo", "sac"))
        check_choice(self, "reward", ("preference", "ground_truth"))
        check_choice(self, "selection", SELECTIONS)
        check_choice(self, "teacher", tuple(TEACHERS))
        check_numbers(self, "num_envs", "total_env_steps", "segment_length", "queries_per_round", "query_every",
                      "large_batch", "store_episodes", "heldout_every", "ppo_steps", "ppo_epochs", "ppo_minibatches",
                      "eval_every", "eval_episodes", "heldout_pairs", "torch_threads", "hidden", ge=1)
        check_numbers(self, "seed", "unsup_steps", "max_feedback", "surf_unlabelled", ge=0)
        check_numbers(self, "lr", "max_grad_norm", gt=0)
        self._check_teacher_overrides()

    def _check_teacher_overrides(self) -> None:
        """The preset with `teacher_overrides` applied must be a valid `TeacherConfig`."""
        knobs = [f.name for f in fields(TeacherConfig)]
        for key in self.teacher_overrides:
            if key not in knobs:
                raise ConfigError(f"unknown teacher knob{did_you_mean(key, knobs)}; knobs: {knobs}.",
                                  f"teacher_overrides.{key}")
        try:
            teacher_config(self.teacher, **self.teacher_overrides)
        except ConfigError as e:
            raise e.under("teacher_overrides") from e


def load_config(path: str | Path, overrides: list[str] | None = None) -> PrefRLConfig:
    """A YAML file (and dotted key=value overrides) as a validated `PrefRLConfig`."""

    def build(data: dict) -> PrefRLConfig:
        data.pop("recipe", None)  # the loop `mmalign train` dispatched to: this one
        return from_dict(PrefRLConfig, data)

    return config.load_config(path, overrides, build)


def knn_state_entropy(obs: torch.Tensor, reference: torch.Tensor | None = None, k: int = 5) -> torch.Tensor:
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
        return torch.zeros(len(obs))
    d = torch.cdist(obs, ref)
    return d.topk(min(k + 1, len(ref)), largest=False).values[:, -1]


class PrefRL:
    """State of one run: envs, learner, episode stores, teacher, reward ensemble, labelled pairs."""

    def __init__(self, cfg: PrefRLConfig):
        self.cfg = cfg
        torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.store, self.heldout = EpisodeStore(cfg.store_episodes), EpisodeStore(cfg.store_episodes)
        self._n_eps = 0
        env = make_vec_env(cfg.env_id, cfg.num_envs, seed=cfg.seed)
        self.sampler = VecEnvSampler(env, on_episode=self._on_episode)
        obs_dim, act_dim = env.single_observation_space.shape[0], env.single_action_space.shape[0]
        if cfg.learner == "ppo":
            self.net = GaussianActorCritic(obs_dim, act_dim, cfg.hidden)
            self.agent = GaussianPolicy(self.net, self.sampler)
            self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, eps=1e-5)
        else:
            self.agent = SAC(obs_dim, act_dim, cfg.sac)
            self.net = torch.nn.ModuleDict({"actor": self.agent.actor, "critics": self.agent.critics})
            self.optimizer = self.agent.actor_opt
            self.buffer = ReplayBuffer(obs_dim, act_dim, cfg.sac.buffer_size)
        self.ensemble = RewardEnsemble(obs_dim, act_dim, cfg.reward_model)
        self.teacher = ScriptedTeacher(TeacherConfig(**vars(teacher_config(cfg.teacher, **cfg.teacher_overrides))),
                                       seed=cfg.seed)
        self.oracle = ScriptedTeacher(teacher_config("oracle"))
        self.labelled: list = []  # (a, b, labels) per round
        self.feedback = 0
        self.reward_updates = 0
        self.reward_shift, self.reward_scale = 0.0, 1.0

    def _on_episode(self, ep) -> None:
        self._n_eps += 1
        (self.heldout if self._n_eps % self.cfg.heldout_every == 0 else self.store).add(ep)

    # --- rewards --------------------------------------------------------------------------------------
    def reward_fn(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """The learner's per-step reward: intrinsic during warm-up, else learned (or ground truth)."""
        if self.sampler.env_steps <= self.cfg.unsup_steps:
            buf = getattr(self, "buffer", None)
            ref = buf.obs[: len(buf)][-10_000:] if buf is not None and len(buf) else None
            return knn_state_entropy(obs.reshape(-1, obs.shape[-1]), ref).reshape(obs.shape[:-1])
        return (self.ensemble.step_reward(obs, actions) - self.reward_shift) / self.reward_scale

    def feedback_due(self) -> bool:
        cfg = self.cfg
        if cfg.reward != "preference" or self.feedback >= cfg.max_feedback or self.sampler.env_steps < cfg.unsup_steps:
            return False
        nxt = cfg.unsup_steps + self.reward_updates * cfg.query_every
        return self.sampler.env_steps >= nxt and len(self.store) >= 2

    def feedback_round(self) -> dict[str, float]:
        """Query -> label -> reward update (B-Pref `learn_reward`)."""
        cfg, h = self.cfg, self.cfg.segment_length
        n = min(cfg.queries_per_round, cfg.max_feedback - self.feedback)
        cand = self.store.sample(2 * n * cfg.large_batch, h, self.rng)
        a, b = cand[: n * cfg.large_batch], cand[n * cfg.large_batch:]
        prev = self._labelled()
        idx = select_queries(cfg.selection, a, b, n, self.ensemble, None if prev is None else prev[:2])
        a, b = a[idx], b[idx]
        keep, labels = self.teacher(a.rewards, b.rewards)
        self.feedback += n  # skipped queries still cost the teacher's time
        self.labelled.append((a[keep], b[keep], labels))
        la, lb, ly = self._labelled()
        unl = None
        if cfg.surf_unlabelled:
            u = self.store.sample(2 * cfg.surf_unlabelled, h, self.rng)
            unl = (u[: cfg.surf_unlabelled], u[cfg.surf_unlabelled:])
        metrics = self.ensemble.fit(la, lb, ly, unl, seed=cfg.seed + self.reward_updates)
        self.reward_updates += 1
        if cfg.reward_normalize:
            obs = torch.as_tensor(np.concatenate([e.obs for e in self.store.episodes]))
            act = torch.as_tensor(np.concatenate([e.actions for e in self.store.episodes]))
            r = self.ensemble.step_reward(obs, act)
            self.reward_shift, self.reward_scale = float(r.mean()), float(r.std().clamp(min=1e-6))
        if cfg.learner == "sac":
            self.buffer.relabel(self.ensemble.step_reward)
        return {f"reward_model/{k}": v for k, v in metrics.items()} | {
            "reward_model/train_accuracy": self.ensemble.accuracy(la, lb, ly)}

    def _labelled(self):
        if not self.labelled:
            return None
        return (Segments.cat([x[0] for x in self.labelled]), Segments.cat([x[1] for x in self.labelled]),
                torch.cat([x[2] for x in self.labelled]))

    # --- learners -------------------------------------------------------------------------------------
    def ppo_iteration(self) -> dict[str, float]:
        """One PPO iteration with the shared core: sample, relabel rewards, prepare (GAE), epochs x minibatches."""
        cfg = self.cfg
        rollout = self.agent.sample([cfg.env_id], cfg.ppo_steps)
        if cfg.reward == "preference" or self.sampler.env_steps <= cfg.unsup_steps:
            # the executed (clipped) action, as in the labelled segments: the raw Gaussian sample lies outside the
            # box the reward model was fit on, and PPO learns to exploit the extrapolation
            state = rollout.state
            rollout.rewards = self.reward_fn(state["obs"], state["env_actions"]) * rollout.mask
        metrics = ppo_prepare(self.agent, rollout, cfg.ppo)
        for _ in range(cfg.ppo_epochs):
            for idx in torch.randperm(len(rollout)).chunk(cfg.ppo_minibatches):
                loss, m = ppo_loss(self.agent, rollout[idx], cfg.ppo)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
        metrics.update({k: float(v) for k, v in m.items()}, loss=float(loss.detach()))
        return metrics

    def sac_iteration(self) -> dict[str, float]:
        """One vector step into the replay buffer, then `updates_per_step` x num_envs SAC updates."""
        cfg = self.cfg
        self.agent.random_actions = self.sampler.env_steps < cfg.sac.learning_starts
        rollout = self.sampler.collect(self.agent, 1)
        gt = cfg.reward == "ground_truth" and self.sampler.env_steps > cfg.unsup_steps
        self.buffer.add_rollout(rollout, None if gt else self.reward_fn)
        if self.sampler.env_steps < cfg.sac.learning_starts:
            return {}
        if cfg.unsup_steps and self.sampler.env_steps - int(rollout.mask.sum()) <= cfg.unsup_steps \
                < self.sampler.env_steps:
            self.agent.reset_critics()  # PEBBLE: leave warm-up with fresh critics on the new reward
            if gt:
                self.buffer.relabel(lambda s, a: torch.zeros(len(s)))  # env rewards of warm-up are unknown
        metrics: dict[str, float] = {}
        for _ in range(max(1, round(cfg.sac.updates_per_step * int(rollout.mask.sum())))):
            metrics = self.agent.update(self.buffer.sample(cfg.sac.batch_size))
        return metrics

    # --- evaluation -----------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Ground-truth success rate and return of the deterministic policy; held-out reward-model accuracy."""
        cfg = self.cfg
        env = make_vec_env(cfg.env_id, cfg.eval_episodes, seed=10_000 + cfg.seed)
        obs, _ = env.reset(seed=10_000 + cfg.seed)
        ret, success = np.zeros(cfg.eval_episodes), np.zeros(cfg.eval_episodes, bool)
        done = np.zeros(cfg.eval_episodes, bool)
        while not done.all():
            obs, r, term, trunc, info = env.step(self.agent(obs))
            ret += r * ~done
            success |= np.asarray(info["success"], bool) & ~done
            done |= term | trunc
        env.close()
        out = {"success_rate": float(success.mean()), "return": float(ret.mean())}
        if cfg.reward == "preference" and len(self.heldout):
            pairs = self.heldout.sample(2 * cfg.heldout_pairs, cfg.segment_length, np.random.default_rng(1))
            a, b = pairs[: cfg.heldout_pairs], pairs[cfg.heldout_pairs:]
            out["reward_model_accuracy"] = self.ensemble.accuracy(a, b, self.oracle(a.rewards, b.rewards).labels)
        return out


def train(cfg: PrefRLConfig) -> Path:
    """Run one experiment end to end in a new run folder (an existing one is refused untouched); returns it."""
    from mmalign.robotics.report import finish

    run_dir = Path(cfg.output_dir) / cfg.name
    check_new_run(run_dir, resumable=False)
    run = PrefRL(cfg)
    tracker = open_run(run_dir, to_dict(cfg))
    step_fn = run.ppo_iteration if cfg.learner == "ppo" else run.sac_iteration
    t0, next_eval, metrics = time.perf_counter(), 0, {}
    with tracker:
        while True:
            steps = run.sampler.env_steps
            if steps >= next_eval or steps >= cfg.total_env_steps:
                row = {f"eval/{k}": v for k, v in run.evaluate().items()}
                tracker.log(steps, {**row, **metrics, "env_steps": steps, "feedback": run.feedback,
                                    "episode_return": _recent_return(run), "time": time.perf_counter() - t0})
                next_eval += cfg.eval_every
            if steps >= cfg.total_env_steps:
                break
            if run.feedback_due():
                metrics.update(run.feedback_round())
            metrics.update(step_fn())
    finish(run, run_dir)
    return run_dir


def _recent_return(run: PrefRL, n: int = 20) -> float:
    eps = run.store.episodes[-n:]
    return float(np.mean([e.ret for e in eps])) if eps else float("nan")

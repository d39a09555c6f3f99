"""The image-to-video task for the trainer: world-model (PFC) reward post-training of a video diffusion policy.

`model: embedded` (default): on first use, robot clips are rendered from the MuJoCo push task (`mmalign.envs.clips`), a
small video diffusion model is pre-trained on them (`pretrain.py`) and a small JEPA world model is trained on the
same clips (`world_model.py`); all three are cached under `embedded_dir`, each in a folder keyed by the config that
made it (`mmalign.cache`), and reused by runs of that config only. `model: <folder>` loads a local diffusers pipeline
(a `UNet3DConditionModel` or a frame-folding `UNet2DConditionModel`); `world_model: <folder>` a local world model
(`load_world_model`; a loader class only from `world_model_loader`, never from the folder). Conditions (first frame
+ instruction) are split by episode; evaluation generates one clip per held-out condition from fixed noise and
reports the rewards and the OpenCV physics check.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mmalign.config import ConfigError, check_numbers
from mmalign.diffusion.models import load_components
from mmalign.diffusion.policy import chunked_noise
from mmalign.diffusion.rewards import check_reward_specs
from mmalign.diffusion.settings import SamplingSettings, TrainedSteps, check_trained_steps
from mmalign.diffusion.video.policy import VideoPolicy, generate_clips
from mmalign.diffusion.video.staged import StagedSettings, staged_rollout
from mmalign.diffusion.video.world_model import PFCReward, load_world_model
from mmalign.envs.clips import ClipConfig, load_clips, motion_continuity, split_episodes


@dataclass
class VideoTaskConfig:
    model: str = "embedded"
    """"embedded" (pre-trained on rendered clips on first use) or a local diffusers pipeline folder."""
    world_model: str = "embedded"
    """"embedded" (trained on the same clips on first use) or a local world-model folder."""
    world_model_loader: str = ""
    """"package.module:Class" whose `from_pretrained(world_model)` loads a `world_model` folder that is not the
    project's JEPA (e.g. a V-JEPA-class checkpoint); "" = the built-in loader. A folder's own files never name code
    to import."""
    embedded_dir: str = "runs/embedded-video"
    """Cache of the embedded clips (clips-<key>/), video model (base-<key>/) and world model (world_model-<key>/),
    one folder per config that made them."""
    episodes: int = 160
    """Rendered push episodes (a quarter held out, by episode)."""
    pretrain_steps: int = 3000
    """Pre-training steps of the embedded video model (600 left clips of speckle over the scene; docs/video.md)."""
    world_model_steps: int = 5000
    """Training steps of the embedded world model."""
    world_model_extra_episodes: int = 360
    """More rendered episodes (seed 1, none shared with the video model's) the embedded world model also trains on,
    besides the video model's training episodes (docs/video.md)."""
    num_frames: int = 0
    """Generated frames of a 3D video UNet (a frame-folding UNet knows its own)."""
    sampling: SamplingSettings = field(default_factory=lambda: SamplingSettings(num_steps=10, max_text_length=6))
    """How a clip is drawn (`mmalign.diffusion.settings.SamplingSettings`); its resolution stays 0 (the clips')."""
    trained_steps: TrainedSteps = field(default_factory=TrainedSteps)
    """Which denoising steps train (`mmalign.diffusion.settings.TrainedSteps`)."""
    context: int = 3
    """PFC window: context frames."""
    future: int = 2
    """PFC window: future frames."""
    stride: int = 1
    """PFC window stride."""
    tau: float = 0.3
    """PFC softmax temperature (MIND-V Eq. 5)."""
    rewards: list = field(default_factory=lambda: [{"name": "pfc", "weight": 1.0}])
    """{"name": "pfc"} (the world model), an image reward of `mmalign.diffusion.rewards` applied per frame and
    averaged (MIND-V: pfc 0.2 + aesthetic 1.0), or {"fn": "package.module:attr"}, each with a weight."""
    eval_conditions: int = 32
    """Held-out conditions evaluated (one clip each)."""
    staged: StagedSettings = field(default_factory=StagedSettings)
    """Evaluate with staged visual future rollouts (`mmalign.diffusion.video.staged.StagedSettings`): stages > 0
    makes each held-out clip a chain of stages, the task's rewards as the critic; candidates 1 is the chain without
    selection."""
    eval_seed: int = 1234
    """Seed of the evaluation noise."""
    tiny: bool = False
    """Tests: few episodes, few steps, a tiny model."""

    def __post_init__(self) -> None:
        check_numbers(self, "episodes", "pretrain_steps", "world_model_steps", "context", "future", "stride",
                      "eval_conditions", ge=1)
        check_numbers(self, "world_model_extra_episodes", "num_frames", "eval_seed", ge=0)
        check_numbers(self, "tau", gt=0)
        check_trained_steps(self)
        if self.sampling.resolution:
            raise ConfigError(f"must be 0 for video, got {self.sampling.resolution}: the clips' size is the model's.",
                              "sampling.resolution")
        if self.world_model == "embedded" and self.world_model_loader:
            raise ConfigError("loads a world_model folder; the embedded world model is the project's own: set "
                              "world_model: <folder> with it, or drop world_model_loader.", "world_model_loader")
        check_reward_specs(self.rewards, extra=("pfc",))


class FramewiseReward:
    """An image reward `fn(contexts, images)` applied to every frame of each clip, averaged per clip."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, contexts, outputs, **kw) -> list[float]:
        lens = [len(c) for c in outputs]
        frames = [f for c in outputs for f in c]
        ctx = [x for x, n in zip(contexts, lens) for _ in range(n)]
        vals = np.asarray(self.fn(ctx, frames), float)
        return [float(v.mean()) for v in np.split(vals, np.cumsum(lens)[:-1])]


class VideoTask:
    """Builds the video policy, conditions and rewards for the trainer."""

    Config = VideoTaskConfig

    def __init__(self, cfg: VideoTaskConfig, device: torch.device | str = "cpu"):
        self.cfg = cfg
        root = Path(cfg.embedded_dir)
        if cfg.world_model != "embedded":  # fail before any rendering or training, with the fix in the message
            load_world_model(cfg.world_model, cfg.world_model_loader)
        self.clip_cfg = ClipConfig(episodes=6 if cfg.tiny else cfg.episodes)
        data = load_clips(self.clip_cfg, root)
        train, held = split_episodes(data)
        self.train_clips = data["frames"][train]
        rows = [{"prompt": str(p), "frame": f[0]} for p, f in zip(data["prompts"], data["frames"])]
        self.train_contexts = [rows[i] for i in train]
        self.eval_contexts = [{**rows[i], "eval_index": j} for j, i in enumerate(held[:cfg.eval_conditions])]
        self.real_clips = [data["frames"][i] for i in held[:cfg.eval_conditions]]
        self.eval_total = len(self.eval_contexts)
        self.world_model_path = self._world_model(data, train, root)
        self.policy = self._policy(data, train, root).to(device)
        self.rewards = [self._reward(s) for s in cfg.rewards]
        self.first_clips: list | None = None
        self.eval_records: list = []
        """The clip of each held-out condition in the latest evaluation (`SplitEvaluation`)."""
        self.eval_counts: dict[str, int] = {}

    def _world_model(self, data, train, root: Path) -> Path:
        if self.cfg.world_model != "embedded":
            return Path(self.cfg.world_model)
        from mmalign.diffusion.video import world_model as wm

        c = self.cfg
        steps, extra = (20, 0) if c.tiny else (c.world_model_steps, c.world_model_extra_episodes)
        return wm.embedded_world_model(root, data, train, self.clip_cfg, extra,
                                       wm.JEPAConfig(context=c.context, future=c.future),
                                       wm.WorldModelTrainConfig(steps=steps))

    def _policy(self, data, train, root: Path) -> VideoPolicy:
        c = self.cfg
        path = Path(c.model)
        if c.model == "embedded":
            from mmalign.diffusion.video.pretrain import VideoPretrainConfig, embedded_video_model

            pc = VideoPretrainConfig(steps=20, width=8, text_hidden=8) if c.tiny else \
                VideoPretrainConfig(steps=c.pretrain_steps)
            path = embedded_video_model(root, data, train, self.clip_cfg, pc, c.sampling.max_text_length)
        return VideoPolicy(load_components(path), c.num_frames, c.sampling, c.trained_steps)

    def _reward(self, spec: str | dict) -> tuple[str, object, float]:
        spec = {"name": spec} if isinstance(spec, str) else dict(spec)
        weight = float(spec.pop("weight", 1.0))
        if spec.get("name") == "pfc":
            c = self.cfg
            return spec.get("label", "pfc"), PFCReward(self.world_model_path, c.context, c.future, c.stride,
                                                       c.tau, c.world_model_loader), weight
        from mmalign.diffusion.rewards import build_reward

        label, fn, w = build_reward({**spec, "weight": weight})
        return label, FramewiseReward(fn), w

    def evaluate(self, policy: VideoPolicy) -> dict[str, float]:
        """Mean rewards and the OpenCV physics check (block jerk / largest jump / visibility) on held-out conditions,
        one clip each from fixed noise (a staged long clip each with `staged.stages`). The noise of all held-out clips
        is drawn in chunks of 32 from eval_seed + the chunk's start (held-out condition j's staged clip from
        eval_seed + 100 j + stage); a share of the conditions (`SplitEvaluation`) takes its rows of it, so a split
        evaluation makes the clips of one process. Physics means skip clips where the block is not found;
        `eval_counts` says over how many."""
        if self.first_clips is None and self.eval_records:
            self.first_clips = self.eval_records  # the first evaluation's, merged over processes
        contexts = self.eval_contexts
        if self.cfg.staged.stages:
            clips = self._staged_clips(policy)
        else:
            clips = []
            for i in range(0, len(contexts), 32):
                places = [c["eval_index"] for c in contexts[i:i + 32]]
                noise = chunked_noise(policy, places, self.eval_total, self.cfg.eval_seed, 32)
                clips += generate_clips(policy, contexts[i:i + 32], noise=noise)
        metrics = {}
        for name, fn, _ in self.rewards:
            metrics[f"reward/{name}"] = float(np.mean(fn(contexts, clips)))
        metrics["reward"] = sum(w * metrics[f"reward/{name}"] for name, _, w in self.rewards)
        phys = [motion_continuity(c) for c in clips]
        for key in ("jerk", "jump", "seen"):
            values = np.asarray([p[key] for p in phys], float)
            metrics[f"physics/{key}"] = float(np.nanmean(values))
            self.eval_counts[f"physics/{key}"] = int(np.isfinite(values).sum())
        self.eval_records = clips
        return metrics

    def _staged_clips(self, policy: VideoPolicy) -> list[np.ndarray]:
        """One staged long clip per held-out condition, critic = the weighted rewards of the candidates."""
        st = self.cfg.staged

        def critic(contexts, clips):
            return sum(w * np.asarray(fn(contexts, clips), float) for _, fn, w in self.rewards)

        return [staged_rollout(policy, ctx, critic, st.stages, st.candidates, history=st.history,
                               seed=self.cfg.eval_seed + 100 * ctx["eval_index"])[0] for ctx in self.eval_contexts]

    def finish(self, policy: VideoPolicy, run_dir: Path) -> None:
        """MP4s of the held-out clips before / after training; `samples.png`, the frames of the first held-out
        conditions' rendered clip, and their clip before and after training, row by row; the reward and physics
        curves as PNG."""
        from mmalign.diffusion.media import save_clip_grid, save_video
        from mmalign.tracking import plot_curves

        first = self.first_clips or self.eval_records  # one evaluation: it is both
        if first:
            save_video(first[:16], run_dir / "samples_before.mp4")
        if self.eval_records:
            save_video(self.eval_records[:16], run_dir / "samples_after.mp4")
            rows = [(f"{label}: {ctx['prompt']}", clip) for ctx, real, before, after
                    in zip(self.eval_contexts[:6], self.real_clips, first, self.eval_records)
                    for label, clip in (("rendered", real), ("before", before), ("after", after))]
            save_clip_grid(rows, run_dir / "samples.png")
        if (run_dir / "metrics.jsonl").exists():
            plot_curves(run_dir / "metrics.jsonl", run_dir / "pfc.png", ("pfc",), run_dir.name)
            plot_curves(run_dir / "metrics.jsonl", run_dir / "physics.png", ("jerk", "jump"), run_dir.name)

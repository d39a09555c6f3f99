"""Robot-manipulation clips rendered offscreen from the project's MuJoCo tasks, with the instruction that made them.

A scripted controller (`mmalign.envs.scripted`, with Gaussian action noise for variety) runs a planar task; every
`frame_every` env steps the "overview" camera renders a frame, the table is cropped and area-resized to `size`
pixels (OpenCV `INTER_AREA`, so sub-pixel motion shows as intensity change). Clips are windows of `frames`
consecutive frames at random offsets of an episode; the instruction is the task and the direction from the object to
its goal at the clip's first frame ("push block up left"). Rendering uses OSMesa on the CPU (`MUJOCO_GL=osmesa`,
the default without a display). Clips are cached as a compressed `.npz` (no pickle) in a folder keyed by their config.

Also here, on uint8 clips (T, H, W, 3): the block's track by colour mask and a motion-continuity measure (OpenCV),
the physics check that runs beside the world-model reward, and a real "teleported object" corruption.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmalign.config import check_choice, check_nonempty, check_numbers

CROP = (slice(8, 56), slice(8, 56))
"""The table in a 64 x 64 overview render."""

VERBS = {"reach": "reach", "push": "push block", "button-press": "press button", "drawer-open": "open drawer"}
WORDS = "reach push block press button open drawer up down left right stay".split()
"""Vocabulary of the instructions."""


@dataclass
class ClipConfig:
    tasks: tuple[str, ...] = ("push",)
    """Planar tasks to render (`mmalign.envs.TASKS`)."""
    episodes: int = 48
    """Episodes per task (each seeded by its index)."""
    clips_per_episode: int = 4
    """Windows cut from each episode."""
    frames: int = 8
    """Frames per clip."""
    frame_every: int = 3
    """Env steps (20 Hz) between frames."""
    episode_steps: int = 72
    """Env steps rendered per episode."""
    size: int = 16
    """Frame height = width in pixels."""
    noise_std: float = 0.2
    """Action noise of the scripted controller."""
    seed: int = 0
    """Seed offset of the episodes and the clip offsets."""

    def __post_init__(self) -> None:
        check_nonempty(self, "tasks")
        check_choice(self, "tasks", tuple(VERBS))
        check_numbers(self, "episodes", "clips_per_episode", "frames", "frame_every", "episode_steps", "size", ge=1)
        check_numbers(self, "noise_std", "seed", ge=0)


def instruction(task: str, obs: np.ndarray) -> str:
    """The task's verb and the quantised direction from the object (the tip, for reach) to the goal."""
    from mmalign.envs.layout import OBS_LAYOUT

    src = obs[OBS_LAYOUT["ee_pos" if task == "reach" else "obj_pos"]]
    d = obs[OBS_LAYOUT["goal"]] - src
    words = [("up" if d[1] > 0 else "down") if abs(d[1]) > 0.03 else "",
             ("right" if d[0] > 0 else "left") if abs(d[0]) > 0.03 else ""]
    return " ".join([VERBS[task]] + [w for w in words if w] or [VERBS[task], "stay"])


def _frame(env, size: int) -> np.ndarray:
    import cv2

    return cv2.resize(env.render()[CROP], (size, size), interpolation=cv2.INTER_AREA)


def render_episode(task: str, seed: int, cfg: ClipConfig, teleport: tuple[int, float, float] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Frames (N, S, S, 3) uint8 and the observation at each frame (N, OBS_DIM) of one scripted episode.

    Args:
        teleport: (frame index, dx, dy): right before that frame the block is moved by (dx, dy) metres and the
            simulation continues from there (push only).
    """
    from mmalign.envs import ENV_IDS, scripted_policy  # noqa: I001  (first: it sets MuJoCo's GL backend)

    import gymnasium as gym
    import mujoco

    env = gym.make(ENV_IDS[task], render_mode="rgb_array", width=64, height=64, camera="overview")
    policy = scripted_policy(task, cfg.noise_std, seed)
    obs, _ = env.reset(seed=seed)
    frames, states = [_frame(env, cfg.size)], [obs]
    try:
        for step in range(1, cfg.episode_steps + 1):
            obs, *_ = env.step(policy(obs))
            if step % cfg.frame_every:
                continue
            if teleport is not None and len(frames) == teleport[0]:
                m, d = env.unwrapped.model, env.unwrapped.data
                for name, delta in (("block_x", teleport[1]), ("block_y", teleport[2])):
                    d.qpos[m.jnt_qposadr[m.joint(name).id]] += delta
                mujoco.mj_forward(m, d)
                obs = env.unwrapped._get_obs()
            frames.append(_frame(env, cfg.size))
            states.append(obs)
    finally:
        env.close()
    return np.stack(frames), np.stack(states)


def make_clips(cfg: ClipConfig) -> dict[str, np.ndarray]:
    """Render the clips: "frames" (N, F, S, S, 3) uint8, "prompts" (N,) str, "episode" (N,), "start" (N,)."""
    rng = np.random.default_rng(cfg.seed)
    out: dict[str, list] = {"frames": [], "prompts": [], "episode": [], "start": [], "task": []}
    for task in cfg.tasks:
        for ep in range(cfg.episodes):
            frames, states = render_episode(task, cfg.seed * 100_000 + ep, cfg)
            for s in rng.integers(0, len(frames) - cfg.frames + 1, cfg.clips_per_episode):
                out["frames"].append(frames[s:s + cfg.frames])
                out["prompts"].append(instruction(task, states[s]))
                out["episode"].append(ep)
                out["start"].append(s)
                out["task"].append(task)
    return {k: np.stack(v) if k == "frames" else np.asarray(v) for k, v in out.items()}


def load_clips(cfg: ClipConfig, cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """`make_clips(cfg)`, cached as `<cache_dir>/clips-<key>/clips.npz` (key: the config, `mmalign.cache`), so clips
    of other configs are never reused and live side by side; None renders without caching."""
    from mmalign.cache import cached, made_with

    if cache_dir is None:
        return make_clips(cfg)
    folder = cached(cache_dir, "clips", made_with(clips=cfg),
                    lambda out: np.savez_compressed(out / "clips.npz", **make_clips(cfg)), "set of rendered clips")
    with np.load(folder / "clips.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def split_episodes(data: dict[str, np.ndarray], eval_fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out clip indices, split by episode (no episode in both)."""
    eps = np.unique(data["episode"])
    held = set(eps[: max(1, int(round(len(eps) * eval_fraction)))].tolist())
    is_eval = np.array([e in held for e in data["episode"]])
    return np.nonzero(~is_eval)[0], np.nonzero(is_eval)[0]


# --- the physics check: the block's track and its continuity (OpenCV) ------------------------------------------
def block_track(clip: np.ndarray) -> np.ndarray:
    """Centroid (T, 2) in pixels of the blue block in each frame (NaN where not seen), by an HSV colour mask."""
    import cv2

    out = np.full((len(clip), 2), np.nan)
    for i, frame in enumerate(np.asarray(clip, np.uint8)):
        hsv = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2HSV)
        mask = cv2.inRange(hsv, (100, 90, 40), (130, 255, 255))  # blue: hue ~110 of 180
        m = cv2.moments(mask, binaryImage=True)
        if m["m00"] > 0:
            out[i] = (m["m10"] / m["m00"], m["m01"] / m["m00"])
    return out


def motion_continuity(clip: np.ndarray) -> dict[str, float]:
    """How smoothly the block moves in a clip (T, H, W, 3): lower "jerk" is smoother.

    Returns:
        "jerk": mean |second difference| of the block centroid (pixels / frame^2) over frames where it is seen;
        "jump": the largest one-frame displacement (pixels); "seen": fraction of frames with the block visible.
    """
    track = block_track(clip)
    seen = ~np.isnan(track[:, 0])
    vel = np.diff(track, axis=0)
    acc = np.diff(vel, axis=0)
    ok_v, ok_a = ~np.isnan(vel[:, 0]), ~np.isnan(acc[:, 0])
    return {"jerk": float(np.linalg.norm(acc[ok_a], axis=1).mean()) if ok_a.any() else float("nan"),
            "jump": float(np.linalg.norm(vel[ok_v], axis=1).max()) if ok_v.any() else float("nan"),
            "seen": float(seen.mean())}


def corrupted(data: dict[str, np.ndarray], idx: Sequence[int], cfg: ClipConfig, kind: str, seed: int = 0
              ) -> np.ndarray:
    """Corrupted copies (N, F, S, S, 3) of clips `idx`: "shuffled" (frames permuted), "reversed" (played backwards) or
    "teleport" (the episode re-simulated with the block moved 6-10 cm at the clip's middle frame, push only)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in idx:
        clip = data["frames"][i]
        if kind == "shuffled":
            perm = rng.permutation(len(clip))
            while (perm == np.arange(len(clip))).all():
                perm = rng.permutation(len(clip))
            out.append(clip[perm])
        elif kind == "reversed":
            out.append(clip[::-1])
        elif kind == "teleport":
            if data["task"][i] != "push":
                raise ValueError("the teleport corruption moves the push task's block; pick push clips.")
            step = rng.uniform(0.06, 0.1) * rng.choice([-1, 1], 2)
            s = int(data["start"][i])
            frames, _ = render_episode("push", cfg.seed * 100_000 + int(data["episode"][i]), cfg,
                                       teleport=(s + cfg.frames // 2, *step))
            out.append(frames[s:s + cfg.frames])
        else:
            raise ValueError(f"corruption must be shuffled, reversed or teleport, got {kind!r}.")
    return np.stack(out)

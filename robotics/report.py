"""What a robot run leaves for people: curves against env steps and feedback, the reward model, a video."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from safetensors.torch import save_file

from mmalign.mp4 import write_mp4
from mmalign.tracking import plot_curves, read_metrics


def per_method(rows: Sequence[dict], metrics: Sequence[str],
               stats: Mapping[str, Callable[[np.ndarray], float]]) -> dict[str, dict[str, float]]:
    """Per method of `rows` (dicts with "method" and each metric, one per seed): each statistic of each metric over
    the seeds as "<metric>_<stat>", and the number of seeds."""
    out: dict[str, dict[str, float]] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        out[method] = {"seeds": len(sel)}
        for k in metrics:
            v = np.array([r[k] for r in sel], dtype=float)
            out[method].update({f"{k}_{name}": float(fn(v)) for name, fn in stats.items()})
    return out


def plot_against(metrics_path: Path, out: Path, title: str = "") -> Path | None:
    """Success rate and return (eval) against env steps and against feedback count: a 2 x 2 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(metrics_path) if r.get("eval/success_rate") is not None]
    if not rows:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), dpi=110)
    for j, x in enumerate(("eval/env_steps", "eval/feedback")):
        for i, y in enumerate(("eval/success_rate", "eval/return")):
            ax = axes[i, j]
            ax.plot([r[x] for r in rows], [r[y] for r in rows], marker="o", ms=3)
            ax.set_xlabel(x)
            ax.set_ylabel(y)
            ax.grid(alpha=0.3)
    fig.suptitle(title or out.stem)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def write_video(policy, env_id: str, path: Path, seed: int = 0, size: int = 96, fps: int = 20, **env_kwargs) -> Path:
    """One deterministic episode of `policy` (numpy obs -> action) rendered to an H.264 MP4."""
    import gymnasium as gym

    import mmalign.envs  # noqa: F401

    env = gym.make(env_id, render_mode="rgb_array", width=size, height=size, **env_kwargs)

    def frames():
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            yield env.render()
            obs, _, term, trunc, _ = env.step(policy(obs[None])[0])
            done = term or trunc

    try:
        return write_mp4(frames(), path, fps)
    finally:
        env.close()


def write_report(run_dir: Path, feedback, agent, env_id: str, seed: int, video: bool = True,
                 env_kwargs: dict | None = None) -> None:
    """What a robot run leaves beside its metrics: the reward ensemble in final/ (with its input normaliser), curves
    against env steps and feedback (curves.png, success.png) and a video of the final policy (final_policy.mp4).

    Args:
        run_dir: the run folder (metrics.jsonl is read from it).
        feedback: the run's `PreferenceFeedback`.
        agent: the final policy, numpy obs -> action.
        env_id: the env of the video; `env_kwargs` its keyword arguments.
        seed: the video episode's seed.
        video: write the video.
    """
    if feedback.cfg.reward == "preference":
        (run_dir / "final").mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in feedback.ensemble.state_dict().items()}
        save_file(state, run_dir / "final" / "reward_ensemble.safetensors")
    plot_against(run_dir / "metrics.jsonl", run_dir / "curves.png", run_dir.name)
    plot_curves(run_dir / "metrics.jsonl", run_dir / "success.png", ("success_rate", "accuracy"), run_dir.name)
    if video:
        write_video(agent, env_id, run_dir / "final_policy.mp4", seed=seed, **(env_kwargs or {}))

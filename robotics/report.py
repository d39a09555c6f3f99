"""What a preference-RL run leaves for people: curves against env steps and feedback, checkpoint, video."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from mmalign.checkpoint import finalize_checkpoint, save_checkpoint, staging_dir
from mmalign.mp4 import write_mp4
from mmalign.tracking import plot_curves, read_metrics


def plot_against(metrics_path: Path, out: Path, title: str = "") -> Path | None:
    """Success rate and return (eval) against env steps and against feedback count: a 2 x 2 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_metrics(metrics_path) if r.get("eval/success_rate") is not None]
    if not rows:
        return None
    fig, axes = plt.subplots(2, 2, figsize=(9, 6), dpi=110)
    for j, x in enumerate(("env_steps", "feedback")):
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


def write_video(policy, env_id: str, path: Path, seed: int = 0, size: int = 96, fps: int = 20) -> Path:
    """One deterministic episode of `policy` (numpy obs -> action) rendered to an H.264 MP4."""
    import gymnasium as gym
    import mmalign.envs  # noqa: F401

    env = gym.make(env_id, render_mode="rgb_array", width=size, height=size)

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


def finish(run, run_dir: Path) -> None:
    """Final weights (safetensors), curves (PNG) and a video of the final policy (MP4)."""
    cfg = run.cfg
    scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, lambda k: 1.0)
    final = run_dir / "final"
    save_checkpoint(final, run.net, run.optimizer, scheduler, run.sampler.env_steps,
                    extra={"env_steps": run.sampler.env_steps, "feedback": run.feedback})
    if cfg.reward == "preference":
        # state_dict, not trainable_state: the input normaliser (buffers) is part of the reward model
        state = {k: v.contiguous() for k, v in run.ensemble.state_dict().items()}
        save_file(state, staging_dir(final) / "reward_ensemble.safetensors")
    finalize_checkpoint(final, keep=0)  # checksums every file, then renames into place
    plot_against(run_dir / "metrics.jsonl", run_dir / "curves.png", cfg.name)
    plot_curves(run_dir / "metrics.jsonl", run_dir / "success.png", ("success_rate", "accuracy"), cfg.name)
    if cfg.video:
        write_video(run.agent, cfg.env_id, run_dir / "final_policy.mp4", seed=cfg.seed)

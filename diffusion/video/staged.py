"""Staged visual future rollouts (MIND-V): a long horizon generated in stages with a world-model critic.

Each stage samples K candidate clips from the current frame and the stage's instruction, scores each with the
world model (here the PFC reward over the candidate joined to the last frames already kept, so windows also span
the seam), keeps the best and continues from its last frame. MIND-V uses K = 3 and a VLM critic; any reward
callable `fn(contexts, clips) -> floats` can be the critic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mmalign.config import check_numbers
from mmalign.diffusion.video.policy import VideoPolicy, frame_of, generate_clips


@dataclass(frozen=True)
class StagedSettings:
    """Staged rollouts in evaluation (the video task's `staged:` group)."""

    stages: int = 0
    """0: one clip per condition; N: a long clip of N stages, each from the previous stage's kept last frame."""
    candidates: int = 3
    """K clips sampled per stage, the critic (the task's weighted rewards) keeps the best; 1 = no selection."""
    history: int = 3
    """Frames already kept that are joined before each candidate when it is scored (windows span the seam)."""

    def __post_init__(self) -> None:
        check_numbers(self, "stages", "history", ge=0)
        check_numbers(self, "candidates", ge=1)


@dataclass
class Stage:
    """One stage: the condition it started from, its candidates (K clips (F + 1, H, W, 3)), their scores, the pick."""

    context: dict
    candidates: list[np.ndarray]
    scores: list[float]
    chosen: int


def staged_rollout(policy: VideoPolicy, context: dict, score: Callable, stages: int = 3, candidates: int = 3,
                   prompts: Sequence[str] | None = None, history: int = 3, seed: int = 0
                   ) -> tuple[np.ndarray, list[Stage]]:
    """Generate `stages` clips in a row, each continuing from the previous stage's chosen last frame.

    Args:
        policy: the video policy.
        context: {"prompt", "frame"}: the instruction and the first frame (H, W, 3) uint8.
        score: the critic, `fn(contexts, clips) -> K floats`, higher is better (e.g. `PFCReward`).
        stages: number of stages.
        candidates: K clips sampled per stage.
        prompts: one instruction per stage (subtasks); default the context's for every stage.
        history: frames already kept that are prepended to each candidate before scoring (0: the candidate alone).
        seed: seed of stage i's noise is seed + i.

    Returns:
        The long clip (1 + stages F, H, W, 3) and the stages.
    """
    if stages < 1 or candidates < 1:
        raise ValueError(f"stages and candidates must be >= 1, got {stages} and {candidates}.")
    prompts = list(prompts) if prompts is not None else [context["prompt"]] * stages
    if len(prompts) != stages:
        raise ValueError(f"{len(prompts)} prompts for {stages} stages: give one instruction per stage.")
    frames = [frame_of(context)]
    log = []
    for i, prompt in enumerate(prompts):
        ctx = {"prompt": prompt, "frame": frames[-1]}
        clips = generate_clips(policy, [ctx] * candidates, seed=seed + i)
        past = np.stack(frames[-history - 1:-1]) if history and len(frames) > 1 else None
        scored = [c if past is None else np.concatenate([past, c]) for c in clips]
        values = [float(v) for v in score([ctx] * candidates, scored)]
        best = int(np.argmax(values))
        log.append(Stage(ctx, clips, values, best))
        frames += list(clips[best][1:])
    return np.stack(frames), log

"""Learning must be shown: GRPO moves a tiny random-init Qwen2-VL from chance to well above it on held-out images.

Questions about procedural scenes (upright: sky above ground) at 28x28 pixels, so the vision tower sees 2x2 patches
and the language model one merged image token; one-token bare answers rewarded by exact match only (a `valid`
shaping reward is image-independent and collapses the policy onto one or two answers early, which GRPO's zero-std
groups then never undo). 400 images, 80 held out; evaluation is greedy on images never trained on.
Chance is 1/4 for rotation (0/90/180/270) and 1/4 for position (quadrants). Rotation is also learnt by tiny Idefics3
and LLaVA models (lr 1e-3). Each bar sits above what a broken update reaches (with the advantages negated the
accuracy stays at 0) and below the worst of 13 runs (10 seeds at 1 thread, 3 at 2), except that the Qwen rotation run
stays near chance on seeds 6 and 8 and the position run on seed 6 (docs/vlm.md).
"""

import pytest

from mmalign.algorithms.grpo import GRPOConfig
from mmalign.run_config import RunConfig, TrainerConfig
from mmalign.settings import GenerationSettings
from mmalign.trainer import Trainer
from mmalign.vlm.task import SSLTask, SSLTaskConfig

pytestmark = pytest.mark.slow


ROTATION = {"name": "rotation", "num_rotations": 4, "show_original": False}
POSITION = {"name": "position", "min_frac": 0.6, "max_frac": 1.0}


def held_out_accuracy(tmp_path, learning, spec: dict, steps: int, num_samples: int = 8, contexts: int = 8,
                      model_type: str = "qwen2_vl", lr: float = 3e-3, report: bool = True,
                      seed: int | None = None) -> tuple[float, float]:
    """Greedy held-out accuracy before and after `steps` GRPO steps; the seed (default `learning.seed`) picks the
    images, split and model."""
    name, seed = spec["name"], learning.seed if seed is None else seed
    task = SSLTask(SSLTaskConfig(
        model_config={"model_type": model_type, "hidden": 32, "vision_dim": 32}, tasks=[spec], instruction=False,
        generation=GenerationSettings(max_new_tokens=1), seed=seed,
        num_images=400, image_size=32, task_size=28, eval_fraction=0.2, eval_views=2,
        rewards=[{"name": "accuracy", "require_tags": False}]))
    cfg = RunConfig(task="mmalign.vlm.task:SSLTask", task_args=task.cfg, algorithm_args=GRPOConfig(),
                    trainer=TrainerConfig(output_dir=str(tmp_path), steps=steps, contexts_per_step=contexts,
                                          num_samples=num_samples,
                                          lr=lr, max_grad_norm=0.0, save_every=0, seed=seed))
    trainer = Trainer(cfg, task=task)
    assert len(task.eval_contexts) == 160
    before = trainer.evaluate()[f"eval/acc/{name}"]
    for k in range(steps):
        trainer.step(k)
    after = trainer.evaluate()[f"eval/acc/{name}"]
    if report:
        learning.report(before=before, after=after)
    return before, after


def best_of_two_seeds(tmp_path, learning, spec: dict, **kw) -> tuple[float, float]:
    """(worst before, best after) over seeds s and s + 10: on the tiny Qwen2-VL about one seed in seven stays near
    chance (docs/vlm.md), so the test asks one of two seeds to learn; a broken update leaves both at chance."""
    runs = [held_out_accuracy(tmp_path / str(k), learning, spec, report=False, seed=learning.seed + 10 * k, **kw)
            for k in (0, 1)]
    before, after = max(b for b, _ in runs), max(a for _, a in runs)
    learning.report(before=before, after=after, after_s=runs[0][1], after_s10=runs[1][1])
    return before, after


def test_grpo_learns_rotation_on_held_out_images(tmp_path, learning):
    before, after = best_of_two_seeds(tmp_path, learning, ROTATION, steps=150)
    assert before <= 0.3 and after >= 0.6, (before, after)


def test_grpo_learns_position_on_held_out_images(tmp_path, learning):
    """Groups of 8 at lr 1e-3 (4 contexts a step: the samples of 8 contexts x 4): with groups of 4 at lr 3e-3, 3 seeds
    of 5 stayed near chance (0.27-0.30) and 2 learnt top vs bottom (~0.5)."""
    before, after = best_of_two_seeds(tmp_path, learning, POSITION, steps=200, contexts=4, lr=1e-3)
    assert before <= 0.3 and after >= 0.35, (before, after)


@pytest.mark.parametrize("model_type,steps,least", [("idefics3", 175, 0.6), ("llava", 125, 0.35)])
def test_grpo_learns_rotation_with_other_families(tmp_path, learning, model_type, steps, least):
    """The same run on a tiny Idefics3 (pixel shuffle: one image token per 28 px image) and a tiny LLaVA (four image
    tokens, one per 14 px patch), at lr 1e-3: at 3e-3 both lose one answer for good and stop near 0.5. LLaVA keeps
    two to four of the four answers at 125 steps, depending on the seed (0.40-0.96)."""
    before, after = held_out_accuracy(tmp_path, learning, ROTATION, steps=steps, model_type=model_type, lr=1e-3)
    assert before <= 0.3 and after >= least, (before, after)

"""Decoding-time methods over a diffusion policy (`mmalign.diffusion.decoder`): best-of-N through
`mmalign.decoding.search.best_of_n` and RL guidance on seeded noise, their cost, and the task's held-out evaluation of
them, on tiny denoisers built from config."""

import numpy as np
import pytest
import torch
from diffusion_tiny import PROMPTS, tiny_diffusion_policy

from mmalign.diffusion.decoder import ImageDecoder
from mmalign.diffusion.policy import seeded_noise
from mmalign.diffusion.rlg import generate
from mmalign.diffusion.settings import SamplingSettings
from mmalign.diffusion.task import DiffusionTask, DiffusionTaskConfig


def brightness(contexts, outputs):
    return [float(np.asarray(o, np.float32).mean()) for o in outputs]


def darkness(contexts, outputs):
    return [-b for b in brightness(contexts, outputs)]


def noise_of(policy, contexts=PROMPTS):
    """Candidate j of the contexts from seed 100 + j."""
    return lambda j: seeded_noise(policy, len(contexts), 100 + j)


def test_best_of_one_is_plain_sampling_and_best_of_n_the_best_of_the_same_draws():
    torch.manual_seed(0)
    policy = tiny_diffusion_policy(channels=3)
    noise = noise_of(policy)
    draws = [generate(policy, PROMPTS, noise=noise(j))[0] for j in range(4)]
    assert not np.array_equal(draws[0][0], draws[1][0])  # the candidates differ
    one = ImageDecoder(policy, 1, brightness).images(PROMPTS, noise)
    assert all(np.array_equal(a, b) for a, b in zip(one, draws[0]))
    for reward, pick in ((brightness, max), (darkness, min)):  # a flipped reward picks the other end
        best = ImageDecoder(policy, 4, reward).images(PROMPTS, noise)
        for i, image in enumerate(best):
            candidates = [d[i] for d in draws]
            assert any(np.array_equal(image, c) for c in candidates)
            assert brightness(None, [image])[0] == pick(brightness(None, candidates))


def test_rl_guided_decoder_samples_what_rlg_generate_samples():
    torch.manual_seed(0)
    policy = tiny_diffusion_policy(guidance=2.0, lora=True, channels=3)
    noise = noise_of(policy)
    guided = ImageDecoder(policy, rlg_scale=1.5).images(PROMPTS, noise)
    expected = generate(policy, PROMPTS, rlg_scale=1.5, noise=noise(0))[0]
    assert all(np.array_equal(a, b) for a, b in zip(guided, expected))
    base = ImageDecoder(policy, rlg_scale=0.0).images(PROMPTS, noise)
    with policy.reference_mode():
        plain_base = generate(policy, PROMPTS, noise=noise(0))[0]
    assert all(np.array_equal(a, b) for a, b in zip(base, plain_base))


@pytest.mark.parametrize("guidance,rlg,n,rows_per_draw", [
    (1.0, None, 1, 1),   # one denoiser row per step
    (2.0, None, 1, 2),   # CFG: conditional and unconditional rows
    (2.0, 1.5, 1, 4),    # RL guidance: CFG on the tuned and on the base model
    (2.0, None, 3, 2),   # best-of-3: three draws
])
def test_cost_counts_denoiser_rows_draws_and_images(guidance, rlg, n, rows_per_draw):
    policy = tiny_diffusion_policy(guidance=guidance, lora=rlg is not None, channels=3)
    decoder = ImageDecoder(policy, n, brightness if n > 1 else None, rlg_scale=rlg)
    decoder.images(PROMPTS, noise_of(policy))
    decoder.images(PROMPTS[:1], noise_of(policy, PROMPTS[:1]))
    images, steps = len(PROMPTS) + 1, policy.num_steps
    assert decoder.cost.images == images and decoder.cost.drawn == images * n
    assert decoder.cost.denoiser_rows == images * n * steps * rows_per_draw
    report = decoder.cost.report()
    assert report["cost/denoiser_rows_per_image"] == n * steps * rows_per_draw
    assert report["cost/drawn_per_image"] == n and report["cost/seconds_per_image"] > 0


def test_decoder_refuses_bad_settings():
    policy = tiny_diffusion_policy()
    with pytest.raises(ValueError, match="n >= 1"):
        ImageDecoder(policy, 0, brightness)
    with pytest.raises(ValueError, match="ranks images by a reward"):
        ImageDecoder(policy, 4)


def test_task_evaluates_a_decoder_on_its_own_held_out_noise():
    """Best-of-1 through the task's evaluation is exactly its plain evaluation; best-of-3 keeps, for every held-out
    image, the best of three candidates of which the plain image is the first, so no image scores lower."""
    torch.manual_seed(0)
    task = DiffusionTask(DiffusionTaskConfig(tiny=True, eval_samples=2, eval_fraction=0.1, rewards=[
        {"name": "jpeg_incompressibility"}], sampling=SamplingSettings(num_steps=2)))
    plain = task.evaluate(task.policy)
    plain_images = [im for _, im in task.eval_records]
    assert task.evaluate(ImageDecoder(task.policy, 1, task.rewards[0][1])) == plain
    decoder = ImageDecoder(task.policy, 3, task.rewards[0][1])
    best = task.evaluate(decoder)
    best_images = [im for _, im in task.eval_records]
    fn = task.rewards[0][1]
    assert all(b >= p for b, p in zip(fn(None, best_images), fn(None, plain_images)))
    assert best["reward"] > plain["reward"]
    assert decoder.cost.images == len(plain_images) and decoder.cost.drawn == 3 * len(plain_images)
    with pytest.raises(ValueError, match="carries its own RL guidance"):
        task.evaluate(decoder, rlg_scale=1.0)


def test_cli_evaluates_a_diffusion_task_with_best_of_n_and_rl_guidance(tmp_path, capsys):
    """`mmalign eval CONFIG --decode bon|rlg`: held-out metrics with each method's cost; best-of-2 draws twice the
    denoiser rows of plain sampling; `mmalign sample --decode` and unknown methods are refused with the way out."""
    import json
    from pathlib import Path

    from mmalign.cli import main

    config = str(Path(__file__).resolve().parents[1] / "configs/diffusion/shapes_grpo.yaml")
    args = [config, "task_args.tiny=true", "task_args.sampling.num_steps=2", "task_args.trained_steps.end=0",
            "task_args.reference=copy", "task_args.eval_fraction=0.05", "task_args.eval_samples=2",
            f"task_args.embedded_dir={tmp_path}", "trainer.cpu=true"]
    reports = {}
    for method, knob in (("bon", "n=2"), ("rlg", "w=1.5")):
        assert main(["eval", *args, "--decode", method, "--decode-arg", knob]) == 0
        reports[method] = json.loads(capsys.readouterr().out)
        assert "alignment_rate" in reports[method]
    # CFG doubles the rows: bon draws 2 candidates x 2 halves x 2 steps; RL guidance runs 2 models x 2 halves x 2 steps
    assert reports["bon"]["cost/denoiser_rows_per_image"] == reports["rlg"]["cost/denoiser_rows_per_image"] == 8
    assert reports["bon"]["cost/drawn_per_image"] == 2
    assert main(["sample", *args, "--prompt", "a red circle", "--decode", "bon"]) == 2
    assert "mmalign eval CONFIG --decode METHOD" in capsys.readouterr().err
    assert main(["eval", *args, "--decode", "beam"]) == 2
    assert "unknown method 'beam' for a diffusion task" in capsys.readouterr().err

"""The diffusion task through the shared trainer: tiny GRPO, B2 and Diffusion-DPO runs, the shipped configs, and a
tiny SD-style pipeline (UNet + VAE + CLIP text encoder) loaded from a local folder like a real checkpoint."""

import math
from pathlib import Path

import pytest
import torch

from mmalign.config import from_dict
from mmalign.diffusion import shapes
from mmalign.diffusion.models import Components, ddim_scheduler, save_components, tiny_text_encoder, tiny_unet
from mmalign.diffusion.task import DiffusionTask
from mmalign.run_config import load_run_config
from mmalign.trainer import Trainer

CONFIGS = sorted((Path(__file__).parents[1] / "configs" / "diffusion").glob("*.yaml"))
TINY = ["task_args.tiny=true", "task_args.sampling.num_steps=2", "task_args.trained_steps.end=0",
        "task_args.eval_samples=1",
        "task_args.eval_fraction=0.05",
        "trainer.steps=2", "trainer.contexts_per_step=2", "trainer.num_samples=2", "trainer.minibatches=1",
        "trainer.eval_every=0", "trainer.save_every=0", "trainer.micro_batch_size=0",
        "trainer.cpu=true"]


def run(path: Path, tmp_path: Path, extra: list[str] = ()) -> Path:
    cfg = load_run_config(path, TINY + [f"trainer.output_dir={tmp_path}", *extra])
    return Trainer(cfg).train()


@pytest.mark.parametrize("name", ["shapes_grpo", "shapes_jpeg"])
def test_tiny_grpo_run_leaves_grids_and_curves(name, tmp_path):
    out = run(CONFIGS[[c.stem for c in CONFIGS].index(name)], tmp_path)
    for f in ["metrics.jsonl", "config.yaml", "rewards.png", "samples_before.png", "samples_after.png"]:
        assert (out / f).exists(), f
    assert (out / "final" / "unet").exists()


def test_tiny_b2_run_and_lora_dpo_run(tmp_path):
    out = run(CONFIGS[[c.stem for c in CONFIGS].index("shapes_b2_grpo")], tmp_path,
              ["task_args.b2={branches: 2, split_left: 1, split_right: 2, stages: 2}"])
    assert (out / "metrics.jsonl").exists()
    out = run(CONFIGS[[c.stem for c in CONFIGS].index("shapes_dpo")], tmp_path, ["task_args.preference_pairs=1"])
    assert (out / "final" / "lora").exists()


def _config(name: str) -> Path:
    return CONFIGS[[c.stem for c in CONFIGS].index(name)]


def test_tiny_ddpo_iterations_keep_each_prompts_reward_history(tmp_path):
    """shapes_ddpo.yaml runs DDPO: its per-prompt statistics are the run state and hold every reward drawn, filed
    under the prompt that drew it."""
    trainer = Trainer(load_run_config(_config("shapes_ddpo"), TINY + [f"trainer.output_dir={tmp_path}"]))
    metrics = [trainer.step(i) for i in range(2)]
    assert all("frac_reward_zero_std" in m for m in metrics)
    history = trainer.algo_state.state_dict()
    assert set(history) <= {c["prompt"] for c in trainer.task.train_contexts}
    assert sum(len(r) for lists in history.values() for r in lists) == 2 * 2 * 2  # steps x contexts x samples


def test_tiny_b2_select_iteration_trains_at_most_two_siblings_per_group(tmp_path):
    """shapes_b2_select.yaml runs B2-DiffuRL's select mode: of each sibling group (4 here) at most the best and the
    worst sample keep steps in the loss; GRPO over siblings would keep all four."""
    cfg = load_run_config(_config("shapes_b2_select"), TINY + [
        f"trainer.output_dir={tmp_path}", "trainer.num_samples=4",
        "task_args.b2={branches: 4, split_left: 1, split_right: 2, stages: 2}"])
    assert cfg.algorithm_args.mode == "select"
    trainer = Trainer(cfg)
    metrics = [trainer.step(i) for i in range(2)]
    assert all(m["frac_kept"] <= 0.5 for m in metrics)
    assert trainer.algo_state.state_dict()
    cfg = load_run_config(_config("shapes_b2_select"), TINY + [
        f"trainer.output_dir={tmp_path}", "b2.pos_threshold=99", "b2.neg_threshold=-99",
        "task_args.b2={branches: 2, split_left: 1, split_right: 2, stages: 2}"])
    none_kept = Trainer(cfg).step(0)  # every step masked out: a zero gradient, not a backward through nothing
    assert none_kept["frac_kept"] == 0 and none_kept["grad_norm"] == 0


def test_flow_family_embedded_model_runs_the_shipped_config(tmp_path):
    """shapes_flow_grpo.yaml pre-trains the SD3-style transformer by flow matching (its own cache folder beside the
    UNet's) and trains it with flow-SDE steps."""
    from diffusers import SD3Transformer2DModel

    cfg = load_run_config(_config("shapes_flow_grpo"), [o for o in TINY if not o.startswith("task_args.tiny")] + [
        f"trainer.output_dir={tmp_path}", f"task_args.embedded_dir={tmp_path / 'emb'}", "task_args.pretrain_steps=2"])
    trainer = Trainer(cfg)
    assert isinstance(trainer.policy.denoiser, SD3Transformer2DModel) and trainer.policy.family == "flow"
    assert [f.name.startswith("shapes-flow-") for f in (tmp_path / "emb").iterdir()] == [True]
    before = [p.detach().clone() for p in trainer.params]
    metrics = trainer.step(0)
    assert math.isfinite(metrics["loss"]) and any(not torch.equal(a, p) for a, p in zip(before, trainer.params))


def test_every_shipped_config_loads():
    assert len(CONFIGS) >= 5
    for path in CONFIGS:
        cfg = load_run_config(path)
        assert cfg.task_args.sampling.num_steps >= 1


def _tiny_sd_folder(path: Path) -> Path:
    from diffusers import AutoencoderKL

    from mmalign.text.policy import word_tokenizer

    torch.manual_seed(0)
    tok = word_tokenizer(shapes.WORDS)
    vae = AutoencoderKL(block_out_channels=[4, 8], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        norm_num_groups=2)
    comp = Components(tiny_unet(8), ddim_scheduler(), tiny_text_encoder(len(tok)), tok, vae)
    return save_components(comp, path)


def test_sd_style_pipeline_from_local_folder_with_lora_cfg_and_kl(tmp_path):
    folder = _tiny_sd_folder(tmp_path / "tiny-sd")
    overrides = [f"task_args.model={folder}", "task_args.sampling.resolution=16",
                 "task_args.sampling.max_text_length=8",
                 "task_args.sampling.num_steps=2", "task_args.prompts=shapes", "task_args.eval_samples=1",
                 "task_args.eval_fraction=0.05", "trainer.steps=1", "trainer.contexts_per_step=1",
                 "trainer.num_samples=2", "trainer.minibatches=1", "trainer.mixed_precision='no'", "trainer.cpu=true",
                 f"trainer.output_dir={tmp_path}"]
    cfg = load_run_config(CONFIGS[[c.stem for c in CONFIGS].index("sd_local")], overrides)
    task = DiffusionTask(cfg.task_args)
    policy = task.policy
    assert policy.vae is not None and policy.reference == "lora" and policy.sampling.guidance_scale == 5.0
    rollout = policy.sample([task.train_contexts[0]], 2)
    assert rollout.outputs[0].shape == (16, 16, 3) and rollout.state["latents"].shape[-1] == 8
    assert torch.allclose(policy.logprobs(rollout), rollout.logprobs, atol=1e-5)
    out = Trainer(cfg, task=task).train()
    assert (out / "final" / "lora").exists()


def test_task_config_is_strict():
    from mmalign.config import ConfigError

    with pytest.raises(ConfigError):
        from_dict(DiffusionTask.Config, {"tiny": True, "not_a_field": 1})


def test_pair_split_holds_out_whole_colour_shape_pairs():
    cfg = DiffusionTask.Config()
    rows = DiffusionTask.load_rows(cfg)
    train, held = DiffusionTask.split(rows, from_dict(DiffusionTask.Config, {"eval_split": "pair"}))
    pair = lambda r: (r["color"], r["shape"])  # noqa: E731
    held_pairs = {pair(r) for r in held}
    assert len(held) == 4 * len(held_pairs) == 12 and not held_pairs & {pair(r) for r in train}
    train, held = DiffusionTask.split(rows, cfg)
    assert len(held) == 12 and len({pair(r) for r in held}) > 3  # random prompts: pairs also appear in training
    with pytest.raises(ValueError, match="eval_split"):
        DiffusionTask.split(rows, from_dict(DiffusionTask.Config, {"eval_split": "colour"}))


def test_micro_steps_give_the_same_gradient_as_all_steps_at_once(tmp_path):
    """DDPO's per-timestep backward: back-propagating chunks of denoising steps one by one gives the same gradient."""
    path = CONFIGS[[c.stem for c in CONFIGS].index("shapes_grpo")]
    grads = []
    for chunk in (0, 1, 2):
        cfg = load_run_config(path, TINY + [f"trainer.output_dir={tmp_path}", "task_args.sampling.num_steps=3",
                                            "grpo.beta=0.1",
                                            f"trainer.micro_steps={chunk}", "task_args.reference=copy"])
        trainer = Trainer(cfg)
        trainer._step = lambda finite, t=trainer: grads.append(torch.cat([p.grad.flatten() for p in t.params])) or 0.0
        trainer.step(0)
    assert grads[0].norm() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-7) and torch.allclose(grads[0], grads[2], atol=1e-7)
    with pytest.raises(ValueError, match="micro_steps needs a loss that sums over steps"):
        Trainer(load_run_config(path, TINY + ["trainer.micro_steps=1", "grpo.loss_agg=seq-mean"]))


def test_trainable_trains_only_the_named_parameters(tmp_path):
    path = CONFIGS[[c.stem for c in CONFIGS].index("shapes_grpo")]
    trainer = Trainer(load_run_config(path, TINY + [f"trainer.output_dir={tmp_path}", "task_args.trainable=[attn2]"]))
    unet = trainer.policy.denoiser
    named = {n: p for n, p in unet.named_parameters() if p.requires_grad}
    assert named and all("attn2" in n for n in named) and len(named) < len(list(unet.parameters()))
    assert {id(p) for p in trainer.params} == {id(p) for p in named.values()}
    before = {n: p.detach().clone() for n, p in unet.named_parameters()}
    trainer.step(0)
    changed = {n for n, p in unet.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("attn2" in n for n in changed)
    with pytest.raises(ValueError, match="matches no denoiser parameter"):
        Trainer(load_run_config(path, TINY + ["task_args.trainable=[no_such_layer]"]))


@pytest.mark.parametrize("train_text_encoder", [True, False])
def test_pretrain_trains_the_text_encoder_only_when_asked(tmp_path, train_text_encoder):
    from mmalign.diffusion.models import load_components
    from mmalign.diffusion.pretrain import PretrainConfig, embedded_components, pretrain

    cfg = PretrainConfig(steps=2, batch_size=8, train_text_encoder=train_text_encoder)
    fresh, saved = embedded_components(cfg), load_components(pretrain(cfg, tmp_path / "base", log_every=0))
    same = [torch.equal(a, b) for a, b in zip(fresh.text_encoder.state_dict().values(),
                                               saved.text_encoder.state_dict().values())]
    assert all(same) != train_text_encoder
    assert not all(torch.equal(a, b) for a, b in zip(fresh.denoiser.state_dict().values(),
                                                     saved.denoiser.state_dict().values()))


def test_embedded_model_is_keyed_by_its_pretraining_config(tmp_path):
    """A model pre-trained with other steps is never reused: each config gets its own folder, with its record."""
    import json

    from mmalign.diffusion.pretrain import PretrainConfig, pretrain


    def weights(steps: int) -> tuple[set, dict]:
        cfg = from_dict(DiffusionTask.Config, {"embedded_dir": str(tmp_path / "emb"), "pretrain_steps": steps})
        comp = DiffusionTask.components(cfg)
        folders = set((tmp_path / "emb").iterdir())
        return folders, comp.denoiser.state_dict()

    folders2, two = weights(2)
    folders3, three = weights(3)
    assert len(folders2) == 1 and len(folders3) == 2  # the 2-step model was not reused for 3 steps
    steps = sorted(json.loads((f / "made_with.json").read_text())["pretrain"]["steps"] for f in folders3)
    assert steps == [2, 3]
    assert not all(torch.equal(a, b) for a, b in zip(two.values(), three.values()))
    again_folders, again = weights(2)
    assert again_folders == folders3 and all(torch.equal(a, b) for a, b in zip(two.values(), again.values()))
    # the key moves the cache, not what is trained: the same weights as pre-training into a plain folder
    plain = _denoiser_weights(pretrain(PretrainConfig(steps=2), tmp_path / "plain", log_every=0))
    assert all(torch.equal(a, b) for a, b in zip(two.values(), plain.values()))


def _denoiser_weights(path: Path) -> dict:
    from mmalign.diffusion.models import load_components

    return load_components(path).denoiser.state_dict()

"""The vLLM rollout backend: truncated importance sampling by hand, the policy's engine path with a transformers
engine, LoRA merging for the engine's weights and the config checks on CPU; a real vLLM engine on CUDA only."""

import importlib.util
import math
from functools import partial

import pytest
import torch
from tiny import PROMPTS, ROWS, tiny_policy

from mmalign.algorithms.grpo import GRPOConfig, grpo_loss, grpo_prepare
from mmalign.config import ConfigError, from_dict
from mmalign.generate import sample_tokens, scaled_logits
from mmalign.losses import truncated_is_weights
from mmalign.text.policy import positions
from mmalign.text.task import TextTaskConfig
from mmalign.text.vllm_backend import completion_tensors, vllm_weights, weights_version, write_engine_config

TINY_LM = {"model_type": "qwen2", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True}
VLLM_READY = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
GPU_RUN = ["trainer.device=cuda", "trainer.cpu=false", "trainer.save_every=0", "trainer.eval_every=0",
           "task_args.model_config.hidden_size=128", "task_args.model_config.intermediate_size=256",
           "task_args.model_config.num_attention_heads=2", "task_args.model_config.num_key_value_heads=1"]
"""The tiny text config on CUDA with a head size of 64, which vLLM's attention kernels take."""
needs_vllm = pytest.mark.skipif(not VLLM_READY, reason="needs vllm (pip install -e .[vllm]) and a CUDA GPU")


def test_truncated_is_weights_by_hand():
    train = torch.tensor([[-1.0, -2.0, -0.5, -3.0]], requires_grad=True)
    sampler = torch.tensor([[-1.5, -1.0, -0.5 - math.log(3.0), -3.0]])
    w = truncated_is_weights(train, sampler, cap=2.0)
    # exp(0.5) = 1.6487 kept, exp(-1) = 0.3679 kept, exp(log 3) = 3 capped at 2, exp(0) = 1
    torch.testing.assert_close(w.weight, torch.tensor([[math.exp(0.5), math.exp(-1.0), 2.0, 1.0]]))
    assert w.clipped.tolist() == [[False, False, True, False]]
    assert not w.weight.requires_grad  # a weight on the loss, never differentiated


class TransformersEngine:
    """An engine interface over a transformers model (prompt token ids in; token ids and their log-probs out), to
    test the policy's engine path where vLLM cannot run."""

    def __init__(self, policy):
        self.policy = policy

    def generate(self, prompts, num_samples, greedy=False):
        p = self.policy
        samples = []
        for prompt in prompts:
            ids = torch.tensor([prompt] * num_samples)
            attn = torch.ones_like(ids)
            pos = positions(attn)
            inputs = {"input_ids": ids, "attention_mask": attn, "position_ids": pos}
            scale = partial(scaled_logits, temperature=p.temperature)
            comp, lps, mask = sample_tokens(p.model, inputs, pos[:, -1:], p.max_new_tokens, p.tokenizer.eos_token_id,
                                            p.tokenizer.pad_token_id, scale, greedy)
            samples += [(c[m].tolist(), lp[m].tolist()) for c, lp, m in zip(comp, lps, mask)]
        return samples


def test_engine_rollout_is_rescored_by_the_trained_model():
    """Prompts go to the engine without their left padding; the re-scored log-probs of the same weights match the
    engine's, and the rollout keeps both."""
    policy = tiny_policy(temperature=0.7)
    policy.sampler = TransformersEngine(policy)
    torch.manual_seed(0)
    rollout = policy.sample(PROMPTS, 3)
    assert rollout.group.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    sampler = rollout.extras["rollout_logprobs"]
    assert bool((sampler[rollout.mask] < 0).all()) and bool((sampler[~rollout.mask] == 0).all())
    torch.testing.assert_close(rollout.logprobs, sampler, atol=1e-5, rtol=1e-5)
    assert rollout.mask.sum() > len(rollout)  # more than one step per completion
    words = [o.split() for o in rollout.outputs]
    assert all(len(w) <= n for w, n in zip(words, rollout.mask.sum(1).tolist()))
    greedy = policy.sample(PROMPTS, 1, greedy=True)
    assert "rollout_logprobs" not in greedy.extras  # evaluation needs no correction


def test_completion_tensors_pad_and_mask():
    ids, lps, mask = completion_tensors([([5, 6, 1], [-0.1, -0.2, -0.3]), ([7], [-1.0])], pad_id=0, device="cpu")
    assert ids.tolist() == [[5, 6, 1], [7, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    torch.testing.assert_close(lps, torch.tensor([[-0.1, -0.2, -0.3], [-1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="2 tokens but 1 log-probs"):
        completion_tensors([([5, 6], [-0.1])], 0, "cpu")


def test_grpo_loss_weights_each_step_by_tis():
    """Right after sampling the ratio is 1, so each real step's loss is -A * w with w = min(exp(logp - logp_vllm), C);
    the sampler's log-probs are the trainer's shifted by +-0.9 on alternate steps (w = e^-0.9 or e^0.9 capped)."""
    policy = tiny_policy(temperature=0.7)
    torch.manual_seed(0)
    rollout = policy.sample(ROWS, 4)
    shift = torch.where(torch.arange(rollout.mask.shape[1]) % 2 == 0, 0.9, -0.9).expand_as(rollout.logprobs)
    rollout.extras["rollout_logprobs"] = rollout.logprobs + shift
    rollout.rewards = torch.arange(len(rollout), dtype=torch.float)
    cfg = GRPOConfig(tis_cap=2.0)
    metrics = grpo_prepare(policy, rollout, cfg)
    w = torch.where(shift > 0, math.exp(-0.9), 2.0)  # e^0.9 = 2.46 is capped at 2
    m = rollout.mask
    assert metrics["tis_weight"] == pytest.approx(float(w[m].mean()), rel=1e-5)
    assert metrics["tis_clip_frac"] == pytest.approx(float((shift < 0)[m].float().mean()), rel=1e-5)
    assert metrics["rollout_logprob_gap"] == pytest.approx(0.9, rel=1e-5)
    loss, _ = grpo_loss(policy, rollout, cfg)
    adv = rollout.extras["advantages"][:, None].expand_as(w)
    assert float(loss.detach()) == pytest.approx(float((-adv * w)[m].mean()), abs=1e-5)
    off = GRPOConfig(tis_cap=0.0)
    rollout.extras.pop("is_weights")
    assert grpo_prepare(policy, rollout, off).keys() == {"frac_reward_zero_std"}
    assert float(grpo_loss(policy, rollout, off)[0].detach()) == pytest.approx(float((-adv)[m].mean()), abs=1e-5)


def test_engine_weights_merge_lora_under_the_base_names():
    policy = tiny_policy(lora=True)
    model = policy.model
    base = {n.removeprefix("base_model.model.").replace(".base_layer", "") for n, _ in model.named_parameters()
            if "lora_" not in n}
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    merged = layer.base_layer.weight + layer.scaling["default"] * layer.lora_B["default"].weight \
        @ layer.lora_A["default"].weight
    rollout = policy.sample(PROMPTS, 1)
    before, base_weight, version = policy.logprobs(rollout), layer.base_layer.weight.clone(), weights_version(model)
    weights = {n: t.clone() for n, t in vllm_weights(model)}
    assert weights.keys() == base and "model.layers.0.self_attn.q_proj.weight" in weights
    torch.testing.assert_close(weights["model.layers.0.self_attn.q_proj.weight"], merged.detach())
    assert not torch.allclose(merged, base_weight)  # the adapter is not a no-op
    torch.testing.assert_close(layer.base_layer.weight, base_weight)  # unmerged afterwards
    torch.testing.assert_close(policy.logprobs(rollout), before)
    assert weights_version(model) == version  # merging touches no trainable weight
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    policy.logprobs(rollout).sum().backward()
    opt.step()
    assert weights_version(model) != version  # the engine will reload


def test_engine_config_names_the_architecture(tmp_path):
    import json

    policy = tiny_policy(lora=True)
    assert not policy.model.get_base_model().config.architectures  # built from a config: none recorded
    write_engine_config(policy.model, str(tmp_path))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["architectures"] == ["Qwen2ForCausalLM"] and saved["hidden_size"] == 32
    assert not policy.model.get_base_model().config.architectures  # the model's own config is left alone


def test_vllm_backend_config_errors_on_cpu():
    with pytest.raises(ConfigError, match="NLPO's masked sampling needs generation.backend: hf") as e:
        from_dict(TextTaskConfig, {"model_config": TINY_LM, "generation": {"backend": "vllm"},
                                   "nlpo": {"top_p": 0.9}})
    assert e.value.key == "nlpo.top_p"
    from mmalign.vlm.task import SSLTaskConfig

    with pytest.raises(ConfigError, match="a VLM samples with its own model") as e:
        from_dict(SSLTaskConfig, {"model_config": {"hidden": 32}, "generation": {"backend": "vllm"}})
    assert e.value.key == "generation.backend"


@pytest.mark.skipif(VLLM_READY, reason="checks the error of a machine without vllm or CUDA")
def test_vllm_backend_names_the_extra_or_cuda():
    missing = r"pip install -e \.\[vllm\]" if importlib.util.find_spec("vllm") is None else "no CUDA GPU"
    with pytest.raises(ConfigError, match=missing) as e:
        from_dict(TextTaskConfig, {"model_config": TINY_LM, "generation": {"backend": "vllm"}})
    assert e.value.key == "generation.backend"


@needs_vllm
def test_vllm_logprobs_match_the_rescored_ones_over_grpo_steps(tmp_path):
    """A real vLLM engine on a tiny Qwen2: its sampled log-probs are close to the trained model's re-score, and stay
    close after updates (the engine got the new weights each iteration); the TIS metrics are logged."""
    from mmalign.run_config import load_run_config
    from mmalign.trainer import Trainer

    cfg = load_run_config("configs/text/tiny_grpo.yaml", [
        *GPU_RUN, f"trainer.output_dir={tmp_path}",
        "task_args.generation.backend=vllm", "task_args.generation.vllm_enforce_eager=true",
        "task_args.generation.vllm_gpu_memory_utilization=0.2"])
    trainer = Trainer(cfg)
    gaps = []
    for step in range(3):
        metrics = trainer.step(step)
        gaps.append(metrics["rollout_logprob_gap"])
        assert 0 < metrics["tis_weight"] <= 2.0 and 0 <= metrics["tis_clip_frac"] <= 1
    assert max(gaps) < 0.05, gaps  # fp32 on both sides: kernels differ, weights do not
    rollout = trainer.policy.sample(trainer.task.train_contexts[:2], 4)
    assert rollout.mask.any(1).all() and all(isinstance(o, str) for o in rollout.outputs)


@needs_vllm
def test_vllm_lora_weights_reach_the_engine(tmp_path):
    """With LoRA, the merged weights reach the engine: after steps that move the adapters, the engine's log-probs
    still match the trained model's."""
    from mmalign.run_config import load_run_config
    from mmalign.trainer import Trainer

    cfg = load_run_config("configs/text/tiny_grpo.yaml", [
        *GPU_RUN, f"trainer.output_dir={tmp_path}",
        "task_args.generation.backend=vllm", "task_args.generation.vllm_enforce_eager=true",
        "task_args.generation.vllm_gpu_memory_utilization=0.2", "task_args.lora.rank=4", "trainer.lr=0.05"])
    trainer = Trainer(cfg)
    gaps = [trainer.step(step)["rollout_logprob_gap"] for step in range(3)]
    assert max(gaps) < 0.05, gaps

"""Idefics3 / SmolVLM and LLaVA on the VLM adapter (their contract test is test_contract.py): the same logits
as the model's own pixel path on the stock processor's output, tiled images, and references that keep their weights.

The prompt encoders use transformers' stock `Idefics3Processor` / `LlavaProcessor` over PIL image processors (no
torchvision); the policy runs the vision tower itself once per distinct image and feeds the features in.
"""

import pytest
import torch
from vlm_tiny import CONTEXTS, gradient_reaches, random_image, tiny_vlm_policy

from mmalign.rollout import HasEntropy, HasReference, Policy

FAMILIES = ["idefics3", "smolvlm", "llava"]


def test_idefics3_split_images_into_tiles(sampled):
    policy = sampled("vlm-idefics3-tiles")[0]  # SmolVLM's default: tiles plus a global view (and on the contract)
    batch = policy.inputs.encode(CONTEXTS[:1], "cpu")
    tiles = batch.images["pixel_values"][0].shape[0]
    assert tiles > 2 and int(batch.token_types.sum()) == 4 * tiles  # 4 image tokens per tile / global view


@pytest.mark.parametrize("model_type", FAMILIES)
def test_same_logits_as_the_models_own_pixel_path(sampled, model_type):
    """Left padding, 1-D positions and the adapter's vision features give what the model computes from the stock
    processor's output of each prompt alone (pixel_values straight into the forward)."""
    policy = sampled(f"vlm-{model_type}")[0]
    roll = policy.rollout_from(CONTEXTS, ["a cat", "90", "yes , no"])
    ours = policy.logprobs(roll)
    inputs, p = policy.inputs, roll.state["prompt_length"]
    for i, c in enumerate(CONTEXTS):
        kw = {"images": [c["images"]] if model_type != "llava" else c["images"]} if c["images"] else {}
        enc = inputs.processor(text=[inputs.render(c["prompt"], len(c["images"]))], return_tensors="pt", **kw)
        comp = roll.state["input_ids"][i, p:][roll.mask[i]]
        ids = torch.cat([enc["input_ids"][0], comp])[None]
        extra = {k: v for k, v in enc.items() if k in ("pixel_values", "pixel_attention_mask")}
        logits = policy.model(input_ids=ids, attention_mask=torch.ones_like(ids), **extra).logits
        n = comp.shape[0]
        ref = torch.log_softmax(policy._logits(logits[0, -n - 1:-1]), -1).gather(-1, comp[:, None])[:, 0]
        torch.testing.assert_close(ours[i, :n], ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", ["qwen2_vl", "llava"])
def test_copy_reference_keeps_its_own_vision_tower(model_type):
    policy = tiny_vlm_policy(model_type=model_type, reference="copy")
    assert isinstance(policy, Policy | HasReference | HasEntropy)
    rollout = policy.sample(CONTEXTS, 2)
    with torch.no_grad():  # train only the vision side of the policy
        for n, w in policy.model.named_parameters():
            if "vision" in n or "visual" in n:
                w.add_(0.5 * torch.randn_like(w))
    assert not torch.allclose(policy.logprobs(rollout), rollout.logprobs, atol=1e-4)
    torch.testing.assert_close(policy.ref_logprobs(rollout), rollout.logprobs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_images_reach_the_logits_and_the_vision_tower_gets_gradients(sampled, model_type):
    policy, rollout = sampled(f"vlm-{model_type}")
    other = dict(CONTEXTS[2], images=[random_image(3)])
    same_text = [policy.logprobs(policy.rollout_from([c], ["a cat dog"])) for c in (CONTEXTS[2], other)]
    assert not torch.allclose(*same_text)
    assert gradient_reaches(policy, rollout, "vision")


def test_unsupported_family_and_mismatched_tokenizer_are_clear_errors():
    from mmalign.vlm.inputs import prompt_encoder
    from mmalign.vlm.tiny import word_tokenizer

    policy = tiny_vlm_policy(model_type="llava")
    qwen_tok = word_tokenizer(["a"], "qwen2_vl")
    with pytest.raises(ValueError, match="image token"):
        prompt_encoder(policy.model, qwen_tok, policy.inputs.image_processor)
    policy.model.config.model_type = "paligemma"
    with pytest.raises(ValueError, match="no prompt encoder for model_type 'paligemma'"):
        prompt_encoder(policy.model, policy.tokenizer, policy.inputs.image_processor)


@pytest.mark.parametrize("model_type", ["idefics3", "llava"])
def test_saved_model_loads_back_from_a_local_folder(tmp_path, model_type):
    """`task_args.model=PATH` (configs/vlm/*_local_ssl.yaml) on a save_pretrained folder: same tokens, same scores."""
    from mmalign.vlm.inputs import prompt_encoder
    from mmalign.vlm.policy import VLMPolicy
    from mmalign.vlm.task import SSLTaskConfig, load_vlm

    policy = tiny_vlm_policy(model_type=model_type)
    policy.save_pretrained(tmp_path)
    model, tokenizer, image_processor = load_vlm(SSLTaskConfig(model=str(tmp_path)))
    loaded = VLMPolicy(model, prompt_encoder(model, tokenizer, image_processor))
    a, b = policy.rollout_from(CONTEXTS, ["a cat"] * 3), loaded.rollout_from(CONTEXTS, ["a cat"] * 3)
    assert torch.equal(a.state["input_ids"], b.state["input_ids"])
    torch.testing.assert_close(loaded.logprobs(b), policy.logprobs(a))
    _, _, split = load_vlm(SSLTaskConfig(model=str(tmp_path), image_processor_args={"do_resize": False}))
    assert image_processor.do_resize and not split.do_resize  # task_args.image_processor_args reach the processor

"""The VLM adapter beyond the contract (test_contract.py): minibatches carry each sample's images, image tokens are
never sampled, the prompt layout matches the processors', images reach the logits, the LoRA reference."""

import pytest
import torch
from adapters import CASES, domain_cases
from vlm_tiny import CONTEXTS, gradient_reaches, random_image

QWEN = "vlm-qwen2_vl-copy-ref"
"""The contract case of a full Qwen2-VL policy (its reference is a frozen copy)."""


@pytest.mark.parametrize("name", domain_cases("vlm"))
def test_minibatches_carry_their_images_and_image_tokens_are_never_sampled(sampled, name):
    policy, rollout = sampled(name)
    n = CASES[name].num_samples
    idx = torch.tensor([len(rollout) - 1, 0, n])  # contexts 2, 0 and 1 (one image, two, none)
    pixels = rollout[idx].state["pixel_values"]
    assert len(pixels) == 3 and pixels[2].shape[0] == 0
    assert all(torch.equal(p, rollout.state["pixel_values"][i]) for p, i in zip(pixels, idx.tolist()))
    tokens = rollout.state["input_ids"][:, rollout.state["prompt_length"]:]
    assert not bool(torch.isin(tokens, policy.banned).any())  # an emitted <image> would break the next forward


def test_image_tokens_match_the_processor_layout(sampled):
    policy = sampled(QWEN)[0]
    batch = policy.inputs.encode(CONTEXTS[:1], "cpu")
    grids = batch.images["image_grid_thw"][0]
    assert grids.tolist() == [[1, 4, 4], [1, 4, 2]]  # 56x56 and 84x56 resized to multiples of 28 within max_pixels
    assert int(batch.token_types.sum()) == 4 + 2  # grid.prod() / merge^2 pad tokens per image
    assert batch.images["pixel_values"][0].shape == (24, 3 * 2 * 14 * 14)
    assert batch.position_ids.shape == (1, 3, batch.input_ids.shape[1])


def test_images_change_the_policy(sampled):
    policy = sampled(QWEN)[0]
    other = dict(CONTEXTS[2], images=[random_image(3)])
    same_text = [policy.logprobs(policy.rollout_from([c], ["a cat dog"])) for c in (CONTEXTS[2], other)]
    assert not torch.allclose(*same_text)  # the image reaches the logits


def test_lora_reference_is_the_base_model_and_vision_gets_gradients(sampled):
    policy, rollout = sampled("vlm-qwen2_vl-lora")
    with policy.model.disable_adapter():
        base = policy.logprobs(rollout)
    torch.testing.assert_close(policy.ref_logprobs(rollout), base)
    assert gradient_reaches(*sampled(QWEN), "visual")


def test_rollout_from_scores_given_text(sampled):
    policy = sampled(QWEN)[0]
    roll = policy.rollout_from(CONTEXTS, ["a cat", "90", "yes , no"])
    assert roll.mask.sum(1).tolist() == [3, 2, 4]  # words + EOS
    lp = policy.logprobs(roll)
    assert lp.requires_grad and bool((lp[roll.mask] < 0).all())


def test_prompt_encoding_matches_the_stock_qwen2_vl_processor(sampled):
    """`Qwen2VLInputs` expands image pads and sets token types itself; the stock processor (built without its video
    processor) gives the same ids, mm_token_type_ids and pixels, prompt by prompt."""
    from mmalign.vlm.inputs import qwen2_vl_processor

    policy = sampled(QWEN)[0]
    inputs = policy.inputs
    stock = qwen2_vl_processor(inputs.image_processor, inputs.tokenizer)
    batch = inputs.encode(CONTEXTS, "cpu")
    for i, c in enumerate(CONTEXTS):
        kw = {"images": c["images"]} if c["images"] else {}
        out = stock(text=[inputs.render(c["prompt"], len(c["images"]))], return_tensors="pt", **kw)
        real = batch.attention_mask[i].bool()
        assert batch.input_ids[i][real].tolist() == out["input_ids"][0].tolist()
        assert batch.token_types[i][real].tolist() == out["mm_token_type_ids"][0].tolist()
        if c["images"]:
            torch.testing.assert_close(batch.images["pixel_values"][i], out["pixel_values"].float())
            assert batch.images["image_grid_thw"][i].tolist() == out["image_grid_thw"].tolist()

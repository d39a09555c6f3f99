"""The VLM adapter's contract: right after sampling, re-scored log-probs equal the sampled ones, with images."""

import pytest
import torch
from vlm_tiny import random_image, tiny_vlm_policy

from mmalign.rollout import HasEntropy, HasReference, Policy

CONTEXTS = [  # prompts of different lengths (left padding), several images of different sizes, a text-only one
    {"prompt": "what is in <image> and <image> ?", "images": [random_image(0), random_image(1, 84, 56)]},
    {"prompt": "a cat", "images": []},
    {"prompt": "what is in", "images": [random_image(2)]},
]


@pytest.mark.parametrize("model_type,lora", [("qwen2_vl", False), ("qwen2_vl", True), ("qwen2_5_vl", False),
                                             ("idefics3", False), ("idefics3", True), ("smolvlm", False),
                                             ("llava", False), ("llava", True)])
def test_rescored_logprobs_equal_sampled(model_type, lora):
    policy = tiny_vlm_policy(model_type=model_type, lora=lora, temperature=0.7)
    rollout = policy.sample(CONTEXTS, 3)
    assert rollout.logprobs.shape == rollout.mask.shape == (9, 6)
    torch.testing.assert_close(policy.logprobs(rollout), rollout.logprobs, atol=1e-5, rtol=0)
    mb = rollout[torch.tensor([8, 0, 4])]  # minibatch slicing carries each sample's images
    assert len(mb.state["pixel_values"]) == 3 and mb.state["pixel_values"][2].shape[0] == 0
    torch.testing.assert_close(policy.logprobs(mb), mb.logprobs, atol=1e-5, rtol=0)
    tokens = rollout.state["input_ids"][:, rollout.state["prompt_length"]:]
    assert not bool(torch.isin(tokens, policy.banned).any())  # an emitted <image> would break the next forward


def test_image_tokens_match_the_processor_layout():
    policy = tiny_vlm_policy()
    batch = policy.inputs.encode(CONTEXTS[:1], "cpu")
    grids = batch.images["image_grid_thw"][0]
    assert grids.tolist() == [[1, 4, 4], [1, 4, 2]]  # 56x56 and 84x56 resized to multiples of 28 within max_pixels
    assert int(batch.token_types.sum()) == 4 + 2  # grid.prod() / merge^2 pad tokens per image
    assert batch.images["pixel_values"][0].shape == (24, 3 * 2 * 14 * 14)
    assert batch.position_ids.shape == (1, 3, batch.input_ids.shape[1])


def test_images_change_the_policy_and_never_get_sampled():
    policy = tiny_vlm_policy()
    other = dict(CONTEXTS[2], images=[random_image(3)])
    same_text = [policy.logprobs(policy.rollout_from([c], ["a cat dog"])) for c in (CONTEXTS[2], other)]
    assert not torch.allclose(*same_text)  # the image reaches the logits
    rollout = policy.sample(CONTEXTS, 8)
    tokens = rollout.state["input_ids"][:, rollout.state["prompt_length"]:]
    assert not bool(torch.isin(tokens, policy.banned).any())  # image / vision tokens are masked out


def test_protocols_reference_and_entropy():
    policy = tiny_vlm_policy(reference="copy")
    assert isinstance(policy, Policy | HasReference | HasEntropy)
    rollout = policy.sample(CONTEXTS, 2)
    torch.testing.assert_close(policy.ref_logprobs(rollout), rollout.logprobs, atol=1e-5, rtol=0)
    ent = policy.entropy(rollout)
    assert ent.shape == rollout.mask.shape and bool(torch.isfinite(ent).all())


def test_lora_reference_is_the_base_model_and_vision_gets_gradients():
    policy = tiny_vlm_policy(lora=True)
    rollout = policy.sample(CONTEXTS, 2)
    with policy.model.disable_adapter():
        base = policy.logprobs(rollout)
    torch.testing.assert_close(policy.ref_logprobs(rollout), base)
    full = tiny_vlm_policy()
    (full.logprobs(full.sample(CONTEXTS, 2)).sum()).backward()
    visual = [p.grad for n, p in full.model.named_parameters() if "visual" in n and p.grad is not None]
    assert visual and any(bool(g.abs().sum() > 0) for g in visual)


def test_rollout_from_scores_given_text():
    policy = tiny_vlm_policy()
    roll = policy.rollout_from(CONTEXTS, ["a cat", "90", "yes , no"])
    assert roll.mask.sum(1).tolist() == [3, 2, 4]  # words + EOS
    lp = policy.logprobs(roll)
    assert lp.requires_grad and bool((lp[roll.mask] < 0).all())


def test_prompt_encoding_matches_the_stock_qwen2_vl_processor():
    """`Qwen2VLInputs` expands image pads and sets token types itself; the stock processor (built without its video
    processor) gives the same ids, mm_token_type_ids and pixels, prompt by prompt."""
    from mmalign.vlm.inputs import qwen2_vl_processor

    policy = tiny_vlm_policy()
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

"""The procedural shapes data, the OpenCV prompt-alignment check and the image rewards."""

import numpy as np
import pytest
import torch

from mmalign.diffusion import shapes
from mmalign.diffusion.rewards import (
    ClipScoreReward,
    PreferenceModelReward,
    PromptAlignmentReward,
    build_reward,
    jpeg_compressibility,
    jpeg_incompressibility,
)


@pytest.mark.parametrize("size,counts", [(16, (1, 2)), (32, (1, 2, 3))])
def test_drawn_images_pass_their_own_check(size, counts):
    rng = np.random.default_rng(0)
    for spec in shapes.all_specs(counts):
        for _ in range(3):
            assert all(shapes.check(shapes.draw(spec, size, rng), spec).values()), spec


def test_check_catches_each_wrong_attribute():
    rng = np.random.default_rng(1)
    spec = {"color": "red", "shape": "circle", "count": 1, "position": "left"}
    img = shapes.draw(spec, 16, rng)
    assert shapes.check(img, {**spec, "color": "blue"})["color"] is False
    for key, wrong in [("shape", "square"), ("shape", "triangle"), ("position", "right"), ("position", "top"),
                       ("count", 2)]:
        assert not shapes.check(img, {**spec, key: wrong})[key], key
    assert not any(shapes.check(np.zeros((16, 16, 3), np.uint8), spec).values())


def test_prompts_round_trip():
    for spec in shapes.all_specs((1, 2, 3)):
        parsed = shapes.parse_prompt(shapes.prompt_of_spec(spec))
        assert parsed == {k: v for k, v in spec.items() if v != ""}
        assert set(shapes.prompt_of_spec(spec).split()) <= set(shapes.WORDS)


def test_noisy_prompts_redraw_each_attribute_at_the_given_rate():
    rng, spec = np.random.default_rng(3), {"color": "red", "shape": "circle", "count": 1, "position": "left"}
    assert shapes.noisy_prompt(spec, 0.0, rng) == shapes.prompt_of_spec(spec)
    parsed = [shapes.parse_prompt(shapes.noisy_prompt(spec, 0.4, rng)) for _ in range(4000)]
    # Each word is kept with probability 1 - p + p / k (redrawn uniformly over k options, possibly the same).
    for key, k in (("color", 4), ("shape", 3), ("position", 4)):
        kept = np.mean([p[key] == spec[key] for p in parsed])
        assert abs(kept - (0.6 + 0.4 / k)) < 0.03, key
    assert all(p["count"] == 1 for p in parsed)
    assert len({p["position"] for p in parsed}) == 4 and len({p["color"] for p in parsed}) == 4


def test_alignment_reward_from_rows_and_prompts():
    rng = np.random.default_rng(2)
    row = shapes.rows()[0]
    good, bad = shapes.draw(row, 16, rng), shapes.draw({**row, "position": "right"}, 16, rng)
    assert PromptAlignmentReward()([row, row], [good, bad]) == [1.0, 0.75]
    assert PromptAlignmentReward(strict=True)([row["prompt"]] * 2, [good, bad]) == [1.0, 0.0]
    graded = PromptAlignmentReward(graded_position=True)([row, row], [good, bad])
    assert 0.9 < graded[0] <= 1.0 and 0.75 <= graded[1] < 0.8  # the other three attributes hold in both


@pytest.mark.parametrize("where", shapes.POSITIONS)
def test_position_score_is_the_share_on_the_requested_side(where):
    image = shapes.draw({"color": "red", "shape": "square", "count": 1, "position": where}, 16,
                        np.random.default_rng(0))
    opposite = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[where]
    assert shapes.position_score(image, where) > 0.8 and shapes.position_score(image, opposite) < 0.2
    assert shapes.position_score(np.zeros_like(image), where) == 0.0


def test_jpeg_rewards_prefer_flat_images():
    flat, noisy = np.full((16, 16, 3), 128, np.uint8), np.random.default_rng(0).integers(0, 255, (16, 16, 3), np.uint8)
    comp = jpeg_compressibility([None, None], [flat, noisy])
    assert comp[0] > comp[1] and jpeg_incompressibility([None], [noisy])[0] == pytest.approx(-comp[1])
    label, fn, w = build_reward({"name": "jpeg_compressibility", "quality": 80, "weight": 2.0})
    assert label == "jpeg_compressibility" and w == 2.0 and len(fn([None], [flat])) == 1


def test_image_rewards_reject_wrong_outputs():
    with pytest.raises(ValueError, match="uint8 RGB"):
        jpeg_compressibility([None], [np.zeros((4, 4), np.float32)])


def _tiny_clip(path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from mmalign.text.policy import word_tokenizer

    torch.manual_seed(0)
    tok = word_tokenizer(shapes.WORDS)
    cfg = CLIPConfig(text_config={"vocab_size": len(tok), "hidden_size": 8, "intermediate_size": 16,
                                  "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 16,
                                  "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2},
                     vision_config={"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "image_size": 16, "patch_size": 8},
                     projection_dim=8)
    CLIPModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(path)
    return path


def test_clip_score_and_preference_hook_from_a_local_checkpoint(tmp_path):
    path = _tiny_clip(tmp_path / "clip")
    rng = np.random.default_rng(0)
    rows = shapes.rows()[:3]
    imgs = [shapes.draw(r, 16, rng) for r in rows]
    scores = ClipScoreReward(str(path))(rows, imgs)
    assert len(scores) == 3 and all(np.isfinite(scores))
    pick = PreferenceModelReward(str(path))(rows, imgs)
    assert np.allclose(np.array(pick) * 26.0, scores, atol=1e-4)
    with pytest.raises(FileNotFoundError):
        ClipScoreReward(str(tmp_path / "missing"))


def test_aesthetic_head(tmp_path):
    from safetensors.torch import save_file

    path = _tiny_clip(tmp_path / "clip")
    save_file({"layers.0.weight": torch.ones(4, 8), "layers.0.bias": torch.zeros(4),
               "layers.1.weight": torch.ones(1, 4), "layers.1.bias": torch.full((1,), 3.0)},
              tmp_path / "head.safetensors")
    fn = ClipScoreReward(str(path), aesthetic_head=str(tmp_path / "head.safetensors"))
    out = fn(["x"], [np.zeros((16, 16, 3), np.uint8)])
    assert len(out) == 1 and np.isfinite(out[0])

"""SSL4RL tasks: generators make the stated question, rewards verify it, answers never reach the prompt."""

import numpy as np
import pytest

from mmalign.vlm.images import augment, center_crop_square, load_image_folder, procedural_images, rotate
from mmalign.vlm.inputs import context_parts
from mmalign.vlm.rewards import SSLAccuracy, ValidChoice, format_reward
from mmalign.vlm.ssl_tasks import SSL_TASKS, build_ssl_task, parse_answer
from mmalign.vlm.task import SSLContexts

IMAGES = procedural_images(6, 64, seed=0)
ALL = ["rotation", "jigsaw", "position", "contrastive", "masked_patch", "arithmetic"]


def ctx(task, seed=0, image=0):
    s = task(IMAGES[image], np.random.default_rng(seed), IMAGES[image + 1])
    return {"prompt": s.prompt, "images": s.images, "answer": s.answer, "choices": s.choices, "task": task.name}


def wrap(answer: str) -> str:
    return f"<think>looking</think><answer>{answer}</answer>"


@pytest.mark.parametrize("name", ALL)
def test_correct_scores_one_wrong_and_unparsable_score_zero(name):
    task = build_ssl_task(name, size=56)
    c = ctx(task)
    wrong = {"rotation": "45", "jigsaw": "9,9,9,9", "position": "middle", "contrastive": "maybe",
             "masked_patch": "z", "arithmetic": "1000"}[name]
    acc = SSLAccuracy()
    assert acc([c] * 4, [wrap(c["answer"]), wrap(wrong), c["answer"], "no tags at all"]) == [1.0, 0.0, 0.0, 0.0]
    assert SSLAccuracy(require_tags=False)([c], [c["answer"]]) == [1.0]  # bare answers for tiny models
    assert format_reward([c] * 2, [wrap(c["answer"]), c["answer"]]) == [1.0, 0.0]


@pytest.mark.parametrize("name", ALL)
def test_prompt_never_depends_on_the_answer(name):
    task = build_ssl_task(name, size=56)
    samples = [ctx(task, seed=s, image=s % 4) for s in range(24)]
    if name != "arithmetic":  # the question is fixed by the knobs; only the images carry the answer
        assert len({s["prompt"] for s in samples}) == 1
        assert len({s["answer"] for s in samples}) > 1
    text, images = context_parts(samples[0])  # all the policy ever reads of a context
    assert text.count("<image>") in (0, len(images))
    for s in samples:
        assert f"<answer>{s['answer']}</answer>" not in s["prompt"]


def test_rotation_is_exact_and_square():
    task = build_ssl_task({"name": "rotation", "show_original": True}, size=56)
    c = ctx(task, seed=3)
    base, rotated = c["images"]
    assert base.shape == rotated.shape == (56, 56, 3)  # square: the aspect ratio gives nothing away
    assert np.array_equal(rotate(base, int(c["answer"])), rotated)
    eight = build_ssl_task({"name": "rotation", "num_rotations": 8}, size=56)
    assert eight.choices == ["0", "45", "90", "135", "180", "225", "270", "315"]
    img = rotate(np.full((56, 56, 3), 200, np.uint8), 45)
    assert img.shape == (56, 56, 3) and img.min() > 150  # inscribed crop: no black corners


def test_jigsaw_answer_reassembles_the_image_and_gives_partial_credit():
    task = build_ssl_task({"name": "jigsaw", "grid": 2}, size=56)
    c = ctx(task, seed=5)
    order = [int(x) - 1 for x in c["answer"].split(",")]  # shown patch i came from position order[i]
    patches = [None] * 4
    for shown, original in enumerate(order):
        patches[original] = c["images"][shown]
    rebuilt = np.concatenate([np.concatenate(patches[:2], 1), np.concatenate(patches[2:], 1)], 0)
    from mmalign.vlm.images import resize

    assert np.array_equal(rebuilt, resize(center_crop_square(IMAGES[0]), 56))
    truth = c["answer"].split(",")
    half = ",".join(truth[:2] + [truth[3], truth[2]])
    assert SSLAccuracy()([c], [wrap(half)]) == [0.5]
    spaced, first = " ".join(truth[:2] + [truth[3], truth[2]]), truth[0]
    acc = SSLAccuracy(require_tags=False)
    assert acc([c] * 4, [spaced, f"{first}x{first} " * 4, f"{first},{first},{first},{first}", "1,2,a,4"]) == \
        [0.5, 0.0, 0.25, 0.0]  # digits inside a word are no answer; a non-number anywhere scores 0
    three = build_ssl_task({"name": "jigsaw", "grid": 3, "separate_images": False}, size=57)
    c3 = ctx(three)
    assert len(c3["images"]) == 1 and len(c3["answer"].split(",")) == 9


def test_position_crop_comes_from_the_named_region():
    task = build_ssl_task({"name": "position", "min_frac": 0.5, "max_frac": 0.5}, size=56)
    assert task.choices == ["top-left", "top-right", "bottom-left", "bottom-right"]
    c = ctx(task, seed=2)
    assert c["answer"] in task.choices and len(c["images"]) == 2
    assert ValidChoice()([c, c], [wrap("top-left"), wrap("center")]) == [1.0, 0.0]
    assert len(build_ssl_task({"name": "position", "grid": 3}).choices) == 9


def test_contrastive_is_balanced_and_masked_patch_offers_the_true_patch():
    task = build_ssl_task("contrastive", size=32)
    answers = [ctx(task, seed=s)["answer"] for s in range(40)]
    assert 10 < answers.count("positive") < 30
    mp = build_ssl_task({"name": "masked_patch", "grid": 2, "num_candidates": 3}, size=56)
    c = ctx(mp, seed=1)
    assert len(c["images"]) == 4 and c["choices"] == ["a", "b", "c"]
    true_patch = c["images"][1 + "abc".index(c["answer"])]
    from mmalign.vlm.images import grid_cells, resize

    cells = grid_cells(resize(center_crop_square(IMAGES[0]), 56), 2)
    assert any(np.array_equal(true_patch, cell) for cell in cells)


def test_parse_answer_takes_the_last_tag_and_normalises():
    assert parse_answer("<answer>1</answer> then <answer> 90 Degrees </answer>") == "90"
    assert parse_answer("<answer>3 , 1, 2,4</answer>") == "3,1,2,4"
    assert parse_answer("90") is None and parse_answer("90", require_tags=False) == "90"


def test_image_folder_and_procedural_sources(tmp_path):
    import cv2
    from PIL import Image

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((40, 60, 3), np.uint8))
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.full((30, 30, 3), 255, np.uint8)).save(tmp_path / "sub" / "b.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    images = load_image_folder(tmp_path, size=32)
    assert [im.shape for im in images] == [(32, 32, 3)] * 2 and images[1].min() > 240
    assert np.array_equal(procedural_images(2, 48, seed=1)[1], procedural_images(2, 48, seed=1)[1])
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "missing")
    assert augment(images[0], np.random.default_rng(0), 24).shape == (24, 24, 3)


def test_lazy_contexts_are_reproducible_and_cover_every_task():
    tasks = [build_ssl_task(n, size=32) for n in ("rotation", "contrastive")]
    data = SSLContexts(IMAGES, tasks, seed=0, views=2)
    assert len(data) == 6 * 2 * 2
    assert {data[i]["task"] for i in range(len(data))} == {"rotation", "contrastive"}
    assert data[7]["answer"] == data[7]["answer"] and np.array_equal(data[7]["images"][0], data[7]["images"][0])
    with pytest.raises(ValueError, match="unknown SSL task"):
        build_ssl_task("colorize")
    assert set(ALL) == set(SSL_TASKS)

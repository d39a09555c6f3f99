"""MPO (mmalign/text/mpo.py): the judge's yes-probability against its logits by hand, the meta step editing the
rubric only when the judge score rises while the check falls, and the rubric surviving a checkpoint through the
text task."""

import pytest
import torch
from test_limr import ROWS, task_config
from tiny import WORDS, tiny_lm

from mmalign.task import Checkpointed, RewardError, Scheduled
from mmalign.text.mpo import RUBRIC, Judge, MPOReward, judge_question, meta_question
from mmalign.text.policy import word_tokenizer
from mmalign.text.task import TextTask

VOCAB = WORDS + sorted({w for t in (judge_question(RUBRIC, "x", "y"), meta_question(RUBRIC, "x", "y", "z"))
                         for w in t.split()} | {"Yes", "No"})
"""The tiny judge knows the words of its questions, so its replies are words rather than <unk>."""


@pytest.fixture(scope="module")
def judge() -> Judge:
    tok = word_tokenizer(VOCAB)
    return Judge(tiny_lm(seed=0, vocab=len(tok)), tok)


def test_yes_probability_is_the_softmax_over_yes_and_no(judge):
    questions = [judge_question(RUBRIC, "describe the cat", "the cat sat"), judge_question(RUBRIC, "a", "")]
    enc = judge.tok(questions, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        logits = judge.model(**enc).logits[:, -1]
    yes, no = judge.tok.convert_tokens_to_ids(["Yes", "No"])
    want = (logits[:, yes].exp() / (logits[:, yes].exp() + logits[:, no].exp())).tolist()
    assert judge.yes_probability(questions) == pytest.approx(want, rel=1e-5)


def test_a_judge_without_yes_and_no_tokens_is_refused():
    tok = word_tokenizer(WORDS)
    with pytest.raises(RewardError, match="'Yes'"):
        Judge(tiny_lm(vocab=len(tok)), tok)


def window(reward: MPOReward, judge: float, check: float) -> None:
    """One window's scored samples: the second is the most over-rated (judge - check largest)."""
    reward.window = [(judge - 0.1, check, "describe the cat", "the cat", "the cat sat on the mat"),
                     (judge + 0.1, check, "tell me about the dog", "dog dog", "the dog ran to the park")]


@pytest.mark.parametrize("refine, judge_move, check_move, edited", [
    (True, +0.2, -0.1, True),    # judge up, check down: exploitation, a rule is added
    (True, +0.2, +0.1, False),   # both up: learning, no edit
    (True, -0.2, -0.1, False),   # both down
    (False, +0.2, -0.1, False),  # the fixed-rubric baseline never edits
])
def test_meta_step_edits_the_rubric_only_on_exploitation(judge, refine, judge_move, check_move, edited):
    reward = MPOReward(judge=judge, refine=refine, every=5)
    window(reward, 0.5, 0.3)
    assert reward.set_progress(3) is None  # mid-window: nothing happens
    assert reward.set_progress(5) == {"mpo/window_judge": 0.5, "mpo/window_check": 0.3, "mpo/rules_added": 0.0}
    window(reward, 0.5 + judge_move, 0.3 + check_move)
    rule = judge.write(meta_question(RUBRIC, "tell me about the dog", "dog dog", "the dog ran to the park"))
    assert rule  # the tiny judge writes something at this seed, so an edit is visible
    metrics = reward.set_progress(10)
    assert reward.rubric == (RUBRIC + f"\n- {rule}" if edited else RUBRIC)
    assert metrics["mpo/rules_added"] == float(edited) and reward.window == []


def test_reward_scores_and_fills_the_window(judge):
    reward = MPOReward(judge=judge)
    scores = reward(ROWS[:2], ["the a", "a"])
    assert scores == pytest.approx(judge.yes_probability([judge_question(RUBRIC, r["prompt"], o)
                                                          for r, o in zip(ROWS[:2], ["the a", "a"])]))
    assert [w[:2] for w in reward.window] == [(scores[0], pytest.approx(reward.window[0][1])),
                                              (scores[1], pytest.approx(reward.window[1][1]))]


def test_text_task_keeps_the_rubric_in_its_checkpoint_state(tmp_path, judge):
    """The config path: the judge loads from a model folder; the rubric is the task's run state."""
    folder = tmp_path / "judge"
    judge.model.save_pretrained(folder)
    judge.tok.save_pretrained(folder)
    spec = {"name": "mpo_judge", "judge": str(folder), "every": 2, "label": "judge"}
    task = TextTask(task_config(tmp_path, rewards=[spec]))
    assert isinstance(task, Scheduled) and isinstance(task, Checkpointed)
    reward = task.rewards[0][1]
    reward.rubric += "\n- the response names the animal"
    state = task.checkpoint_state()
    fresh = TextTask(task_config(tmp_path, rewards=[spec]))
    fresh.restore_state(state)
    assert fresh.rewards[0][1].rubric == reward.rubric
    assert task.set_progress(1) is None  # no window closed yet


def test_held_out_evaluation_leaves_the_window_alone(judge):
    """Scores inside a run's evaluation are returned as always but are not the policy's training samples: the
    window the meta step reads keeps only what training scored."""
    from mmalign.task import evaluation

    reward = MPOReward(judge=judge)
    with evaluation():
        held_out = reward(ROWS[:2], ["the a", "a"])
    assert reward.window == [] and held_out == pytest.approx(reward(ROWS[:2], ["the a", "a"]))
    assert len(reward.window) == 2

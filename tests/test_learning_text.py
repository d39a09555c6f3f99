"""Learning must be shown: on a tiny causal LM, each algorithm raises BLEU against the target replies (or, offline,
the target's log-prob above replies no training row holds).

A sign flip in an advantage, a dropped mask or a swapped chosen/rejected makes these fail.
"""

import pytest
import torch
from tiny import ROWS, TinyTask, tiny_policy

from mmalign.algorithms.offline import PreferenceConfig
from mmalign.algorithms.ppo import PPOConfig
from mmalign.run_config import RunConfig, TrainerConfig
from mmalign.text.rewards import BleuReward
from mmalign.text.task import preference_rows as text_preference_rows
from mmalign.trainer import Trainer

pytestmark = pytest.mark.slow


def train_rewards(tmp_path, algorithm: str, policy, steps: int, rows=ROWS, args=None, seed: int = 0) -> list[float]:
    cfg = RunConfig(task="text", algorithm=algorithm, algorithm_args=args, trainer=TrainerConfig(
        output_dir=str(tmp_path), steps=steps, contexts_per_step=2, num_samples=8, lr=3e-3, max_grad_norm=0.0,
        epochs=2, minibatches=2, save_every=0, seed=seed))
    trainer = Trainer(cfg, task=TinyTask(policy, rows))
    return [trainer.step(k)["reward"] for k in range(steps)] if algorithm != "preference" else [
        trainer.step(k)["loss"] for k in range(steps)]


def mean(x):
    return sum(x) / len(x)


def test_grpo_learns_the_target_reply(tmp_path, learning):
    rewards = train_rewards(tmp_path, "grpo", tiny_policy(seed=learning.seed), steps=150, seed=learning.seed)
    first, last = mean(rewards[:10]), mean(rewards[-10:])
    learning.report(first=first, last=last)
    assert last > first + 0.05, (first, last)  # gain 0.083-0.19 over seeds and threads (docs/text.md)


def test_grpo_learns_with_the_compiled_decoder_and_scoring(tmp_path, learning):
    """The same run sampling through the compiled static-cache decoder (`generation.decoder: compiled`) and
    re-scoring through the compiled forward (`scoring: compiled`)."""
    policy = tiny_policy(seed=learning.seed, decoder="compiled", scoring="compiled")
    rewards = train_rewards(tmp_path, "grpo", policy, steps=150, seed=learning.seed)
    first, last = mean(rewards[:10]), mean(rewards[-10:])
    learning.report(first=first, last=last)
    assert last > first + 0.05, (first, last)  # gains 0.093-0.259 over seeds 0-4, 1 and 2 threads (docs/text.md)


def test_ppo_learns_the_target_reply(tmp_path, learning):
    policy = tiny_policy(seed=learning.seed, value_head=True)
    rewards = train_rewards(tmp_path, "ppo", policy, steps=150, args=PPOConfig(gamma=1.0, lam=0.95),
                            seed=learning.seed)
    first, last = mean(rewards[:10]), mean(rewards[-10:])
    learning.report(first=first, last=last)
    assert last > first + 0.06, (first, last)  # gains 0.126 / 0.113 / 0.084 at seeds 0-2 (docs/text.md)


HELD_OUT = ["red on cat small and big", "park tell a me blue the", "mat is dog the about sat", "ran a a blue on to"]
"""Replies no training row holds (drawn once from the tiny vocabulary): the held-out side of the margin."""


def preference_rows(swap: bool = False) -> list[dict]:
    """Each prompt's target first, the other prompt's target and a degenerate reply after it, BLEU-scored (the text
    task's `preference_rows` plus one reply); `swap` reverses the ranking: the worst reply becomes chosen and gold."""
    rows = []
    for r in text_preference_rows([dict(r) for r in ROWS], 1, [("bleu", BleuReward(), 1.0)]):
        responses, rewards = r["responses"] + ["the the the the the the"], r["rewards"] + [0.0]
        if swap:
            responses = responses[::-1]
        rows.append(dict(r, responses=responses, rewards=rewards, gold=responses[0]))
    return rows


def held_out_margin(policy) -> float:
    """Mean per-token log-prob of each prompt's target minus that of the HELD_OUT replies."""
    with torch.no_grad():
        means = []
        for given in [[r["references"][0] for r in ROWS]] + [[h] * len(ROWS) for h in HELD_OUT]:
            roll = policy.rollout_from(ROWS, given)
            means.append((policy.logprobs(roll) * roll.mask).sum(1) / roll.mask.sum(1))
    return float((means[0] - torch.stack(means[1:]).mean(0)).mean())


@pytest.mark.parametrize("loss, swap", [(loss, False) for loss in ["dpo", "ipo", "robust", "tpo", "tpo-l", "pro",
                                                                   "pro-sft", "copg", "grao"]] + [("dpo", True)])
def test_every_direct_loss_ranks_the_target_above_held_out_replies(tmp_path, learning, loss, swap):
    """20 offline steps of each direct loss; a swapped-label run must fail the same bar."""
    policy = tiny_policy(seed=learning.seed, reference="copy")
    before = held_out_margin(policy)
    args = PreferenceConfig(loss="pro", sft_weight=0.1) if loss == "pro-sft" else PreferenceConfig(loss=loss)
    cfg = RunConfig(task="text", algorithm="preference", algorithm_args=args, trainer=TrainerConfig(
        output_dir=str(tmp_path), steps=20, contexts_per_step=2, lr=3e-3, max_grad_norm=0.0, save_every=0,
        seed=learning.seed))
    trainer = Trainer(cfg, task=TinyTask(policy, preference_rows(swap)))
    for k in range(20):
        trainer.step(k)
    after = held_out_margin(policy)
    learning.report(before=before, after=after)
    # gains 0.41-2.3 over losses and seeds 0-2, swapped labels -0.25 to -2.0 (docs/text.md)
    assert (after > before + 0.3) != swap, (before, after)

"""Best-of-N for any policy (text, image, video): N samples per prompt, the one the reward ranks first (N = 1 is
plain sampling). The token-level searches of a text policy (DeAL, Transfer Q*) are `mmalign.text.search`.

It returns the chosen outputs and a `Cost` (model forwards, generated tokens), the price beside the reward.

`bon_win_rate` is InfAlign's inference-time evaluation of an aligned policy (Balashankar et al. 2025, sec. 2): both
the policy and its reference decode by best-of-N, and the policy wins a prompt when its best beats the reference's
best; beside it the policy's KL from the reference, the budget the win was bought with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mmalign.losses import kl_estimate
from mmalign.task import check_rewards


@dataclass
class Cost:
    """What a decoder spent: model forwards (a prefill or a decode step of a batch counts once) and tokens
    generated, lookahead and rollout tokens included."""

    model_calls: int = 0
    tokens: int = 0


def best_of_n(policy, contexts: Sequence, reward: Callable, n: int) -> tuple[list[str], Cost]:
    """The highest-reward of `n` samples per context (ties: the first drawn)."""
    if n < 1:
        raise ValueError(f"best-of-N needs n >= 1, got {n}.")
    rollout = policy.sample(contexts, n)
    rows = [c for c in contexts for _ in range(n)]
    r = check_rewards(reward(rows, rollout.outputs), len(rows), "reward").view(len(contexts), n)
    best = r.argmax(1) + torch.arange(len(contexts)) * n
    steps = rollout.mask.shape[1]
    return [rollout.outputs[i] for i in best.tolist()], Cost(steps, int(rollout.mask.sum()))


def bon_wins(policy_rewards: Tensor, reference_rewards: Tensor) -> Tensor:
    """Best-of-N wins (InfAlign, sec. 2: the win rate of T(pi) against T(pi_ref), T = best-of-N): over the last dim,
    N rewards of each side's samples; 1 where the policy's best beats the reference's best, 1/2 on a tie, else 0."""
    if policy_rewards.shape != reference_rewards.shape:
        raise ValueError(f"best-of-N compares N samples of each side per draw: policy rewards "
                         f"{tuple(policy_rewards.shape)}, reference rewards {tuple(reference_rewards.shape)}.")
    mine, theirs = policy_rewards.max(-1).values, reference_rewards.max(-1).values
    return (mine > theirs).float() + 0.5 * (mine == theirs).float()


def sequence_kl(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> Tensor:
    """(B,) sum over each sampled sequence's real steps of log pi - log pi_ref (the k1 estimator summed over steps):
    its mean over samples of pi is a Monte-Carlo estimate of the sequence-level KL(pi || pi_ref)."""
    return (kl_estimate(logprobs, ref_logprobs, "k1") * mask).sum(-1)


@torch.no_grad()
def bon_win_rate(policy, contexts: Sequence, reward: Callable, n: int,
                 reference_sample: Callable[[object, int], list], rounds: int = 1, batch: int = 8) -> dict[str, float]:
    """InfAlign's best-of-N win rate of `policy` against its reference, and its KL from the reference.

    For each context, `rounds` times: N samples of the policy and N of the reference, each side's best under
    `reward`, a win when the policy's beats the reference's (ties 1/2, `bon_wins`). The KL is `sequence_kl` over
    the policy's own samples, re-scored by the policy and by its reference (`policy.ref_logprobs`).

    Args:
        policy: a `Policy` with a reference (`sample`, `logprobs`, `ref_logprobs`).
        reward: `fn(contexts, outputs) -> floats`, the reward both sides pick their best by.
        reference_sample: `fn(context, k) -> k outputs of the reference` (a text policy's
            `prompt_sampler(reference=True)`).
        rounds: independent best-of-N draws per context, averaged.
        batch: contexts sampled together.

    Returns:
        win_rate, with two or more contexts its standard error over contexts (win_rate_se, each context's mean over
        its rounds counting once), kl (nats per sequence), and the mean reward of a sample and of the best of N of
        each side.
    """
    if n < 1 or rounds < 1:
        raise ValueError(f"a best-of-N win rate needs n >= 1 and rounds >= 1, got n={n}, rounds={rounds}.")
    k, sides, kls = n * rounds, {"policy": [], "reference": []}, []
    for i in range(0, len(contexts), batch):
        ctx = list(contexts[i:i + batch])
        rollout = policy.sample(ctx, k)
        kls.append(sequence_kl(policy.logprobs(rollout), policy.ref_logprobs(rollout), rollout.mask))
        rows = [c for c in ctx for _ in range(k)]
        drawn = {"policy": rollout.outputs, "reference": [o for c in ctx for o in reference_sample(c, k)]}
        for side, outputs in drawn.items():
            scores = check_rewards(reward(rows, outputs), len(rows), "reward")
            sides[side].append(scores.view(len(ctx), rounds, n))
    mine, theirs = torch.cat(sides["policy"]), torch.cat(sides["reference"])
    per_context = bon_wins(mine, theirs).mean(1)
    se = {"win_rate_se": float(per_context.std() / len(per_context) ** 0.5)} if len(per_context) > 1 else {}
    return {"win_rate": float(per_context.mean()), **se, "kl": float(torch.cat(kls).mean()),
            "reward": float(mine.mean()), "reference_reward": float(theirs.mean()),
            "best_reward": float(mine.max(-1).values.mean()),
            "reference_best_reward": float(theirs.max(-1).values.mean())}

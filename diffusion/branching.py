"""B2-DiffuRL branch sampling (Hu et al. 2025, Sec. 3.2): a trunk per sibling group, denoised once up to the branch
point, then cloned and continued with fresh noise.

Siblings share every latent up to and including x at the branch point exactly, so the reward differences within a
sibling group come from the steps that train (from the branch point on). Branching saves (B - B / branches) x
branch_step denoiser rows per batch (x2 with CFG). Which branch point a training iteration uses is the B2 schedule's
(`schedule.B2Schedule`); the policy samples this way when its `b2` schedule is set.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmalign.rollout import Rollout


@torch.no_grad()
def sample_branched(policy, contexts: Sequence, num_samples: int, branch_step: int, branches: int) -> Rollout:
    """`num_samples` trajectories per context from num_samples / branches trunks, branched at `branch_step`.

    Args:
        policy: a `DiffusionPolicy` (or `VideoPolicy`).
        contexts: the prompts (or rows).
        num_samples: samples per context, a multiple of `branches`.
        branch_step: step index in [0, T) where trunks are cloned; steps from it on train.
        branches: clones per trunk.

    Returns:
        The rollout; `state["branch"]` (B,) names each sample's sibling group (its trunk).
    """
    if num_samples % branches:
        raise ValueError(f"num_samples={num_samples} must be a multiple of branches={branches}.")
    if not 0 <= branch_step < policy.num_steps:
        raise ValueError(f"branch_step must lie in [0, {policy.num_steps}), got {branch_step}.")
    group, emb, pooled = policy._contexts(contexts, num_samples // branches)
    x = policy.init_noise(len(group))
    prefix, pre_lp = policy.denoise(x, emb, pooled, 0, branch_step)
    clone = (lambda v: v.repeat_interleave(branches, 0))  # noqa: E731
    trunk = torch.arange(len(group), device=policy.device)
    prefix = [clone(v) for v in [x] + prefix]
    emb, pooled, group = clone(emb), clone(pooled), clone(group)
    suffix, post_lp = policy.denoise(prefix[-1], emb, pooled, branch_step, policy.num_steps)
    return policy._rollout(contexts, group, prefix + suffix, [clone(v) for v in pre_lp] + post_lp, emb, pooled,
                           max(branch_step, policy.trained.start), {"branch": clone(trunk)})

"""NLPO's action mask (mmalign/text/nlpo.py) against its formula, computed by hand: the top-p nucleus of the masking
policy, the renormalised masked log-probs and entropy PPO re-scores, and the masking policy's synchronisation."""

import math

import pytest
import torch
from tiny import ROWS, tiny_lm, tiny_policy

from mmalign.text.nlpo import NLPOSettings, masked_logits, nucleus_mask
from mmalign.text.policy import token_logprobs

PROBS = [0.15, 0.5, 0.05, 0.3]
"""A next-token distribution out of order: descending it is tokens 1 (0.5), 3 (0.3), 0 (0.15), 2 (0.05)."""


def kept(top_p: float) -> set[int]:
    return set(nucleus_mask(torch.tensor(PROBS).log(), top_p).nonzero().flatten().tolist())


def test_nucleus_is_the_smallest_most_likely_set_reaching_p():
    assert kept(0.4) == {1}  # the most likely token alone holds 0.5 >= 0.4
    assert kept(0.79) == {1, 3}  # 0.5 + 0.3 = 0.8 >= 0.79
    assert kept(0.81) == {1, 3, 0}  # 0.8 < 0.81: token 0 (0.15) is needed
    assert kept(0.96) == {0, 1, 2, 3}
    assert kept(1e-6) == {1}  # the most likely token is always kept


def test_masked_logprob_renormalises_over_the_masking_policys_nucleus():
    """log pi^mask(a) = l_a - log sum_{a' in V_p(psi)} exp(l_a'): the nucleus is the masking policy's, not the
    policy's own (the two rank tokens differently here)."""
    policy = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    mask = torch.tensor(PROBS).log()[None]  # nucleus at p = 0.79: tokens 1 and 3
    logp = token_logprobs(masked_logits(policy, mask, 0.79)[:, None], torch.tensor([[3]]))[0, 0]
    assert math.isclose(float(logp), 0.0 - math.log(math.exp(2.0) + math.exp(0.0)), rel_tol=1e-6)
    outside = token_logprobs(masked_logits(policy, mask, 0.79)[:, None], torch.tensor([[2]]))[0, 0]
    assert outside == float("-inf")  # the policy's own favourite is outside psi's nucleus


def nucleus_policy(top_p: float = 0.5):
    """A tiny policy whose masking policy has other weights than the policy (as after training between syncs)."""
    policy = tiny_policy(seed=0, nlpo=NLPOSettings(top_p=top_p, sync_every=3))
    policy.mask_model.load_state_dict(tiny_lm(seed=1).state_dict())
    return policy


def step_logits(model, rollout):
    """(B, T, V) next-token logits of each completion step, from one plain forward (no cache)."""
    s = rollout.state
    attn = s["attention_mask"]
    pos = (attn.long().cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=s["input_ids"], attention_mask=attn, position_ids=pos).logits
    return logits[:, s["prompt_length"] - 1:-1].float()


def test_samples_and_rescored_logprobs_follow_the_mask_by_hand():
    policy = nucleus_policy()
    torch.manual_seed(0)
    rollout = policy.sample(ROWS, 8)
    mask, tokens = rollout.mask, rollout.state["input_ids"][:, rollout.state["prompt_length"]:]
    with torch.no_grad():
        own, psi = step_logits(policy.model, rollout), step_logits(policy.mask_model, rollout)
        # the nucleus by hand: sort psi's probabilities, keep a token while the mass before it is below p
        p_psi = psi.softmax(-1)
        sorted_p, order = p_psi.sort(-1, descending=True)
        keep = torch.zeros_like(p_psi, dtype=torch.bool).scatter(-1, order, (sorted_p.cumsum(-1) - sorted_p) < 0.5)
        assert keep[mask].sum(-1).lt(keep.shape[-1]).all()  # the mask removes tokens at every step
        assert keep.gather(-1, tokens[..., None]).squeeze(-1)[mask].all()  # every sampled token is in the nucleus
        by_hand = own.gather(-1, tokens[..., None]).squeeze(-1) - own.masked_fill(~keep, -math.inf).logsumexp(-1)
        rescored, plain = policy.logprobs(rollout), policy.logprobs(rollout, policy.model)
        torch.testing.assert_close(rescored[mask], by_hand[mask], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(rescored[mask], rollout.logprobs[mask], atol=1e-5, rtol=1e-5)  # the contract
        assert (rescored[~mask] == 0).all()  # padding after EOS, often outside the nucleus, stays 0 (not NaN)
        assert (rescored[mask] > plain[mask] + 1e-4).all()  # renormalised over fewer tokens
        q = own.masked_fill(~keep, -math.inf).softmax(-1)
        entropy = -(q * q.clamp(min=1e-30).log()).sum(-1)
        torch.testing.assert_close(policy.entropy(rollout)[mask], entropy[mask], atol=1e-5, rtol=1e-5)


def test_rescored_logprobs_have_gradients_and_no_nans():
    policy = nucleus_policy()
    torch.manual_seed(1)
    rollout = policy.sample(ROWS, 4)
    logp = policy.logprobs(rollout)
    (logp * rollout.mask).sum().backward()
    grads = [p.grad for p in policy.model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert all(p.grad is None for p in policy.mask_model.parameters())  # the masking policy is never trained


def test_masking_policy_copies_the_policy_every_sync_every_iterations():
    policy = nucleus_policy()  # sync_every = 3

    def same() -> bool:
        return all(torch.equal(a, b) for a, b in zip(policy.model.state_dict().values(),
                                                     policy.mask_model.state_dict().values()))

    policy.set_progress(4)  # the first iteration a (resumed) run makes syncs, whatever its number
    assert same()
    for step, synced in [(5, False), (6, True), (7, False), (8, False), (9, True)]:
        with torch.no_grad():
            next(policy.model.parameters()).add_(0.1)  # an optimizer step
        policy.set_progress(step)
        assert same() == synced, step


def test_top_p_zero_is_plain_ppo():
    policy = tiny_policy(seed=0, nlpo=NLPOSettings(top_p=0.0))
    assert policy.nlpo is None and policy.mask_model is None


def test_kl_reference_is_not_masked():
    """The LoRA reference (adapters off) scores with its own full softmax, not through the action mask."""
    policy = tiny_policy(seed=0, lora=True, nlpo=NLPOSettings(top_p=0.5))
    torch.manual_seed(2)
    rollout = policy.sample(ROWS, 4)
    tokens = rollout.state["input_ids"][:, rollout.state["prompt_length"]:]
    with torch.no_grad(), policy.model.disable_adapter():
        base = step_logits(policy.model, rollout).log_softmax(-1).gather(-1, tokens[..., None]).squeeze(-1)
    torch.testing.assert_close(policy.ref_logprobs(rollout)[rollout.mask], base[rollout.mask], atol=1e-5, rtol=1e-5)


def test_a_resumed_run_masks_with_the_copy_it_had_between_syncs(tmp_path):
    """Checkpoint at step 4, mask last synced at step 3: the resumed run continues with that copy, so its curve is
    the uninterrupted one (a fresh sync at resume would mask with the step-4 weights)."""
    from pathlib import Path

    from mmalign.cli import main
    from mmalign.tracking import read_metrics

    config = str(Path(__file__).resolve().parents[1] / "configs/text/tiny_nlpo.yaml")
    common = [f"trainer.output_dir={tmp_path}", "task_args.nlpo.sync_every=3", "task_args.nlpo.top_p=0.5",
              "task_args.eval_size=4", "trainer.eval_every=0", "trainer.save_every=4", "trainer.lr=3e-2"]
    assert main(["train", config, *common, "trainer.steps=6", "trainer.name=whole"]) == 0
    assert main(["train", config, *common, "trainer.steps=4", "trainer.name=split"]) == 0
    assert main(["train", config, *common, "trainer.steps=6", "trainer.name=split", "--resume"]) == 0
    whole, split = ({r["step"]: r for r in read_metrics(tmp_path / name / "metrics.jsonl") if "loss" in r}
                    for name in ("whole", "split"))
    assert list(split) == list(whole) == [1, 2, 3, 4, 5, 6]
    for step, a in whole.items():
        assert (a["reward"], a["loss"]) == pytest.approx((split[step]["reward"], split[step]["loss"]), abs=1e-6), step

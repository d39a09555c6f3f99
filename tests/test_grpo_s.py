"""DR-IRL / GRPO-S (mmalign.text.grpo_s): the responsiveness coefficient by hand, the instruction categories, the
shadow reward models learnt from demonstrations, and the advantage scale reaching GRPO through the Trainer."""

import math
from pathlib import Path

import pytest
import torch

from mmalign.advantages import responsiveness_weights
from mmalign.config import ConfigError
from mmalign.run_config import load_run_config
from mmalign.task import RewardError, ScalesAdvantages
from mmalign.text.grpo_s import CATEGORIES, AdvantageScale, GRPOSSettings, ShadowRewards, category_of
from mmalign.text.reward_models import data_rows
from mmalign.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "text"


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_responsiveness_weights_by_hand():
    gaps = torch.tensor([1.0, 3.0, 0.0, 0.0, 10.0])
    cat = torch.tensor([0, 0, 1, 1, 1])
    # no outlier dropped: category means 2 and 10/3
    a, b = sig(2.0), sig(10 / 3)
    torch.testing.assert_close(responsiveness_weights(gaps, cat),
                               torch.tensor([a, a, b, b, b]) / ((a + b) / 2))
    # tau 20 drops the 10 of category 1 ((10 - 10/3)^2 = 44.4 > 20, the zeros are 11.1 away): its mean becomes 0
    a, b = sig(2.0), sig(0.0)
    w = responsiveness_weights(gaps, cat, tau=20.0)
    torch.testing.assert_close(w, torch.tensor([a, a, b, b, b]) / ((a + b) / 2))
    assert w[0] > w[2]  # the category farther from its demonstrations weighs more
    # a category whose samples are all outliers keeps its plain mean
    torch.testing.assert_close(responsiveness_weights(torch.tensor([0.0, 4.0]), torch.tensor([0, 0]), tau=1.0),
                               torch.ones(2))


def test_every_shipped_row_has_a_category_and_rows_can_name_their_own():
    rows, held_out = data_rows()
    cats = {category_of(r) for r in rows + held_out}
    assert cats == set(CATEGORIES)
    assert category_of({"prompt": "Translate to German: hello"}) == "translation"
    assert category_of({"prompt": "What is 3 plus 4?"}) == "arithmetic"
    assert category_of({"prompt": "What is the capital of Peru?"}) == "fact"
    assert category_of({"prompt": "Translate to German: hello", "category": "other"}) == "other"


def reference_like_sampler(context, m):
    """Stands in for a weak policy: its answers are the prompt's words, never a demonstration."""
    return [context["prompt"]] * m


def test_shadow_models_rank_demonstrations_above_policy_samples(learning):
    shadow = ShadowRewards(samples=1, rows_per_category=12, seed=learning.seed, epochs=8)
    with pytest.raises(RewardError, match="not trained"):
        shadow([{"prompt": "What is 3 plus 4?", "references": ["7"]}], ["7"])
    shadow.learn(reference_like_sampler)
    assert set(shadow.models) == set(CATEGORIES)
    _, held_out = data_rows()
    demos = [r["references"][0] if isinstance(r["references"], list) else r["references"] for r in held_out]
    gaps = shadow.gaps(held_out, [r["prompt"] for r in held_out])
    torch.testing.assert_close(gaps, torch.tensor(shadow(held_out, demos)) - torch.tensor(
        shadow(held_out, [r["prompt"] for r in held_out])))
    ranked = float((gaps > 0).float().mean())
    learning.report(ranked=ranked)
    # held-out demonstrations beat the policy-like answers: 0.75-0.95 on seeds 0-4 (1 and 2 threads); swapped
    # pairs would rank them below
    assert ranked > 0.65


def test_advantage_scale_needs_a_shadow_reward_for_responsiveness():
    with pytest.raises(ConfigError, match="shadow_rm"):
        AdvantageScale(GRPOSSettings(responsiveness=True), [("bleu", object(), 1.0)])
    scale = AdvantageScale(GRPOSSettings(hardness=True), [])
    rows = [{"prompt": "p", "references": ["the cat sat"]}] * 4
    w, metrics = scale(rows, ["the cat sat", "dog", "the cat", "x y z"], torch.tensor([0, 0, 1, 1]))
    assert w[1] > w[0] and w[3] > w[2]  # the sample farther from the demonstration is harder: it weighs more
    torch.testing.assert_close(w.view(2, 2).mean(1), torch.ones(2))
    assert "grpo_s/alpha_d_std" in metrics


def test_grpo_s_scales_the_trainers_advantages(tmp_path):
    cfg = load_run_config(CONFIGS / "tiny_grpo_s.yaml", [
        "trainer.steps=1", "trainer.eval_every=0", f"trainer.output_dir={tmp_path}",
        "task_args.rewards=[{name: shadow_rm, samples: 1, rows_per_category: 4, epochs: 1}]"])
    trainer = Trainer(cfg)
    assert isinstance(trainer.task, ScalesAdvantages)
    contexts = trainer.contexts_for(0)
    with torch.no_grad():
        rollout = trainer.policy.sample(contexts, cfg.trainer.num_samples)
        metrics = trainer.score(contexts, rollout)
    scale = rollout.extras["advantage_scale"]
    assert scale.shape == (len(rollout),) and bool((scale > 0).all()) and float(scale.std()) > 0
    assert {"grpo_s/alpha_d_std", "grpo_s/alpha_m_min", "grpo_s/alpha_m_max"} <= set(metrics)
    plain = load_run_config(CONFIGS / "tiny_shadow_grpo.yaml", [f"trainer.output_dir={tmp_path}"])
    assert plain.task_args.grpo_s.on is False and cfg.task_args.grpo_s.on


def test_grpo_s_refuses_an_algorithm_that_ignores_the_scale(tmp_path):
    cfg = load_run_config(CONFIGS / "tiny_ppo.yaml", [
        "trainer.steps=1", f"trainer.output_dir={tmp_path}", "task_args.grpo_s={hardness: true}"])
    trainer = Trainer(cfg)
    contexts = trainer.contexts_for(0)
    with torch.no_grad(), pytest.raises(ConfigError, match="algorithm: grpo"):
        trainer.score(contexts, trainer.policy.sample(contexts, 2))

"""SALSA's reference soup (mmalign/text/soup.py) against its formula by hand: theta_ref = sum_i w_i theta_i, the
text task's KL reference holds it (and the policy does not), and GRPO's KL term scores against it."""

import pytest
import torch
from tiny import ROWS, WORDS, tiny_lm

from mmalign.algorithms.grpo import GRPOConfig, grpo_prepare
from mmalign.config import ConfigError
from mmalign.data import write_jsonl
from mmalign.settings import LoRASettings
from mmalign.text.policy import token_logprobs, word_tokenizer
from mmalign.text.soup import soup_state_dict
from mmalign.text.task import TextTask, TextTaskConfig

A = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([[0.0, 4.0]])}
B = {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor([[2.0, 0.0]])}


def test_uniform_soup_is_the_mean_of_the_weights():
    soup = soup_state_dict([A, B])
    assert soup["w"].tolist() == [2.0, 4.0] and soup["b"].tolist() == [[1.0, 2.0]]


def test_weighted_soup_normalises_its_weights():
    soup = soup_state_dict([A, B], [3.0, 1.0])  # 0.75 A + 0.25 B
    assert soup["w"].tolist() == [1.5, 3.0] and soup["b"].tolist() == [[0.5, 3.0]]


def test_models_of_other_architectures_are_refused():
    with pytest.raises(ConfigError, match="other weights"):
        soup_state_dict([A, {"w": A["w"]}])
    with pytest.raises(ConfigError, match="shape"):
        soup_state_dict([A, {"w": A["w"], "b": torch.zeros(2, 2)}])


def saved(tmp_path, name: str, seed: int) -> str:
    folder = tmp_path / name
    tiny_lm(seed).save_pretrained(folder)
    word_tokenizer(WORDS).save_pretrained(folder)
    return str(folder)


def soup_task(tmp_path, **kwargs) -> TextTask:
    data = tmp_path / "rows.jsonl"
    write_jsonl(ROWS * 10, data)
    start, a, b = saved(tmp_path, "start", 0), saved(tmp_path, "a", 1), saved(tmp_path, "b", 2)
    cfg = TextTaskConfig(model=start, dataset=str(data), chat_template=False, reference_soup=[a, b], **kwargs)
    return TextTask(cfg)


def test_task_reference_is_the_soup_and_grpo_kl_scores_against_it(tmp_path):
    task = soup_task(tmp_path, reference_soup_weights=[1.0, 3.0])
    policy, m0, m1, m2 = task.policy, tiny_lm(0), tiny_lm(1), tiny_lm(2)
    by_hand = {k: 0.25 * v + 0.75 * m2.state_dict()[k] for k, v in m1.state_dict().items()}
    for k, v in policy.ref_model.state_dict().items():
        torch.testing.assert_close(v, by_hand[k])
        torch.testing.assert_close(policy.model.state_dict()[k], m0.state_dict()[k])  # the policy starts from model
    torch.manual_seed(0)
    rollout = policy.sample(ROWS, 4)
    rollout.rewards = torch.arange(8.0)
    grpo_prepare(policy, rollout, GRPOConfig(beta=0.1))
    m0.load_state_dict(by_hand)  # a model holding the soup, scored directly
    s = rollout.state
    pos = (s["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = m0(input_ids=s["input_ids"], attention_mask=s["attention_mask"], position_ids=pos).logits
    expected = token_logprobs(logits[:, s["prompt_length"] - 1:-1], s["input_ids"][:, s["prompt_length"]:])
    mask = rollout.mask
    torch.testing.assert_close(rollout.extras["ref_logprobs"][mask], expected[mask], atol=1e-5, rtol=1e-5)
    assert (rollout.extras["ref_logprobs"][mask] - policy.logprobs(rollout)[mask]).abs().max() > 1e-3


def test_soup_needs_two_full_models(tmp_path):
    with pytest.raises(ConfigError, match="two or more"):
        TextTaskConfig(model="m", reference_soup=["a"])
    with pytest.raises(ConfigError, match="lora.rank"):
        TextTaskConfig(model="m", reference_soup=["a", "b"], lora=LoRASettings(rank=4))
    with pytest.raises(ConfigError, match="frozen copy"):
        TextTaskConfig(model="m", reference_soup=["a", "b"], reference="lora")

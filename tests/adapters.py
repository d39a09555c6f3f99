"""Every adapter configuration the contract test covers (`test_contract.py`), each built by a small factory from the
tiny real models of `tiny.py`, `vlm_tiny.py`, `diffusion_tiny.py` and `robot_tiny.py`.

The adapter tests of each domain read the same sampled rollouts (the session fixture `sampled` in conftest.py) for
their domain-specific checks, so every configuration is built and sampled once per session.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
import torch
from diffusion_tiny import PROMPTS as IMAGE_PROMPTS
from diffusion_tiny import tiny_diffusion_policy, tiny_video_policy, video_contexts
from robot_tiny import tiny_robot_policy
from tiny import PROMPTS, ROWS, tiny_policy
from vlm_tiny import CONTEXTS, tiled_idefics3_policy, tiny_vlm_policy

from mmalign.rollout import HasEntropy, HasReference, HasValue, Rollout
from mmalign.text.nlpo import NLPOSettings


@dataclass(frozen=True)
class Case:
    """One adapter configuration on the contract.

    Attributes:
        build: makes the policy; seeds what it draws, so sampling right after it is reproducible.
        contexts: what `sample` is called on.
        num_samples: `sample`'s second argument.
        shape: (B, T) of the rollout.
        protocols: the optional protocols (`HasReference`, `HasValue`, `HasEntropy`) this configuration has.
        rtol: relative tolerance of re-scored against sampled log-probs (the absolute one is 1e-5).
        slow: building or sampling it takes long (a `torch.compile` of the decoder): marked `slow`.
    """

    build: Callable[[], Any]
    contexts: Sequence
    num_samples: int
    shape: tuple[int, int]
    protocols: tuple[type, ...] = ()
    rtol: float = 0.0
    slow: bool = False


def seeded(build: Callable[..., Any], *args, **kwargs) -> Any:
    """`build(*args, **kwargs)` from torch seed 0 (random LoRA weights and the sampling noise that follows)."""
    torch.manual_seed(0)
    return build(*args, **kwargs)


def _text() -> dict[str, Case]:
    return {
        "text": Case(partial(tiny_policy, temperature=0.7), PROMPTS, 3, (9, 8), (HasEntropy,)),
        "text-lora": Case(partial(tiny_policy, lora=True, temperature=0.7), PROMPTS, 3, (9, 8),
                          (HasReference, HasEntropy)),
        "text-value-head-copy-ref": Case(partial(tiny_policy, value_head=True, reference="copy"), ROWS, 2, (4, 8),
                                         (HasReference, HasValue, HasEntropy)),
        "text-nlpo": Case(partial(tiny_policy, value_head=True, temperature=0.7, nlpo=NLPOSettings(top_p=0.5)),
                          PROMPTS, 3, (9, 8), (HasValue, HasEntropy)),
        "text-compiled": Case(partial(tiny_policy, temperature=0.7, decoder="compiled", scoring="compiled"), PROMPTS,
                              3, (9, 8), (HasEntropy,), slow=True),
    }


def _vlm() -> dict[str, Case]:
    cases = {"vlm-qwen2_vl-copy-ref": Case(partial(tiny_vlm_policy, reference="copy", temperature=0.7), CONTEXTS, 3,
                                           (9, 6), (HasReference, HasEntropy))}
    for family, lora in [("qwen2_vl", True), ("qwen2_5_vl", False), ("idefics3", False), ("idefics3", True),
                         ("smolvlm", False), ("llava", False), ("llava", True)]:
        cases[f"vlm-{family}" + "-lora" * lora] = Case(
            partial(tiny_vlm_policy, model_type=family, lora=lora, temperature=0.7), CONTEXTS, 3, (9, 6),
            (HasReference, HasEntropy) if lora else (HasEntropy,))
    cases["vlm-idefics3-tiles"] = Case(tiled_idefics3_policy, CONTEXTS, 2, (6, 6), (HasEntropy,))
    cases["vlm-qwen2_vl-compiled"] = Case(partial(tiny_vlm_policy, temperature=0.7, decoder="compiled"), CONTEXTS, 3,
                                          (9, 6), (HasEntropy,), slow=True)
    return cases


def _diffusion() -> dict[str, Case]:
    cases = {"diffusion-ddim-unet-copy-ref": Case(partial(seeded, tiny_diffusion_policy, "ddim", reference="copy"),
                                                  IMAGE_PROMPTS, 2, (4, 3), (HasReference,), rtol=1e-5)}
    for family, guidance, lora, denoiser in [("ddim", 4.0, False, "unet"), ("ddim", 4.0, True, "unet"),
                                             ("flow", 1.0, False, "unet"), ("flow", 4.5, True, "unet"),
                                             ("flow", 4.5, True, "sd3")]:
        name = f"diffusion-{family}-{denoiser}" + "-cfg" * (guidance != 1.0) + "-lora" * lora
        cases[name] = Case(partial(seeded, tiny_diffusion_policy, family, guidance, lora, denoiser), IMAGE_PROMPTS,
                           2, (4, 3), (HasReference,) if lora else (), rtol=1e-5)
    return cases


def _video() -> dict[str, Case]:
    cases = {}
    for kind, family, guidance in [("folded", "ddim", 1.0), ("folded", "flow", 3.0), ("3d", "ddim", 2.0)]:
        build = partial(seeded, tiny_video_policy, kind, family, guidance, frames=3 if kind == "3d" else 4)
        name = f"video-{kind}-{family}" + "-cfg" * (guidance != 1.0)
        cases[name] = Case(build, video_contexts(), 2, (4, 3), rtol=1e-5)
    return cases


CASES: dict[str, Case] = {
    **_text(), **_vlm(), **_diffusion(), **_video(),
    "robot": Case(tiny_robot_policy, ["reach"], 12, (3, 12), (HasValue, HasEntropy), rtol=1e-5),
}
"""Every adapter configuration on the contract, by name: text (plain, LoRA, value head, compiled decoder and
re-scoring), each VLM family (with and without LoRA; Qwen2-VL also with the compiled decoder), diffusion (DDIM and
flow, UNet and SD3 transformer, CFG, LoRA), video (frame-folding UNet2D and UNet3D, DDIM and flow) and robot (a
Gaussian policy over a real vector env)."""


def params(names) -> list:
    """`names` as `pytest.mark.parametrize` values, the slow cases marked `slow`."""
    return [pytest.param(n, marks=pytest.mark.slow) if CASES[n].slow else n for n in names]


def domain_cases(prefix: str) -> list:
    """The cases of one domain ("text", "vlm", "diffusion", "video", "robot"), as parametrize values (`params`)."""
    return params(n for n in CASES if n.split("-")[0] == prefix)


def sample_case(name: str) -> tuple[Any, Rollout]:
    """Build case `name`'s policy and sample it: (policy, rollout)."""
    case = CASES[name]
    policy = case.build()
    return policy, policy.sample(case.contexts, case.num_samples)

"""Image rewards as plain callables `fn(contexts, outputs, **kw) -> list[float]`; outputs are uint8 RGB arrays
(H, W, 3) as `DiffusionPolicy` returns them.

- `jpeg_compressibility` / `jpeg_incompressibility`: minus / plus the JPEG size in kB (DDPO, quality 95; OpenCV).
- `PromptAlignmentReward`: the embedded task's verifiable check (colour / shape / count / position, OpenCV).
- `ClipScoreReward`: CLIP image-text similarity, or a LAION-style aesthetic MLP on the CLIP image embedding,
  from a local CLIP checkpoint.
- `PreferenceModelReward`: a PickScore-style preference model: logit_scale * cos(text, image) / scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mmalign.config import ConfigError
from mmalign.diffusion import shapes
from mmalign.rewards import REWARDS as TEXT_REWARDS
from mmalign.rewards import RewardError, check_reward_spec


def _images(outputs: Sequence) -> list[np.ndarray]:
    out = []
    for o in outputs:
        a = np.asarray(o)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[-1] != 3:
            raise ValueError(f"image rewards read uint8 RGB arrays (H, W, 3), got {a.dtype} {a.shape}.")
        out.append(a)
    return out


def jpeg_size_kb(image: np.ndarray, quality: int = 95) -> float:
    """Size of the image encoded as JPEG at `quality`, in kB."""
    import cv2

    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("OpenCV could not encode the image as JPEG.")
    return len(buf) / 1000.0


def jpeg_compressibility(contexts: Sequence, outputs: Sequence, quality: int = 95, **kw) -> list[float]:
    """Minus the JPEG size in kB (DDPO's compressibility reward)."""
    return [-jpeg_size_kb(im, quality) for im in _images(outputs)]


def jpeg_incompressibility(contexts: Sequence, outputs: Sequence, quality: int = 95, **kw) -> list[float]:
    """The JPEG size in kB (DDPO's incompressibility reward)."""
    return [jpeg_size_kb(im, quality) for im in _images(outputs)]


class PromptAlignmentReward:
    """Fraction of the prompt's attributes (colour, shape, count, position) the image satisfies, or 1 / 0 for
    all of them (`strict=True`). The spec comes from the row's fields, else from parsing its prompt.
    `graded_position=True` scores position by `shapes.position_score` (the share of the object on the requested
    side) instead of pass / fail: a denser signal for RL, the same optimum.
    """

    name = "alignment"

    def __init__(self, strict: bool = False, graded_position: bool = False):
        if strict and graded_position:
            raise ValueError("alignment reward: strict=True and graded_position=True exclude each other.")
        self.strict, self.graded = strict, graded_position

    @staticmethod
    def spec(context) -> dict:
        if isinstance(context, dict) and "color" in context:
            return {k: context[k] for k in ("color", "shape", "count", "position") if k in context}
        prompt = context["prompt"] if isinstance(context, dict) else str(context)
        return shapes.parse_prompt(prompt)

    def __call__(self, contexts: Sequence, outputs: Sequence, **kw) -> list[float]:
        out = []
        for c, im in zip(contexts, _images(outputs), strict=True):
            spec = self.spec(c)
            res: dict = shapes.check(im, spec)
            if self.graded and "position" in res:
                res["position"] = shapes.position_score(im, spec["position"])
            ok = [float(v) for v in res.values()]
            out.append(float(all(ok)) if self.strict else sum(ok) / max(1, len(ok)))
        return out


def _prompt(context) -> str:
    return context["prompt"] if isinstance(context, dict) else str(context)


class ClipScoreReward:
    """CLIP similarity logit_scale * cos(image, prompt) / scale, or an aesthetic head on the image embedding.

    Args:
        model: a local folder with a transformers `CLIPModel`, its tokenizer and image processor.
        aesthetic_head: optional safetensors file of a LAION-style MLP (keys "layers.{i}.weight/bias", Linear
            layers with no activation, as the LAION improved aesthetic predictor) applied to the L2-normalised
            image embedding; the reward is its output instead of the CLIP score.
        scale: divisor of the score (PickScore uses 26 to land in about [0, 1]).
        device: where the model runs.
    """

    name = "clip_score"

    def __init__(self, model: str, aesthetic_head: str = "", scale: float = 1.0, device: str = "cpu"):
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

        path = Path(model).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"CLIP checkpoint {model!r} not found; give a local folder (nothing is "
                                    "downloaded).")
        self.model = CLIPModel.from_pretrained(path, local_files_only=True).eval().to(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.processor = CLIPImageProcessor.from_pretrained(path, local_files_only=True)
        self.scale, self.device = scale, device
        self.head = self._load_head(aesthetic_head) if aesthetic_head else None

    @staticmethod
    def _load_head(file: str) -> torch.nn.Sequential:
        from safetensors.torch import load_file

        w = load_file(file)
        n = len({k.split(".")[1] for k in w})
        layers = [torch.nn.Linear(w[f"layers.{i}.weight"].shape[1], w[f"layers.{i}.weight"].shape[0])
                  for i in range(n)]
        head = torch.nn.Sequential(*layers)
        head.load_state_dict({f"{i}.{p}": w[f"layers.{i}.{p}"] for i in range(n) for p in ("weight", "bias")})
        return head.eval()

    @torch.no_grad()
    def __call__(self, contexts: Sequence, outputs: Sequence, **kw) -> list[float]:
        pix = self.processor(images=_images(outputs), return_tensors="pt")["pixel_values"].to(self.device)
        img = self.model.get_image_features(pixel_values=pix)
        img = getattr(img, "pooler_output", img)
        img = img / img.norm(dim=-1, keepdim=True)
        if self.head is not None:
            return (self.head.to(img.device)(img).squeeze(-1) / self.scale).tolist()
        tok = self.tokenizer([_prompt(c) for c in contexts], padding=True, truncation=True, return_tensors="pt")
        txt = self.model.get_text_features(**{k: v.to(self.device) for k, v in tok.items()})
        txt = getattr(txt, "pooler_output", txt)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        score = self.model.logit_scale.exp() * (img * txt).sum(-1)
        return (score / self.scale).tolist()


class PreferenceModelReward(ClipScoreReward):
    """PickScore-style preference model hook: a CLIP-architecture model trained on human preferences (e.g. a
    local copy of PickScore_v1), scored as logit_scale * cos(text, image) / 26 (Flow-GRPO's normalisation)."""

    name = "pickscore"

    def __init__(self, model: str, scale: float = 26.0, device: str = "cpu"):
        super().__init__(model, "", scale, device)


REWARDS = {
    "jpeg_compressibility": lambda **kw: (lambda c, o, **k: jpeg_compressibility(c, o, **{**kw, **k})),
    "jpeg_incompressibility": lambda **kw: (lambda c, o, **k: jpeg_incompressibility(c, o, **{**kw, **k})),
    "alignment": PromptAlignmentReward,
    "clip_score": ClipScoreReward,
    "aesthetic": ClipScoreReward,
    "pickscore": PreferenceModelReward,
}
"""Image reward factories by name (task configs: {"name": ..., "weight": ..., options})."""


def build_reward(spec: str | dict) -> tuple[str, object, float]:
    """(label, fn, weight) from a spec: an image reward name above, or anything `mmalign.rewards.resolve_reward`
    takes ({"fn": "package.module:attr", ...})."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    if spec.get("name") in REWARDS:
        opts = {k: v for k, v in spec.items() if k not in ("name", "weight", "label")}
        return spec.get("label", spec["name"]), REWARDS[spec["name"]](**opts), float(spec.get("weight", 1.0))
    from mmalign.rewards import resolve_reward

    return resolve_reward(spec)


def check_reward_specs(specs: list, extra: Sequence[str] = ()) -> None:
    """Check a task config's `rewards` as `build_reward` reads them, without building any (no model loads, no code
    imports): names of the image rewards above, of `mmalign.rewards` or of `extra` (which take no options), each
    with options its factory accepts, or {"fn": "package.module:attr"}.

    Raises:
        ConfigError: keyed "rewards" when there is none, else "rewards[i]" for the first bad spec.
    """
    if not specs:
        raise ConfigError("is empty; give at least one reward spec such as {name: ..., weight: 1.0}.", "rewards")
    registry = {**TEXT_REWARDS, **REWARDS, **dict.fromkeys(extra, _no_options)}
    for i, spec in enumerate(specs):
        try:
            check_reward_spec(spec, registry)
        except RewardError as e:
            raise ConfigError(str(e), f"rewards[{i}]") from e


def _no_options() -> None:
    """The factory signature of a reward that takes no options."""

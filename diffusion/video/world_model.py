"""A JEPA-style world model and MIND-V's Physical Foresight Coherence (PFC) reward.

MIND-V (arXiv 2512.06628) scores a generated clip with a frozen V-JEPA 2 encoder E and predictor P over sliding
windows: the predictor, given the encoded context, predicts the embedding of the window's future, compared with the
encoding of the future actually generated (Eq. 4); the clip's reward softmax-weights the windows by their error so
the least coherent ones count most (Eq. 5):

    s_i = cos(P(E(context_i)), E(future_i))                          # Eq. 4
    R   = sum_i softmax_i((1 - s_i) / tau) * s_i                     # Eq. 5

The paper gives no window length, stride or tau; the defaults here (`PFCConfig`: 3 context + 2 future frames,
stride 1, tau 0.3) fit 8-frame clips and were chosen on a validation split of the training episodes
(`validation_split`, docs/video.md), not taken from the paper.
Any model with `scores(video, cfg) -> (B, W)` plugs in (`load_world_model`, its loader named by the run config, never
by the model folder); the project trains its own small one
(`JEPA`, `train_world_model`): a per-frame convolutional encoder with batch-normed embeddings, an MLP predictor from
the context frames' embeddings to the change of the future frames' embeddings, and an EMA target encoder (V-JEPA /
BYOL) with a VICReg variance term against collapse and an arrow-of-time term (a window played backwards must score
below the same window in order).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmalign.config import check_numbers


@dataclass
class PFCConfig:
    context: int = 3
    """Context frames of a window."""
    future: int = 2
    """Future frames of a window (predicted from the context)."""
    stride: int = 1
    """Frames between window starts."""
    tau: float = 0.3
    """Softmax temperature of Eq. 5: lower focuses on the worst window."""

    def __post_init__(self) -> None:
        check_numbers(self, "context", "future", "stride", ge=1)
        check_numbers(self, "tau", gt=0)


@dataclass
class JEPAConfig:
    size: int = 16
    """Frame height = width."""
    dim: int = 64
    """Embedding size per frame."""
    width: int = 32
    """Encoder channels."""
    context: int = 3
    """Context frames the predictor reads."""
    future: int = 2
    """Future frames the predictor predicts."""
    hidden: int = 256
    """Hidden width of the predictor MLP."""
    residual: bool = True
    """Predict each future embedding as the last context embedding plus a learned change."""
    norm: bool = True
    """End the encoder with a batch norm without affine (frozen statistics at scoring): embeddings centred on the
    data's mean, so the cosine of Eq. 4 compares what changes rather than the shared component."""

    def __post_init__(self) -> None:
        check_numbers(self, "size", ge=4)  # two stride-2 convolutions
        check_numbers(self, "dim", "width", "context", "future", "hidden", ge=1)


class JEPA(nn.Module):
    """Per-frame encoder E (B, T, 3, S, S) -> (B, T, D), predictor P (B, context, D) -> (B, future, D)."""

    def __init__(self, cfg: JEPAConfig):
        super().__init__()
        self.cfg, w = cfg, cfg.width
        self.encoder = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.GELU(), nn.Conv2d(w, w, 4, 2, 1), nn.GELU(),
            nn.Conv2d(w, w, 4, 2, 1), nn.GELU(), nn.Flatten(), nn.Linear(w * (cfg.size // 4) ** 2, cfg.dim),
            *([nn.BatchNorm1d(cfg.dim, affine=False)] if cfg.norm else []))
        self.predictor = nn.Sequential(
            nn.Linear(cfg.context * cfg.dim, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(),
            nn.Linear(cfg.hidden, cfg.future * cfg.dim))

    def encode(self, video: Tensor) -> Tensor:
        """(B, T, 3, S, S) in [-1, 1] -> (B, T, D)."""
        b, t = video.shape[:2]
        return self.encoder(video.flatten(0, 1)).view(b, t, -1)

    def predict(self, ctx: Tensor) -> Tensor:
        """(B, context, D) -> (B, future, D)."""
        out = self.predictor(ctx.flatten(1)).view(ctx.shape[0], self.cfg.future, -1)
        return out + ctx[:, -1:] if self.cfg.residual else out

    def scores(self, video: Tensor, pfc: PFCConfig) -> Tensor:
        """s_i of every window (MIND-V Eq. 4), (B, W): cosine of the predicted and the encoded future."""
        if (pfc.context, pfc.future) != (self.cfg.context, self.cfg.future):
            raise ValueError(f"the world model predicts {self.cfg.future} frames from {self.cfg.context}; the PFC "
                             f"windows ask {pfc.future} from {pfc.context}: make them agree.")
        z = self.encode(video)
        starts = window_starts(video.shape[1], pfc)
        pred = self.predict(torch.stack([z[:, s:s + pfc.context] for s in starts], 1).flatten(0, 1))
        fut = torch.stack([z[:, s + pfc.context:s + pfc.context + pfc.future] for s in starts], 1).flatten(0, 1)
        return F.cosine_similarity(pred.flatten(1), fut.flatten(1), dim=1).view(video.shape[0], len(starts))


def window_starts(t: int, pfc: PFCConfig) -> list[int]:
    """First frame of each sliding window over a clip of t frames."""
    span = pfc.context + pfc.future
    if t < span:
        raise ValueError(f"a clip of {t} frames is shorter than one PFC window ({pfc.context} + {pfc.future}).")
    return list(range(0, t - span + 1, pfc.stride))


def pfc_aggregate(s: Tensor, tau: float) -> Tensor:
    """MIND-V Eq. 5: sum_i softmax_i((1 - s_i) / tau) s_i over windows, (B, W) -> (B,)."""
    return (torch.softmax((1 - s) / tau, dim=1) * s).sum(1)


def to_video(clips: Sequence | np.ndarray) -> Tensor:
    """uint8 clips (B, T, H, W, 3) -> float (B, T, 3, H, W) in [-1, 1]."""
    arr = np.stack([np.asarray(c) for c in clips]) if not isinstance(clips, np.ndarray) else clips
    if arr.dtype != np.uint8 or arr.ndim != 5 or arr.shape[-1] != 3:
        raise ValueError(f"video rewards read uint8 clips (T, H, W, 3), got {arr.dtype} {arr.shape[1:]}.")
    return torch.from_numpy(arr).permute(0, 1, 4, 2, 3).float() / 127.5 - 1


# --- training ---------------------------------------------------------------------------------------------------
@dataclass
class WorldModelTrainConfig:
    steps: int = 2500
    """Optimizer steps."""
    batch_size: int = 32
    """Windows per step."""
    lr: float = 1e-3
    """AdamW learning rate (cosine decay)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    ema: float = 0.996
    """EMA decay of the target encoder."""
    var_weight: float = 1.0
    """Weight of the VICReg variance hinge on the online embeddings (against collapse)."""
    flip: bool = True
    """Augment with left-right mirrored windows (the scene and its physics are mirror-symmetric)."""
    order_weight: float = 1.0
    """Weight of the arrow-of-time term: the same window played backwards must score below the window in order
    (0 turns it off)."""
    order_temp: float = 0.1
    """Temperature of that term's logistic loss on the cosine gap."""
    seed: int = 0
    """Seed of weights and batches."""

    def __post_init__(self) -> None:
        check_numbers(self, "steps", "batch_size", ge=1)
        check_numbers(self, "lr", "order_temp", gt=0)
        check_numbers(self, "weight_decay", "var_weight", "order_weight", "seed", ge=0)
        check_numbers(self, "ema", ge=0, le=1)


def train_world_model(clips: np.ndarray, cfg: JEPAConfig, tc: WorldModelTrainConfig, out_dir: str | Path | None = None,
                      log_every: int = 0) -> JEPA:
    """Self-supervised JEPA training on uint8 clips (N, T, S, S, 3): predict the target encoder's embedding of the
    next `future` frames from `context` frames, loss 1 - cos (the PFC score itself) + variance hinge, plus an
    arrow-of-time term (the self-supervised pretext of Wei et al., CVPR 2018): the window played backwards must score
    below the window in order. No other corruption is trained against. Saved to `out_dir` (config.json +
    model.safetensors) when given."""
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    model = JEPA(cfg)
    target = copy.deepcopy(model.encoder).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, tc.steps)
    span = cfg.context + cfg.future
    video = to_video(clips)

    def embed_target(frames: Tensor) -> Tensor:
        """(B, n, 3, S, S) -> (B, n, D) by the EMA target encoder."""
        with torch.no_grad():
            return target(frames.flatten(0, 1)).view(len(frames), frames.shape[1], -1)

    for step in range(tc.steps):
        i, s = rng.integers(0, len(video), tc.batch_size), rng.integers(0, video.shape[1] - span + 1, tc.batch_size)
        win = torch.stack([video[a, b:b + span] for a, b in zip(i, s)])  # (B, span, 3, S, S)
        if tc.flip:
            win = torch.where(torch.from_numpy(rng.random(len(win)) < 0.5).view(-1, 1, 1, 1, 1), win.flip(-1), win)
        z = model.encode(win)  # per frame, so the window played backwards has the embeddings z.flip(1)
        pred = model.predict(z[:, :cfg.context])
        fut, back_fut = embed_target(win[:, cfg.context:]), embed_target(win.flip(1)[:, cfg.context:])
        cos = F.cosine_similarity(pred.flatten(1), fut.flatten(1), dim=1)  # Eq. 4 of each window
        std = z.flatten(0, 1).std(0)
        loss = (1 - cos.mean()) + tc.var_weight * F.relu(1 - std).mean()  # VICReg variance term
        if tc.order_weight:  # arrow of time: -log sigmoid((s_forward - s_backward) / T)
            back_pred = model.predict(z.flip(1)[:, :cfg.context])
            back = F.cosine_similarity(back_pred.flatten(1), back_fut.flatten(1), dim=1)
            loss = loss + tc.order_weight * F.softplus((back - cos) / tc.order_temp).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for p, q in zip(target.parameters(), model.encoder.parameters()):
                p.lerp_(q, 1 - tc.ema)
        if log_every and (step + 1) % log_every == 0:
            print(f"world model step {step + 1}/{tc.steps}: cos {cos.mean().item():.3f} std {std.mean().item():.3f}")
    model.encoder.load_state_dict(target.state_dict())  # the EMA encoder is the frozen E (as in V-JEPA)
    model.eval().requires_grad_(False)
    if out_dir is not None:
        save_world_model(model, out_dir)
    return model


def save_world_model(model: JEPA, out_dir: str | Path) -> Path:
    """config.json + model.safetensors."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"model_type": "mmalign-jepa", **asdict(model.cfg)}, indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "model.safetensors")
    return out


LOADERS = ("mmalign-jepa", "vjepa2")
"""The `model_type`s a world-model folder's config.json may name, each with a built-in loader: the project's JEPA and
transformers' V-JEPA 2 (`vjepa2.VJEPA2WorldModel`). A folder never names code to import; another class comes from the
run config (`load_world_model(..., loader=)`)."""


def load_world_model(path: str | Path, loader: str = "") -> nn.Module:
    """A frozen world model from a local folder.

    Args:
        path: the folder: the project's JEPA (config.json with model_type "mmalign-jepa" + model.safetensors),
            transformers' V-JEPA 2 (`VJEPA2Model.save_pretrained`, model_type "vjepa2"), or a checkpoint that
            `loader` reads.
        loader: "" (the folder's built-in model_type) or "package.module:Class", named by the user's run config
            (`world_model_loader`), whose `from_pretrained(folder)` returns a module with
            `scores(video (B, T, 3, H, W), PFCConfig) -> (B, W)` (the hook for a V-JEPA-class checkpoint).

    Raises:
        FileNotFoundError: the folder has no config.json.
        ConfigError: config.json names code to import ({"class": ...}) or an unknown model_type.
    """
    from safetensors.torch import load_file

    from mmalign.config import ConfigError, resolve

    path = Path(path).expanduser()
    if loader:
        return resolve(loader, {}).from_pretrained(path).eval().requires_grad_(False)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"no world model at {path} (config.json missing): train one with "
                                "`python -m mmalign.diffusion.video.world_model ROOT`, or let the video task train it "
                                "(world_model: embedded).")
    cfg = json.loads((path / "config.json").read_text())
    if "class" in cfg:
        raise ConfigError(f"{path}/config.json names code to import ({cfg['class']!r}); a model folder never chooses "
                          "code to run. If you trust that code, name it in your run config: "
                          f"task_args.world_model_loader={cfg['class']} (load_world_model(folder, loader=...)).")
    model_type = cfg.pop("model_type", None)
    if model_type == "vjepa2":
        from mmalign.diffusion.video.vjepa2 import VJEPA2WorldModel

        return VJEPA2WorldModel.from_pretrained(path)
    if model_type not in LOADERS:
        raise ConfigError(f"{path}/config.json: model_type must be one of {list(LOADERS)}; for another world model "
                          "name its loader in the run config (task_args.world_model_loader=package.module:Class).")
    model = JEPA(JEPAConfig(**cfg))
    model.load_state_dict(load_file(path / "model.safetensors"))
    return model.eval().requires_grad_(False)


def embedded_world_model(root: str | Path, data: dict, train: np.ndarray, clip_cfg, extra: int, cfg: JEPAConfig,
                         tc: WorldModelTrainConfig, log_every: int = 500) -> Path:
    """The world model trained on clips `train` of `data` (rendered with `clip_cfg`) and `extra` more episodes, in
    its cache folder `<root>/world_model-<key>` (`mmalign.cache`), trained there on first use; returns the folder."""
    from mmalign.cache import cached, made_with

    return cached(root, "world_model", made_with(clips=clip_cfg, extra_episodes=extra, jepa=cfg, train=tc),
                  lambda out: train_world_model(training_frames(data, train, extra, root), cfg, tc, out, log_every),
                  "embedded world model")


# --- the reward ---------------------------------------------------------------------------------------------------
class PFCReward:
    """MIND-V's Physical Foresight Coherence as a reward callable: `fn(contexts, clips) -> B floats` (Eq. 4-5).

    Args:
        model: a world model with `scores`, or a folder for `load_world_model`.
        context, future, stride, tau: the windows and the temperature (`PFCConfig`).
        loader: for a folder, the "package.module:Class" that loads it (`load_world_model`); "" = built-in.
    """

    name = "pfc"

    def __init__(self, model: nn.Module | str | Path, context: int = 3, future: int = 2, stride: int = 1,
                 tau: float = 0.3, loader: str = ""):
        self.model = load_world_model(model, loader) if isinstance(model, (str, Path)) else model.eval()
        self.pfc = PFCConfig(context, future, stride, tau)

    @torch.no_grad()
    def window_scores(self, clips: Sequence) -> Tensor:
        """s_i (B, W) of uint8 clips (T, H, W, 3)."""
        return self.model.scores(to_video(clips), self.pfc)

    def __call__(self, contexts: Sequence, outputs: Sequence, **kw) -> list[float]:
        return pfc_aggregate(self.window_scores(outputs), self.pfc.tau).tolist()


def auroc(pos: Sequence[float], neg: Sequence[float]) -> float:
    """P(a positive scores above a negative), ties count half (Mann-Whitney U / (n_pos n_neg))."""
    p, n = np.asarray(pos, float)[:, None], np.asarray(neg, float)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def separation(reward: PFCReward, clips: dict, idx: Sequence[int], clip_cfg, seed: int = 0) -> dict[str, dict]:
    """PFC of clips `idx` against their shuffled / reversed / teleported copies (`clips.corrupted`): per corruption
    the mean PFC, the AUROC over all pairs and the paired win rate (a clip above its own corruption)."""
    from mmalign.envs.clips import corrupted

    pos = np.asarray(reward(None, clips["frames"][idx]))
    out = {"real": {"pfc": float(pos.mean())}}
    for kind in ("shuffled", "reversed", "teleport"):
        neg = np.asarray(reward(None, corrupted(clips, idx, clip_cfg, kind, seed)))
        out[kind] = {"pfc": float(neg.mean()), "auroc": auroc(pos, neg), "paired": float((pos > neg).mean())}
    return out


def validation_split(data: dict, train: Sequence[int], fraction: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Fit and validation clip indices inside the training clips `train`, split by episode: hyperparameters are
    picked on the validation episodes, never on the held-out ones."""
    from mmalign.envs.clips import split_episodes

    train = np.asarray(train)
    fit, val = split_episodes({"episode": data["episode"][train]}, fraction)
    return train[fit], train[val]


def training_frames(data: dict, idx: np.ndarray, extra: int, cache_dir: str | Path) -> np.ndarray:
    """Clips `idx` of `data` plus `extra` more rendered episodes (`ClipConfig(episodes=extra, seed=1)`: no episode
    shared with the default set, whose seed is 0), cached in `cache_dir` (`load_clips`)."""
    from mmalign.envs.clips import ClipConfig, load_clips

    if not extra:
        return data["frames"][idx]
    more = load_clips(ClipConfig(episodes=extra, seed=1), cache_dir)
    return np.concatenate([data["frames"][idx], more["frames"]])


if __name__ == "__main__":
    # python -m mmalign.diffusion.video.world_model ROOT [--steps N] [--seed N] [--extra N]: train on the training
    #   episodes (plus N more rendered episodes) into ROOT/world_model-<key>, the cache the video task reads with
    #   embedded_dir: ROOT (unless it is there), report the separation on 64 held-out clips.
    # python -m mmalign.diffusion.video.world_model ROOT --validate [--seed N] [--extra N]: train on 80 % of the
    #   training episodes (not saved) and report the separation on the other 20 % (tau 0.3; shuffled and reversed
    #   also for tau 0.1 / 1.0): the split the defaults were chosen on.
    import argparse

    from mmalign.diffusion.video.task import VideoTaskConfig
    from mmalign.envs.clips import ClipConfig, corrupted, load_clips, split_episodes

    ap = argparse.ArgumentParser()
    ap.add_argument("root", type=Path)
    ap.add_argument("--validate", action="store_true")
    ap.add_argument("--steps", type=int, default=VideoTaskConfig.world_model_steps)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extra", type=int, default=VideoTaskConfig.world_model_extra_episodes,
                    help="more rendered training episodes")
    args = ap.parse_args()
    root, clip_cfg = args.root, ClipConfig(episodes=VideoTaskConfig.episodes)
    data = load_clips(clip_cfg, root)
    train, held = split_episodes(data)
    tc = WorldModelTrainConfig(steps=args.steps, seed=args.seed)
    if args.validate:
        fit, val = validation_split(data, train)
        frames = training_frames(data, fit, args.extra, root)
        model = train_world_model(frames, JEPAConfig(), tc, log_every=500)
        for tau in (0.1, 1.0):
            reward = PFCReward(model, tau=tau)
            pos = reward(None, data["frames"][val])
            print(f"validation ({len(val)} clips) tau {tau}:", {kind: round(auroc(pos, reward(
                None, corrupted(data, val, clip_cfg, kind))), 3) for kind in ("shuffled", "reversed")})
        print(f"validation ({len(val)} clips) tau 0.3:")
        for name, row in separation(PFCReward(model), data, val, clip_cfg).items():
            print(name, {k: round(v, 3) for k, v in row.items()})
        raise SystemExit
    path = embedded_world_model(root, data, train, clip_cfg, args.extra, JEPAConfig(), tc)
    print(path)
    for name, row in separation(PFCReward(path), data, held[:64], clip_cfg).items():
        print(name, {k: round(v, 3) for k, v in row.items()})

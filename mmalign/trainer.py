"""One training loop for every adapter and algorithm, on accelerate.

Each iteration: 1 sample, 2 score, 3 advantages, 4 epochs x minibatches of re-scored log-probs -> loss -> step,
5 log, evaluate, checkpoint. The policy's modules and the optimizer go through `accelerator.prepare` (DDP, FSDP2,
mixed precision with fp16's gradient scaler, as the accelerate config says); every use of the policy runs inside the
prepared module's forward (`PolicyCall`), so the strategy's hooks fire. Gradients of a minibatch accumulate over
micro-batches without synchronising (`no_sync`) and are reduced once, on its last backward. Losses are normalised
by the unit count of the whole minibatch on all processes and multiplied by the process count before the strategy's
gradient averaging, so 2 processes (or 4 micro-batches) give the same update as one process on the same global batch.
A step whose loss or gradient is non-finite on any process is skipped on all of them (and counted); too many in a row
stop the run.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer
from accelerate.utils import (
    DistributedDataParallelKwargs,
    DistributedType,
    FullyShardedDataParallelPlugin,
    gather_object,
    set_seed,
)
from torch import nn
from tqdm.auto import tqdm

from mmalign.checkpoint import (
    CheckpointError,
    check_weights,
    copy_weights,
    load_checkpoint,
    load_optimizer_state,
    optimizer_state,
    rng_state,
    set_rng_state,
    trainable_state,
)
from mmalign.config import ConfigError
from mmalign.losses import agg_units
from mmalign.rollout import Rollout, on_last_step
from mmalign.run_config import RunConfig, algorithm, run_config_dict, task_class
from mmalign.runs import Run
from mmalign.task import (
    ChangesOnResume,
    Checkpointed,
    RecordsRewards,
    Saveable,
    ScalesAdvantages,
    SplitEvaluation,
    StepRewards,
    check_rewards,
    check_task,
    evaluation,
    merged_mean,
    progress_hooks,
)
from mmalign.tracking import plot_curves

FIXED_ON_RESUME = ("task", "task_args", "algorithm", "trainer.seed")
"""Config keys (and sections) a resumed run must keep: what the run is (model, data, seed). Everything else may
change: learning rate and its schedule, AdamW settings, clipping, batch shape, cadences, steps, the algorithm's
coefficients, and the rewards (`CHANGEABLE_ON_RESUME`)."""
CHANGEABLE_ON_RESUME = ("task_args.rewards",)
"""Keys inside `FIXED_ON_RESUME` sections that a resumed run may change; a task class adds its own task_args keys
in its `CHANGEABLE_ON_RESUME` (a robot task: where its envs step)."""


TRAINER_STATE = {"step", "scheduler", "skipped_steps", "skipped_in_row"}
"""What a checkpoint's trainer_state.json holds besides the algorithm's state."""


FUSED_OPTIMIZER = (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
"""Strategies under which the Trainer's AdamW is fused (`make_optimizer`)."""


class DivergedError(RuntimeError):
    """The loss or gradients stayed non-finite for `trainer.max_skipped_steps` optimizer steps in a row."""


def lr_lambda(schedule: str, warmup: int, total: int):
    """Multiplier of the peak learning rate at iteration k: linear warmup, then constant / linear / cosine."""

    def f(k: int) -> float:
        if k < warmup:
            return (k + 1) / warmup
        frac = (k - warmup) / max(1, total - warmup)
        if schedule == "linear":
            return max(0.0, 1.0 - frac)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac)))
        return 1.0

    return f


def step_chunks(batch: Rollout, k: int) -> list[Rollout]:
    """The batch split along its step axis into chunks of k steps (each keeps only its steps in the mask; chunks
    with no real step are dropped); k = 0 gives the batch whole. With a global normaliser the chunks' losses sum to
    the batch's loss, so back-propagating them one by one gives its gradient."""
    if not k or k >= batch.mask.shape[1]:
        return [batch]
    chunks = []
    for start in range(0, batch.mask.shape[1], k):
        mask = torch.zeros_like(batch.mask)
        mask[:, start:start + k] = batch.mask[:, start:start + k]
        if mask.any():
            chunks.append(dataclasses.replace(batch, mask=mask))
    return chunks


def add_rewards(total: torch.Tensor | float, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """total + values, where one is (B,) and the other (B, T) per step: the (B,) reward goes on each row's last
    real step (where PPO puts a sequence reward), so per-token and per-sequence rewards add up."""
    if isinstance(total, float) or total.dim() == values.dim():
        return total + values
    steps, flat = (total, values) if total.dim() == 2 else (values, total)
    return steps + on_last_step(flat.to(steps), mask)


def per_sample_mean(rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) rewards as they are; (B, T) per-step rewards averaged over each sample's real steps."""
    if rewards.dim() == 1:
        return rewards
    return (rewards * mask).sum(1) / mask.sum(1).clamp(min=1)


def loss_aggregation(name: str, cfg) -> tuple[str, int | None]:
    """(mode, fixed length) of an online algorithm's step aggregation (`mmalign.losses.aggregate`): the Trainer
    normalises a whole minibatch by it. Every online algorithm's config has `loss_agg` and `fixed_length`."""
    try:
        return cfg.loss_agg, cfg.fixed_length or None
    except AttributeError as e:
        raise TypeError(f"the config of algorithm {name!r} ({type(cfg).__name__}) lacks {e.name!r}: an online "
                        "algorithm's config has loss_agg and fixed_length (mmalign.losses.aggregate).") from e


def policy_modules(policy) -> list[nn.Module]:
    """The modules that hold a policy's weights: the policy itself when it is a module, else its module attributes."""
    if isinstance(policy, nn.Module):
        return [policy]
    modules = [v for v in vars(policy).values() if isinstance(v, nn.Module)]
    if not modules:
        raise TypeError(f"{type(policy).__name__} is not a torch module and holds none; the Trainer needs the "
                        "modules its parameters live in (make the policy an nn.Module or give it one as attribute).")
    return modules


class PolicyCall(nn.Module):
    """A policy's modules as one module whose forward runs a function of the policy: `call(fn, *args)` is
    `fn(*args)`. This is what goes through `accelerator.prepare`: DDP prepares its gradient reduction in a module's
    forward and FSDP gathers and frees parameters around it, so the Trainer runs every use of the policy (sampling,
    re-scoring, the loss, evaluation) through it."""

    def __init__(self, policy):
        super().__init__()
        self.parts = nn.ModuleList(policy_modules(policy))
        # FSDP wraps the transformer blocks a model names as never split (its transformer-layer auto-wrap policy)
        self._no_split_modules = sorted({n for m in self.parts.modules() for n in getattr(m, "_no_split_modules", None)
                                         or ()})

    def forward(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)


def make_accelerator(tc) -> Accelerator:
    """The Accelerator of trainer config `tc`: its device, mixed precision, and the strategy `accelerate launch`
    set up (DDP by default; FSDP2 from an FSDP accelerate config).

    fp16 is refused on the CPU, where accelerate gives no gradient scaler and small gradients would underflow to
    zero unnoticed. Accelerate turns FSDP on only for GPU processes; torch's `fully_shard` runs over gloo as well, so
    an FSDP launch on CPU processes takes the same FSDP path (this is how it is tested without a GPU).
    """
    device = tc.torch_device()
    if tc.mixed_precision == "fp16" and device.type == "cpu":
        raise ConfigError("fp16 needs a gradient scaler, which accelerate gives only on CUDA; on the CPU use "
                          "mixed_precision: bf16 (or no).", "trainer.mixed_precision")
    if device.index is not None and "LOCAL_RANK" not in os.environ:
        torch.cuda.set_device(device)
    # unused trainable parameters (a critic an algorithm does not train) must not stall DDP; buffers are constants
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True, broadcast_buffers=False)
    acc = Accelerator(mixed_precision=tc.mixed_precision, cpu=device.type == "cpu", kwargs_handlers=[ddp])
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp and acc.distributed_type == DistributedType.MULTI_CPU:
        acc.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* settings accelerate launch set
        if acc.state.fsdp_plugin.fsdp_version != 2:
            raise ConfigError("FSDP on CPU processes needs fsdp_version: 2 (torch's fully_shard).", "fsdp_version")
        acc.state.distributed_type = DistributedType.FSDP
    return acc


def check_deepspeed(acc: Accelerator, tc) -> None:
    """Refuse DeepSpeed settings the loop cannot run right. DeepSpeed steps the optimizer inside its backward, so
    an optimizer step must be one backward (no micro-batches or step chunks); ZeRO-3 gathers weights per module in
    every forward, so processes generating to different lengths would wait on each other (FSDP is the full
    sharding that samples with gathered weights)."""
    if acc.distributed_type != DistributedType.DEEPSPEED:
        return
    if tc.micro_batch_size or tc.micro_steps:
        raise ConfigError("DeepSpeed steps the optimizer inside each backward, so the Trainer runs it with one "
                          "backward per optimizer step: set trainer.micro_batch_size=0 and trainer.micro_steps=0 (or "
                          "launch with configs/accelerate/fsdp.yaml).", "trainer.micro_batch_size")
    if acc.state.deepspeed_plugin.zero_stage == 3:
        raise ConfigError("DeepSpeed ZeRO-3 is not supported yet: its per-module weight gathering stalls sampling "
                          "when processes generate to different lengths; launch with configs/accelerate/fsdp.yaml "
                          "(FSDP2 shards weights, gradients and optimizer state too).", "zero_stage")


def make_optimizer(params: list[nn.Parameter], tc, acc: Accelerator) -> torch.optim.AdamW:
    """AdamW with trainer config `tc`'s settings; fused (one kernel over every parameter instead of torch's default
    loop of small ops per tensor on the CPU: 0.4 -> 0.1 ms a step for a 64x64 actor-critic) where accelerate keeps the
    parameters as they are (no DeepSpeed, no FSDP DTensors) and no gradient scaler must see a skipped step (a fused
    step skips non-finite gradients inside its kernel, so accelerate would not count it as skipped)."""
    fused = (acc.scaler is None and acc.distributed_type in FUSED_OPTIMIZER
             and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params))
    return torch.optim.AdamW(params, lr=tc.lr, betas=tuple(tc.adam_betas), eps=tc.adam_eps,
                             weight_decay=tc.weight_decay, **({"fused": True} if fused else {}))


def optimizer_stepper(acc: Accelerator, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """What the Trainer calls `step` and `zero_grad` on: the torch optimizer inside accelerate's plain wrapper when
    the wrapper would only forward the calls (no gradient scaler, no XLA), else the wrapper. The wrapper's step
    probes importlib for lomo_optim twice and its zero_grad inspects a signature, on every call: about 0.3 ms a
    step, 15 % of a small network's minibatch step."""
    plain = type(optimizer) is AcceleratedOptimizer and acc.scaler is None
    return optimizer.optimizer if plain and acc.distributed_type != DistributedType.XLA else optimizer


def gradient_clipper(acc: Accelerator):
    """What clips the gradients, `fn(params, max_norm) -> total norm`: torch's `clip_grad_norm_` where accelerate's
    would only forward to it (no gradient scaler to unscale, no FSDP, DeepSpeed or XLA), else accelerate's, which also
    sorts the parameters by DTensor mesh and takes the norm of the norm (about 15 us a step for a small network)."""
    plain = acc.scaler is None and acc.distributed_type in FUSED_OPTIMIZER
    return torch.nn.utils.clip_grad_norm_ if plain else acc.clip_grad_norm_


def fsdp_units(module: nn.Module) -> list:
    """The FSDP2 units in `module` (none without FSDP)."""
    from torch.distributed.fsdp import FSDPModule

    return [m for m in module.modules() if isinstance(m, FSDPModule)]


@contextmanager
def whole_state_dicts(model: nn.Module):
    """While the block runs, every module of the FSDP-prepared `model` answers `state_dict()` with whole tensors (on
    the CPU of the main process; empty elsewhere), so a policy's own `save_pretrained` (transformers, PEFT,
    diffusers, safetensors) writes whole weights a user loads on one device. Gathering them is a collective: every
    process enters the block."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    modules = dict(model.named_modules())

    def served(prefix: str, *args, **kwargs) -> dict:
        return {k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)}

    for name, module in modules.items():
        module.state_dict = functools.partial(served, f"{name}." if name else "")  # shadows the method
    try:
        yield
    finally:
        for module in modules.values():
            del module.state_dict


class Trainer:
    """Owns the loop; the task owns the policy, rewards and data; the algorithm owns prepare + loss."""

    def __init__(self, cfg: RunConfig, task=None, accelerator: Accelerator | None = None):
        self.cfg, tc = cfg, cfg.trainer
        self.acc = accelerator or make_accelerator(tc)
        check_deepspeed(self.acc, tc)
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        if tc.contexts_per_step % self.world:
            raise ValueError(f"contexts_per_step={tc.contexts_per_step} must divide among {self.world} processes.")
        set_seed(tc.seed)
        self.task = task if task is not None else task_class(cfg.task)(cfg.task_args, self.acc.device)
        check_task(self.task)
        self.policy = self.task.policy
        self.progress_hooks = progress_hooks(self.task, self.policy)
        self.algo_cfg = cfg.algorithm_args
        algo = algorithm(cfg.algorithm)
        self.prepare, self.loss_fn = algo.prepare, algo.loss
        self.algo_state = algo.state(self.algo_cfg) if algo.state else None  # run state, kept in checkpoints
        self.scales_advantages = algo.scales_advantages
        self.loss_agg = loss_aggregation(cfg.algorithm, self.algo_cfg) if self.prepare else ("token-mean", None)
        if tc.micro_steps and self.loss_agg[0] == "seq-mean":
            raise ValueError("trainer.micro_steps needs a loss that sums over steps (loss_agg token-mean or fixed); "
                             "seq-mean divides each sample by its own length. Set micro_steps: 0 or change loss_agg.")
        params = [p for p in self.policy.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the policy has no trainable parameters.")
        self.model, self.optimizer = self.acc.prepare(PolicyCall(self.policy), make_optimizer(params, tc, self.acc))
        self.stepper, self.clip = optimizer_stepper(self.acc, self.optimizer), gradient_clipper(self.acc)
        self.params = [p for p in self.policy.parameters() if p.requires_grad]  # FSDP replaced them with shards
        self.sharded = bool(fsdp_units(self.model))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer.optimizer, lr_lambda(tc.lr_schedule, tc.warmup_steps, tc.steps))
        self.run_dir = Path(tc.output_dir) / tc.name
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.skipped = self.skipped_in_row = 0  # optimizer steps skipped for non-finite values: all, and in a row
        set_seed(tc.seed + self.rank)  # different samples on each process, reproducible per process

    # --- data -------------------------------------------------------------------------------------------
    def contexts_for(self, step: int) -> list:
        """This process's contexts of iteration `step`: a seeded permutation per pass over the data."""
        data, per_step = self.task.train_contexts, self.cfg.trainer.contexts_per_step
        ids = []
        for i in range(step * per_step, (step + 1) * per_step):
            epoch, pos = divmod(i, len(data))
            g = torch.Generator().manual_seed(self.cfg.trainer.seed * 100_003 + epoch)
            ids.append(int(torch.randperm(len(data), generator=g)[pos]))
        share = per_step // self.world
        return [data[j] for j in ids[self.rank * share:(self.rank + 1) * share]]

    # --- 1 sample, 2 score ------------------------------------------------------------------------------
    def score(self, contexts: list, rollout: Rollout) -> dict[str, float]:
        """Call each reward function on (per-sample contexts, outputs); store the weighted sum in rollout.rewards:
        (B,) per sample, or (B, T) per step (logged as each sample's mean over its real steps)."""
        per_sample = [contexts[int(g)] for g in rollout.group]
        mask = rollout.mask.float()
        total, metrics = 0.0, {}
        for name, fn, weight in self.task.rewards:
            per_step = isinstance(fn, StepRewards) and fn.per_step
            values = (fn.step_rewards if per_step else fn)(per_sample, rollout.outputs)
            values = check_rewards(values, len(rollout), name, steps=mask.shape[1],
                                   lengths=mask.sum(1).long().tolist())
            values = values.to(rollout.logprobs.device)
            total = add_rewards(total, weight * values, mask.to(values.device))
            metrics[f"reward/{name}"] = float(self.acc.gather(per_sample_mean(values, mask)).mean())
        rollout.rewards = total
        sample_rewards = per_sample_mean(total, mask)
        if isinstance(self.task, RecordsRewards) and self.task.records_rewards:
            shares = [(contexts, rollout.group, sample_rewards)] if self.world == 1 else \
                gather_object([(contexts, rollout.group.cpu(), sample_rewards.cpu())])
            for share in shares:  # every process records every process's samples
                self.task.record_rewards(*share)
        scaled = self.task.advantage_scale(per_sample, rollout.outputs, rollout.group) \
            if isinstance(self.task, ScalesAdvantages) else None
        if scaled is not None:
            if not self.scales_advantages:
                raise ConfigError(f"the task scales advantages (GRPO-S) but algorithm {self.cfg.algorithm!r} does "
                                  "not read the scale: set algorithm: grpo or turn the scaling off.", "algorithm")
            rollout.extras["advantage_scale"], scale_metrics = scaled
            metrics.update(scale_metrics)
        gathered = self.acc.gather(sample_rewards)
        metrics.update(reward=float(gathered.mean()), reward_std=float(gathered.std()) if len(gathered) > 1 else 0.)
        return metrics

    # --- 4 update ---------------------------------------------------------------------------------------
    def update(self, rollout: Rollout) -> dict[str, float]:
        """Epochs x minibatches; each minibatch accumulates micro-batches (and step chunks) without synchronising,
        reduces the gradients on its last backward and takes one step."""
        tc = self.cfg.trainer
        sums: dict[str, float] = {}
        n_micro = n_steps = 0
        for _ in range(tc.epochs):
            for mb_idx in torch.randperm(len(rollout)).chunk(tc.minibatches):
                micro = mb_idx.split(tc.micro_batch_size or len(mb_idx))
                denom = self._global_units(rollout, micro)
                parts = [(part, len(micro) * len(chunks)) for idx in micro
                         for chunks in [step_chunks(rollout[idx], tc.micro_steps)] for part in chunks]
                finite = True
                for i, (part, n_parts) in enumerate(parts):
                    loss, metrics = self._backward(self.loss_fn, part, denom, last=i == len(parts) - 1)
                    metrics["loss"] = loss * n_parts  # minibatch loss = sum of parts
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + float(v)
                    finite = finite and math.isfinite(float(metrics["loss"]))
                    n_micro += 1
                sums["grad_norm"] = sums.get("grad_norm", 0.0) + self._step(finite)
                n_steps += 1
        out = {k: v / n_micro for k, v in sums.items()}
        out.update(grad_norm=sums["grad_norm"] / n_steps, skipped_steps=self.skipped)
        return out

    def _backward(self, loss_fn, batch, denom, last: bool) -> tuple[torch.Tensor, dict]:
        """Forward the loss of one micro-batch through the prepared module and back-propagate it; only the last
        micro-batch of an optimizer step synchronises gradients. The loss is multiplied by the process count because
        DDP and FSDP average gradients over processes while `denom` already counts the units of all of them."""
        with nullcontext() if last else self.acc.no_sync(self.model), self.acc.autocast():
            loss, metrics = self.model(loss_fn, self.policy, batch, self.algo_cfg, denom)
            if not loss.requires_grad:  # no trained step in this micro-batch (B2 select masks samples out): a zero
                loss = loss + sum(p.sum() for p in self.params) * 0.0  # gradient, and every process still reduces
            self.acc.backward(loss * self.world if self.world > 1 else loss)
        return loss.detach(), metrics

    def _global_units(self, rollout: Rollout, micro: tuple) -> torch.Tensor:
        units = sum(agg_units(rollout.mask[idx], *self.loss_agg).float() for idx in micro)
        return self.acc.reduce(units.to(self.acc.device), "sum") if self.world > 1 else units

    def _step(self, finite_loss: bool = True) -> float:
        """Clip the (already reduced) gradients and step; returns the gradient norm (the same on every process).

        A non-finite loss on any process or a non-finite gradient norm skips the step on every process alike; with
        fp16's gradient scaler the optimizer step is still called, so the scaler skips it and lowers its scale.
        `trainer.max_skipped_steps` skips in a row raise `DivergedError`.
        """
        tc = self.cfg.trainer
        if self.world > 1:
            bad = torch.tensor([0.0 if finite_loss else 1.0], device=self.acc.device)
            finite_loss = self.acc.reduce(bad, "sum").item() == 0
        norm = float(self.clip(self.params, tc.max_grad_norm if tc.max_grad_norm > 0 else math.inf))
        ok = finite_loss and math.isfinite(norm)
        if ok or self.acc.scaler is not None:
            self.stepper.step()
            ok = ok and not self.optimizer.step_was_skipped
        if ok:
            self.skipped_in_row = 0
        else:
            self.skipped, self.skipped_in_row = self.skipped + 1, self.skipped_in_row + 1
            if self.skipped_in_row >= tc.max_skipped_steps:
                raise DivergedError(
                    f"the loss or gradients were non-finite (NaN or inf) for {self.skipped_in_row} optimizer steps in "
                    f"a row (trainer.max_skipped_steps={tc.max_skipped_steps}), so the run stopped; the checkpoints "
                    f"in {self.ckpt_dir} hold the last finite weights. Check the rewards' scale or lower trainer.lr, "
                    "then continue with --resume.")
        self.stepper.zero_grad(set_to_none=True)
        return norm

    @contextmanager
    def gathered(self):
        """Whole weights on every process for uses without a backward pass (sampling, reference and value scoring,
        evaluation). Under FSDP every unit is gathered once and kept gathered until the block ends, so processes
        that take different numbers of forward passes (generation stopping at different lengths, different
        evaluation shares) meet in no further collective; the same as DeepSpeed ZeRO-3's gathered generation.
        Without FSDP it does nothing."""
        units = fsdp_units(self.model) if self.sharded else []
        groups = [g for u in units if (g := u._get_fsdp_state()._fsdp_param_group) is not None]
        saved = [g.post_forward_mesh_info for g in groups]  # reshard-after-forward; None keeps a unit gathered
        for unit in units:
            unit.unshard()
        for g in groups:
            g.post_forward_mesh_info = None
        try:
            yield
        finally:
            for g, info in zip(groups, saved):
                g.post_forward_mesh_info = info
            for unit in units:
                unit.reshard()

    # --- one iteration ----------------------------------------------------------------------------------
    def set_progress(self, step: int) -> dict[str, float]:
        """Schedules over training (B2-DiffuRL stages, LMM-R1's text-then-image stages, a robot task's feedback
        rounds) follow the iteration, so a resumed run continues them: task and policy get `set_progress(step)`
        before the step's contexts are drawn. Returns the metrics the hooks report."""
        metrics: dict[str, float] = {}
        for hook in self.progress_hooks:
            metrics.update(hook(step) or {})
        return metrics

    def offline_step(self, step: int) -> dict[str, float]:
        """One offline iteration: a batch of preference rows, micro-batched, one optimizer step."""
        t0 = time.perf_counter()
        rows = self.contexts_for(step)
        size = self.cfg.trainer.micro_batch_size or len(rows)
        micro = [rows[i:i + size] for i in range(0, len(rows), size)]
        denom = float(self.cfg.trainer.contexts_per_step)
        sums: dict[str, float] = {}
        for i, m in enumerate(micro):
            loss, metrics = self._backward(self.loss_fn, m, denom, last=i == len(micro) - 1)
            metrics["loss"] = loss * self.world  # this process's share of the global mean
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) * (1 if k == "loss" else len(m) / len(rows))
        sums["grad_norm"] = self._step(math.isfinite(sums["loss"]))
        self.scheduler.step()
        return {**sums, "skipped_steps": self.skipped, "lr": self.scheduler.get_last_lr()[0],
                "time_step": time.perf_counter() - t0}

    def step(self, step: int) -> dict[str, float]:
        """One iteration: 1 sample, 2 score, 3 advantages, 4 update. Returns its metrics."""
        if self.prepare is None:
            return self.offline_step(step)
        t0 = time.perf_counter()
        progress = self.set_progress(step)
        contexts = self.contexts_for(step)
        with torch.no_grad(), self.acc.autocast(), self.gathered():
            rollout = self.model(self.policy.sample, contexts, self.cfg.trainer.num_samples)  # 1 sample
            t1 = time.perf_counter()
            metrics = {**progress, **self.score(contexts, rollout)}  # 2 score
            # 3 advantages (+ reference log-probs, values)
            metrics.update(self.model(self.prepare, self.policy, rollout, self.algo_cfg, self.algo_state))
        t2 = time.perf_counter()
        metrics.update(self.update(rollout))  # 4 epochs x minibatches
        self.scheduler.step()
        t3 = time.perf_counter()
        metrics.update(lr=self.scheduler.get_last_lr()[0], time_sample=t1 - t0, time_train=t3 - t2,
                       time_step=t3 - t0, steps_len=float(rollout.mask.sum(1).float().mean()))
        return metrics

    # --- 5 evaluate, checkpoint -------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Held-out metrics of the task's `evaluate`, prefixed "eval/"."""
        gpus = list(range(torch.cuda.device_count()))  # evaluation must not move the training RNG streams
        with torch.random.fork_rng(devices=gpus), torch.no_grad(), self.acc.autocast(), self.gathered(), evaluation():
            if self.world > 1 and isinstance(self.task, SplitEvaluation):
                metrics = self._evaluate_shares()
            else:
                metrics = self.model(self.task.evaluate, self.policy)
        return {f"eval/{k}": v for k, v in metrics.items()}

    def _evaluate_shares(self) -> dict[str, float]:
        """Evaluate this process's contiguous share of the held-out contexts, then merge every share: the metrics
        (means) weighted by how many contexts each share's mean is over, the records in context order."""
        task, everything = self.task, list(self.task.eval_contexts)
        n = len(everything)
        share = everything[self.rank * n // self.world:(self.rank + 1) * n // self.world]
        task.eval_contexts = share
        try:
            metrics = self.model(task.evaluate, self.policy) if share else {}
        finally:
            task.eval_contexts = everything
        counts = dict(task.eval_counts) if share else {}
        sizes = {k: counts.get(k, len(share)) for k in metrics}  # how many contexts each mean is over
        shares = gather_object([(sizes, metrics, list(task.eval_records) if share else [])])
        task.eval_records = [r for _, _, records in shares for r in records]
        keys = dict.fromkeys(k for _, m, _ in shares for k in m)
        return {k: merged_mean([(c[k], m[k]) for c, m, _ in shares if k in m]) for k in keys}

    def checkpoint_parts(self, step: int) -> dict[str, dict]:
        """This process's state dicts of a checkpoint: the main process writes the weights, optimizer and trainer
        state (under FSDP every process writes its shards of the weights and optimizer); every process its RNG
        streams and, for a `Checkpointed` task, the task's run state."""
        parts: dict[str, dict] = {f"rng_{self.rank}": rng_state()}
        if isinstance(self.task, Checkpointed):
            parts[f"task_{self.rank}"] = self.task.checkpoint_state()
        algo = None if self.algo_state is None else gather_object([self.algo_state.state_dict()])
        if self.sharded:
            parts[f"trainable_{self.rank}"] = trainable_state(self.policy, shards=True)
            parts[f"optimizer_{self.rank}"] = optimizer_state(self.optimizer)
        elif self.acc.is_main_process:
            parts["trainable"] = trainable_state(self.policy)
            parts["optimizer"] = optimizer_state(self.optimizer)
        if self.acc.is_main_process:
            parts["trainer_state"] = {"step": step, "world_size": self.world, "sharded": self.sharded,
                                      "scheduler": self.scheduler.state_dict(), "skipped_steps": self.skipped,
                                      "skipped_in_row": self.skipped_in_row, "algorithm_state": algo}
        return parts

    def load_checkpoint(self, ckpt: Path) -> int:
        """Restore checkpoint `ckpt` (every part read and checked before anything changes); returns its step."""
        state = load_checkpoint(ckpt, ["trainer_state"])["trainer_state"]
        if missing := TRAINER_STATE - set(state):
            raise CheckpointError(f"{ckpt / 'trainer_state.json'} lacks {sorted(missing)}; it is damaged.")
        if state.get("sharded", False) != self.sharded or (self.sharded and state["world_size"] != self.world):
            saved = f"FSDP shards of {state['world_size']} processes" if state.get("sharded") else "whole weights"
            raise CheckpointError(f"{ckpt} holds {saved}; this run has {self.world} process(es)"
                                  f"{' under FSDP' if self.sharded else ''}: resume it the way it was launched.")
        suffix = f"_{self.rank}" if self.sharded else ""
        names = [f"trainable{suffix}", f"optimizer{suffix}", f"rng_{self.rank}"]
        # a task with no run state restores nothing, so a checkpoint written before it had any may lack the part
        task_part = isinstance(self.task, Checkpointed) and (
            (ckpt / f"task_{self.rank}.json").exists() or bool(self.task.checkpoint_state()))
        if task_part:
            names.append(f"task_{self.rank}")
        parts = load_checkpoint(ckpt, names)
        weights = parts[f"trainable{suffix}"]
        check_weights(weights, self.policy, ckpt / f"trainable{suffix}.safetensors")
        copy_weights(weights, self.policy)
        load_optimizer_state(self.optimizer, parts[f"optimizer{suffix}"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(parts[f"rng_{self.rank}"])
        if task_part:
            self.task.restore_state(parts[f"task_{self.rank}"])
        self.skipped, self.skipped_in_row = state["skipped_steps"], state["skipped_in_row"]
        if self.algo_state is not None and state.get("algorithm_state"):
            self.algo_state.load_state_dict(state["algorithm_state"][self.rank])
        self._apply_hyperparameters()
        return state["step"]

    def _apply_hyperparameters(self) -> None:
        """Give the loaded optimizer this config's AdamW settings and peak lr, and rebuild the schedule from this
        config at the loaded iteration, so a resumed run runs what its config.yaml records (unchanged values give
        exactly the saved learning rate)."""
        tc = self.cfg.trainer
        for group in self.optimizer.param_groups:
            group.update(initial_lr=tc.lr, betas=tuple(tc.adam_betas), eps=tc.adam_eps, weight_decay=tc.weight_decay)
        schedule = lr_lambda(tc.lr_schedule, tc.warmup_steps, tc.steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer.optimizer, schedule,
                                                           self.scheduler.last_epoch - 1)

    # --- the loop ---------------------------------------------------------------------------------------
    def train(self, resume: bool = False) -> Path:
        """Run (or continue) the loop; returns the run folder.

        A new run refuses a folder that holds one; a resumed run continues from the newest intact checkpoint,
        refuses changed settings of `FIXED_ON_RESUME`, applies the others (printing each change) and records them
        in config.yaml.
        """
        tc, main = self.cfg.trainer, self.acc.is_main_process
        own = self.task.CHANGEABLE_ON_RESUME if isinstance(self.task, ChangesOnResume) else ()
        changeable = CHANGEABLE_ON_RESUME + tuple(f"task_args.{key}" for key in own)
        run = Run(self.run_dir, run_config_dict(self.cfg), resume, FIXED_ON_RESUME, changeable, main,
                  self.acc.wait_for_everyone, tc.keep_checkpoints)
        done = run.restore(self.load_checkpoint) if resume else 0
        with run.tracker(done if resume else None) as tracker:
            if not resume:
                tracker.log(0, self.evaluate())
            for step in tqdm(range(done, tc.steps), initial=done, total=tc.steps, disable=not main, desc=tc.name):
                metrics = self.step(step)
                k = step + 1
                if k % tc.log_every == 0 or k == tc.steps:
                    tracker.log(k, metrics)
                if (tc.eval_every and k % tc.eval_every == 0) or k == tc.steps:
                    tracker.log(k, self.evaluate())
                if (tc.save_every and k % tc.save_every == 0) or k == tc.steps:
                    run.save(k, self.checkpoint_parts(k))
        with whole_state_dicts(self.model) if self.sharded else nullcontext():
            if main:
                self.finish()
        self.acc.wait_for_everyone()
        return self.run_dir

    def finish(self) -> None:
        """Final weights for people (save_pretrained / PEFT adapter; whole under FSDP, loadable on one device),
        curves as PNG, the task's media."""
        if isinstance(self.policy, Saveable):
            self.policy.save_pretrained(self.run_dir / "final")
        plot_curves(self.run_dir / "metrics.jsonl", self.run_dir / "rewards.png", ("reward",), self.cfg.trainer.name)
        self.task.finish(self.policy, self.run_dir)

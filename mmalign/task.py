"""The Task contract: what a domain brings to a run, beside the `Policy` it trains (docs/architecture.md).

A Task holds the policy, its reward functions, the train and held-out contexts, and two hooks: `evaluate(policy)`
(held-out metrics) and `finish(policy, run_dir)` (what a person looks at after the run: samples, media). Optional
parts are small protocols, resolved once when a run is built: `Scheduled.set_progress(step)` for schedules that
follow the training iteration, `Checkpointed` for tasks with run state of their own (a robot task's environments,
episodes and learned reward), `HasSampleOptions.SampleOptions` for the task's own options of `mmalign sample`,
`SavesSamples.save_samples(...)` for tasks whose samples are files, `SelectsRows` for `mmalign select`, `Decodes` for
`mmalign eval | sample --decode`, `WinsAtBestOfN` for `mmalign eval --win-rate N`; for a reward,
`PolicyBound.attach(policy)` when it needs the policy before training.

Rewards are `(name, fn, weight)` triples; `check_rewards` validates what a reward function returns.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from mmalign.rollout import Policy, RewardFn


class RewardError(ValueError):
    """A reward spec, reward input or reward value is wrong; the message names the reward and what to do."""


class TaskError(TypeError):
    """A task (a custom one, named by "package.module:Class") lacks part of the `Task` contract; the message names
    what it lacks."""


@runtime_checkable
class Task(Protocol):
    """What every task provides. `Config` (a class attribute) is the dataclass of its `task_args`."""

    policy: Policy
    rewards: Sequence[tuple[str, RewardFn, float]]
    """(name, fn, weight) per reward function; the trainer's reward is the weighted sum."""
    train_contexts: Sequence
    """What `policy.sample` takes: prompts, dataset rows, env ids."""
    eval_contexts: Sequence
    """Held-out contexts, read by `evaluate`."""

    def evaluate(self, policy: Policy) -> dict[str, float]:
        """Held-out metrics of `policy` (run without grad, on an RNG stream of its own)."""
        ...

    def finish(self, policy: Policy, run_dir: Path) -> None:
        """Write what people look at after the run into `run_dir` (held-out samples, image grids, videos)."""
        ...


TASK_MEMBERS = ("policy", "rewards", "train_contexts", "eval_contexts", "evaluate", "finish")


@runtime_checkable
class Scheduled(Protocol):
    """Optional, for a task or policy: something follows the training iteration (B2-DiffuRL's branch point, LMM-R1's
    stages, a robot task's feedback rounds). Called before each iteration's contexts are drawn, so a resumed run
    continues the schedule; metrics it returns are logged with the iteration's."""

    def set_progress(self, step: int) -> dict[str, float] | None: ...


@runtime_checkable
class RecordsRewards(Protocol):
    """Optional, for a task: sees each training iteration's scored samples (LIMR's per-sample reward trajectories):
    its `contexts`, each sample's context index `group` (B,) and the samples' rewards (B,) (per-step rewards
    averaged over real steps). Called on every process, once with each process's share, while `records_rewards` is
    true (the trainer gathers the shares over processes only then)."""

    records_rewards: bool

    def record_rewards(self, contexts: list, group: Tensor, rewards: Tensor) -> None: ...


@runtime_checkable
class ScalesAdvantages(Protocol):
    """Optional, for a task: a per-sample coefficient on each sample's advantage (GRPO-S's difficulty weights),
    from the iteration's scored samples: per-sample `contexts`, `outputs` and context index `group` (B,). Returns
    ((B,) coefficients, metrics to log), or None to leave the advantages as they are."""

    def advantage_scale(self, contexts: list, outputs: list, group: Tensor) -> tuple[Tensor, dict] | None: ...


@runtime_checkable
class StepRewards(Protocol):
    """Optional, for a reward function: per-step rewards for training, beside its one value per output (which
    evaluation, searches and logging read). With `per_step` true the trainer calls `step_rewards(contexts, outputs)`
    instead, which returns one list per output of at most its real steps' rewards (a text output's per-token
    rewards: `mmalign.text.seq2seq_rm`)."""

    per_step: bool

    def step_rewards(self, contexts: Sequence, outputs: Sequence) -> list[list[float]]: ...


_EVALUATING = contextvars.ContextVar("mmalign_evaluating", default=False)


@contextlib.contextmanager
def evaluation() -> Iterator[None]:
    """The held-out evaluation of a run (`Trainer.evaluate` enters it): rewards called inside score held-out outputs,
    not training samples, and a reward that learns from what it scores (MPO's window) leaves them out."""
    token = _EVALUATING.set(True)
    try:
        yield
    finally:
        _EVALUATING.reset(token)


def evaluating() -> bool:
    """Whether the caller runs inside `evaluation()`."""
    return _EVALUATING.get()


@runtime_checkable
class PolicyBound(Protocol):
    """Optional, for a reward: it needs the policy it scores for before training starts (its reference's samples to
    calibrate against, its samples to learn from, its tokenizer). The task calls `attach(policy)` once, after the
    policy is built and before any update."""

    def attach(self, policy: Any) -> None: ...


@runtime_checkable
class Checkpointed(Protocol):
    """Optional, for a task: run state of its own that a checkpoint keeps, so a resumed run continues the same curve.

    `checkpoint_state()` is called at every checkpoint and returns a state dict (tensors and JSON values, nested
    dicts allowed); a checkpoint is a synchronisation point, where the task may bring its state to a form it can
    save (a robot task restarts its environments there, seeded by the step). `restore_state(state)` is called on
    resume with what the checkpoint holds.
    """

    def checkpoint_state(self) -> dict[str, Any]: ...

    def restore_state(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class HasSampleOptions(Protocol):
    """Optional: `SampleOptions`, a dataclass of the task's sampling options (`mmalign sample ... --option key=value`),
    handed to `save_samples`, or as keyword arguments to `policy.sample` when the task saves no files."""

    SampleOptions: type


@runtime_checkable
class SavesSamples(Protocol):
    """Optional: a task whose samples are files (images, videos); `mmalign sample` writes them to `out`."""

    def save_samples(self, prompts: list[str], out: Path, num_samples: int, seed: int, options: Any) -> list[Path]:
        ...


@runtime_checkable
class SelectsRows(Protocol):
    """Optional: a task that keeps a subset of its training rows, picked with the base policy's rewards (`mmalign
    select`; the text task's BLEUBERI selection). `SelectionSettings` is the dataclass of the selection's settings
    (`k`, `mode`, `num_samples`, ...), `select(rows, settings)` returns the rows it keeps, and `selection_stats` is
    non-empty when the task's config already selected its training rows."""

    SelectionSettings: type
    selection_stats: dict

    def select(self, rows: list, settings: Any) -> list: ...


@runtime_checkable
class Decodes(Protocol):
    """Optional: a task with decoding-time alignment methods (`mmalign eval | sample --decode METHOD --decode-arg
    KEY=VALUE`). `decoder(method, options)` returns what stands in for the policy: `sample(contexts, n)` as the
    task's `evaluate` calls it, and `report()`, the metrics of its cost. An unknown method or option raises a
    ValueError naming it."""

    def decoder(self, method: str, options: Sequence[str]) -> Any: ...


@runtime_checkable
class WinsAtBestOfN(Protocol):
    """Optional: a task whose policy has a reference to sample (`mmalign eval --win-rate N`): `bon_win_rate(n,
    rounds, seed)` is InfAlign's best-of-N win rate of the policy against its reference on the held-out contexts, with
    the policy's KL from it (`mmalign.decoding.search.bon_win_rate`)."""

    def bon_win_rate(self, n: int, rounds: int = 1, seed: int = 0) -> dict[str, float]: ...


@runtime_checkable
class SplitEvaluation(Protocol):
    """Optional: a task whose `evaluate` metrics are means over its `eval_contexts` (each context counts once) and
    which keeps what it evaluated in `eval_records` (its entries in context order) for `finish`. With several
    processes, each evaluates a contiguous share of the contexts; the Trainer averages the shares' metrics weighted by
    their sizes and hands every process all records in order. Without it, every process evaluates everything.

    A metric that is a mean over fewer contexts than the share holds (a per-kind accuracy, a mean that skips NaN)
    has its count in `eval_counts` (empty when every metric is over the whole share), set by `evaluate`, so that
    shares merge into the mean over all contexts (`merged_mean`).
    Sampling that must give the same outputs however the contexts are split takes each
    context's noise by its place in the whole held-out list (`mmalign.diffusion.policy.chunked_noise`)."""

    eval_records: list
    eval_counts: dict[str, int]


@runtime_checkable
class ChangesOnResume(Protocol):
    """Optional: the `task_args` keys a resumed run may change (where a robot task's envs step, say); the Trainer
    refuses changes to the others."""

    CHANGEABLE_ON_RESUME: tuple[str, ...]


def merged_mean(parts: Sequence[tuple[int, float]]) -> float:
    """The mean over the union of disjoint parts, given each part's (count, mean); parts with count 0 (their mean
    is NaN or absent) add nothing. NaN when no part has a count."""
    parts = [(n, m) for n, m in parts if n > 0]
    total = sum(n for n, _ in parts)
    return sum(n * m for n, m in parts) / total if total else float("nan")


@runtime_checkable
class Saveable(Protocol):
    """Optional, for a policy: its trained weights as a folder people load (`save_pretrained`, a PEFT adapter)."""

    def save_pretrained(self, path: str | Path) -> None: ...


def check_task(task: Any) -> None:
    """Raise a `TaskError` (a TypeError) naming what `task` lacks of the `Task` contract (members, or a policy that is
    no Policy)."""
    missing = [name for name in TASK_MEMBERS if not hasattr(task, name)]
    if missing:
        raise TaskError(f"{type(task).__name__} is not an mmalign Task: it lacks {missing}. A task provides "
                        f"{list(TASK_MEMBERS)} (mmalign.task.Task; docs/architecture.md).")
    if not isinstance(task.policy, Policy):
        raise TaskError(f"{type(task).__name__}.policy ({type(task.policy).__name__}) is not an mmalign Policy: it "
                        "needs sample(contexts, num_samples), logprobs(rollout) and parameters() (mmalign.rollout).")


def progress_hooks(*objs: Any) -> list[Callable[[int], None]]:
    """The `set_progress` of each of `objs` (task, policy) that is `Scheduled`."""
    return [obj.set_progress for obj in objs if isinstance(obj, Scheduled)]


def _ragged(values: Any) -> bool:
    return isinstance(values, (list, tuple)) and bool(values) and all(isinstance(v, (list, tuple)) for v in values)


def _pad_steps(values: Sequence[Sequence[float]], n: int, name: str, steps: int, lengths: Sequence[int]) -> Tensor:
    """(n, steps) from n per-step lists, each no longer than its output's real steps."""
    if len(values) != n:
        raise RewardError(f"reward function {name!r} returned per-step rewards for {len(values)} outputs; expected "
                          f"{n}, one list per output in the order of `outputs`.")
    out = torch.zeros(n, steps)
    for i, (row, length) in enumerate(zip(values, lengths)):
        if len(row) > length:
            raise RewardError(f"reward function {name!r} returned {len(row)} per-step rewards for output {i}, which "
                              f"has {int(length)} steps; return at most one reward per step.")
        out[i, :len(row)] = torch.as_tensor(row, dtype=torch.float32)
    return out


def reward_name(fn: RewardFn) -> str:
    """A reward's display name: its `name` attribute, else its `__name__`, else its class name."""
    return getattr(fn, "name", None) or getattr(fn, "__name__", None) or type(fn).__name__


def check_rewards(values: Any, n: int, name: str, steps: int | None = None, lengths: Sequence[int] | None = None
                  ) -> Tensor:
    """Validate what reward function `name` returned for `n` outputs and return it as a float32 tensor: (n,), one
    per output, or (n, steps) per step where `steps` is given (a robot rollout's per-step rewards). With `lengths`
    (each output's real steps), per-step rewards may also come as n lists of at most that many numbers (a text
    output's per-token rewards), which are placed on the first steps and padded with zeros.

    Raises:
        RewardError: (a ValueError) naming the function, when the values are not n (x steps) finite numbers.
    """
    if lengths is not None and steps and _ragged(values):
        values = _pad_steps(values, n, name, steps, lengths)
    preview = repr(values if not isinstance(values, (list, tuple)) or len(values) <= 8 else list(values[:8]) + ["..."])
    try:
        tensor = torch.as_tensor(values, dtype=torch.float32).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as e:
        raise RewardError(
            f"reward function {name!r} returned {preview}; expected {n} numbers, one per output ({e})."
        ) from e
    if tensor.shape != (n,) and (steps is None or tensor.shape != (n, steps)):
        got = f"{len(tensor)} values" if tensor.dim() == 1 else f"shape {tuple(tensor.shape)}"
        raise RewardError(
            f"reward function {name!r} returned {got} ({preview}) for {n} outputs; expected {n} numbers, one per "
            f"output, in the order of `outputs`" + (f" (or ({n}, {steps}) per-step rewards)." if steps else ".")
        )
    bad = (~torch.isfinite(tensor)).nonzero().flatten().tolist()
    if bad:
        raise RewardError(
            f"reward function {name!r} returned non-finite values at positions {bad[:8]} ({preview}); "
            f"expected {n} finite numbers."
        )
    return tensor

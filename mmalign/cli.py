"""`mmalign train | eval | sample | select CONFIG [key=value ...]`."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from mmalign.config import ConfigError


class UsageError(ValueError):
    """The command line is wrong (an argument's value, a missing argument); the message says which and what to do."""


class _Parser(argparse.ArgumentParser):
    """Usage errors end like every other bad input: one `mmalign: error:` line from `main` and exit status 2."""

    def error(self, message: str):
        raise UsageError(f"{message} (see `{self.prog} --help`).")


def _whole(low: int):
    """An argparse type: a whole number >= `low`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= {low}")
        return value

    return parse


def _finite(text: str) -> float:
    """An argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


LOOPS = {
    "pebble": "mmalign.robotics.pebble:main",
    "pearl": "mmalign.robotics.pearl_run:main",
    "gcsl": "mmalign.robotics.gcsl_run:main",
}
"""Experiments whose loop is not the Trainer's, named by a config's `loop:` key (or "package.module:main"): each
`main(config_path, overrides, resume) -> run folder` runs on the shared run helper (`mmalign.runs.Run`)."""


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="mmalign", description="RL alignment for multimodal and embodied policies.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, text in [("train", "train a policy"), ("eval", "evaluate on held-out contexts"),
                       ("sample", "sample from a (trained) policy"), ("select", "BLEUBERI data selection")]:
        s = sub.add_parser(name, help=text)
        s.add_argument("config", help="YAML run config (see configs/)")
        s.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. trainer.lr=1e-5")
        if name == "train":
            s.add_argument("--resume", action="store_true", help="continue from the run's newest checkpoint")
        if name in ("eval", "sample"):
            s.add_argument("--checkpoint", help="checkpoint folder (runs/<name>/checkpoints/step_N)")
            s.add_argument("--decode", metavar="METHOD", help="decode with an inference-time alignment method of the "
                           "task (text: sample, greedy, bon, deal, tq, rast, genarm; docs/decoding.md)")
            s.add_argument("--decode-arg", action="append", default=[], metavar="KEY=VALUE",
                           help="a setting of --decode (repeatable): n=16, k=4, depth=4, alpha=1, weight=1, beta=1, "
                                "small=PATH, small_base=PATH, arm=[PATH], aligned=PATH")
        if name == "eval":
            s.add_argument("--win-rate", type=_whole(1), metavar="N", help="InfAlign's best-of-N win rate of the "
                           "policy against its reference (N samples each, each side's best by the task's reward; "
                           "ties count half) and its sequence KL from the reference (docs/decoding.md)")
            s.add_argument("--rounds", type=_whole(1), default=4, help="--win-rate: best-of-N draws per prompt")
            s.add_argument("--seed", type=_whole(0), default=0, help="--win-rate: seed of the policy's draws")
        if name == "sample":
            s.add_argument("--prompt", action="append", required=True, help="a context (repeatable)")
            s.add_argument("--num-samples", type=_whole(1), default=1, help="samples per prompt")
            s.add_argument("--seed", type=_whole(0), default=0)
            s.add_argument("--out", help="folder for image / video samples")
            s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                           help="a sampling option of the task (repeatable): greedy=true (text, VLM), rlg_scale=1.5 "
                                "and rlg_start=2 (diffusion: RL guidance, base + w (tuned - base))")
        if name == "select":
            s.add_argument("--k", type=_whole(1), required=True, help="how many training rows to keep")
            s.add_argument("--mode", default="hard",
                           help="which rows to keep (text: hard, easy, medium, random, lim, isa)")
            s.add_argument("--out", required=True, help="output JSONL (a new file)")
            s.add_argument("--num-samples", type=_whole(1), default=1, help="samples scored per row")
            s.add_argument("--trajectories", default="", help="--mode lim: a pass's reward_trajectories.json")
    return p


def build_task(config: str, overrides=(), checkpoint: str | None = None):
    """(run config, task) of `config` with `overrides`, its policy loaded from `checkpoint` when given: what
    `mmalign eval / sample / select` (and other evaluation commands) work on."""
    from accelerate.utils import set_seed

    from mmalign.checkpoint import load_weights
    from mmalign.run_config import load_run_config, task_class
    from mmalign.task import check_task

    cfg = load_run_config(config, list(overrides))
    set_seed(cfg.trainer.seed)  # models built from config get the run's initial weights
    task = task_class(cfg.task)(cfg.task_args, cfg.trainer.torch_device())  # where the Trainer would run it
    check_task(task)  # a custom task that lacks a member is named here, as when a run is built
    if checkpoint:
        load_weights(Path(checkpoint), task.policy)
    return cfg, task


def _task(args):
    return build_task(args.config, args.overrides, vars(args).get("checkpoint"))


def sample(args) -> None:
    """`mmalign sample`: files for tasks that save samples (images, videos), else one JSON line per sample."""
    import dataclasses

    import torch

    from mmalign.config import apply_overrides, from_dict
    from mmalign.task import HasSampleOptions, SavesSamples

    _, task = _task(args)
    if args.decode:
        return _decoded(task, args)
    if args.option and not isinstance(task, HasSampleOptions):
        raise UsageError(f"--option {args.option[0]}: the {type(task).__name__} task takes no sampling options.")
    options = None
    if isinstance(task, HasSampleOptions):
        try:
            options = from_dict(task.SampleOptions, apply_overrides({}, args.option))
        except ConfigError as e:
            raise UsageError(f"--option: {e}") from e
    torch.manual_seed(args.seed)
    with torch.no_grad():
        if isinstance(task, SavesSamples):
            paths = task.save_samples(args.prompt, Path(args.out or "samples"), args.num_samples, args.seed, options)
            print(f"wrote {len(paths)} samples to {Path(args.out or 'samples')}")
            return
        kwargs = {} if options is None else dataclasses.asdict(options)
        rollout = task.policy.sample(args.prompt, args.num_samples, **kwargs)
    for g, out in zip(rollout.group.tolist(), rollout.outputs):
        print(json.dumps({"context": args.prompt[g], "output": out}))


def _decoder(task, args):
    from mmalign.task import Decodes

    if not isinstance(task, Decodes):
        raise UsageError(f"--decode {args.decode}: the {type(task).__name__} task has no decoding-time methods (the "
                         "text and diffusion tasks have).")
    try:
        return task.decoder(args.decode, args.decode_arg)
    except (ConfigError, ValueError) as e:
        raise UsageError(f"--decode {args.decode}: {e}") from e


def _win_rate(task, args) -> dict[str, float]:
    """`mmalign eval --win-rate N`: the task's best-of-N win rate against its reference, with the KL."""
    from mmalign.task import WinsAtBestOfN

    if args.decode:
        raise UsageError("--win-rate samples the policy itself against its reference; leave out --decode.")
    if not isinstance(task, WinsAtBestOfN):
        raise UsageError(f"--win-rate: the {type(task).__name__} task has no best-of-N win rate (the text task has).")
    try:
        return task.bon_win_rate(args.win_rate, args.rounds, args.seed)
    except ConfigError as e:
        raise UsageError(f"--win-rate: {e}") from e


def _decoded(task, args) -> None:
    """`mmalign sample --decode`: one JSON line per output, then the method's cost."""
    import torch

    from mmalign.task import SavesSamples

    if isinstance(task, SavesSamples):
        raise UsageError(f"--decode {args.decode}: `mmalign sample --decode` prints text; the {type(task).__name__} "
                         "task's decoding methods run in `mmalign eval CONFIG --decode METHOD` (held-out metrics and "
                         "cost).")
    decoder = _decoder(task, args)
    rows = {c["prompt"]: c for c in [*task.train_contexts, *task.eval_contexts] if isinstance(c, dict)}
    torch.manual_seed(args.seed)  # a dataset prompt brings its row (its references, for BLEU and the like)
    outputs = decoder.sample([rows.get(p, p) for p in args.prompt], args.num_samples).outputs
    for i, out in enumerate(outputs):
        print(json.dumps({"context": args.prompt[i // args.num_samples], "output": out}))
    print(json.dumps(decoder.report()))


def run(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if vars(args).get("decode_arg") and not args.decode:
        raise UsageError("--decode-arg sets a decoding method's knob; give the method with --decode METHOD.")
    if args.command == "train":
        from mmalign.config import read_yaml, resolve
        from mmalign.run_config import load_run_config
        from mmalign.trainer import Trainer

        loop = read_yaml(args.config).get("loop")
        if loop:
            run_dir = resolve(loop, LOOPS)(args.config, args.overrides, args.resume)
        else:
            run_dir = Trainer(load_run_config(args.config, args.overrides)).train(resume=args.resume)
        print(f"run folder: {run_dir}")
    elif args.command == "eval":
        from mmalign.trainer import Trainer

        cfg, task = _task(args)
        if args.win_rate:
            print(json.dumps(_win_rate(task, args), indent=2))
        elif args.decode:
            decoder = _decoder(task, args)
            print(json.dumps({**task.evaluate(decoder), **decoder.report()}, indent=2))
        else:
            print(json.dumps(Trainer(cfg, task=task).evaluate(), indent=2))
    elif args.command == "sample":
        sample(args)
    elif args.command == "select":
        select(args)
    return 0


def select(args: argparse.Namespace) -> None:
    """`mmalign select`: score the task's training rows (never the held-out ones) with its weighted reward and keep
    `--k` of them, as `task_args.selection` does before a run."""
    from mmalign.data import write_jsonl
    from mmalign.task import SelectsRows

    out = _new_file(args.out, "--out")
    _, task = _task(args)
    if not isinstance(task, SelectsRows):
        raise UsageError(f"the {type(task).__name__} task does not select training rows (the text task does: "
                         "BLEUBERI's selection).")
    given = {"k": args.k, "mode": args.mode, "num_samples": args.num_samples, "trajectories": args.trajectories}
    try:
        settings = task.SelectionSettings(**given)
    except ConfigError as e:
        what = f"--{e.key.replace('_', '-')} {given[e.key]!r}" if e.key in given else f"the selection's {e.key}"
        raise UsageError(f"{what}: {e.problem}") from e
    if task.selection_stats:
        raise UsageError("this config already selects its training rows (task_args.selection); add the override "
                         "task_args.selection.k=0 to select from all of them.")
    rows = list(task.train_contexts)
    if args.k > len(rows):
        raise UsageError(f"--k {args.k} is more than the {len(rows)} training rows of this config (held-out rows are "
                         f"never selected); pass --k {len(rows)} or less.")
    write_jsonl(task.select(rows, settings), out)
    print(f"wrote them to {out}")


def _new_file(path: str, flag: str) -> Path:
    """`path` as a file this command may create: not an existing file or folder, in a folder it can write to."""
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"{flag} {path!r} is a folder; give the path of a new file.")
    if out.exists():
        raise UsageError(f"{flag} {path!r} already exists; give a new path or remove it first (nothing was changed).")
    parent = next(p for p in out.absolute().parents if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"{flag} {path!r}: cannot create it under {str(parent)!r} (not a writable folder).")
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point: clear one-line errors for bad input (the project's error classes), tracebacks for bugs."""
    from mmalign.checkpoint import CheckpointError
    from mmalign.data import DataError
    from mmalign.task import RewardError, TaskError
    from mmalign.trainer import DivergedError

    try:
        return run(argv)
    except (CheckpointError, ConfigError, DataError, DivergedError, FileNotFoundError, RewardError, TaskError,
            UsageError) as e:
        print(f"mmalign: error: {e}", file=sys.stderr)
        return 2
    finally:
        close_process_group()


def close_process_group() -> None:
    """Tear down torch.distributed (if a launch formed a group) before the interpreter exits: a gloo group left to
    interpreter shutdown can abort a rank with SIGABRT after its work is done, failing the whole launch."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())

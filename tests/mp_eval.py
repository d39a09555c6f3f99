"""Run by test_trainer.py alone or under `torch.distributed.run --nproc_per_node N`: a tiny config's held-out
evaluation for DOMAIN (text, vlm, diffusion, video); every process writes OUT.rank<r>.json with the merged metrics,
the held-out contexts it evaluated itself and a summary of the records it holds afterwards; the main process then
runs the task's `finish` into OUT.finish/ (what a run leaves for people, from the merged records).

`python tests/mp_eval.py DOMAIN OUT [CACHE]`: CACHE is the folder of the embedded video models (built on first use;
build it with one process before two processes share it)."""

import json
import os
import sys
from pathlib import Path

import numpy as np

from mmalign.cli import close_process_group
from mmalign.run_config import load_run_config
from mmalign.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
DIFFUSION = ["task_args.tiny=true", "task_args.sampling.num_steps=2", "task_args.trained_steps.end=0",
             "task_args.eval_samples=2",
             "task_args.eval_fraction=0.25"]


def setup(domain: str, cache: str) -> tuple[str, list[str]]:
    """The config and overrides of `domain`'s tiny evaluation: greedy text, a few held-out contexts each."""
    return {
        "text": ("configs/text/tiny_grpo.yaml", ["task_args.eval_size=7"]),
        "vlm": ("configs/vlm/tiny_lmm_r1_two_stage.yaml", ["task_args.num_images=12", "task_args.eval_views=1"]),
        "diffusion": ("configs/diffusion/shapes_grpo.yaml", DIFFUSION),
        "video": ("configs/video/push_pfc.yaml", ["task_args.tiny=true", f"task_args.embedded_dir={cache}",
                                                  "task_args.sampling.num_steps=2", "task_args.trained_steps.end=1",
                                                  "task_args.eval_conditions=3"]),
    }[domain]


def summary(record) -> object:
    """What a record is, as JSON: text rows as they are, an image or clip by its mean pixel value."""
    if isinstance(record, dict):
        return {k: v for k, v in record.items() if isinstance(v, (str, int, float))}
    if isinstance(record, tuple):  # (context, image)
        return [record[0]["prompt"], float(np.asarray(record[1], float).mean())]
    return float(np.asarray(record, float).mean())  # a clip


def main(domain: str, out: str, cache: str = "") -> None:
    path, extra = setup(domain, cache)
    cfg = load_run_config(ROOT / path, [*extra, "trainer.device=cpu", f"trainer.output_dir={Path(out).parent}"])
    trainer = Trainer(cfg)
    task, seen, evaluate = trainer.task, [], trainer.task.evaluate
    task.evaluate = lambda policy: seen.extend(c["prompt"] for c in task.eval_contexts) or evaluate(policy)
    metrics = trainer.evaluate()
    records = [summary(r) for r in task.eval_records]
    counts = getattr(task, "eval_counts", {}) if seen else {}
    Path(f"{out}.rank{trainer.rank}.json").write_text(json.dumps({"metrics": metrics, "seen": seen,
                                                                  "records": records, "counts": counts}))
    if trainer.acc.is_main_process:
        run_dir = Path(f"{out}.finish")
        run_dir.mkdir()
        (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 0, **metrics}) + "\n")
        task.finish(trainer.policy, run_dir)


if __name__ == "__main__":
    try:
        main(*sys.argv[1:])
    finally:
        close_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the work is done and written: skip interpreter teardown, where gloo's threads can abort a rank

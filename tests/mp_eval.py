"""Run by test_trainer.py alone or under `torch.distributed.run --nproc_per_node N`: the tiny text config's held-out
evaluation (greedy); every process writes OUT.rank<r>.json with the merged metrics, the prompts it evaluated itself
and the records it holds afterwards."""

import json
import sys
from pathlib import Path

from mmalign.cli import close_process_group
from mmalign.run_config import load_run_config
from mmalign.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def main(out: str) -> None:
    cfg = load_run_config(ROOT / "configs/text/tiny_grpo.yaml", ["task_args.eval_size=7", "trainer.device=cpu",
                                                                   f"trainer.output_dir={Path(out).parent}"])
    trainer = Trainer(cfg)
    seen, evaluate = [], trainer.task.evaluate
    trainer.task.evaluate = lambda policy: seen.extend(c["prompt"] for c in trainer.task.eval_contexts) or \
        evaluate(policy)
    metrics = trainer.evaluate()
    records = [r["prompt"] for r in trainer.task.eval_records]
    Path(f"{out}.rank{trainer.rank}.json").write_text(json.dumps({"metrics": metrics, "seen": seen,
                                                                  "records": records}))


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    finally:
        close_process_group()

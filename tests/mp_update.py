"""Run by the tests alone or under `torch.distributed.run --nproc_per_node N` (DDP, or FSDP2 with accelerate's FSDP
settings in the environment): one GRPO update on a fixed global batch, each process taking its share of the contexts;
rank 0 saves the updated weights (whole, gathered from FSDP's shards), every rank its update's metrics
(OUT.rank<r>.json). Options: `poison` (the last process's first advantage is NaN: every process must skip), `lora`
(a LoRA policy: only the adapters train), `compiled` (compiled re-scoring, `scoring="compiled"`)."""

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from tiny import ROWS, TinyTask, tiny_policy

from mmalign.checkpoint import trainable_state
from mmalign.cli import close_process_group
from mmalign.run_config import RunConfig, TrainerConfig
from mmalign.trainer import Trainer, make_accelerator


def main(out: str, micro: int, poison: bool = False, lora: bool = False, compiled: bool = False) -> None:
    acc = make_accelerator(TrainerConfig(device="cpu"))
    policy = tiny_policy(seed=0, lora=lora, scoring="compiled" if compiled else "eager")
    torch.manual_seed(123)  # the same global rollout on every process
    rollout = policy.sample(ROWS * 2, 4)  # 4 contexts x 4 samples
    rollout.rewards = torch.arange(len(rollout), dtype=torch.float32) % 5
    share = len(rollout) // acc.num_processes
    local = rollout[torch.arange(acc.process_index * share, (acc.process_index + 1) * share)]
    cfg = RunConfig(task="text", trainer=TrainerConfig(contexts_per_step=4, num_samples=4, lr=1e-2,
                                                       micro_batch_size=micro, output_dir=str(Path(out).parent)))
    trainer = Trainer(cfg, task=TinyTask(policy), accelerator=acc)
    trainer.prepare(policy, local, cfg.algorithm_args)
    if poison and acc.process_index == acc.num_processes - 1:
        local.extras["advantages"][0] = float("nan")
    metrics = trainer.update(local)
    metrics.update(sharded=trainer.sharded, processes=acc.num_processes)  # what the launch formed
    Path(f"{out}.rank{acc.process_index}.json").write_text(json.dumps(metrics))
    weights = trainable_state(policy)  # every process: gathering FSDP's shards is a collective
    if acc.is_main_process:
        save_file(weights, out)
    acc.wait_for_everyone()


if __name__ == "__main__":
    try:
        main(sys.argv[1], int(sys.argv[2]), *(flag in sys.argv[3:] for flag in ("poison", "lora", "compiled")))
    finally:
        close_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # the work is done and written: skip interpreter teardown, where gloo's threads can abort a rank

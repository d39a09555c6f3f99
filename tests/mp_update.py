"""Run by test_trainer.py alone or under `torch.distributed.run --nproc_per_node N`: one GRPO update on a fixed global
batch, each process taking its share of the contexts; rank 0 saves the updated weights, every rank its update's
metrics (OUT.rank<r>.json). With `poison`, the last process's first advantage is NaN: every process must skip."""

import json
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file
from tiny import ROWS, TinyTask, tiny_policy

from mmalign.checkpoint import trainable_state
from mmalign.run_config import RunConfig, TrainerConfig
from mmalign.trainer import Trainer


def main(out: str, micro: int, poison: bool = False) -> None:
    acc = Accelerator(cpu=True)
    policy = tiny_policy(seed=0)
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
    Path(f"{out}.rank{acc.process_index}.json").write_text(json.dumps(metrics))
    if acc.is_main_process:
        save_file(trainable_state(policy), out)
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:] == ["poison"])

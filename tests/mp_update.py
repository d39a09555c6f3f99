"""Run by test_trainer.py under `accelerate launch --num_processes N --cpu`: one GRPO update on a fixed global
batch, each process taking its share of the contexts; rank 0 saves the updated weights."""

import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import save_file
from tiny import ROWS, tiny_policy, tiny_task

from mmalign.checkpoint import trainable_state
from mmalign.run_config import RunConfig, TrainerConfig
from mmalign.trainer import Trainer


def main(out: str, micro: int) -> None:
    acc = Accelerator(cpu=True)
    policy = tiny_policy(seed=0)
    torch.manual_seed(123)  # the same global rollout on every process
    rollout = policy.sample(ROWS * 2, 4)  # 4 contexts x 4 samples
    rollout.rewards = torch.arange(len(rollout), dtype=torch.float32) % 5
    share = len(rollout) // acc.num_processes
    local = rollout[torch.arange(acc.process_index * share, (acc.process_index + 1) * share)]
    cfg = RunConfig(task="text", trainer=TrainerConfig(contexts_per_step=4, num_samples=4, lr=1e-2,
                                                       micro_batch_size=micro, output_dir=str(Path(out).parent)))
    trainer = Trainer(cfg, task=tiny_task(policy), accelerator=acc)
    trainer.prepare(policy, local, cfg.algorithm_args)
    trainer.update(local)
    if acc.is_main_process:
        save_file(trainable_state(policy), out)
    acc.wait_for_everyone()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))

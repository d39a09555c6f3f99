"""Mixed precision: why fp16 needs a gradient scaler (and is refused where accelerate gives none), bf16 runs."""

from pathlib import Path

import pytest
import torch
import yaml
from tiny import TinyTask, tiny_policy

from mmalign.cli import main
from mmalign.config import ConfigError
from mmalign.run_config import RunConfig, TrainerConfig
from mmalign.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def _grad(scaler: torch.amp.GradScaler | None) -> torch.Tensor:
    """The weight gradient of a small loss through an fp16 layer (autocast), with or without the scaler."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 8)
    with torch.autocast("cpu", dtype=torch.float16):
        out = layer(torch.randn(4, 8))
    loss = out.float().sum() * 1e-9  # a small loss: its gradient is below fp16's smallest number (6e-8)
    (scaler.scale(loss) if scaler else loss).backward()
    if scaler:
        optimizer = torch.optim.SGD(layer.parameters(), lr=0.0)
        scaler.unscale_(optimizer)
    return layer.weight.grad


def test_unscaled_fp16_gradients_underflow_and_scaled_ones_do_not():
    assert torch.count_nonzero(_grad(None)) == 0  # every gradient flushed to zero: the step would do nothing
    scaled = _grad(torch.amp.GradScaler("cpu", init_scale=2.0 ** 16))
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 8)
    (layer(torch.randn(4, 8)).sum() * 1e-9).backward()  # the fp32 gradient
    assert torch.allclose(scaled, layer.weight.grad, rtol=1e-2, atol=1e-12), (scaled, layer.weight.grad)


def _config(tmp_path, **trainer) -> RunConfig:
    return RunConfig("text", trainer=TrainerConfig(output_dir=str(tmp_path), contexts_per_step=2, num_samples=4,
                                                   lr=1e-2, **trainer))


def test_fp16_on_the_cpu_is_refused(tmp_path, capsys):
    with pytest.raises(ConfigError, match="gradient scaler.*only on CUDA.*bf16"):
        Trainer(_config(tmp_path, mixed_precision="fp16", device="cpu"), task=TinyTask(tiny_policy()))
    if not torch.cuda.is_available():  # auto means the CPU here
        cfg = yaml.safe_load((ROOT / "configs/text/tiny_grpo.yaml").read_text())
        cfg["trainer"].update(output_dir=str(tmp_path / "runs"), cpu=False)
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert main(["train", str(path), "trainer.mixed_precision=fp16"]) == 2
        err = capsys.readouterr().err
        assert "trainer.mixed_precision" in err and "gradient scaler" in err and "Traceback" not in err, err
        assert not (tmp_path / "runs").exists()


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one precision per process: Trainers built earlier in this process fixed it at "no"."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def test_bf16_trains_on_the_cpu(tmp_path, fresh_accelerator_state):
    trainer = Trainer(_config(tmp_path, mixed_precision="bf16", device="cpu"), task=TinyTask(tiny_policy()))
    assert trainer.acc.mixed_precision == "bf16" and trainer.acc.scaler is None
    before = [p.detach().clone() for p in trainer.params]
    metrics = trainer.step(0)
    assert metrics["skipped_steps"] == 0 and torch.isfinite(torch.tensor(metrics["loss"]))
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.params)), "the step did not move the weights"

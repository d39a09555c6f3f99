import pytest
import torch

from mmalign.device import resolve_device


def test_auto_and_cpu_resolve_to_a_usable_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "tpu", ""])
def test_unknown_device_names_the_choices(spec):
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        resolve_device(spec)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_says_what_to_use():
    with pytest.raises(ValueError, match="device=cpu"):
        resolve_device("cuda:0")


def test_trainer_device_setting():
    from mmalign.config import ConfigError
    from mmalign.run_config import TrainerConfig

    assert TrainerConfig(cpu=True).torch_device() == torch.device("cpu")  # the older alias of device: cpu
    assert TrainerConfig(device="cpu").torch_device() == torch.device("cpu")
    assert TrainerConfig().torch_device() == resolve_device("auto")
    with pytest.raises(ConfigError, match="device: must be one of"):
        TrainerConfig(device="gpu")
    with pytest.raises(ConfigError, match="contradicts device: cuda"):
        TrainerConfig(cpu=True, device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="trainer.device.*no GPU"):
            TrainerConfig(device="cuda").torch_device()

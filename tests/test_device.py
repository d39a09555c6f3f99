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

"""bench/gpu_check.py refuses to measure without a GPU, with a message, and names a shipped config per domain."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_gpu_check_without_a_gpu_exits_with_a_message(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench/gpu_check.py"), "--out", str(out)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()


def test_gpu_check_rows_name_shipped_trainer_configs():
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "bench"))
    from mmalign.config import read_yaml

    for path in gpu_check.DOMAINS.values():
        assert "loop" not in read_yaml(ROOT / path), path  # a Trainer config, which the check runs

"""Kill / resume tests: `mmalign train` in a process group of its own, SIGKILLed mid-run, and the check that the
resumed run logged the rows of an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TWO_PROCESSES = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
"""Two CPU processes (gloo) under torchrun, which accelerate picks up."""


def train(cfg: str, *extra: str, launcher: tuple[str, ...] = ()) -> subprocess.Popen:
    """`mmalign train` in a session of its own, so that a kill reaches every process it started."""
    return subprocess.Popen([sys.executable, *launcher, "-m", "mmalign.cli", "train", cfg, *extra], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 300) -> None:
    """SIGKILL the run's whole process group (workers and launcher too) once `ready()` holds."""
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def same_rows(whole: list[dict], resumed: list[dict], volatile: tuple[str, ...] = ("time",)) -> None:
    """The same steps and values, except keys containing any of `volatile` (wall-clock times)."""
    assert [r["step"] for r in resumed] == [r["step"] for r in whole]
    keep = lambda r: {k: v for k, v in r.items() if not any(w in k for w in volatile)}  # noqa: E731
    for a, b in zip(whole, resumed):
        assert keep(a) == keep(b)

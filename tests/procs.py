"""Commands the tests start: a failed one raises with its own error output, which `check=True` would hide."""

import subprocess


def run_ok(cmd: list, **kwargs) -> subprocess.CompletedProcess:
    """Run `cmd` (keyword arguments as subprocess.run's), capturing its output; raise with its stderr if it fails."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kwargs)
    if proc.returncode:
        raise AssertionError(f"exit {proc.returncode}: {' '.join(proc.args)}\n{proc.stderr[-6000:]}")
    return proc

import functools
import os
import sys

import pytest

# MuJoCo picks its GL backend when first imported: offscreen OSMesa unless the environment says otherwise.
if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "osmesa")
# A pytest-xdist worker has one core: torch's default of a thread per core would oversubscribe them (set before torch
# is imported here or in the commands the tests start).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def sampled():
    """`sampled(name) -> (policy, rollout)`: the adapter case `name` of `adapters.CASES`, built and sampled once per
    session and shared by the contract test and the domain tests. Read them; never train or change them."""
    from adapters import sample_case  # the domains' models load only for the tests that use them

    return functools.cache(sample_case)


def pytest_addoption(parser):
    group = parser.getgroup("learning", "learning tests: rerun on another seed or float path")
    group.addoption("--seed", type=int, default=0, help="seed of the learning tests (default 0)")
    group.addoption("--threads", type=int, default=1, help="torch intra-op threads of the learning tests (default 1)")


@pytest.fixture
def learning(request):
    """`learning.seed` and `learning.report(**figures)` for a learning test, run on `--threads` torch threads.

    `pytest --seed 3 --threads 2` reruns a learning test on another seed and float path; reported figures are printed
    in the summary, where `bench/learning_spread.py` reads them to tabulate the spread over seeds and threads. The
    figures travel as the test report's user properties, so they reach the summary from pytest-xdist workers too."""
    import torch

    config, threads = request.config, torch.get_num_threads()
    torch.set_num_threads(config.getoption("--threads"))
    yield Learning(config.getoption("--seed"), lambda **figures: request.node.user_properties.append(
        ("learning", {k: float(v) for k, v in figures.items()})))
    torch.set_num_threads(threads)


class Learning:
    def __init__(self, seed: int, report):
        self.seed, self.report = seed, report


def pytest_terminal_summary(terminalreporter, config):
    results = [(r.nodeid, figures) for outcome in ("passed", "failed") for r in terminalreporter.stats.get(outcome, [])
               if r.when == "call" for name, figures in r.user_properties if name == "learning"]
    if results:
        terminalreporter.section(f"learning (seed {config.getoption('--seed')}, "
                                 f"threads {config.getoption('--threads')})")
    for nodeid, figures in results:
        terminalreporter.write_line(f"learning: {nodeid} " + " ".join(f"{k}={v:.4g}" for k, v in figures.items()))


def pytest_collection_modifyitems(items):
    """Slow tests first (a stable sort): under pytest-xdist the long runs start at once and the short ones fill the
    gaps, instead of a long test starting near the end and running alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)

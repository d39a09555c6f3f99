import functools
import os
import sys

import pytest

# MuJoCo picks its GL backend when first imported: offscreen OSMesa unless the environment says otherwise.
if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
    os.environ.setdefault("MUJOCO_GL", "osmesa")


@pytest.fixture(scope="session")
def sampled():
    """`sampled(name) -> (policy, rollout)`: the adapter case `name` of `adapters.CASES`, built and sampled once per
    session and shared by the contract test and the domain tests. Read them; never train or change them."""
    from adapters import sample_case  # the domains' models load only for the tests that use them

    return functools.cache(sample_case)

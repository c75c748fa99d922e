"""Test fixtures: the TFF runtime is started leak-proof and stopped after the session."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tff_fedpt import runtime  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def tff_runtime():
    runtime.use_local_runtime()
    yield
    runtime.shutdown()

"""Test fixtures: the TFF runtime is started leak-proof and stopped after the session."""

import os
import signal

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# A process started in the background by a non-interactive shell ignores SIGINT, and an
# ignored signal stays ignored in every process it starts. TFF's own local worker (what
# `tff.backends.native` contexts start; tests build some) would then ignore the SIGINT
# its service manager stops it with, and the manager's unbounded wait (in `__del__`, at
# whatever garbage collection) hangs the run: seen on a clean clone, 20 minutes. A handler,
# unlike SIG_IGN, is reset to the default in a started program.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest  # noqa: E402

from tff_fedpt import runtime  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def tff_runtime():
    runtime.use_local_runtime()
    yield
    runtime.shutdown()

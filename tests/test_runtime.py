"""No TFF worker process may outlive Python, even when Python is killed."""

import os
import signal
import subprocess
import sys
import time

SCRIPT = """
import os, signal, sys
import numpy as np
import tensorflow_federated as tff
from tff_fedpt import runtime
runtime.use_local_runtime()

@tff.tensorflow.computation(np.int32)
def add_one(x):
    return x + 1

assert add_one(1) == 2
print("worker", [p.pid for p in runtime._children][-1], flush=True)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def _run(mode):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("worker")]
    assert lines, result.stderr[-2000:]
    return result, int(lines[-1].split()[1])


def test_worker_stops_at_normal_exit():
    result, pid = _run("exit")
    assert result.returncode == 0, result.stderr[-2000:]
    assert not _alive(pid)


def test_worker_dies_when_python_is_killed():
    result, pid = _run("kill")
    assert result.returncode == -signal.SIGKILL
    deadline = time.time() + 10
    while _alive(pid) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)


def test_restart_worker_keeps_computations_working():
    import numpy as np
    import tensorflow_federated as tff

    from tff_fedpt import runtime

    @tff.tensorflow.computation(np.int32)
    def add_one(x):
        return x + 1

    assert add_one(1) == 2
    before = [p.pid for p in runtime._children]
    assert runtime.restart_worker()
    assert all(not _alive(pid) for pid in before)
    assert add_one(2) == 3  # a fresh worker serves the next computation

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


def test_worker_restarts_count_the_rounds_a_worker_ran_across_runs(monkeypatch):
    """Three 30-round runs in one process (a DP grid): the worker is restarted after 50
    rounds, though no run reaches round 50 (it used to restart only at round 50, 100, ...,
    and a grid's worker grew to 18 GiB)."""
    from tff_fedpt import runtime

    restarts = []

    def restart():  # what restart_worker does to the count (through shutdown)
        restarts.append(1)
        runtime._rounds_on_worker = 0
        return True

    monkeypatch.setattr(runtime, "restart_worker", restart)
    monkeypatch.setattr(runtime, "_rounds_on_worker", 0)
    fired = []
    for run in range(3):
        hook = runtime.WorkerRestarts(50)  # one per run, as the training loop builds it
        fired += [(run, r) for r in range(1, 31) if hook(r)]
    assert fired == [(1, 20)] and len(restarts) == 1
    assert runtime._rounds_on_worker == 40
    # A context that is not ours (remote workers): never restarted, nothing fails.
    monkeypatch.setattr(runtime, "restart_worker", lambda: False)
    assert not any(runtime.WorkerRestarts(1)(r) for r in range(1, 4))


def test_worker_restarts_once_its_memory_passes_the_bound(monkeypatch):
    """The memory bound, on the real worker: a bound below its size restarts it after the
    round; the default bound does not (a fresh worker holds a few hundred MiB); rounds
    and memory each turn off with 0, and negative options are refused by name."""
    import numpy as np
    import pytest
    import tensorflow_federated as tff

    from tff_fedpt import runtime, training
    from tff_fedpt.tasks import load_task

    @tff.tensorflow.computation(np.int32)
    def add_one(x):
        return x + 1

    assert add_one(1) == 2
    (pid,) = runtime.worker_pids()
    size_kib = runtime.rss_kib([pid])
    assert 10 << 10 < size_kib < runtime.RuntimeOptions().worker_restart_mb << 10
    assert not runtime.WorkerRestarts(0, runtime.RuntimeOptions().worker_restart_mb)(1)
    assert runtime.worker_pids() == [pid]
    assert runtime.WorkerRestarts(0, size_kib // 2048)(2)  # half its size: restarted
    assert not _alive(pid) and runtime.worker_pids() == []
    assert add_one(2) == 3  # a fresh worker serves the next computation

    assert runtime.RuntimeOptions(worker_restart_rounds=0, worker_restart_mb=0).after_round() == ()
    (hook,) = runtime.RuntimeOptions(worker_restart_rounds=0).after_round()
    assert (hook.every, hook.max_mib) == (0, 4096)
    with pytest.raises(ValueError, match="one of them > 0"):
        runtime.WorkerRestarts(0, 0)
    task = load_task("digits")
    for name in ("worker_restart_rounds", "worker_restart_mb"):
        config = training.ExperimentConfig(task="digits", **{name: -1})
        with pytest.raises(training.ConfigError, match=f"{name} must be >= 0") as e:
            training.prepare(config, task)
        assert name in e.value.fields


def test_temporary_files_go_at_exit_and_before_an_exit_that_skips_its_handlers(
    tmp_path, monkeypatch
):
    """`remove_at_exit` directories (features files) at a normal exit; with TF autograph's
    generated modules also in `remove_temporary_files`, which `os._exit` paths call (the
    binaries' second Ctrl-C: tests/test_binaries.py runs that end to end)."""
    import atexit
    import types

    from tff_fedpt import runtime

    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(runtime, "_temporary_paths", [])
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (second / "client_000000.tfrecord").write_bytes(b"x")
    runtime.remove_at_exit(str(first))
    runtime.remove_at_exit(str(second))
    assert len(registered) == 1  # one exit handler for all
    registered[0]()  # what a normal exit runs
    assert not first.exists() and not second.exists()

    generated = tmp_path / "__autograph_generated_filexyz.py"
    generated.write_text("")
    other = tmp_path / "kept.py"
    other.write_text("")
    modules = {
        "__autograph_generated_filexyz": types.SimpleNamespace(__file__=str(generated)),
        "__autograph_generated_filegone": types.SimpleNamespace(__file__=str(tmp_path / "no")),
        "kept": types.SimpleNamespace(__file__=str(other)),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    third = tmp_path / "c"
    third.mkdir()
    runtime.remove_at_exit(str(third))
    runtime.remove_temporary_files()
    assert not third.exists() and not generated.exists() and other.exists()

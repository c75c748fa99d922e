"""tests/launcher.py: a script forked from the preloaded server behaves as the same script
started from scratch (`subprocess`), the oracle: output, exit code, traceback, signals,
arguments, working directory, environment and `sys.path[0]`."""

import os
import signal
import subprocess
import sys
import time

import pytest

from . import launcher

SCRIPT = """\
import atexit
import os
import sys
import threading
import time

print("argv", sys.argv, "name", __name__, "cwd", os.getcwd(), "env", os.environ.get("X"))
print("path0", sys.path[0] == os.path.dirname(os.path.realpath(__file__)))
print("to stderr", file=sys.stderr)
mode = sys.argv[1]
atexit.register(print, "atexit hook")
print("no newline at the end", end="")
if mode != "wait":  # what teardown finishes: a non-daemon thread, a file left open
    threading.Thread(target=lambda: (time.sleep(0.3), print("thread joined"))).start()
    sys.left_open = open("left_open.txt", "w")  # held past the end, as by a library
    sys.left_open.write("written, never flushed or closed")
if mode == "exit":
    sys.exit(3)
if mode == "message":
    sys.exit("a message")
if mode == "raise":
    raise ValueError("boom")
if mode == "wait":
    open(sys.argv[2], "w").close()
    time.sleep(60)
"""


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "script.py"
    path.write_text(SCRIPT)
    return str(path)


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "X": "y"}


@pytest.mark.parametrize("mode", ["ok", "exit", "message", "raise"])
def test_a_forked_script_ends_as_a_fresh_one(script, tmp_path, mode):
    args = [sys.executable, script, mode]
    kwargs = dict(cwd=str(tmp_path), env=_env(), capture_output=True, text=True, timeout=120)
    cold = subprocess.run(args, **kwargs)
    left_open = (tmp_path / "left_open.txt").read_text()
    assert left_open == "written, never flushed or closed"  # by a fresh one's teardown
    (tmp_path / "left_open.txt").unlink()
    forked = launcher.run(args, **kwargs)
    assert (tmp_path / "left_open.txt").read_text() == left_open
    proc = launcher.start(args, cwd=str(tmp_path), env=_env(), stdout=subprocess.DEVNULL)
    assert isinstance(proc, launcher.Forked) and proc.wait(timeout=60) == cold.returncode
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        cold.returncode,
        cold.stdout,
        cold.stderr,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_forked_script_dies_of_a_signal_as_a_fresh_one(script, tmp_path, sig):
    results = []
    for start in (subprocess.Popen, launcher.start):
        ready = tmp_path / f"ready_{len(results)}"
        proc = start(
            [sys.executable, script, "wait", str(ready)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        while not ready.exists():
            assert proc.poll() is None
            time.sleep(0.01)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        # The traceback's frames depend on where the signal lands (the ready file may still
        # be closing): the exit status, the output and the traceback's last line must agree.
        last = err.strip().splitlines()[-1] if err.strip() else ""
        results.append((proc.returncode, out.replace(str(ready), "READY"), last))
    assert results[0] == results[1]


def test_other_command_lines_and_environments_start_from_scratch(script, tmp_path):
    env = {**_env(), "TF_CPP_MIN_LOG_LEVEL": "0"}  # read once by TensorFlow's import
    for args, kwargs in (
        ([sys.executable, "-c", "pass"], {"env": _env()}),
        ([sys.executable, script, "ok"], {"env": env}),
        ([sys.executable, script, "ok"], {"env": _env(), "cold": True}),
    ):
        proc = launcher.start(args, cwd=str(tmp_path), stdout=subprocess.DEVNULL, **kwargs)
        assert isinstance(proc, subprocess.Popen)
        proc.wait(timeout=60)

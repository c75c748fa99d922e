"""Scripts started as separate processes without paying TensorFlow's import each time.

Most of a script's start-up is importing TensorFlow, TF Privacy and jax (about 7 s of
CPU on this project's 2-core machine), and the suite starts about a hundred scripts.
`run` and `start` have the signatures of `subprocess.run` and `subprocess.Popen` for
`[sys.executable, script, *args]`: the script runs in a process of its own (its own pid,
exit code, signals, stdout and stderr, threads joined and atexit hooks run at the end),
forked from a server that imported those packages once (tests/zygote.py, one per pytest
worker). It ends with `os._exit` after what `Py_FinalizeEx` does first, skipping the
teardown of every module (2.5 s a script); files left open are flushed as teardown would. Nothing of
this repository, and not TFF (it imports gRPC), is imported before the fork, so each
script imports the package, defines its flags and starts its TFF runtime as it does
from a shell.

A real start-up runs instead for any other command line, an environment whose
`PYTHONPATH` or `TF_CPP_MIN_LOG_LEVEL` differs from the server's (both are read at
import), `cold=True` (the README's commands and the binaries' log-level check), or
`FEDPT_TESTS_COLD_START=1` in the environment (every script started from scratch).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading

from tff_fedpt import runtime

_ZYGOTE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "zygote.py")
# Read once at import by TensorFlow / Python: a child must agree with the server on them.
_FIXED_AT_IMPORT = ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL")
_SERVER_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
_lock = threading.Lock()
_server = None  # (Popen, socket path)


def _socket_path():
    global _server
    with _lock:
        if _server is None or _server[0].poll() is not None:
            path = os.path.join(tempfile.mkdtemp(prefix="fedpt-zygote-"), "socket")
            proc = runtime.ReapedPopen(  # dies with this process, as TFF's workers do
                [sys.executable, _ZYGOTE, path],
                remember=False,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=_SERVER_ENV,
            )
            if proc.stdout.readline().strip() != b"ready":
                proc.kill()
                raise RuntimeError(f"tests/zygote.py did not start (exit {proc.wait()})")
            _server = (proc, path)
            atexit.register(_stop, proc, path)
        return _server[1]


def _stop(proc, path):
    proc.stdin.close()  # the server exits at end of input
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def _forkable(args, env, cold) -> bool:
    if cold or os.environ.get("FEDPT_TESTS_COLD_START") == "1":
        return False
    if len(args) < 2 or args[0] != sys.executable or not str(args[1]).endswith(".py"):
        return False
    return all(env.get(name) == _SERVER_ENV.get(name) for name in _FIXED_AT_IMPORT)


class _Output:
    """Where a child's stdout or stderr goes: None (inherited), DEVNULL or PIPE (a
    temporary file, read back at the end)."""

    def __init__(self, how, inherited_fd):
        self.file = None
        if how is None:
            self.fd = inherited_fd
        elif how == subprocess.DEVNULL:
            self.file = open(os.devnull, "wb")
            self.fd = self.file.fileno()
        elif how == subprocess.PIPE:
            self.file = tempfile.TemporaryFile()
            self.fd = self.file.fileno()
        else:
            raise ValueError(f"launcher supports None, DEVNULL and PIPE; received {how!r}")
        self.captured = how == subprocess.PIPE

    def sent(self):
        """The child holds its own copy now: /dev/null is closed here."""
        if self.file is not None and not self.captured:
            self.file.close()

    def read(self, text):
        if not self.captured:
            return None
        self.file.seek(0)
        data = self.file.read()
        self.file.close()
        return data.decode() if text else data


class Forked:
    """A started script: the parts of `subprocess.Popen` the tests use."""

    def __init__(self, args, *, cwd=None, env=None, stdout=None, stderr=None, text=False):
        self.args = list(args)
        self.returncode = None
        self._text = text
        self._out = _Output(stdout, 1)
        self._err = _Output(stderr, 2)
        stdin = open(os.devnull, "rb")
        request = {"args": [str(a) for a in self.args], "cwd": cwd or os.getcwd(), "env": env}
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._conn.connect(_socket_path())
        socket.send_fds(
            self._conn, [json.dumps(request).encode()], [stdin.fileno(), self._out.fd, self._err.fd]
        )
        stdin.close()
        self._out.sent()
        self._err.sent()
        self.pid = int(self._receive(timeout=60))

    def _receive(self, timeout):
        self._conn.settimeout(timeout)
        try:
            data = self._conn.recv(64)
        except socket.timeout:
            raise subprocess.TimeoutExpired(self.args, timeout) from None
        if not data:
            raise RuntimeError("tests/zygote.py went away")
        return data.decode().strip()

    def wait(self, timeout=None):
        if self.returncode is None:
            self.returncode = os.waitstatus_to_exitcode(int(self._receive(timeout)))
            self._conn.close()
        return self.returncode

    def poll(self):
        if self.returncode is None:
            try:
                self.wait(timeout=0.001)
            except subprocess.TimeoutExpired:
                return None
        return self.returncode

    def send_signal(self, sig):
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout=None):
        self.wait(timeout)
        return self._out.read(self._text), self._err.read(self._text)


def start(args, *, cwd=None, env=None, stdout=None, stderr=None, text=False, cold=False):
    """`subprocess.Popen(args, ...)`, forked from the server where it can be."""
    env = dict(os.environ if env is None else env)
    if not _forkable(args, env, cold):
        return subprocess.Popen(args, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=text)
    return Forked(args, cwd=cwd, env=env, stdout=stdout, stderr=stderr, text=text)


def run(args, *, cwd=None, env=None, timeout=None, capture_output=False, text=False, cold=False):
    """`subprocess.run(args, ...)`, forked from the server where it can be."""
    env = dict(os.environ if env is None else env)
    if not _forkable(args, env, cold):
        return subprocess.run(
            args, cwd=cwd, env=env, timeout=timeout, capture_output=capture_output, text=text
        )
    how = subprocess.PIPE if capture_output else None
    proc = Forked(args, cwd=cwd, env=env, stdout=how, stderr=how, text=text)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        raise subprocess.TimeoutExpired(args, timeout, stdout, stderr) from None
    stdout, stderr = proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)

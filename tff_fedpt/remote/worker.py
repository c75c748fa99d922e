"""Starting a TFF worker (`worker_binary`) that serves on one address and dies with the
Python process that started it."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Optional

import grpc
import portpicker
import tensorflow_federated as tff

from tff_fedpt import runtime
from tff_fedpt.remote.context import LOOPBACK, WILDCARDS, grpc_channel

_SHIM_SOURCE = os.path.join(os.path.dirname(__file__), "_bind_shim.c")


def worker_binary_path() -> str:
    """The C++ executor service that ships inside the TFF pip package."""
    path = os.path.join(os.path.dirname(tff.__file__), "data", "worker_binary")
    if not os.path.isfile(path):
        raise RuntimeError(f"TFF's worker binary is missing: expected it at {path}.")
    return path


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tff_fedpt")


def bind_shim_path() -> str:
    """Builds (once, cached by source hash) the shim that binds the worker to one address."""
    with open(_SHIM_SOURCE, "rb") as f:
        source = f.read()
    digest = hashlib.sha256(source).hexdigest()[:16]
    path = os.path.join(_cache_dir(), f"bind_shim-{digest}.so")
    if os.path.isfile(path):
        return path
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        raise RuntimeError(
            "Serving a TFF worker on one address needs a C compiler (to build "
            f"{_SHIM_SOURCE}); none was found (tried $CC, cc, gcc). Install one, or pass "
            "address='0.0.0.0' to serve on every interface."
        )
    try:
        os.makedirs(_cache_dir(), exist_ok=True)
        with tempfile.TemporaryDirectory(dir=_cache_dir()) as tmp:
            built = os.path.join(tmp, "bind_shim.so")
            result = subprocess.run(
                [cc, "-shared", "-fPIC", "-O2", "-o", built, _SHIM_SOURCE, "-ldl"],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise RuntimeError(f"Building {_SHIM_SOURCE} failed:\n{result.stderr}")
            os.replace(built, path)
    except OSError as e:
        raise RuntimeError(
            f"Cannot build the bind shim in {_cache_dir()} ({e}); set XDG_CACHE_HOME to a "
            "writable directory."
        ) from None
    return path


class WorkerProcess:
    """A running TFF `worker_binary`. Stop it with `stop()` or use it as a context manager."""

    def __init__(self, process: subprocess.Popen, address: str, port: int):
        self.process = process
        self.address = address
        self.port = port

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def target(self) -> str:
        """The host:port clients use (loopback for a wildcard address)."""
        host = {"0.0.0.0": LOOPBACK, "::": "[::1]", "[::]": "[::1]"}.get(self.address)
        if host is None:
            host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> Optional[int]:
        """SIGTERM, then SIGKILL after `timeout` seconds. Returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.process.kill()
        self.process.wait()

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"WorkerProcess(target={self.target!r}, pid={self.pid})"


def _ip_of(address: str) -> str:
    """`address` as an IP literal (host names resolved; IPv6 brackets removed)."""
    host = address.strip("[]")
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror as e:
        raise ValueError(f"address {address!r} does not resolve: {e.strerror}.") from None


def _check_port_free(address: str, port: int) -> None:
    # TFF's worker sets SO_REUSEPORT, so a second worker on a busy port starts happily and
    # shares the port with the first. A plain bind tells whether the port is taken.
    host = "::" if address in WILDCARDS else _ip_of(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as e:
            raise RuntimeError(
                f"Cannot serve a TFF worker on {address}:{port}: {e.strerror} (errno "
                f"{e.errno}; port in use, or an address this machine does not have?)."
            ) from None


def start_worker(
    port: Optional[int] = None,
    *,
    address: str = LOOPBACK,
    max_concurrent_computation_calls: int = -1,
    ready_timeout: float = 60.0,
    stdout=None,
    stderr=None,
) -> WorkerProcess:
    """Starts TFF's C++ worker serving gRPC on `address:port` and waits until it answers.

    The worker gets SIGKILL if the Python process that started it dies.

    Args:
      port: TCP port; a free one if None.
      address: Interface address to serve on. Loopback by default; "0.0.0.0" or "::"
        serves on every interface (TFF workers are unauthenticated plaintext gRPC: only
        do that on a trusted network). Any other address needs a C compiler once, to
        build the bind shim (TFF's binary itself always listens on every interface).
      max_concurrent_computation_calls: As the worker flag (nonpositive: no limit).
      ready_timeout: Seconds to wait for the worker to answer.
      stdout, stderr: Where the worker's output goes (default: this process's).

    Raises:
      ValueError: for a bad port.
      RuntimeError: if the worker exits or does not answer within `ready_timeout`.
    """
    if port is None:
        port = portpicker.pick_unused_port()
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an integer in 1..65535; received {port!r}.")
    address = address.strip()
    if not address:
        raise ValueError("address must be an IP address or host name; received ''.")
    _check_port_free(address, port)
    env = dict(os.environ)
    if address not in WILDCARDS:
        env["TFF_FEDPT_BIND_ADDRESS"] = _ip_of(address)
        env["LD_PRELOAD"] = " ".join(filter(None, [bind_shim_path(), env.get("LD_PRELOAD")]))
    process = runtime.ReapedPopen(
        [
            worker_binary_path(),
            f"--port={port}",
            f"--max_concurrent_computation_calls={max_concurrent_computation_calls}",
        ],
        env=env,
        stdout=stdout,
        stderr=stderr,
        remember=False,
    )
    worker = WorkerProcess(process, address, port)
    channel = grpc_channel(worker.target)
    try:
        future = grpc.channel_ready_future(channel)
        deadline = time.monotonic() + ready_timeout
        while True:
            try:
                future.result(timeout=0.2)
                return worker
            except (grpc.FutureTimeoutError, concurrent.futures.TimeoutError):
                pass
            if process.poll() is not None:
                raise RuntimeError(
                    f"The TFF worker for {address}:{port} exited with code "
                    f"{process.returncode} (port in use, or an address this machine does "
                    "not have?)."
                )
            if time.monotonic() > deadline:
                worker.stop()
                raise RuntimeError(
                    f"The TFF worker on {worker.target} did not answer within {ready_timeout:g} s."
                )
    finally:
        future.cancel()
        channel.close()

"""Spreading the clients of each round over TFF workers on other processes or machines.

TFF 0.87 ships everything this needs: a C++ executor service (`worker_binary`, gRPC),
a Python remote executor that talks to it, and a mergeable-computation execution
context that compiles a round into "up to the aggregation / merge / after the
aggregation" parts, runs the first part on each worker with that worker's share of
the clients and merges the partial aggregates. This module wires them together:

- `start_worker()` starts a `worker_binary` serving on one address (loopback unless
  another is given) that dies with the Python process that started it;
  `scripts/start_worker.py` is the command-line launcher.
- `use_remote_workers(["host:port", ...])` installs the mergeable context over those
  workers as TFF's default context, so `process.next(...)` of any FedPT / FedAvg
  process runs there unchanged.

A worker that stops answering makes the computation fail within `timeout` seconds
with `WorkerUnavailableError` naming it (TFF itself would retry forever). Computations
that cannot be split at a single aggregation (secure aggregation, for one) are
refused with `NotMergeableError`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from typing import Optional, Union

import grpc
import portpicker
import tensorflow_federated as tff

from tff_fedpt import runtime
from tff_fedpt._tff_internals import (
    async_execution_context,
    compiler,
    executor_factory,
    executors_errors,
    mergeable_comp_compiler,
    mergeable_comp_execution_context,
    placements,
    python_executor_stacks,
    remote_executor,
    remote_executor_grpc_stub,
    tensorflow_computation,
)

DEFAULT_TIMEOUT_S = 10.0
LOOPBACK = "127.0.0.1"
_WILDCARDS = ("0.0.0.0", "::", "[::]")
_SHIM_SOURCE = os.path.join(os.path.dirname(__file__), "_bind_shim.c")


class WorkerError(RuntimeError):
    """A TFF worker failed; `target` is its host:port."""

    what = "failed"

    def __init__(self, target: str, detail: str):
        self.target = target
        super().__init__(f"TFF worker {target} {self.what}: {detail}")


class WorkerUnavailableError(WorkerError):
    """A TFF worker cannot be reached (not started, stopped, or the network is down)."""

    what = "is unreachable"


class NotMergeableError(ValueError):
    """A computation cannot be split over workers by TFF's mergeable execution."""


# --------------------------------------------------------------------------- targets


def parse_workers(workers: Union[str, Sequence[str]]) -> tuple[str, ...]:
    """Validates "host:port,host:port" (or a sequence of "host:port") and returns it.

    IPv6 hosts go in brackets: "[::1]:8000".

    Raises:
      ValueError: naming the bad entry and the expected form.
    """
    entries = workers.split(",") if isinstance(workers, str) else list(workers)
    entries = [e.strip() for e in entries]
    if not entries or entries == [""]:
        raise ValueError(f"workers: expected host:port[,host:port...]; received {workers!r}.")
    for entry in entries:
        match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):(\d+)", entry)
        if not match or not 0 < int(match.group(2)) < 65536:
            raise ValueError(
                f"workers: {entry!r} is not host:port with a port in 1..65535 (IPv6 hosts "
                f"in brackets, e.g. [::1]:8000); received {workers!r}."
            )
    duplicates = sorted({e for e in entries if entries.count(e) > 1})
    if duplicates:
        raise ValueError(f"workers: {duplicates} listed more than once; received {workers!r}.")
    return tuple(entries)


def _channel(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, executor_factory._GRPC_CHANNEL_OPTIONS)


def check_workers(workers: Sequence[str], timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Raises `WorkerUnavailableError` naming every worker that does not answer in time."""
    workers = parse_workers(workers)
    channels = {w: _channel(w) for w in workers}
    futures = {}
    try:
        futures = {w: grpc.channel_ready_future(c) for w, c in channels.items()}
        deadline = time.monotonic() + timeout
        down = []
        for worker, future in futures.items():
            try:
                future.result(timeout=max(0.0, deadline - time.monotonic()))
            except grpc.FutureTimeoutError:
                down.append(worker)
        if down:
            raise WorkerUnavailableError(
                ", ".join(down),
                f"no TFF worker answered within {timeout:g} s. Start one there with "
                "`python scripts/start_worker.py --port=PORT` (add --address to serve on "
                "an interface other than loopback).",
            )
    finally:
        for future in futures.values():
            future.cancel()
        for channel in channels.values():
            channel.close()


# --------------------------------------------------------------------------- contexts

_UNRETRIED_INVOKE = async_execution_context.AsyncExecutionContext.invoke.__wrapped__


class _WorkerContext(async_execution_context.AsyncExecutionContext):
    """TFF's async context on one remote worker, with bounded retries naming the worker.

    TFF's own context retries an unreachable worker forever; a run would hang.
    """

    def __init__(self, target: str, timeout: float, default_num_clients: int):
        self.target = target
        self._timeout = timeout
        stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(_channel(target))

        def stack_fn(cardinalities):
            cardinalities.setdefault(placements.CLIENTS, default_num_clients)
            executor = remote_executor.RemoteExecutor(stub)
            executor.set_cardinalities(cardinalities)
            return executor

        super().__init__(
            executor_fn=python_executor_stacks.ResourceManagingExecutorFactory(
                executor_stack_fn=stack_fn
            ),
            compiler_fn=compiler.desugar_and_transform_to_native,
            transform_args=tensorflow_computation.transform_args,
            transform_result=tensorflow_computation.transform_result,
        )

    async def invoke(self, comp, arg):
        if asyncio.iscoroutine(arg):
            arg = await arg
        deadline = time.monotonic() + self._timeout
        wait = 0.05
        while True:
            try:
                return await _UNRETRIED_INVOKE(self, comp, arg)
            except executors_errors.RetryableError as e:
                if time.monotonic() + wait > deadline:
                    raise WorkerUnavailableError(
                        self.target, f"no answer within {self._timeout:g} s ({_grpc_detail(e)})"
                    ) from None
                await asyncio.sleep(wait)
                wait = min(2 * wait, 1.0)
            except grpc.RpcError as e:
                raise WorkerError(self.target, _grpc_detail(e)) from None


def _grpc_detail(error: Exception) -> str:
    if isinstance(error, grpc.Call):
        return f"gRPC {error.code().name}: {error.details()}"
    return f"{type(error).__name__}: {error}"


@functools.lru_cache(maxsize=32)  # check_mergeable's result serves the context's first call
def _compile_mergeable(comp):
    """TFF's mergeable-form compiler, with an error that says what to do instead."""
    try:
        return mergeable_comp_compiler.compile_to_mergeable_comp_form(comp)
    except (ValueError, TypeError) as e:
        intrinsics = sorted(set(re.findall(r"federated_secure_\w+", str(e))))
        reason = (
            f"it uses {', '.join(intrinsics)}, which TFF 0.87's mergeable compiler cannot "
            "split (secure aggregation must run as one aggregation over all clients)"
            if intrinsics
            else "TFF's mergeable compiler needs every aggregation of a round to be "
            "independent of the others, and this computation has dependent ones"
        )
        raise NotMergeableError(
            f"This computation cannot be spread over TFF workers: {reason}. Run it with "
            f"local execution (no workers) or use a mergeable aggregator such as mean, DP "
            f"or compression. TFF said: {type(e).__name__}: {str(e)[:300]}"
        ) from None


def create_remote_context(
    workers: Union[str, Sequence[str]],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    default_num_clients: int = 0,
) -> mergeable_comp_execution_context.MergeableCompExecutionContext:
    """TFF's mergeable execution context over remote workers (checked reachable first).

    Each round's clients are split into one contiguous share per worker; the partial
    aggregates are merged in the Python process, and the post-aggregation part (the
    server update) runs on one worker.

    Args:
      workers: "host:port,host:port" or a sequence of "host:port".
      timeout: Seconds to wait for each worker at start, and for a worker that stops
        answering during a computation before failing with `WorkerUnavailableError`.
      default_num_clients: Number of clients for computations whose arguments do not
        say it (as in TFF's local context).

    Raises:
      ValueError: for a malformed worker list.
      WorkerUnavailableError: naming the workers that do not answer.
    """
    targets = parse_workers(workers)
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds; received {timeout!r}.")
    check_workers(targets, timeout)
    contexts = [_WorkerContext(t, timeout, default_num_clients) for t in targets]
    return mergeable_comp_execution_context.MergeableCompExecutionContext(
        async_contexts=contexts,
        compiler_fn=_compile_mergeable,
        transform_args=tensorflow_computation.transform_args,
        transform_result=tensorflow_computation.transform_result,
    )


def use_remote_workers(
    workers: Union[str, Sequence[str]],
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    default_num_clients: int = 0,
) -> mergeable_comp_execution_context.MergeableCompExecutionContext:
    """Makes TFF run every following computation on `workers` (see create_remote_context).

    Stops the local worker if `tff_fedpt.runtime` started one; `runtime.shutdown()`
    goes back to local execution.
    """
    context = create_remote_context(
        workers, timeout=timeout, default_num_clients=default_num_clients
    )
    runtime.replace_context(context)
    return context


def check_mergeable(learning_process: tff.templates.IterativeProcess) -> None:
    """Raises `NotMergeableError` if the process's `next` cannot run on remote workers.

    Cheap (compiles only) and worth calling before a long run: without it the error
    comes from the first `next` call.
    """
    _compile_mergeable(learning_process.next)


# --------------------------------------------------------------------------- workers


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
    host = "::" if address in _WILDCARDS else _ip_of(address)
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
    if address not in _WILDCARDS:
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
    channel = _channel(worker.target)
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

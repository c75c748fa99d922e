"""Running rounds on TFF workers: the mergeable execution context over remote workers,
the workers' checks, and the errors a user sees."""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Sequence
from typing import Union

import grpc
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
WILDCARDS = ("0.0.0.0", "::", "[::]")


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


def grpc_channel(target: str) -> grpc.Channel:
    return grpc.insecure_channel(target, executor_factory._GRPC_CHANNEL_OPTIONS)


def check_workers(workers: Sequence[str], timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Raises `WorkerUnavailableError` naming every worker that does not answer in time."""
    workers = parse_workers(workers)
    channels = {w: grpc_channel(w) for w in workers}
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
        stub = remote_executor_grpc_stub.RemoteExecutorGrpcStub(grpc_channel(target))

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

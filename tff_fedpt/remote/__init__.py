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

    context.py  the execution context over workers, their checks, the errors
    worker.py   starting a local or LAN worker
"""

from tff_fedpt.remote.context import (
    DEFAULT_TIMEOUT_S,
    LOOPBACK,
    NotMergeableError,
    WorkerError,
    WorkerUnavailableError,
    check_mergeable,
    check_workers,
    create_remote_context,
    parse_workers,
    use_remote_workers,
)
from tff_fedpt.remote.worker import (
    WorkerProcess,
    bind_shim_path,
    start_worker,
    worker_binary_path,
)

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "LOOPBACK",
    "NotMergeableError",
    "WorkerError",
    "WorkerProcess",
    "WorkerUnavailableError",
    "bind_shim_path",
    "check_mergeable",
    "check_workers",
    "create_remote_context",
    "parse_workers",
    "start_worker",
    "use_remote_workers",
    "worker_binary_path",
]

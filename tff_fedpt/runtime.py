"""The local TFF runtime, started so that its worker process cannot outlive Python.

`import tensorflow_federated` installs an execution context that starts a C++
`worker_binary` subprocess on the first computation. TFF only stops it from a
`__del__`, which does not run reliably at interpreter exit, and never if Python is
killed: the orphaned worker keeps the parent's stdout/stderr pipes open, which hangs
any CI job or shell pipeline reading them.

`use_local_runtime()` installs the same C++ context but starts its worker with the
Linux parent-death signal set (the worker gets SIGKILL when the Python process that
started it dies, even by SIGKILL) and registers an exit hook that stops it.
`shutdown()` stops it now.
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import gc
import os
import shutil
import signal
import subprocess
import sys
import threading
import types
import weakref

import tensorflow_federated as tff

from tff_fedpt._tff_internals import context_stack_impl, executor_factory, runtime_error_context
from tff_fedpt.options import option

_PR_SET_PDEATHSIG = 1
_lock = threading.Lock()
_installed = False
# The local context shutdown() installed last. A weak reference: holding the context
# would keep its service manager alive past replace_context(), whose `__del__` would
# then signal an already reaped worker.
_local_context = lambda: None  # noqa: E731
_children: list[subprocess.Popen] = []


def _set_parent_death_signal():  # runs in the child between fork and exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class ReapedPopen(subprocess.Popen):
    """`subprocess.Popen` whose child dies with its parent (SIGKILL, Linux).

    With `remember=True` (TFF's local worker) `shutdown()` also stops it.
    """

    def __init__(self, args, *, remember: bool = True, **kwargs):
        if sys.platform.startswith("linux"):
            kwargs.setdefault("preexec_fn", _set_parent_death_signal)
        super().__init__(args, **kwargs)
        if remember:
            _children.append(self)


def _subprocess_with_reaper() -> types.ModuleType:
    module = types.ModuleType("subprocess_with_reaper")
    module.__dict__.update(subprocess.__dict__)
    module.Popen = ReapedPopen
    return module


def install() -> None:
    """Makes every local TFF worker started from now on die with this Python process.

    `import tff_fedpt` calls this: TFF's default context (and any local context a user
    creates later, sync or async, e.g. under `tff.program.NativeFederatedContext`)
    starts its worker lazily, so the worker gets the parent-death signal and is
    stopped at interpreter exit. Changes no context. Idempotent.
    """
    global _installed
    with _lock:
        if not _installed:
            executor_factory.subprocess = _subprocess_with_reaper()
            atexit.register(_at_exit)
            _installed = True


def use_local_runtime(*, default_num_clients: int = 0) -> None:
    """Installs TFF's local C++ execution context with a worker that cannot leak.

    Safe to call more than once; each call stops the workers of earlier contexts.

    Args:
      default_num_clients: As in `tff.backends.native.set_sync_local_cpp_execution_context`.
    """
    install()
    shutdown(default_num_clients=default_num_clients)


def _at_exit() -> None:
    shutdown()
    # Leave no service manager for interpreter teardown: its `__del__` would run
    # after module globals are cleared and print a spurious AttributeError.
    context_stack_impl.context_stack.set_default_context(
        runtime_error_context.RuntimeErrorContext()
    )
    gc.collect()
    executor_factory.subprocess = subprocess


def shutdown(timeout: float = 10.0, *, default_num_clients: int = 0) -> None:
    """Stops every TFF worker started so far and installs a fresh local context.

    The fresh context starts a new worker only when the next computation runs. After
    `tff_fedpt.remote.use_remote_workers`, this goes back to local execution.
    """
    global _local_context, _rounds_on_worker
    _rounds_on_worker = 0
    context = tff.backends.native.create_sync_local_cpp_execution_context(
        default_num_clients=default_num_clients
    )
    _local_context = weakref.ref(context)
    replace_context(context, timeout)


def replace_context(context, timeout: float = 10.0) -> None:
    """Makes `context` TFF's default context and stops the local workers started so far."""
    # TFF's own stop (SIGINT, then an unbounded wait, from the service manager's
    # `__del__`) can hang once a worker has served many computations, so the workers
    # are killed first; they hold no state worth a graceful exit. They are reaped
    # below (or by that `__del__`).
    for process in _children:
        if process.poll() is None:
            process.kill()
    context_stack_impl.context_stack.set_default_context(context)
    if _children:  # (a full collection takes about 0.2 s; without a worker, nothing waits)
        gc.collect()  # drops the old context and its service manager
    for process in list(_children):
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            continue  # not reaped: TFF's own stop may still reach it
        _detach(process)
        _children.remove(process)


def _detach(process: subprocess.Popen) -> None:
    """Drops a reaped worker from TFF's service manager that still holds it.

    A context kept alive past `replace_context` (e.g. by the traceback of an interrupted
    computation) would otherwise signal the reaped pid from its `__del__` later.
    """
    for referrer in gc.get_referrers(process):
        if isinstance(referrer, dict) and referrer.get("_process") is process:
            referrer["_process"] = None
        elif getattr(referrer, "_process", None) is process:  # 3.11: inline attributes
            referrer._process = None


def worker_pids() -> list[int]:
    """Process ids of the local TFF workers this module started that are running."""
    return [p.pid for p in _children if p.poll() is None]


def rss_kib(pids) -> int:
    """Summed resident memory (VmRSS, KiB) of `pids`; a process that ended, or a system
    without /proc, counts 0."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
        except (OSError, StopIteration):
            pass
    return total


def kill_workers(timeout: float = 5.0) -> None:
    """SIGKILLs every local worker this module started and reaps it (for an immediate
    exit: a worker left unreaped would outlive this process as a zombie of init)."""
    for process in _children:
        if process.returncode is None:
            try:
                os.kill(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for process in _children:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass


_temporary_paths: list[str] = []


def remove_at_exit(path: str) -> None:
    """Removes `path` (a directory this process wrote) when Python exits, and in
    `remove_temporary_files` for an exit that skips Python's exit handlers."""
    if not _temporary_paths:
        atexit.register(_remove_paths)
    _temporary_paths.append(path)


def _remove_paths() -> None:
    while _temporary_paths:
        shutil.rmtree(_temporary_paths.pop(), ignore_errors=True)


def remove_temporary_files() -> None:
    """Removes what exit handlers would: the directories of `remove_at_exit` and the
    modules TF's autograph generates in the temporary directory (one file per converted
    function; TF removes them in an exit handler). Only for a process about to exit, as
    before `os._exit` (a second Ctrl-C): features directories can hold gigabytes."""
    _remove_paths()
    for name in [n for n in sys.modules if n.startswith("__autograph_generated_file")]:
        try:  # only these modules' attributes: a lazily loaded module imports on access
            os.remove(sys.modules[name].__file__)
        except (AttributeError, KeyError, OSError, TypeError):
            pass


def restart_worker() -> bool:
    """Replaces the local worker with a fresh one (started on the next computation).

    TFF 0.87's C++ worker grows with every round it runs: about 0.8 MiB per round of 10
    digits clients, about 100 MiB per round of 100 Fashion-MNIST clients with DP (18 GiB
    after about 175 such rounds of 30-round runs in one process), 60 to 230 MiB per round
    of 100 clients on frozen-prefix features. The training loop calls this every
    `worker_restart_rounds` rounds, or once the worker holds more than
    `worker_restart_mb` (`WorkerRestarts`). Acts only when
    `use_local_runtime()` installed the context (never touches a user's own context).

    Returns:
      Whether a restart happened.
    """
    if context_stack_impl.context_stack.current is not _local_context():
        return False  # a remote or user-installed context: not ours to restart
    shutdown()
    return True


@dataclasses.dataclass(frozen=True)
class RuntimeOptions:
    """How the TFF runtime is kept; the binaries' flags of the same names."""

    worker_restart_rounds: int = option(
        50, "Restart the TFF worker every this many rounds (0: never).", resumable=True
    )
    # Rounds alone do not bound it: the growth per round varies 300-fold with the clients
    # and the data's form (`restart_worker`), and two 100-client runs on features reached
    # 7.8 GiB each at round 30 of 50 on a 24 GiB machine.
    worker_restart_mb: int = option(
        4096,
        "Also restart the TFF worker after a round that leaves it holding more than this "
        "many MiB of resident memory (0: never; read from /proc, Linux only).",
        resumable=True,
    )

    def check(self) -> None:
        """Raises ValueError naming the option for a negative value."""
        for name in ("worker_restart_rounds", "worker_restart_mb"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: never); received {getattr(self, name)}.")

    def after_round(self) -> tuple:
        """The training loop's hooks these options ask for (`WorkerRestarts`)."""
        if self.worker_restart_rounds > 0 or self.worker_restart_mb > 0:
            return (WorkerRestarts(self.worker_restart_rounds, self.worker_restart_mb),)
        return ()


_rounds_on_worker = 0  # rounds run since the local worker (context) was last replaced


class WorkerRestarts:
    """Restarts the local TFF worker once it has run `every` rounds, or once its resident
    memory exceeds `max_mib` (a hook of the training loop, run after the round is saved):
    bounds the worker's memory growth. 0 turns either test off.

    Rounds are counted per worker, not per run: a process that trains many short runs
    one after another (a grid of 30-round runs) restarts it too.
    """

    def __init__(self, every: int, max_mib: int = 0):
        if every < 0 or max_mib < 0 or not (every or max_mib):
            raise ValueError(
                f"WorkerRestarts: every and max_mib must be >= 0, one of them > 0; received "
                f"every={every}, max_mib={max_mib}."
            )
        self.every, self.max_mib = every, max_mib

    def __call__(self, round_num: int) -> bool:
        global _rounds_on_worker
        _rounds_on_worker += 1
        due = (self.every and _rounds_on_worker >= self.every) or (
            self.max_mib and rss_kib(worker_pids()) > self.max_mib << 10
        )
        return bool(due) and restart_worker()  # shutdown() resets the count

"""The server half of tests/launcher.py: imports TensorFlow and TF Privacy once, then
forks a child per request that runs a script as `python script.py args...` would.

Run as `python tests/zygote.py SOCKET_PATH` (the launcher starts it). It prints `ready`
once the imports are done, serves requests on the Unix socket (SOCK_SEQPACKET, one
request per connection: a JSON {"args", "cwd", "env"} message carrying the child's
stdin, stdout and stderr descriptors), answers each with the child's pid and later with
its wait status, and exits when its stdin closes (the launcher's process ended).

TensorFlow Federated is not preloaded: it imports gRPC, whose state (threads, fork
handlers) a fork would share; each child imports it (0.5 s) with the rest of its
imports. The child changes what the fork left different from a fresh interpreter:
descriptors, working directory, environment, signal dispositions, `sys.argv` and
`sys.path[0]`. It then runs the script with `runpy` at module level and ends as a
fresh interpreter ends (`run` below), except for the teardown of every module.
"""

import atexit
import gc
import io
import json
import os
import runpy
import select
import signal
import socket
import sys
import threading

# Most of the imports every script pays for (about 7 s here); nothing of this repository.
import dp_accounting  # noqa: F401
import jax  # noqa: F401
import tensorflow  # noqa: F401
import tensorflow_privacy  # noqa: F401

if "grpc" in sys.modules:
    sys.exit("tests/zygote.py: the preloaded packages imported grpc; a fork would share it")

_MAX_REQUEST = 1 << 20


def serve(path):
    """Serves until stdin closes; returns (request, descriptors) in a forked child."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(16)
    children = {}  # pid -> the connection its status goes back on
    print("ready", flush=True)
    while True:
        readable, _, _ = select.select([listener, sys.stdin], [], [], 0.05)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = children.pop(pid, None)
            if conn is not None:
                _send(conn, status)
                conn.close()
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 1):
            listener.close()
            os.unlink(path)
            sys.exit(0)
        if listener not in readable:
            continue
        conn, _ = listener.accept()
        message, fds, _, _ = socket.recv_fds(conn, _MAX_REQUEST, 3)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            listener.close()
            conn.close()
            for other in children.values():
                other.close()
            return json.loads(message), fds
        for fd in fds:
            os.close(fd)
        _send(conn, pid)
        children[pid] = conn


def _send(conn, value):
    try:
        conn.sendall(f"{value}\n".encode())
    except OSError:  # the launcher side went away; nothing to tell
        pass


def become(request, fds):
    """Turns this forked child into `python script args...` (then runs it)."""
    for fd, target in zip(fds, (0, 1, 2)):
        os.dup2(fd, target)
        os.close(fd)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    script = request["args"][1]
    sys.argv = request["args"][1:]
    sys.path[0] = os.path.dirname(os.path.realpath(script))
    hook = sys.excepthook

    def excepthook(kind, value, tb):  # the traceback starts at the script, as from a shell
        while tb is not None and tb.tb_frame.f_code.co_filename != script:
            tb = tb.tb_next
        hook(kind, value.with_traceback(tb), tb)  # (3.11 prints the value's own)

    sys.excepthook = excepthook
    return script


def run(script):
    """Runs the script at module level and ends the process as CPython's `Py_RunMain`
    ends it: the exit status of `SystemExit` (its message to stderr), an uncaught
    exception's traceback and status 1, a `KeyboardInterrupt` that kills the process
    with SIGINT; then non-daemon threads are joined, atexit hooks run and the standard
    streams are flushed (status 120 if stdout cannot be). What follows in a fresh
    interpreter, tearing down every module (about 2.5 s with TensorFlow and TFF loaded),
    is skipped with `os._exit`; what teardown would still write, a file left open, is
    flushed first. tests/test_launcher.py checks all of this against `subprocess`.
    """
    code, interrupted = 0, False
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        code = _exit_status(stop.code)
    except BaseException as error:  # noqa: BLE001 - printed as the interpreter prints it
        interrupted = isinstance(error, KeyboardInterrupt)
        sys.excepthook(type(error), error, error.__traceback__)
        code = 1
    threading._shutdown()  # what Py_FinalizeEx does first: join non-daemon threads
    atexit._run_exitfuncs()
    _flush_open_files()
    for stream in (sys.stderr, sys.stdout):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            code = 120 if stream is sys.stdout else code
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def _exit_status(value):
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _flush_open_files():
    """Flushes every open writable file object, as teardown would when it frees them."""
    for obj in gc.get_objects():
        if isinstance(obj, io.IOBase) and obj not in (sys.stdout, sys.stderr):
            try:
                if not obj.closed and obj.writable():
                    obj.flush()
            except Exception:  # noqa: BLE001 - a broken file is teardown's to ignore too
                pass


if __name__ == "__main__":
    _request, _fds = serve(sys.argv[1])
    run(become(_request, _fds))

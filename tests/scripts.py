"""The repository's scripts run by the tests: in this process by default, as a shell would
run them (argv, flags, working directory, environment, stdout, stderr, exit code), and as
processes of their own only where the test is about a process: signals, SIGKILL and
resume, a start from scratch (what is imported, what reaches stderr before Python runs),
pipes, the TFF worker's lifetime.

`run` has `subprocess.run`'s signature for `[sys.executable, script, *args]` and returns a
`subprocess.CompletedProcess`; `process=True` (or any other command line) starts a real
process. In this process, a script starts from the flags absl and TensorFlow define (each
script defines its own again, as it does when started) and from fresh imports of the
thin layers that define flags (`fedpt_cli`, `experiments`, `benchmarks`); the library is
imported once, as a long-lived program would. Everything is put back afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import runpy
import subprocess
import sys
import tempfile

from absl import app, flags

# absl.logging defines its flags (verbosity, logtostderr, ...) when imported: part of the base.
importlib.import_module("absl.logging")
app.define_help_flags()  # once per process (absl guards it): part of the base
# The flags defined before any script's (absl's, TensorFlow's): every script starts from these.
_BASE_FLAGS = frozenset(flags.FLAGS)
# Packages whose modules define flags when imported: imported anew by every script.
_FLAG_PACKAGES = ("fedpt_cli", "experiments", "benchmarks")


def run(
    args,
    *,
    capture_output: bool = True,
    text: bool = True,
    timeout: float | None = None,
    env: dict | None = None,
    cwd: str | None = None,
    process: bool = False,
) -> subprocess.CompletedProcess:
    """Runs `args` (`[sys.executable, script.py, *flags]`) in this process, or with
    `process=True` (or another command line) as `subprocess.run` does."""
    in_process = (
        not process
        and len(args) >= 2
        and args[0] == sys.executable
        and str(args[1]).endswith(".py")
        and capture_output
        and text
    )
    if not in_process:
        return subprocess.run(
            args, capture_output=capture_output, text=text, timeout=timeout, env=env, cwd=cwd
        )
    del timeout  # in this process a script is as fast as the library calls it makes
    script = os.path.join(cwd or os.getcwd(), str(args[1]))
    code, out, err = _run_here(script, [str(a) for a in args[2:]], env, cwd)
    return subprocess.CompletedProcess(list(args), code, out, err)


def start(args, **kwargs) -> subprocess.Popen:
    """A script as a process of its own (for signals, SIGKILL, pipes): `subprocess.Popen`."""
    return subprocess.Popen(args, **kwargs)


def _run_here(script: str, argv: list[str], env: dict | None, cwd: str | None):
    values = flags.FLAGS
    saved_flags = {name: values[name] for name in values if name not in _BASE_FLAGS}
    saved_values = {name: values[name].value for name in _BASE_FLAGS if name in values}
    for name in saved_flags:
        delattr(values, name)
    saved_modules = {
        m: sys.modules.pop(m) for m in list(sys.modules) if m.split(".")[0] in _FLAG_PACKAGES
    }
    saved_argv, saved_cwd, saved_env = sys.argv, os.getcwd(), dict(os.environ)
    # Real files: what the script starts (a TFF worker) is handed them by file number.
    out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
    code = 0
    try:
        sys.argv = [script, *argv]
        if cwd:
            os.chdir(cwd)
        if env is not None:
            os.environ.update({k: v for k, v in env.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(script, run_name="__main__")
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, (int, type(None))):
                    print(e.code, file=sys.stderr)
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        for name in [n for n in values if n not in _BASE_FLAGS]:
            delattr(values, name)
        for name, flag in saved_flags.items():
            values[name] = flag
        for name, value in saved_values.items():
            values[name].value = value
            values[name].present = 0
        for m in [m for m in sys.modules if m.split(".")[0] in _FLAG_PACKAGES]:
            del sys.modules[m]
        sys.modules.update(saved_modules)
    texts = []
    for f in (out, err):
        f.seek(0)
        texts.append(f.read())
        f.close()
    return code, *texts

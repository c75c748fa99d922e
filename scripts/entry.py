"""The one entry wrapper of every script: log level, stray arguments, the TFF runtime,
and known errors as one line on stderr with an exit code (2: bad input; 1: failure
during the run; 130: interrupted). Scripts stay flags plus a call."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, logging  # noqa: E402

from tff_fedpt import runtime  # noqa: E402
from tff_fedpt.tasks import DatasetError, DatasetNotFoundError  # noqa: E402
from tff_fedpt.training import ConfigError  # noqa: E402


class ScriptError(Exception):
    """A one-line error for the user, with the exit code to leave with."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 2, *, now: bool = False):
    """One line on stderr, then exit. `now`: skip Python's teardown (after the TFF workers
    were killed mid-computation, whose finalizers would print noise)."""
    print(f"{os.path.basename(sys.argv[0])}: error: {message}", file=sys.stderr, flush=True)
    if now:
        sys.stdout.flush()
        os._exit(code)
    sys.exit(code)


def run(body, *, local_runtime: bool = True, errors: tuple = ()) -> None:
    """Runs `body()` as the script's main (through absl's app.run).

    Args:
      body: No-argument callable; returns an exit code or None.
      local_runtime: Start the leak-proof local TFF runtime before `body` (a script that
        picks its own runtime, e.g. remote workers, passes False). It is always shut
        down at the end, whatever runtime `body` installed.
      errors: Extra exception types whose message is a complete one-line explanation.
    """

    def main(argv):
        if len(argv) > 1:
            fail(f"unexpected positional arguments: {argv[1:]}")
        logging.set_verbosity(logging.WARNING)  # TFF logs every model construction at INFO
        known = (ScriptError, ConfigError, DatasetError, DatasetNotFoundError, *errors)
        error = None
        try:
            if local_runtime:
                runtime.use_local_runtime()
            code = body()
        except known as e:
            error = (str(e), getattr(e, "code", 2))
        except KeyboardInterrupt:
            error = ("interrupted.", 130)
        # Outside the handlers: the exception (and the TFF frames its traceback holds)
        # is gone, so the old context is collected before its worker is reaped.
        runtime.shutdown()
        if error is not None:
            fail(*error)
        return code

    app.run(main)

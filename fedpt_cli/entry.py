"""The one entry wrapper of every script: log level, stray arguments, the TFF runtime,
and known errors as one line on stderr with an exit code (2: bad input; 1: failure
during the run; 130: interrupted). Scripts stay flags plus a call."""

from __future__ import annotations

import math
import os
import signal
import sys

from absl import app, flags, logging

from tff_fedpt import runtime
from tff_fedpt.tasks import DatasetError, DatasetNotFoundError
from tff_fedpt.training import ConfigError


class ScriptError(Exception):
    """A one-line error for the user, with the exit code to leave with."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = 2, *, now: bool = False):
    """One line on stderr, then exit. `now`: skip Python's teardown (after the TFF workers
    were killed mid-computation, whose finalizers would print noise), removing the
    temporary files its exit handlers would have."""
    line = f"{os.path.basename(sys.argv[0])}: error: {message}"
    if now:
        try:
            sys.stdout.flush()
        except (OSError, RuntimeError, ValueError):
            pass  # see say_now
        say_now(line, sys.stderr)
        runtime.remove_temporary_files()
        os._exit(code)
    print(line, file=sys.stderr, flush=True)
    sys.exit(code)


def say_now(line: str, stream=None) -> None:
    """`line` on `stream` (stdout) from a signal handler: to its file descriptor, as the
    interrupted main thread may be inside a write to the same buffered stream (tqdm's bar
    writes stderr every round), where a nested write raises "reentrant call"."""
    stream = stream or sys.stdout
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (captured output)
        print(line, file=stream, flush=True)
        return
    os.write(fd, (line + "\n").encode())


# The arguments absl takes as a request for the short help.
HELP_ARGS = ("--help", "-h", "-help", "--helpshort", "-?")


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
        except ConfigError as e:
            error = (e.flag_message(), 2)
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

    # Started in the background by a non-interactive shell (`nohup ... &`, a queue script),
    # a process inherits SIGINT ignored: `kill -INT`, the way to stop a run after its round
    # with the checkpoint saved, would do nothing, and the TFF worker would inherit it too
    # (it is stopped with SIGINT).
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if any(arg in HELP_ARGS for arg in sys.argv[1:]):
        # absl's --help exits 1; asking for help is not a failure.
        app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
    app.run(main)


_ELEMENT_NAMES = {int: "integers", float: "numbers", str: "strings"}
# The absl flag definer of each option value type (here and in training_flags).
DEFINE = {
    bool: flags.DEFINE_bool,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    str: flags.DEFINE_string,
}


def define_flags(params_class: type) -> None:
    """One absl flag per field of a frozen dataclass of `tff_fedpt.options.option` fields
    (an experiment's parameters): bool/int/float/str as such, tuples as comma lists."""
    import dataclasses
    import typing

    from absl import flags

    from tff_fedpt.options import value_type

    hints = typing.get_type_hints(params_class)
    for field in dataclasses.fields(params_class):
        hint, help_text = hints[field.name], field.metadata["help"]
        if typing.get_origin(hint) is tuple:
            flags.DEFINE_list(
                field.name,
                [f"{v:g}" if isinstance(v, float) else str(v) for v in field.default],
                help_text,
            )
        else:
            DEFINE[value_type(hint)](field.name, field.default, help_text)
    key_flags(*(field.name for field in dataclasses.fields(params_class)))


def key_flags(*names: str) -> None:
    """Makes `names` key flags of the script being run, so that its `--help` lists them
    (absl lists only the flags the main module itself defines; these are defined for it
    by this package and `experiments`)."""
    for name in names:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


def params_from_flags(params_class: type):
    """The dataclass of `define_flags` from the parsed flags; a list element of the wrong
    type is a ScriptError naming the flag."""
    import dataclasses
    import typing

    from absl import flags

    hints = typing.get_type_hints(params_class)
    values = {}
    for field in dataclasses.fields(params_class):
        value = flags.FLAGS[field.name].value
        if typing.get_origin(hints[field.name]) is tuple:
            element = typing.get_args(hints[field.name])[0]
            try:
                value = tuple(element(v) for v in value)
            except ValueError:
                raise ScriptError(
                    f"--{field.name}: expected {_ELEMENT_NAMES[element]}, got {value}."
                ) from None
        values[field.name] = value
    return params_class(**values)


def check_sections(sections, valid) -> None:
    """--sections names at least one section, and only sections of `valid`."""
    if not sections:
        raise ScriptError(f"--sections is empty; name at least one of {list(valid)}.")
    unknown = set(sections) - set(valid)
    if unknown:
        raise ScriptError(f"--sections: unknown {sorted(unknown)}; valid: {list(valid)}.")


def check_training_flags(values, integers=("epochs", "batch_size")) -> None:
    """Central training's flags: each of `integers` >= 1 and --learning_rate a finite
    number > 0 (`values`: absl's FLAGS)."""
    for name in integers:
        if values[name].value < 1:
            raise ScriptError(f"--{name} must be >= 1; received {values[name].value}.")
    if not (math.isfinite(values.learning_rate) and values.learning_rate > 0):
        raise ScriptError(
            f"--learning_rate must be a finite number > 0; received {values.learning_rate}."
        )


def log(line: str) -> None:
    """A progress line on stdout, flushed (experiments run for hours under nohup)."""
    print(line, flush=True)

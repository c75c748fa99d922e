"""Flags and the thin main shared by the training binaries (run_*.py).

Every training flag is generated from `tff_fedpt.training.ExperimentConfig` (its
default, help text and allowed values), and every task flag from the task module's
`DataOptions`; the binary-only flags (progress, workers) are defined here.
"""

from __future__ import annotations

from fedpt_cli import entry

import dataclasses
import signal
import sys
import typing

from absl import flags

import baselines
from tff_fedpt import remote, runtime, training
from tff_fedpt.options import value_type
from tff_fedpt.tasks import load_task, task_module, task_names
from tff_fedpt.training import algorithms, config

baselines.register()

_NOT_FLAGS = ("task",)  # set by the binary


def _define(field: dataclasses.Field, value_type: type, choices=None) -> None:
    choices = choices or field.metadata["choices"]
    if choices:
        flags.DEFINE_enum(field.name, field.default, list(choices), field.metadata["help"])
    else:
        entry.DEFINE[value_type](field.name, field.default, field.metadata["help"])


def define_config_flags() -> None:
    """One absl flag per ExperimentConfig field."""
    for field in config.fields():
        if field.name not in _NOT_FLAGS:
            choices = algorithms.names() if field.name == "algorithm" else None
            _define(field, config.field_type(field), choices)


def define_task_flags(task_name: str) -> type:
    """One absl flag per field of the task's `DataOptions` (declared once, in the task's
    module); returns that class."""
    options = task_module(task_name).DataOptions
    hints = typing.get_type_hints(options)
    for field in dataclasses.fields(options):
        _define(field, value_type(hints[field.name]))
    return options


define_config_flags()
flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")
flags.DEFINE_string(
    "workers",
    None,
    "Run on TFF workers host:port,host:port (see scripts/start_worker.py); default: local.",
)
flags.DEFINE_float(
    "worker_timeout", remote.DEFAULT_TIMEOUT_S, "Seconds a worker may not answer before failing."
)
FLAGS = flags.FLAGS


def config_from_flags(task_name: str) -> training.ExperimentConfig:
    values = {f.name: FLAGS[f.name].value for f in config.fields() if f.name not in _NOT_FLAGS}
    return training.ExperimentConfig(task=task_name, **values)


def _use_runtime() -> None:
    """Local execution, or the remote workers of --workers (checked reachable)."""
    if not FLAGS.workers:
        runtime.use_local_runtime()
        return
    if not FLAGS.worker_timeout > 0:
        raise entry.ScriptError(
            f"--worker_timeout must be > 0 seconds; received {FLAGS.worker_timeout}."
        )
    try:
        workers = remote.parse_workers(FLAGS.workers)
        remote.use_remote_workers(workers, timeout=FLAGS.worker_timeout)
    except ValueError as e:
        raise entry.ScriptError(f"--{e}") from None
    print(f"Running on {len(workers)} TFF workers: {', '.join(workers)}", flush=True)


def _progress(total_rounds: int):
    if not FLAGS.progress:
        return {}
    from tqdm import tqdm

    bar = None

    def on_start(first_round):
        nonlocal bar  # counts its rate from the first round run here, not from round 1
        bar = tqdm(total=total_rounds, initial=first_round - 1, unit="round", file=sys.stderr)

    def on_round_end(round_num, row):
        postfix = {
            "loss": f"{row.get('train/loss', float('nan')):.4f}",
            "MB": f"{row['cumulative_megabytes']:.1f}",
        }
        if "eval/accuracy" in row:
            postfix["test_acc"] = f"{row['eval/accuracy']:.4f}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(round_num - bar.n)
        if round_num == total_rounds:
            bar.close()

    return dict(on_start=on_start, on_round_end=on_round_end)


def _with_resume_note(hooks: dict, checkpoint_dir: str) -> dict:
    """`hooks` whose on_start first says where a resumed run starts."""
    progress_start = hooks.get("on_start")

    def on_start(first_round):
        if first_round > 1:
            print(
                f"Resuming from round {first_round}: rounds 1..{first_round - 1} are in "
                f"{checkpoint_dir}.",
                flush=True,
            )
        if progress_start is not None:
            progress_start(first_round)

    return {**hooks, "on_start": on_start}


def _describe(experiment: training.Experiment) -> None:
    if experiment.freeze_report is not None:
        print(f"Trainable / frozen parameters:\n{experiment.freeze_report.format_table()}")
    fedavg, cost, name = experiment.fedavg_cost, experiment.cost, experiment.config.algorithm
    if cost is None:
        print(
            f"Per client per round: {name} sends all weights down "
            f"({fedavg.broadcast_bytes_per_client / 1e6:.3f} MB) and the round's selected "
            "variables up (see upload_bytes_per_client in the metrics).",
            flush=True,
        )
        return
    print(
        f"Per client per round: {name} sends {cost.broadcast_bytes_per_client / 1e6:.3f} MB "
        f"down + {cost.upload_bytes_per_client / 1e6:.3f} MB up; FedAvg on the same model "
        f"{fedavg.broadcast_bytes_per_client / 1e6:.3f} MB + "
        f"{fedavg.upload_bytes_per_client / 1e6:.3f} MB "
        f"({cost.reduction_versus(fedavg):.1f}x less communication).",
        flush=True,
    )


class _Interrupt:
    """Ctrl-C during training: the first stops cleanly after the running round (which is
    checkpointed); a second stops at once, with the checkpoints already on disk."""

    def __init__(self, checkpoint_dir: str):
        self._checkpoint_dir = checkpoint_dir
        self._count = 0
        self._previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        self._count += 1
        if self._count == 1:  # the loop asks `requested()` after the round
            bar_line = "\n" if FLAGS.progress and sys.stderr.isatty() else ""  # tqdm's
            entry.say_now(f"{bar_line}Ctrl-C: stopping after this round; again stops at once.")
            return
        last = max(training.CheckpointStore(self._checkpoint_dir).versions(), default=0)
        runtime.kill_workers()
        saved = (
            f"Rounds 1..{last} are saved in {self._checkpoint_dir}; rerun the same command "
            f"to resume from round {last + 1}."
            if last
            else "No round was saved yet; rerun the same command to start again."
        )
        entry.fail(f"Interrupted twice: stopped at once. {saved}", code=130, now=True)

    def requested(self) -> bool:
        return self._count > 0

    def restore(self) -> None:
        signal.signal(signal.SIGINT, self._previous)


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def train(task_name: str, task_kwargs: dict) -> None:
    """Loads the task, builds the experiment once from the flags, and trains it."""
    print(f"Loading the {task_name} task (reading and splitting its data)...", flush=True)
    try:
        task = load_task(task_name, **task_kwargs)
    except ValueError as e:
        raise entry.ScriptError(str(e)) from None
    _use_runtime()
    config = config_from_flags(task_name)
    prepared = training.prepare(config, task)  # validated once, here
    training.check_outputs(prepared)  # before the build: a refusal comes at once
    experiment = training.build_experiment(prepared)
    if FLAGS.workers:
        remote.check_mergeable(experiment.process)
    _describe(experiment)
    cfg = experiment.config
    checkpoint_dir = training.output_dirs(cfg)["checkpoints"]
    interrupt = _Interrupt(checkpoint_dir)
    try:
        result = training.run(
            experiment,
            on_warning=_warn,
            should_stop=interrupt.requested,
            **_with_resume_note(_progress(cfg.total_rounds), checkpoint_dir),
        )
    except training.RunInterrupted as e:
        raise entry.ScriptError(
            f"Interrupted: stopped after round {e.round_num}. Rounds 1..{e.checkpoint_round} "
            f"are saved in {e.checkpoint_dir}; rerun the same command to resume from round "
            f"{e.checkpoint_round + 1}.",
            code=130,
        ) from None
    except training.RoundFailedError as e:
        raise entry.ScriptError(str(e), code=1) from None
    except remote.WorkerError as e:
        last = max(training.CheckpointStore(checkpoint_dir).versions(), default=0)
        raise entry.ScriptError(
            f"{e}. Training stopped; the checkpoints in {checkpoint_dir} are intact (last: "
            f"round {last}). Rerun the same command with --workers listing the workers that "
            f"are up to resume from round {last + 1}.",
            code=1,
        ) from None
    finally:
        interrupt.restore()
    final = result.final_eval
    last = result.rows[-1] if result.rows else {}
    epsilon = last.get("privacy/epsilon")
    privacy_note = (
        f", epsilon {float(epsilon):.3f} at delta {last['privacy/delta']}"
        if epsilon not in (None, "")
        else ""
    )
    print(
        f"Done: {cfg.total_rounds} rounds, test accuracy "
        f"{final.get('eval/accuracy', 'n/a')}{privacy_note}, results in {result.results_dir}"
    )


_BINARY_FLAGS = ("progress", "workers", "worker_timeout")


def _flag_line(name: str) -> str:
    flag = FLAGS[name]
    default = "" if flag.default is None else flag.default
    return f"  --{name}={default}".ljust(34) + f" {flag.help}"  # absl's help names choices


def help_text(task_name: str, doc: str = "") -> str:
    """The binary's --help: its own flags grouped (task, each option group, the binary's),
    then the task's models and their freeze presets (absl's --helpfull lists them all)."""
    module = task_module(task_name)
    options = [f.name for f in dataclasses.fields(module.DataOptions)]
    lines = [doc.strip(), "", f"Flags of the {task_name} task:", *map(_flag_line, options)]
    groups: dict[type, list[str]] = {}
    for field in config.fields():
        if field.name not in _NOT_FLAGS:
            groups.setdefault(field.metadata["group"], []).append(field.name)
    for group, names in groups.items():
        title = (group.__doc__ or group.__name__).strip().splitlines()[0].rstrip(".")
        lines += ["", f"{title} ({group.__name__}):", *map(_flag_line, names)]
    lines += ["", "Progress and workers:", *map(_flag_line, _BINARY_FLAGS), "", "Models:"]
    for model, spec in module.CATALOG.items():
        presets = ", ".join(["none", *spec.presets])
        lines.append(f"  --model={model}: --freeze presets {presets} (or layer-name patterns)")
    lines += ["", "--helpfull lists absl's and TensorFlow's flags too."]
    return "\n".join(lines)


def main(task_name: str, doc: str = "") -> None:
    """The binary's main: the task's flags come from its `DataOptions`, and its module's
    `RECOMMENDED` settings (if any) replace the training flags' defaults. `doc`: the
    binary's docstring, the head of its --help."""
    options = define_task_flags(task_name)
    for name, value in getattr(task_module(task_name), "RECOMMENDED", {}).items():
        FLAGS.set_default(name, value)
    if any(arg in entry.HELP_ARGS for arg in sys.argv[1:]):
        print(help_text(task_name, doc))
        sys.exit(0)

    def task_kwargs():
        values = {f.name: FLAGS[f.name].value for f in dataclasses.fields(options)}
        return options(**values).load_kwargs()

    entry.run(
        lambda: train(task_name, task_kwargs()),
        local_runtime=False,
        errors=(remote.NotMergeableError, remote.WorkerUnavailableError),
    )


def flags_table() -> str:
    """The Markdown table of the training flags in docs/training.md (a test keeps it equal)."""
    from tff_fedpt import reporting

    rows = []
    for field in config.fields():
        if field.name in _NOT_FLAGS:
            continue
        choices = algorithms.names() if field.name == "algorithm" else field.metadata["choices"]
        rows.append(
            {
                "flag": f"`--{field.name}`",
                "default": f"`{field.default}`" if field.default is not None else "unset",
                "values": ", ".join(f"`{c}`" for c in choices) if choices else "",
                "meaning": field.metadata["help"],
            }
        )
    overrides = [
        {
            "binary": f"`scripts/run_{task}.py`",
            "its defaults instead": ", ".join(
                f"`--{k}={v}`" for k, v in task_module(task).RECOMMENDED.items()
            ),
        }
        for task in task_names()
        if getattr(task_module(task), "RECOMMENDED", None)
    ]
    return (
        reporting.table(rows)
        + "\n\nA binary whose task has tuned settings (its module's `RECOMMENDED`) starts "
        "from them instead (`--help` shows each binary's own defaults):\n\n"
        + reporting.table(overrides)
    )


if __name__ == "__main__":  # prints the table for docs/training.md
    print(flags_table())

"""Running a built experiment: rounds, evaluation, outputs, checkpoints, resume.

`run(experiment)` resumes from the newest intact checkpoint of the experiment (checked
against the settings recorded with the checkpoints), cuts metrics.csv back to it, and
trains the remaining rounds. Nothing here prints: progress goes to the callbacks. The
loop knows nothing of DP or TFF workers: the experiment hands it hooks (its
`row_annotations`, e.g. privacy accounting, and `after_round`, e.g. worker restarts).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt import communication, frozen
from tff_fedpt.training import experiment as experiment_lib
from tff_fedpt.training import outputs
from tff_fedpt.training.checkpoints import CheckpointStore, Skipped
from tff_fedpt.training.config import ConfigError, LoopOptions

if TYPE_CHECKING:
    pass
from tff_fedpt.training.experiment import Experiment
from tff_fedpt.training.sampling import ClientDatasets, sample_clients


@dataclasses.dataclass
class ExperimentResult:
    """What a finished run returns."""

    rows: list[dict[str, Any]]
    final_state: Any
    model_weights: tff.learning.models.ModelWeights
    freeze_report: Optional[frozen.FreezeReport]
    cost: Optional[communication.CommunicationCost]
    fedavg_cost: communication.CommunicationCost
    results_dir: str
    resumed_from_round: int
    skipped_checkpoints: list[Skipped] = dataclasses.field(default_factory=list)

    @property
    def final_eval(self) -> dict[str, Any]:
        evals = [r for r in self.rows if r.get("eval/accuracy", "") != ""]
        return evals[-1] if evals else {}


class RunInterrupted(Exception):
    """The run was stopped (`should_stop` or Ctrl-C); what was computed is checkpointed.

    Attributes:
      round_num: The last round that completed.
      checkpoint_round: The last round saved (the rerun resumes after it).
      checkpoint_dir: Where the checkpoints are.
    """

    def __init__(self, round_num: int, checkpoint_round: int, checkpoint_dir: str):
        super().__init__(
            f"stopped after round {round_num}; rounds 1..{checkpoint_round} are saved "
            f"in {checkpoint_dir}"
        )
        self.round_num = round_num
        self.checkpoint_round = checkpoint_round
        self.checkpoint_dir = checkpoint_dir


class RoundFailedError(RuntimeError):
    """A round failed inside TFF; the message gives the cause where it can be found."""


_CAUSES = (
    re.compile(r"(Received a label value of -?\d+ which is outside the valid range of \[[^\]]*\))"),
    re.compile(r"assertion failed: \[([^\]\"]+)\]"),
    re.compile(r"(?:INVALID_ARGUMENT|InvalidArgumentError)\W+([^\n\"]{10,300})"),
)


def explain(error: BaseException) -> Optional[str]:
    """The root cause of a TFF execution error, found in its text (None if not found)."""
    text = ""
    while error is not None:
        text += " " + str(error) + " " + str(getattr(error, "details", lambda: "")())
        error = error.__cause__ or error.__context__
    for pattern in _CAUSES:
        match = pattern.search(text.replace("\\n", "\n"))
        if match:
            return match.group(1).strip()
    return None


def _check_resume(options, dirs, record, versions, *, write) -> None:
    outputs.check_and_write_record(dirs["checkpoints"], record, bool(versions), write=write)
    if versions and max(versions) > options.total_rounds:
        raise ConfigError(
            f"total_rounds={options.total_rounds}: experiment "
            f"{options.experiment_name!r} already has {max(versions)} rounds checkpointed "
            f"in {dirs['checkpoints']}. Use total_rounds={max(versions)} to see its "
            "results, a larger value to continue, or another experiment_name.",
            ["total_rounds", "experiment_name"],
        )


def check_outputs(config, task=None) -> None:
    """Refuses, before anything is built, what `run` would refuse about the outputs of
    `build_experiment(config, task)`: an output directory that cannot be used, another
    run of the experiment in progress, checkpoints made with other settings, or more
    rounds checkpointed than total_rounds. A binary calls it on its `Prepared`
    configuration before the build (so that a refusal comes at once); `run` checks it
    all again.

    Args:
      config: A `Prepared` configuration (`task` omitted), or an `ExperimentConfig` to
        prepare against `task`.

    Raises:
      ConfigError: as `run` would raise it (creating the output directories is the one
        thing it does).
    """
    prepared = experiment_lib.prepared(config, task)
    options = prepared.config.group(LoopOptions)
    dirs = outputs.output_dirs(options)
    outputs.make_dirs(dirs)
    with outputs.RunLock(dirs["results"]):
        versions = CheckpointStore(dirs["checkpoints"]).versions()
        _check_resume(options, dirs, prepared.run_record(), versions, write=False)


def run(
    experiment: Experiment,
    *,
    on_start: Optional[Callable[[int], None]] = None,
    on_round_end: Optional[Callable[[int, dict], None]] = None,
    on_warning: Optional[Callable[[str], None]] = None,
    should_stop: Optional[Callable[[], bool]] = None,
) -> ExperimentResult:
    """Trains a built experiment, resuming from its newest intact checkpoint.

    Args:
      experiment: From `build_experiment`.
      on_start: Called with the first round to run (after a resume: the next one).
      on_round_end: Called with (round_num, metrics row) after every round.
      on_warning: Called with a message for recovered problems (a corrupt checkpoint
        skipped, partial saves removed).
      should_stop: Asked after every round; True stops the run cleanly (the round is
        checkpointed, then RunInterrupted is raised). A binary sets it from SIGINT.

    Returns:
      An `ExperimentResult`.

    Raises:
      ConfigError: for an output directory that cannot be used, another run of the same
        experiment in progress, settings other than those recorded with the
        checkpoints, fewer total_rounds than already checkpointed, or edited results.
      RunInterrupted: when `should_stop` says so, or on KeyboardInterrupt, after saving
        the last completed round.
      RoundFailedError: when a round fails and the cause can be named.
    """
    # The loop reads its own options only (the algorithm, DP and workers come in built:
    # the process, the row annotations and the after-round hooks).
    options, task, learning_process = experiment.loop_options, experiment.task, experiment.process
    warn = on_warning or (lambda message: None)
    dirs = outputs.output_dirs(options)
    outputs.make_dirs(dirs)
    with outputs.RunLock(dirs["results"]):
        store = CheckpointStore(dirs["checkpoints"])
        for entry in store.remove_partial_saves():
            warn(f"removed {entry}: a checkpoint save that was interrupted")
        versions = store.versions()
        _check_resume(options, dirs, experiment.run_record(), versions, write=True)
        state, version, skipped = store.load_latest(experiment.initial_state())
        for s in skipped:
            warn(
                f"checkpoint of round {s.version} cannot be loaded ({s.reason}); moved to "
                f"{s.moved_to}; resuming from round {version}"
            )
        metrics_path = os.path.join(dirs["results"], outputs.METRICS)
        rows = outputs.metrics_rows_up_to(metrics_path, version)
        outputs.write_csv_atomic(metrics_path, rows)
        outputs.write_csv_atomic(
            os.path.join(dirs["results"], outputs.HPARAMS),
            [{"name": k, "value": v} for k, v in experiment.hparams().items()],
        )
        evaluator = experiment.evaluator()
        client_ids = list(task.train_data.client_ids)
        datasets = ClientDatasets(task, options, experiment.client_input)
        if on_start is not None:
            on_start(version + 1)
        saved = done = version
        round_num = version
        try:
            with tf.summary.create_file_writer(dirs["logdir"]).as_default():
                for round_num in range(version + 1, options.total_rounds + 1):
                    new_state, row = _round(
                        experiment, state, round_num, client_ids, datasets, rows
                    )
                    if (
                        round_num % options.rounds_per_eval == 0
                        or round_num == options.total_rounds
                    ):
                        weights = learning_process.get_model_weights(new_state)
                        row.update({f"eval/{k}": v for k, v in evaluator(weights).items()})
                    outputs.write_csv_atomic(metrics_path, [*rows, row])
                    rows.append(row)
                    state, done = new_state, round_num
                    for key, value in row.items():
                        if key != "round" and isinstance(value, (int, float)):
                            tf.summary.scalar(key, value, step=round_num)
                    if (
                        round_num % options.rounds_per_checkpoint == 0
                        or round_num == options.total_rounds
                    ):
                        store.save(state, round_num)
                        saved = round_num
                    if on_round_end is not None:
                        on_round_end(round_num, row)
                    for hook in experiment.after_round:
                        hook(round_num)
                    if should_stop is not None and should_stop() and done < options.total_rounds:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            if done > saved:  # keep what was computed: the rerun resumes after `done`
                store.remove_partial_saves()
                if done not in store.versions():
                    store.save(state, done)
                saved = done
            raise RunInterrupted(done, saved, dirs["checkpoints"]) from None
    return ExperimentResult(
        rows=rows,
        final_state=state,
        model_weights=learning_process.get_model_weights(state),
        freeze_report=experiment.freeze_report,
        cost=experiment.cost,
        fedavg_cost=experiment.fedavg_cost,
        results_dir=dirs["results"],
        resumed_from_round=version,
        skipped_checkpoints=skipped,
    )


def _round(experiment: Experiment, state, round_num, client_ids, datasets, rows):
    """Trains one round; returns the new state and its metrics row."""
    ids, seeds = sample_clients(experiment.loop_options, client_ids, round_num)
    data = datasets(ids, seeds)
    start = time.perf_counter()
    if data:
        try:
            output = experiment.process.next(state, data)
        except Exception as e:
            cause = explain(e)
            if cause is None:
                raise
            raise RoundFailedError(
                f"round {round_num} failed on the clients ({', '.join(ids[:5])}"
                f"{', ...' if len(ids) > 5 else ''}): {cause}"
            ) from e
        state, metrics = output.state, output.metrics
    else:  # Poisson sampling drew nobody: the model stays, the round still counts
        metrics = {}
    seconds = time.perf_counter() - start
    row = outputs.round_row(
        round_num, metrics, experiment.cost, rows[-1] if rows else None, seconds, len(ids)
    )
    for annotate in experiment.row_annotations:
        row.update(annotate(round_num))
    return state, row

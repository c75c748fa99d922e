"""An experiment as a declarative grid of runs, and a report written from the stored runs.

An experiment is a sequence of sections; a section is a sequence of stages; a stage is a
function `(params, store) -> [Run]` that declares runs (a later stage may read what the
earlier ones stored, e.g. the best learning rate of a tuned grid). `execute` trains the
declared runs through `training.run_experiment` (resumable: a finished run is read back,
a half-finished one resumes from its checkpoint). A report is a function of the same
declarations and the stored runs (`Store`), never of run names parsed back: each `Run`
carries the settings the report needs.

No flags here: the binaries in scripts/ map their flags to an experiment's parameters.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional

import baselines
from tff_fedpt import reporting, training
from tff_fedpt.tasks import load_task, model_settings, with_model_settings
from tff_fedpt.training import outputs

baselines.register()


class ExperimentError(ValueError):
    """A bad parameter of an experiment, said in one line."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a grid.

    Attributes:
      name: Its experiment name (its directories under the output root).
      values: Its `ExperimentConfig` fields (without the output root and name).
      task: `load_task` keyword arguments of the data it trains on (task name included).
      settings: What the report reads about it (algorithm, rate, seed, clip, label...).
      fork_of: A finished run that this one continues for more rounds (`outputs.fork_run`:
        the same trajectory, the source left as it was).
    """

    name: str
    values: Mapping[str, Any]
    task: Mapping[str, Any]
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    fork_of: Optional[str] = None

    def config(self, root: str) -> training.ExperimentConfig:
        return training.ExperimentConfig(
            **self.values, root_output_dir=root, experiment_name=self.name
        )


Stage = Callable[[Any, "Store"], Sequence[Run]]


@dataclasses.dataclass(frozen=True)
class Section:
    """A named part of an experiment: its stages, declared in the order they run."""

    name: str
    stages: tuple[Stage, ...]

    def runs(self, params, store: Store) -> list[Run]:
        """Every run the section declares given what is stored now (a stage that depends
        on an earlier stage's results sees them as far as they exist)."""
        return unique([run for stage in self.stages for run in stage(params, store)])


def unique(runs: Iterable[Run]) -> list[Run]:
    """`runs` without repeats (a grid may declare one run twice, e.g. the tuned clip at
    the epsilon it was tuned at); one name declared with two settings is an error."""
    seen: dict[str, Run] = {}
    for run in runs:
        if run.name in seen and seen[run.name] != run:
            raise ExperimentError(
                f"run {run.name!r} is declared twice with different settings: "
                f"{dict(seen[run.name].values)} and {dict(run.values)}."
            )
        seen.setdefault(run.name, run)
    return list(seen.values())


class Store:
    """The stored runs under an output root: their metrics and settings, read as they are
    now (nothing cached: a run in progress grows)."""

    def __init__(self, root: str):
        self.root = root

    def rows(self, name: str) -> list[dict[str, str]]:
        return outputs.run_metrics(self.root, name)

    def hparams(self, name: str) -> dict[str, str]:
        return outputs.run_hparams(self.root, name)

    def final(self, name: str) -> Optional[float]:
        """The run's last test accuracy (None: no evaluation yet)."""
        return final_accuracy(self.rows(name))

    def best(self, candidates: Mapping[Any, str], default: Any) -> Any:
        """The key of `candidates` ({value: run name}) whose run ended most accurate;
        `default` when none has an evaluation (the first of equals wins)."""
        scores = {key: self.final(name) for key, name in candidates.items()}
        scores = {key: acc for key, acc in scores.items() if acc is not None}
        return max(scores, key=scores.get) if scores else default


def evaluations(rows: Sequence[Mapping[str, str]]) -> list[float]:
    """The test accuracies of a run's rows, in round order."""
    return [float(r["eval/accuracy"]) for r in rows if r.get("eval/accuracy", "") != ""]


def final_accuracy(rows: Sequence[Mapping[str, str]]) -> Optional[float]:
    evals = evaluations(rows)
    return evals[-1] if evals else None


def accuracy_within_megabytes(rows: Sequence[Mapping[str, str]], megabytes: float):
    """The best test accuracy evaluated within `megabytes` of cumulative traffic (None
    when the first evaluation is beyond it)."""
    points = [
        float(r["eval/accuracy"])
        for r in rows
        if r.get("eval/accuracy", "") != "" and float(r["cumulative_megabytes"]) <= megabytes
    ]
    return max(points) if points else None


def accuracy_at_round(rows: Sequence[Mapping[str, str]], round_num: int) -> Optional[float]:
    """The test accuracy evaluated at `round_num` (None when none was)."""
    points = [
        float(r["eval/accuracy"])
        for r in rows
        if r.get("eval/accuracy", "") != "" and int(r["round"]) == round_num
    ]
    return points[0] if points else None


def finished(runs: Iterable[Run], store: Store) -> list[tuple[Run, list]]:
    """[(run, rows)] of the runs that have an evaluation."""
    out = []
    for run in runs:
        rows = store.rows(run.name)
        if rows and final_accuracy(rows) is not None:
            out.append((run, rows))
    return out


def capped(rates: Sequence[float], max_rates: int) -> tuple[float, ...]:
    """The first `max_rates` of a setting's learning rates (all when `max_rates` <= 0)."""
    return tuple(rates[:max_rates] if max_rates > 0 else rates)


def select(settings: Iterable[Any], only: Iterable[str], among=None) -> list[Any]:
    """The settings named by `only` (all when empty), restricted to the names `among`."""
    only = set(only)
    return [
        s for s in settings if (not only or s.name in only) and (among is None or s.name in among)
    ]


def train_minutes(rows: Sequence[Mapping[str, str]]) -> float:
    """Minutes of training rounds in a run (evaluation and checkpoints not included)."""
    return sum(float(r["round_seconds"]) for r in rows) / 60


def run_row_count(report: Mapping[str, Any], not_runs: Iterable[str] = ()) -> dict[str, tuple]:
    """{section: (run rows, rounds)} of a report's "sections" (a section is a list of rows
    or a dict with "rows"; rounds: the sum of the rows' "rounds", 0 where a row has none);
    `not_runs` names sections that describe no runs."""
    counts = {}
    for key, value in report.get("sections", {}).items():
        if key in not_runs:
            continue
        rows = value.get("rows", []) if isinstance(value, dict) else value
        rounds = sum(
            row["rounds"]
            for row in rows
            if isinstance(row, Mapping) and isinstance(row.get("rounds"), int)
        )
        counts[key] = (len(rows), rounds)
    return counts


class Tasks:
    """Loaded tasks, shared by the runs of one invocation (every stage and section): one
    data set in memory at a time, and one `Task` per model setting of it; and the built
    experiments of that data set, so that runs that differ only in the loop's rounds and
    outputs (a run continued for more rounds, the same run resumed or evaluated) build
    their learning process once (`experiment`)."""

    # Building a process takes seconds (TFF traces and serializes every computation) and
    # a process holds no run state, but its model functions hold their task's data.
    BUILT_LIMIT = 8

    def __init__(self):
        self._key = None
        self._tasks: dict[tuple, Any] = {}
        self._built: collections.OrderedDict = collections.OrderedDict()

    def experiment(self, prepared: training.Prepared) -> training.Experiment:
        """The experiment of `prepared`, its learning process built once per
        `prepared.process_key()`."""
        key = prepared.process_key()
        built = self._built.get(key)
        if built is None:
            built = self._built[key] = training.build_experiment(prepared)
            while len(self._built) > self.BUILT_LIMIT:
                self._built.popitem(last=False)
        self._built.move_to_end(key)
        return built.for_run(prepared)

    def get(self, kwargs: Mapping[str, Any]):
        """The task of `load_task(**kwargs)`; model settings do not reload the data."""
        model = {k: v for k, v in kwargs.items() if k in model_settings(kwargs["name"])}
        data = {k: v for k, v in kwargs.items() if k not in model}
        key = tuple(sorted(data.items()))
        if key != self._key:
            self._key, self._tasks = key, {(): load_task(**data)}
            self._built.clear()
        settings = tuple(sorted(model.items()))
        if settings not in self._tasks:
            self._tasks[settings] = with_model_settings(self._tasks[()], **model)
        return self._tasks[settings]


def execute(
    runs: Iterable[Run],
    root: str,
    log: Callable[[str], None] = lambda line: None,
    every: int = 10,
    tasks: Optional[Tasks] = None,
) -> None:
    """Trains the declared runs in order (each resumes where it stopped).

    A run that another process is training is skipped; a fork whose source has not
    finished waits for a later invocation. Data is loaded once and one set at a time;
    runs that differ only in model settings (`tasks.model_settings`) share it.

    Args:
      runs: The runs (e.g. `Section.runs(...)` of one stage).
      root: The output root (`--root_output_dir`).
      log: Receives one line per `every` rounds of each run and per skipped run.
      every: Rounds between progress lines.
      tasks: The loaded tasks to share with other calls (default: this call's own).
    """
    tasks = tasks if tasks is not None else Tasks()
    for run in runs:
        if run.fork_of is not None:
            rows = outputs.run_metrics(root, run.fork_of)
            wanted = int(outputs.run_hparams(root, run.fork_of).get("total_rounds", 0) or 0)
            if not rows or len(rows) < wanted:
                log(f"  {run.fork_of}: not finished; run its section first")
                continue
            outputs.fork_run(root, run.fork_of, run.name)
        _train(run, root, tasks, log, every)


def run_section(
    section: Section,
    params,
    store: Store,
    log: Callable[[str], None] = lambda line: None,
    tasks: Optional[Tasks] = None,
) -> None:
    """Executes a section stage by stage (each stage declared after the one before ran);
    `tasks`: loaded tasks shared with the other sections of the invocation."""
    tasks = tasks if tasks is not None else Tasks()
    for stage in section.stages:
        execute(stage(params, store), store.root, log, tasks=tasks)


def _train(run: Run, root: str, tasks: Tasks, log, every: int) -> None:
    config = run.config(root)
    start, last = time.time(), [0]

    def on_round_end(round_num, row):
        if round_num - last[0] >= every or round_num == config.total_rounds:
            last[0] = round_num
            acc = row.get("eval/accuracy", "")
            shown = f", test acc {acc:.4f}" if acc != "" else ""
            log(
                f"  {run.name}: round {round_num}/{config.total_rounds}{shown}, "
                f"{time.time() - start:.0f} s"
            )

    try:
        prepared = training.prepare(config, tasks.get(run.task))
        training.check_outputs(prepared)
        training.run(tasks.experiment(prepared), on_round_end=on_round_end)
    except outputs.RunInProgressError:  # another invocation is running it: leave it there
        log(f"  {run.name}: running in another process; skipped here")


@dataclasses.dataclass
class Report:
    """What a report writes: Markdown lines, the JSON result, and plots drawn once the
    report may replace the one before it."""

    lines: list[str]
    result: dict[str, Any]
    plots: list[Callable[[], Any]] = dataclasses.field(default_factory=list)
    not_runs: tuple[str, ...] = ()


def write_report(report: Report, docs_dir: str, runs_dir: str) -> None:
    """Writes results.json and results.md (and the plots) under `docs_dir`.

    Raises:
      reporting.FewerRunsError: when the report there holds more runs than this one
        (written from another output root, or before the runs were copied back); then
        nothing is written.
    """
    path = os.path.join(docs_dir, "results.json")

    def count(result):
        return run_row_count(result, report.not_runs)

    reporting.refuse_fewer_runs(path, count(report.result), count, runs_dir=runs_dir)
    os.makedirs(docs_dir, exist_ok=True)
    for plot in report.plots:
        plot()
    with open(path, "w") as f:
        json.dump(report.result, f, indent=1)
    with open(os.path.join(docs_dir, "results.md"), "w") as f:
        f.write("\n".join(report.lines) + "\n")

"""The simulation training layer, split by concern.

    config.py       ExperimentConfig: every option once (default, help, allowed values)
    algorithms.py   the algorithm registry (FedPT here; baselines register theirs)
    experiment.py   prepare (validate once) -> Prepared; build everything once -> Experiment
    sampling.py     clients and their data per round, deterministic in (seed, round)
    evaluation.py   centralized test-set evaluation
    outputs.py      output directories, CSV rows, the run record, the run lock
    checkpoints.py  TFF's FileProgramStateManager with partial/corrupt-save recovery
    loop.py         run(experiment): rounds, evaluation, outputs, resume

Typical use: `run_experiment(config, task)`, or, step by step,
`prepared = prepare(config, task)`, `check_outputs(prepared)`,
`run(build_experiment(prepared))`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tff_fedpt.training import algorithms
from tff_fedpt.training import config as _config
from tff_fedpt.training.checkpoints import CheckpointStore
from tff_fedpt.training.config import CLIENT_WEIGHTINGS, OPTIMIZERS, ConfigError
from tff_fedpt.training.experiment import (
    Experiment,
    Prepared,
    build_experiment,
    prepare,
    validate,
)
from tff_fedpt.training.loop import (
    ExperimentResult,
    RoundFailedError,
    RunInterrupted,
    check_outputs,
    run,
)
from tff_fedpt.training.outputs import output_dirs

if TYPE_CHECKING:
    from tff_fedpt.training.config import ExperimentConfig


def __getattr__(name: str):
    if name == "ExperimentConfig":  # composed on first use (see config.register_group)
        return _config.ExperimentConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_experiment(config: ExperimentConfig, task, *, model_aggregator=None, **callbacks):
    """`run(build_experiment(config, task))`: validates once, refuses first what the run
    would refuse about its outputs (`check_outputs`), builds once, then trains (see
    `loop.run`)."""
    prepared = prepare(config, task)
    check_outputs(prepared)
    return run(build_experiment(prepared, model_aggregator=model_aggregator), **callbacks)


def load_latest_state(config: ExperimentConfig, task):
    """The latest checkpoint of an experiment.

    Returns:
      (process, state, round_num): the experiment's learning process, its state at the
      newest loadable checkpoint (the initial state if there is none) and that round.
    """
    experiment = build_experiment(config, task)
    store = CheckpointStore(output_dirs(experiment.config)["checkpoints"])
    state, version, _ = store.load_latest(experiment.initial_state())
    return experiment.process, state, version


__all__ = [
    "CLIENT_WEIGHTINGS",
    "OPTIMIZERS",
    "CheckpointStore",
    "ConfigError",
    "Experiment",
    "Prepared",
    "ExperimentConfig",
    "ExperimentResult",
    "RoundFailedError",
    "RunInterrupted",
    "algorithms",
    "build_experiment",
    "check_outputs",
    "load_latest_state",
    "output_dirs",
    "prepare",
    "run",
    "run_experiment",
    "validate",
]

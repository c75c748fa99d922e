"""Building an experiment: validate once, build every part once, hand it to the loop.

`build_experiment(config, task)` resolves the task's defaults, validates, builds the
algorithm's model function and learning process, the DP aggregator (calibrating the
noise once), the communication costs and the evaluation model. `loop.run` takes the
result and never rebuilds or re-checks any of it.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt import communication, compression, freezing, privacy, runtime
from tff_fedpt import pretrained as pretrained_lib
from tff_fedpt.tasks import Task
from tff_fedpt.training import algorithms, outputs
from tff_fedpt.training import config as config_lib
from tff_fedpt.training.config import (
    ConfigError,
    LoopOptions,
    check_choices,
    check_positive,
    resolve,
)
from tff_fedpt.training.evaluation import Evaluator

if TYPE_CHECKING:
    from tff_fedpt.training.config import ExperimentConfig


@dataclasses.dataclass
class Experiment:
    """A built experiment, ready for `loop.run`.

    Attributes:
      config: The configuration with the task's defaults filled in.
      task: The loaded task.
      algorithm: The registered algorithm.
      process: Its `tff.learning.templates.LearningProcess`.
      model_fn: The process's model function.
      keras_model_fn: Builds the Keras model the algorithm trains.
      cost: Bytes per client per round (None when it changes every round: PVT).
      fedavg_cost: FedAvg's cost on the full model, the reference for reductions.
      freeze_report: Trainable / frozen counts per layer (FedPT), else None.
      privacy: The DP mechanism of one round (None without DP).
      target_delta: Delta at which epsilon is reported.
      pretrained: The pretrained values the run starts from (None: none).
      row_annotations: Functions round_num -> dict of extra metrics for the round's row
        (with DP: `privacy.RoundAccounting`, the epsilon spent so far).
      after_round: Functions of round_num run after the round is saved (with
        --worker_restart_rounds: `runtime.WorkerRestarts`).
    """

    config: ExperimentConfig
    task: Task
    algorithm: algorithms.Algorithm
    process: tff.learning.templates.LearningProcess
    model_fn: Callable[[], Any]
    keras_model_fn: Callable[[], tf.keras.Model]
    cost: Optional[communication.CommunicationCost]
    fedavg_cost: communication.CommunicationCost
    freeze_report: Optional[freezing.FreezeReport]
    privacy: Optional[privacy.PrivacySetting]
    target_delta: float
    pretrained: Optional[pretrained_lib.PretrainedWeights] = None
    row_annotations: tuple[Callable[[int], dict], ...] = ()
    after_round: tuple[Callable[[int], Any], ...] = ()

    def evaluator(self) -> Evaluator:
        """Test-set evaluation of the process's model weights (the loop calls it with
        `get_model_weights(state)` every --rounds_per_eval rounds)."""
        return Evaluator(
            self.algorithm.eval_keras_model(self.model_fn, self.keras_model_fn), self.task
        )

    @property
    def loop_options(self) -> LoopOptions:
        """The loop's own settings (rounds, sampling, client data, outputs): all that
        `loop.run` reads of the configuration."""
        return self.config.group(LoopOptions)

    def hparams(self) -> dict:
        """Every setting by flag name (the run's hparams.csv)."""
        return self.config.hparams()

    def run_record(self) -> dict:
        """The settings recorded with the checkpoints, which a resume must match."""
        return outputs.run_record(
            self.config,
            self.task,
            self.privacy and self.privacy.noise_multiplier,
            pretrained_fingerprint=self.pretrained and self.pretrained.fingerprint(),
        )

    @property
    def population(self) -> int:
        return len(self.task.train_data.client_ids)

    def initial_state(self):
        """The process's initial state; with --pretrained_weights, every value the file
        holds put in place (through `set_model_weights`, so any algorithm starts from it,
        and FedPT checks that its frozen part is the file's)."""
        state = self.process.initialize()
        if self.pretrained is None:
            return state
        keras_model = self.algorithm.eval_keras_model(self.model_fn, self.keras_model_fn)
        weights = self.pretrained.overwrite(self.process.get_model_weights(state), keras_model)
        return self.process.set_model_weights(state, weights)


def validate(config: ExperimentConfig, task: Task) -> ExperimentConfig:
    """Checks `config` against `task`; returns it resolved. Raises ConfigError."""
    algorithm = algorithms.get(config.algorithm)
    config = resolve(config, task)
    if config.model not in task.models:
        raise ConfigError(
            f"model: unknown model {config.model!r} for task {task.name}; valid: "
            f"{sorted(task.models)}.",
            ["model"],
        )
    check_positive(
        config,
        [
            "total_rounds",
            "clients_per_round",
            "client_epochs_per_round",
            "client_batch_size",
            "client_learning_rate",
            "server_learning_rate",
            "rounds_per_eval",
            "rounds_per_checkpoint",
        ],
    )
    if config.max_elements_per_client is not None:
        check_positive(config, ["max_elements_per_client"])
    check_choices(config)
    _check_seed(config)
    population = len(task.train_data.client_ids)
    if config.clients_per_round > population:
        raise ConfigError(
            f"clients_per_round={config.clients_per_round} is larger than the number of "
            f"training clients of task {task.name} ({population}).",
            ["clients_per_round"],
        )
    algorithm.check(config, task)
    _check_pretrained_and_adapters(config, task, algorithm)
    try:
        config.group(compression.CompressionOptions).check(
            algorithm=config.algorithm, compressible=algorithm.compressible, dp=config.dp
        )
        config.group(privacy.DPOptions).check(
            sampling=config.sampling,
            weighted=config.client_weighting == "num_examples",
            clients_per_round=config.clients_per_round,
        )
    except (ValueError, TypeError) as e:
        raise config_lib.group_error(
            e, compression.CompressionOptions, privacy.DPOptions, also=_DP_ALSO
        ) from None
    return config


# The loop and optimizer fields that DP's messages name.
_DP_ALSO = ("algorithm", "sampling", "client_weighting", "clients_per_round", "total_rounds")


def _check_pretrained_and_adapters(config: ExperimentConfig, task: Task, algorithm) -> None:
    """--pretrained_weights and --adapter_*: the file loads, and the model builds with them."""
    if not config.pretrained_weights and not config.adapter_layers:
        return
    if isinstance(config.adapter_rank, bool) or config.adapter_rank < 1:
        raise ConfigError(
            f"adapter_rank must be >= 1; received {config.adapter_rank}.", ["adapter_rank"]
        )
    if config.adapter_alpha is not None:
        check_positive(config, ["adapter_alpha"])
    algorithms.pretrained_weights(config)  # a ConfigError naming the file
    names = "pretrained_weights / adapter_layers"
    try:
        # Built eagerly (the task's input spec maps its data, whose lookup tables are
        # eager), called in a graph of its own (nothing is kept).
        model_fn = algorithm.model_fn(config, task, algorithm.keras_model_fn(config, task))
        with tf.Graph().as_default():
            model_fn()
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{names}: {e}", ["pretrained_weights", "adapter_layers"]) from None


def _check_seed(config: ExperimentConfig) -> None:
    for name in ("frozen_seed", "seed"):
        value = getattr(config, name)
        if not -(2**63) <= value < 2**63:
            raise ConfigError(
                f"{name} must fit in a signed 64-bit integer "
                f"[-9223372036854775808, 9223372036854775807]; received {value}.",
                [name],
            )
    if config.seed < 0:
        raise ConfigError(f"seed must be >= 0 (it seeds numpy); received {config.seed}.", ["seed"])


def optimizer(config: ExperimentConfig, role: str) -> tff.learning.optimizers.Optimizer:
    """The client or server optimizer of `config` (role: "client" or "server")."""
    name = getattr(config, f"{role}_optimizer")
    lr = getattr(config, f"{role}_learning_rate")
    if name == "sgd":
        return tff.learning.optimizers.build_sgdm(learning_rate=lr)
    if name == "sgdm":
        return tff.learning.optimizers.build_sgdm(
            learning_rate=lr, momentum=getattr(config, f"{role}_momentum")
        )
    if role == "server":
        return tff.learning.optimizers.build_adam(
            learning_rate=lr,
            beta_1=config.server_adam_beta1,
            beta_2=config.server_adam_beta2,
            epsilon=config.server_adam_epsilon,
        )
    return tff.learning.optimizers.build_adam(learning_rate=lr)


def _privacy_setting(config: ExperimentConfig, population: int, delta: float):
    if not config.dp:
        return None
    noise = config.noise_multiplier
    if noise is None:
        try:
            noise = privacy.calibrate_noise_multiplier(
                target_epsilon=config.target_epsilon,
                target_delta=delta,
                rounds=config.total_rounds,
                clients_per_round=config.clients_per_round,
                population=population,
                sampling=config.sampling,
                accountant=config.accountant,
            )
        except ValueError as e:
            raise config_lib.group_error(e, privacy.DPOptions, also=_DP_ALSO) from None
        if config.adaptive_clip:
            try:
                privacy.check_adaptive_noise(noise, config.clients_per_round)
            except ValueError as e:
                raise ConfigError(
                    f"{e} (calibrated to target_epsilon)", ["target_epsilon"]
                ) from None
    return privacy.PrivacySetting(
        float(noise), config.clients_per_round, population, config.sampling
    )


# Built learning processes of the last task object built for, by everything else that
# defines them: a grid of runs that differ only in the loop's rounds and outputs (a run
# continued for more rounds, the same run resumed or evaluated) builds each process once
# per Python process. Building one takes seconds (TFF traces and serializes every
# computation); a process holds no run state. One task at a time: a built process's model
# functions hold their task (its data), so more would keep more data sets in memory.
_LOOP_ONLY_FIELDS = frozenset(
    {
        "total_rounds",
        "rounds_per_eval",
        "rounds_per_checkpoint",
        "root_output_dir",
        "experiment_name",
    }
)
_BUILT_LIMIT = 8
_built: collections.OrderedDict = collections.OrderedDict()
_built_task: Optional[Task] = None


def _process_key(config: ExperimentConfig, algorithm, noise: Optional[float]) -> tuple:
    """The key of a built process of one task: the algorithm, the noise multiplier (under
    --target_epsilon it depends on the rounds) and every other setting."""
    settings = tuple(
        (field.name, getattr(config, field.name))
        for field in dataclasses.fields(config)
        if field.name not in _LOOP_ONLY_FIELDS
    )
    return (id(algorithm), noise, settings)


def _build(config, task, algorithm, setting, delta, model_aggregator) -> Experiment:
    if model_aggregator is None and setting is not None:
        model_aggregator = privacy.build_dp_aggregator(
            noise_multiplier=setting.noise_multiplier,
            clients_per_round=config.clients_per_round,
            clip=float(config.clip),
            adaptive_clip=config.adaptive_clip,
            target_quantile=config.target_quantile,
        )
    if model_aggregator is None and config.upload_bits is not None:
        model_aggregator = compression.quantized_mean(config.upload_bits)
    weighting = None
    if config.client_weighting is not None:
        weighting = (
            tff.learning.ClientWeighting.UNIFORM
            if config.client_weighting == "uniform"
            else tff.learning.ClientWeighting.NUM_EXAMPLES
        )
    parts = algorithms.ProcessParts(
        client_optimizer=optimizer(config, "client"),
        server_optimizer=optimizer(config, "server"),
        model_aggregator=model_aggregator,
        client_weighting=weighting,
    )
    keras_model_fn = algorithm.keras_model_fn(config, task)
    model_fn = algorithm.model_fn(config, task, keras_model_fn)
    learning_process = algorithm.build_process(model_fn, config, parts)
    with tf.Graph().as_default():
        report = getattr(model_fn(), "freeze_report", None)
    full_model_fn = algorithms.tff_model_fn(lambda: task.models[config.model](config.seed), task)
    return Experiment(
        config=config,
        task=task,
        algorithm=algorithm,
        process=learning_process,
        model_fn=model_fn,
        keras_model_fn=keras_model_fn,
        cost=algorithm.communication_cost(learning_process),
        fedavg_cost=communication.fedavg_communication_cost(full_model_fn),
        freeze_report=report,
        privacy=setting,
        target_delta=delta,
    )


def _resolve(config: ExperimentConfig, task: Task):
    """(validated config, algorithm, privacy setting or None, delta): all that the build
    and the run record need before anything is built."""
    config = validate(config, task)
    population = len(task.train_data.client_ids)
    delta = config.target_delta if config.target_delta is not None else 1.0 / population
    return (
        config,
        algorithms.get(config.algorithm),
        _privacy_setting(config, population, delta),
        delta,
    )


def run_record(config: ExperimentConfig, task: Task) -> tuple[ExperimentConfig, dict[str, str]]:
    """(validated config, the settings a resume must match), without building anything:
    what `Experiment.run_record` gives for the experiment `build_experiment` would build."""
    config, _, setting, _ = _resolve(config, task)
    pretrained = algorithms.pretrained_weights(config)
    record = outputs.run_record(
        config,
        task,
        setting and setting.noise_multiplier,
        pretrained_fingerprint=pretrained and pretrained.fingerprint(),
    )
    return config, record


def build_experiment(config: ExperimentConfig, task: Task, *, model_aggregator=None) -> Experiment:
    """Validates `config` and builds everything a run needs, once.

    The learning process is built once per Python process for each task and each
    setting that defines it (everything but --total_rounds, --rounds_per_eval,
    --rounds_per_checkpoint, --root_output_dir and --experiment_name; with
    --target_epsilon, the calibrated noise): a second run that differs only in those
    reuses it. A `model_aggregator` passed in is never reused.

    Args:
      config: The experiment configuration (unset model / freeze / experiment_name
        take the task's defaults).
      task: The loaded task.
      model_aggregator: Optional `tff.aggregators` factory for the model update; by
        default the mean, the DP aggregator with `dp`, or the quantized mean with
        `upload_bits`.

    Raises:
      ConfigError: for invalid settings, naming the flag.
    """
    config, algorithm, setting, delta = _resolve(config, task)
    if model_aggregator is not None:
        built = _build(config, task, algorithm, setting, delta, model_aggregator)
    else:
        global _built_task
        if task is not _built_task:
            _built.clear()
            _built_task = task
        key = _process_key(config, algorithm, setting and setting.noise_multiplier)
        built = _built.get(key)
        if built is None:
            built = _built[key] = _build(config, task, algorithm, setting, delta, None)
            while len(_built) > _BUILT_LIMIT:
                _built.popitem(last=False)
        _built.move_to_end(key)
    return dataclasses.replace(  # the run's own settings on the built parts
        built,
        config=config,
        pretrained=algorithms.pretrained_weights(config),
        row_annotations=(
            () if setting is None else (privacy.RoundAccounting(setting, delta, config.accountant),)
        ),
        after_round=config.group(runtime.RuntimeOptions).after_round(),
    )

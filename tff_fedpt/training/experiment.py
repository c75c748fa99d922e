"""Building an experiment: validate once, build every part once, hand it to the loop.

`prepare(config, task)` resolves the task's defaults, validates once and derives the DP
setting (calibrating the noise once) and the pretrained weights; `check_outputs` and
`build_experiment` take the result. `build_experiment` builds the algorithm's model
function and learning process, the DP aggregator, the communication costs and the
evaluation model. `loop.run` takes the result and never rebuilds or re-checks any of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt import (
    communication,
    compression,
    features,
    frozen,
    keras_models,
    privacy,
    runtime,
)
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
      client_input: What every client dataset and the test set pass through once before
        training (`features.FeatureMap` when the process trains on features), or None.
      row_annotations: Functions round_num -> dict of extra metrics for the round's row
        (with DP: `privacy.RoundAccounting`, the epsilon spent so far).
      after_round: Functions of round_num run after the round is saved (with
        `runtime.RuntimeOptions`: `runtime.WorkerRestarts`).
    """

    config: ExperimentConfig
    task: Task
    algorithm: algorithms.Algorithm
    process: tff.learning.templates.LearningProcess
    model_fn: Callable[[], Any]
    keras_model_fn: Callable[[], tf.keras.Model]
    cost: Optional[communication.CommunicationCost]
    fedavg_cost: communication.CommunicationCost
    freeze_report: Optional[frozen.FreezeReport]
    privacy: Optional[privacy.PrivacySetting]
    target_delta: float
    pretrained: Optional[frozen.PretrainedWeights] = None
    client_input: Optional[features.FeatureMap] = None
    row_annotations: tuple[Callable[[int], dict], ...] = ()
    after_round: tuple[Callable[[int], Any], ...] = ()

    def evaluator(self) -> Evaluator:
        """Test-set evaluation of the process's model weights (the loop calls it with
        `get_model_weights(state)` every --rounds_per_eval rounds)."""
        return Evaluator(
            self.algorithm.eval_keras_model(self.model_fn, self.keras_model_fn),
            self.task,
            features=self.client_input,
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

    def for_run(self, prepared: Prepared) -> Experiment:
        """These built parts with `prepared`'s own run settings: its configuration, its
        pretrained weights, DP accounting and worker restarts. For runs whose
        `process_key` equals the one these parts were built for."""
        config = prepared.config
        setting, delta = prepared.privacy, prepared.target_delta
        accounting = (
            () if setting is None else (privacy.RoundAccounting(setting, delta, config.accountant),)
        )
        return dataclasses.replace(
            self,
            config=config,
            pretrained=prepared.pretrained,
            row_annotations=accounting,
            after_round=config.group(runtime.RuntimeOptions).after_round(),
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
        weights = keras_models.overwrite_weights(
            self.pretrained, self.process.get_model_weights(state), keras_model
        )
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
        config.group(features.FeatureOptions).check(
            algorithm=config.algorithm, supported=algorithm.feature_trainable
        )
        config.group(runtime.RuntimeOptions).check()
    except (ValueError, TypeError) as e:
        raise config_lib.group_error(
            e,
            compression.CompressionOptions,
            privacy.DPOptions,
            features.FeatureOptions,
            runtime.RuntimeOptions,
            also=_DP_ALSO,
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


# The loop's own settings: runs that differ only in these share a built process
# (`Prepared.process_key`).
LOOP_ONLY_FIELDS = frozenset(
    {
        "total_rounds",
        "rounds_per_eval",
        "rounds_per_checkpoint",
        "root_output_dir",
        "experiment_name",
    }
)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A configuration validated once against its task, with everything derived from it
    before anything is built: what `check_outputs` and `build_experiment` take.

    Attributes:
      config: The configuration, validated, with the task's defaults filled in.
      task: The loaded task.
      algorithm: The registered algorithm.
      privacy: The DP mechanism of one round (the noise calibrated once), or None.
      target_delta: Delta at which epsilon is reported.
      pretrained: The pretrained values the run starts from, or None.
    """

    config: ExperimentConfig
    task: Task
    algorithm: algorithms.Algorithm
    privacy: Optional[privacy.PrivacySetting]
    target_delta: float
    pretrained: Optional[frozen.PretrainedWeights]

    def run_record(self) -> dict[str, str]:
        """The settings recorded with the checkpoints, which a resume must match."""
        return outputs.run_record(
            self.config,
            self.task,
            self.privacy and self.privacy.noise_multiplier,
            pretrained_fingerprint=self.pretrained and self.pretrained.fingerprint(),
        )

    def process_key(self) -> tuple:
        """What defines the built process: the algorithm, the noise multiplier (under
        target_epsilon it depends on the rounds) and every setting but the loop's own
        (`LOOP_ONLY_FIELDS`). Runs with equal keys on one task object can share one
        (`Experiment.for_run`)."""
        settings = tuple(
            (field.name, getattr(self.config, field.name))
            for field in dataclasses.fields(self.config)
            if field.name not in LOOP_ONLY_FIELDS
        )
        noise = self.privacy and self.privacy.noise_multiplier
        return (id(self.task), id(self.algorithm), noise, settings)


def prepare(config: ExperimentConfig, task: Task) -> Prepared:
    """Validates `config` against `task` (once) and derives the privacy setting and the
    pretrained weights. Raises ConfigError, naming the fields."""
    config = validate(config, task)
    population = len(task.train_data.client_ids)
    delta = config.target_delta if config.target_delta is not None else 1.0 / population
    return Prepared(
        config=config,
        task=task,
        algorithm=algorithms.get(config.algorithm),
        privacy=_privacy_setting(config, population, delta),
        target_delta=delta,
        pretrained=algorithms.pretrained_weights(config),
    )


def prepared(config, task: Optional[Task] = None) -> Prepared:
    """`config` itself when it is `Prepared` (`task` omitted), else `prepare(config, task)`."""
    if isinstance(config, Prepared):
        if task is not None and task is not config.task:
            raise ValueError("task: a Prepared configuration carries its own task; omit it.")
        return config
    if task is None:
        raise TypeError("task: required with an ExperimentConfig (only a Prepared has one).")
    return prepare(config, task)


def build_parts(prepared: Prepared, model_aggregator=None) -> Experiment:
    """Builds the learning process and what depends on it (the part of an experiment that
    runs with the same `process_key` share); `Experiment.for_run` completes it."""
    config, task, algorithm, setting = (
        prepared.config,
        prepared.task,
        prepared.algorithm,
        prepared.privacy,
    )
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
    return Experiment(
        config=config,
        task=task,
        algorithm=algorithm,
        process=learning_process,
        model_fn=model_fn,
        keras_model_fn=keras_model_fn,
        cost=algorithm.communication_cost(learning_process),
        fedavg_cost=algorithms.fedavg_cost(task, config.model),
        freeze_report=report,
        client_input=algorithm.client_input(model_fn, config),
        privacy=setting,
        target_delta=prepared.target_delta,
    ).for_run(prepared)


def build_experiment(config, task: Optional[Task] = None, *, model_aggregator=None) -> Experiment:
    """Builds everything a run needs, once.

    Args:
      config: A `Prepared` configuration (from `prepare`; `task` omitted), or an
        `ExperimentConfig` to prepare first (unset model / freeze / experiment_name take
        the task's defaults).
      task: The loaded task (with an `ExperimentConfig`).
      model_aggregator: Optional `tff.aggregators` factory for the model update; by
        default the mean, the DP aggregator with `dp`, or the quantized mean with
        `upload_bits`.

    Raises:
      ConfigError: for invalid settings, naming the fields.
    """
    return build_parts(prepared(config, task), model_aggregator)

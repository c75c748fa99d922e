"""The simulation training loop: sampling, evaluation, checkpoints, metrics, resume.

Outputs follow google-research/federated's layout:

    root_output_dir/checkpoints/<experiment_name>/   tff.program.FileProgramStateManager
    root_output_dir/results/<experiment_name>/       metrics.csv, hparams.csv
    root_output_dir/logdir/<experiment_name>/        TensorBoard summaries

Rerunning the same experiment resumes from its latest checkpoint; the metrics CSV is
cut back to the checkpointed round first, so every round appears exactly once.
Nothing here prints: progress goes to the `on_round_end` callback.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt import (
    communication,
    compression,
    freezing,
    keras_models,
    privacy,
    process,
    runtime,
)
from tff_fedpt.tasks import Preprocessing, Task

ALGORITHMS = ("fedpt", "fedavg", "small_model", "pvt")
OPTIMIZERS = ("sgd", "sgdm", "adam")
CLIENT_WEIGHTINGS = ("num_examples", "uniform")

# Fields that may change between a run and its resumption.
_RESUMABLE_CHANGES = frozenset(
    {
        "total_rounds",
        "rounds_per_eval",
        "rounds_per_checkpoint",
        "root_output_dir",
        "worker_restart_rounds",
    }
)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a training run. Field names match the binaries' flags."""

    task: str = "digits"
    algorithm: str = "fedpt"
    model: Optional[str] = None
    freeze: str = "dense"
    frozen_seed: int = 0
    total_rounds: int = 50
    clients_per_round: int = 10
    client_epochs_per_round: int = 1
    client_batch_size: int = 20
    max_elements_per_client: Optional[int] = None
    client_optimizer: str = "sgd"
    client_learning_rate: float = 0.1
    client_momentum: float = 0.9
    server_optimizer: str = "sgd"
    server_learning_rate: float = 1.0
    server_momentum: float = 0.9
    server_adam_beta1: float = 0.9
    server_adam_beta2: float = 0.999
    server_adam_epsilon: float = 1e-7
    rounds_per_eval: int = 10
    rounds_per_checkpoint: int = 10
    root_output_dir: str = "/tmp/tff_fedpt"
    experiment_name: str = "experiment"
    seed: int = 0
    client_weighting: Optional[str] = None
    pvt_trainable_fraction: float = 0.5
    worker_restart_rounds: int = 50
    # Differential privacy (DP-FedAvg / DP-FedPT).
    dp: bool = False
    noise_multiplier: Optional[float] = None
    target_epsilon: Optional[float] = None
    clip: float = 1.0
    adaptive_clip: bool = False
    target_quantile: float = 0.5
    target_delta: Optional[float] = None
    sampling: str = "uniform"
    accountant: str = "rdp"
    # Compression of the trainable part (FedPT only).
    upload_bits: Optional[int] = None
    broadcast_bits: Optional[int] = None

    def hparams(self) -> dict[str, str]:
        return {k: str(v) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class ExperimentResult:
    """What a finished run returns."""

    rows: list[dict[str, Any]]
    final_state: Any
    model_weights: tff.learning.models.ModelWeights
    freeze_report: Optional[freezing.FreezeReport]
    cost: Optional[communication.CommunicationCost]
    fedavg_cost: communication.CommunicationCost
    results_dir: str
    resumed_from_round: int

    @property
    def final_eval(self) -> dict[str, Any]:
        evals = [r for r in self.rows if r.get("eval/accuracy", "") != ""]
        return evals[-1] if evals else {}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field (flag)."""


def _check_positive(config: ExperimentConfig, names: Sequence[str]):
    for name in names:
        value = getattr(config, name)
        if value is None or not (isinstance(value, (int, float)) and value > 0):
            raise ConfigError(f"--{name} must be > 0; received {value!r}.")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{name} must be finite; received {value!r}.")


def validate(config: ExperimentConfig, task: Task) -> None:
    """Checks `config` against `task`; raises ConfigError naming the flag."""
    if config.algorithm not in ALGORITHMS:
        raise ConfigError(
            f"--algorithm: unknown algorithm {config.algorithm!r}; valid: {list(ALGORITHMS)}."
        )
    model = config.model or task.default_model
    if model not in task.models:
        raise ConfigError(
            f"--model: unknown model {model!r} for task {task.name}; valid: "
            f"{sorted(task.models)}."
        )
    _check_positive(
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
        _check_positive(config, ["max_elements_per_client"])
    num_clients = len(task.train_data.client_ids)
    if config.clients_per_round > num_clients:
        raise ConfigError(
            f"--clients_per_round={config.clients_per_round} is larger than the number of "
            f"training clients of task {task.name} ({num_clients})."
        )
    for role in ("client", "server"):
        name = getattr(config, f"{role}_optimizer")
        if name not in OPTIMIZERS:
            raise ConfigError(
                f"--{role}_optimizer: unknown optimizer {name!r}; valid: {list(OPTIMIZERS)}."
            )
    if config.algorithm in ("fedpt", "small_model"):
        freeze_spec(config, task)  # raises ConfigError for unknown presets
    if config.algorithm == "small_model" and model not in task.narrow_models:
        raise ConfigError(
            f"--algorithm=small_model has no narrow variant of model {model} for task "
            f"{task.name}; models with one: {sorted(task.narrow_models)}."
        )
    if config.algorithm == "pvt" and not 0 < config.pvt_trainable_fraction <= 1:
        raise ConfigError(
            "--pvt_trainable_fraction must be in (0, 1]; received "
            f"{config.pvt_trainable_fraction}."
        )
    if config.client_weighting not in (None, *CLIENT_WEIGHTINGS):
        raise ConfigError(
            f"--client_weighting: unknown weighting {config.client_weighting!r}; valid: "
            f"{list(CLIENT_WEIGHTINGS)}."
        )
    if config.sampling not in privacy.SAMPLINGS:
        raise ConfigError(
            f"--sampling: unknown sampling {config.sampling!r}; valid: {list(privacy.SAMPLINGS)}."
        )
    _validate_compression(config)
    if config.dp:
        _validate_dp(config, num_clients)
    elif config.noise_multiplier is not None or config.target_epsilon is not None:
        raise ConfigError("--noise_multiplier / --target_epsilon need --dp.")


def _validate_compression(config: ExperimentConfig) -> None:
    if config.upload_bits is None and config.broadcast_bits is None:
        return
    if config.algorithm != "fedpt":
        raise ConfigError(
            "--upload_bits / --broadcast_bits compress FedPT's trainable part and need "
            f"--algorithm=fedpt; received --algorithm={config.algorithm}."
        )
    try:
        if config.upload_bits is not None:
            compression.check_upload_bits(config.upload_bits, "--upload_bits")
        if config.broadcast_bits is not None:
            compression.check_broadcast_bits(config.broadcast_bits, "--broadcast_bits")
        if config.dp:
            compression.check_dp_compatible(
                upload_bits=config.upload_bits,
                broadcast_bits=config.broadcast_bits,
                name="--upload_bits",
            )
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _validate_dp(config: ExperimentConfig, population: int) -> None:
    if config.client_weighting == "num_examples":
        raise ConfigError(
            "--client_weighting=num_examples cannot be used with --dp: DP-FedAvg averages "
            "clients uniformly (a weighted aggregate would leak the example counts and "
            "break the sensitivity bound). Use --client_weighting=uniform or leave it unset."
        )
    if (config.noise_multiplier is None) == (config.target_epsilon is None):
        raise ConfigError("--dp needs exactly one of --noise_multiplier and --target_epsilon.")
    if config.noise_multiplier is not None and not config.noise_multiplier >= 0:
        raise ConfigError(f"--noise_multiplier must be >= 0; received {config.noise_multiplier}.")
    if config.target_epsilon is not None and not config.target_epsilon > 0:
        raise ConfigError(f"--target_epsilon must be > 0; received {config.target_epsilon}.")
    if not config.clip > 0:
        raise ConfigError(f"--clip must be > 0; received {config.clip}.")
    if config.adaptive_clip and not 0 < config.target_quantile < 1:
        raise ConfigError(
            f"--target_quantile must be in (0, 1); received {config.target_quantile}."
        )
    if config.target_delta is not None and not 0 < config.target_delta < 1:
        raise ConfigError(f"--target_delta must be in (0, 1); received {config.target_delta}.")
    if config.accountant not in privacy.ACCOUNTANTS:
        raise ConfigError(
            f"--accountant: unknown accountant {config.accountant!r}; valid: "
            f"{list(privacy.ACCOUNTANTS)}."
        )
    if config.accountant == "pld" and config.sampling == "uniform":
        raise ConfigError(
            "--accountant=pld does not support --sampling=uniform (fixed-size sampling); "
            "use --accountant=rdp or --sampling=poisson."
        )
    noise = noise_multiplier(config, population)
    if config.adaptive_clip and noise >= 0.1 * config.clients_per_round:
        raise ConfigError(
            f"--noise_multiplier={noise:g} is too large for --adaptive_clip with "
            f"--clients_per_round={config.clients_per_round}: TFF's adaptive clipping needs "
            f"noise_multiplier < 0.1 * clients_per_round = {0.1 * config.clients_per_round:g}."
        )


def target_delta(config: ExperimentConfig, population: int) -> float:
    """--target_delta, or 1 / population when not given."""
    return config.target_delta if config.target_delta is not None else 1.0 / population


def privacy_setting(config: ExperimentConfig, population: int) -> privacy.PrivacySetting:
    return privacy.PrivacySetting(
        noise_multiplier(config, population), config.clients_per_round, population, config.sampling
    )


def noise_multiplier(config: ExperimentConfig, population: int) -> float:
    """--noise_multiplier, or the one calibrated to --target_epsilon over total_rounds."""
    if config.noise_multiplier is not None:
        return float(config.noise_multiplier)
    return privacy.calibrate_noise_multiplier(
        target_epsilon=config.target_epsilon,
        target_delta=target_delta(config, population),
        rounds=config.total_rounds,
        clients_per_round=config.clients_per_round,
        population=population,
        sampling=config.sampling,
        accountant=config.accountant,
    )


def freeze_spec(config: ExperimentConfig, task: Task) -> freezing.FreezeSpec:
    """The FreezeSpec of `config.freeze`: a preset name, or comma-separated patterns."""
    model = config.model or task.default_model
    presets = task.freeze_presets.get(model, {})
    if config.freeze in presets or config.freeze == "none":
        return task.freeze_spec(model, config.freeze)
    patterns = tuple(p for p in config.freeze.split(",") if p)
    keras_model = task.models[model](config.seed)
    try:
        spec = freezing.FreezeSpec(layers=patterns)
        freezing.resolve_freeze(keras_model, spec)
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"--freeze={config.freeze!r} is neither a preset of model {model} "
            f"({sorted([*presets, 'none'])}) nor a valid layer pattern: {e}"
        ) from e
    return spec


def _optimizer(config: ExperimentConfig, role: str) -> tff.learning.optimizers.Optimizer:
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


def small_model_width(config: ExperimentConfig, task: Task) -> int:
    """Width of the narrow model matching FedPT's trainable count for config.freeze."""
    from baselines import small_model

    model = config.model or task.default_model
    report = freezing.resolve_freeze(task.models[model](config.seed), freeze_spec(config, task))
    narrow = task.narrow_models[model]
    return small_model.matched_width(lambda w: narrow(config.seed, w), report.trainable_params)


def keras_model_fn(config: ExperimentConfig, task: Task) -> Callable[[], tf.keras.Model]:
    """Builds the configured algorithm's Keras model (before any freezing)."""
    model = config.model or task.default_model
    if config.algorithm == "small_model":
        width = small_model_width(config, task)
        return lambda: task.narrow_models[model](config.seed, width)
    return lambda: task.models[model](config.seed)


def model_fns(config: ExperimentConfig, task: Task):
    """(model_fn of the configured algorithm, fedavg model_fn on the full model)."""
    model = config.model or task.default_model
    input_spec = task.input_spec

    def plain(build):
        return lambda: tff.learning.models.from_keras_model(
            build(), loss=task.loss_fn(), input_spec=input_spec, metrics=task.metrics_fn()
        )

    fedavg_model_fn = plain(lambda: task.models[model](config.seed))
    if config.algorithm == "fedpt":
        spec = freeze_spec(config, task)

        def fedpt_model_fn():
            return keras_models.from_keras_model(
                task.models[model](config.seed),
                loss=task.loss_fn(),
                input_spec=input_spec,
                metrics=task.metrics_fn(),
                freeze=spec,
            )

        return fedpt_model_fn, fedavg_model_fn
    return plain(keras_model_fn(config, task)), fedavg_model_fn


def build_process(
    config: ExperimentConfig, task: Task, model_aggregator=None
) -> tuple[tff.learning.templates.LearningProcess, Callable]:
    """The learning process of `config` and its model_fn."""
    model_fn, _ = model_fns(config, task)
    if config.dp and model_aggregator is None:
        population = len(task.train_data.client_ids)
        model_aggregator = privacy.build_dp_aggregator(
            noise_multiplier=noise_multiplier(config, population),
            clients_per_round=config.clients_per_round,
            clip=float(config.clip),
            adaptive_clip=config.adaptive_clip,
            target_quantile=config.target_quantile,
        )
    weighting = None
    if config.client_weighting is not None:
        weighting = (
            tff.learning.ClientWeighting.UNIFORM
            if config.client_weighting == "uniform"
            else tff.learning.ClientWeighting.NUM_EXAMPLES
        )
    if config.upload_bits is not None and model_aggregator is None:
        model_aggregator = compression.quantized_mean(config.upload_bits)
    client_opt = _optimizer(config, "client")
    server_opt = _optimizer(config, "server")
    if config.algorithm == "pvt":
        from baselines import pvt

        return (
            pvt.build_pvt_process(
                model_fn,
                client_opt,
                server_opt,
                trainable_fraction=config.pvt_trainable_fraction,
                schedule_seed=config.seed,
                model_aggregator=model_aggregator,
            ),
            model_fn,
        )
    if config.algorithm in ("fedavg", "small_model"):
        from baselines import fedavg

        return (
            fedavg.build_fedavg_process(
                model_fn,
                client_opt,
                server_opt,
                model_aggregator=model_aggregator,
                client_weighting=weighting,
            ),
            model_fn,
        )
    return (
        process.build_fedpt_process(
            model_fn,
            client_opt,
            server_opt,
            frozen_seed=config.frozen_seed,
            model_aggregator=model_aggregator,
            client_weighting=weighting,
            broadcast_bits=config.broadcast_bits,
        ),
        model_fn,
    )


def sample_clients(config: ExperimentConfig, client_ids: Sequence[str], round_num: int):
    """The round's client ids and their shuffle seeds, a function of (seed, round)."""
    picks = privacy.sample_clients(
        len(client_ids), config.clients_per_round, config.sampling, config.seed, round_num
    )
    rng = np.random.default_rng([config.seed, round_num, 1])
    shuffle_seeds = rng.integers(0, 2**31 - 1, size=len(picks))
    return [client_ids[i] for i in picks], [int(s) for s in shuffle_seeds]


class Evaluator:
    """Centralized evaluation of model weights on a Keras model with the task's metrics.

    `keras_model` must have the same trainable / non-trainable split as the
    `ModelWeights` it is given (for FedPT: the layers of the freeze spec frozen).
    """

    def __init__(self, keras_model: tf.keras.Model, task: Task, batch_size: int = 256):
        self._keras_model = keras_model
        self._loss_fn = task.loss_fn()
        self._loss = tf.keras.metrics.Mean(name="loss")
        self._metrics = [self._loss, *task.metrics_fn()]
        self._dataset = task.test_batches(batch_size)

        @tf.function
        def run(dataset):
            for metric in self._metrics:
                metric.reset_state()
            for x, y in dataset:
                predictions = self._keras_model(x, training=False)
                self._loss.update_state(self._loss_fn(y, predictions), sample_weight=tf.shape(y)[0])
                for metric in self._metrics[1:]:
                    metric.update_state(y, predictions)
            return {m.name: m.result() for m in self._metrics}

        self._run = run

    def __call__(self, weights: tff.learning.models.ModelWeights) -> dict[str, float]:
        weights.assign_weights_to(self._keras_model)
        return {name: float(value) for name, value in self._run(self._dataset).items()}


def flatten_metrics(metrics: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested metrics -> {"a/b/c": scalar}; empty groups are dropped."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, name + "/"))
        elif isinstance(value, (tuple, list)) and not value:
            continue
        else:
            array = np.asarray(value)
            if array.ndim == 0:
                flat[name] = array.item()
    return flat


def _round_row(round_num, metrics, cost, previous_row, round_time, clients):
    flat = flatten_metrics(metrics)
    row = {"round": round_num}
    for key, value in flat.items():
        if key.startswith("client_work/train/"):
            row["train/" + key[len("client_work/train/") :]] = value
        elif key.startswith("communication/"):
            continue
        else:
            row[key] = value
    comm = metrics.get("communication") if isinstance(metrics, Mapping) else None
    if comm:
        row.update(
            clients=int(comm["clients"]),
            broadcast_bytes_per_client=int(comm["broadcast_bytes_per_client"]),
            upload_bytes_per_client=int(comm["upload_bytes_per_client"]),
            round_broadcast_bytes=int(comm["round_broadcast_bytes"]),
            round_upload_bytes=int(comm["round_upload_bytes"]),
            cumulative_broadcast_bytes=int(comm["cumulative_broadcast_bytes"]),
            cumulative_upload_bytes=int(comm["cumulative_upload_bytes"]),
        )
    else:  # a process without its own accounting (TFF's FedAvg): from its types
        before_down = int(previous_row.get("cumulative_broadcast_bytes", 0)) if previous_row else 0
        before_up = int(previous_row.get("cumulative_upload_bytes", 0)) if previous_row else 0
        row.update(
            clients=clients,
            broadcast_bytes_per_client=cost.broadcast_bytes_per_client,
            upload_bytes_per_client=cost.upload_bytes_per_client,
            round_broadcast_bytes=clients * cost.broadcast_bytes_per_client,
            round_upload_bytes=clients * cost.upload_bytes_per_client,
            cumulative_broadcast_bytes=before_down + clients * cost.broadcast_bytes_per_client,
            cumulative_upload_bytes=before_up + clients * cost.upload_bytes_per_client,
        )
    row["cumulative_megabytes"] = (
        row["cumulative_broadcast_bytes"] + row["cumulative_upload_bytes"]
    ) / 1e6
    row["round_seconds"] = round_time
    return row


def _read_csv(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_csv_atomic(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _check_hparams(path: str, config: ExperimentConfig) -> None:
    old = {row["name"]: row["value"] for row in _read_csv(path)}
    if not old:
        return
    new = config.hparams()
    changed = sorted(
        k for k in new if k not in _RESUMABLE_CHANGES and k in old and old[k] != new[k]
    )
    if changed:
        details = ", ".join(f"--{k}: saved {old[k]!r}, now {new[k]!r}" for k in changed)
        raise ConfigError(
            f"{os.path.dirname(path)} holds experiment {config.experiment_name!r} with other "
            f"settings ({details}); its checkpoints cannot be resumed with these flags. "
            "Use another --experiment_name or --root_output_dir."
        )


def output_dirs(config: ExperimentConfig) -> dict[str, str]:
    return {
        name: os.path.join(config.root_output_dir, name, config.experiment_name)
        for name in ("checkpoints", "results", "logdir")
    }


def run_experiment(
    config: ExperimentConfig,
    task: Task,
    *,
    on_start: Optional[Callable[[int], None]] = None,
    on_round_end: Optional[Callable[[int, dict], None]] = None,
    model_aggregator=None,
    built: Optional[tuple] = None,
) -> ExperimentResult:
    """Trains `config` on `task`, resuming from the latest checkpoint if there is one.

    Args:
      config: The experiment configuration.
      task: The loaded task.
      on_start: Called with the first round to run (after a resume: the next one).
      on_round_end: Called with (round_num, metrics row) after every round.
      model_aggregator: Optional `tff.aggregators` factory for the model update.
      built: Optional (process, model_fn) from `build_process(config, task)`, to
        avoid building them twice.

    Returns:
      An `ExperimentResult`.

    Raises:
      ConfigError: for invalid settings or an incompatible checkpoint.
    """
    validate(config, task)
    dirs = output_dirs(config)
    for path in dirs.values():
        os.makedirs(path, exist_ok=True)
    hparams_path = os.path.join(dirs["results"], "hparams.csv")
    metrics_path = os.path.join(dirs["results"], "metrics.csv")
    _check_hparams(hparams_path, config)
    _write_csv_atomic(hparams_path, [{"name": k, "value": v} for k, v in config.hparams().items()])

    learning_process, model_fn = built or build_process(config, task, model_aggregator)
    _, fedavg_model_fn = model_fns(config, task)
    cost = (
        None  # PVT's upload changes every round: see the per-round metrics
        if config.algorithm == "pvt"
        else communication.communication_cost(learning_process)
    )
    fedavg_cost = communication.fedavg_communication_cost(fedavg_model_fn)
    with tf.Graph().as_default():
        probe = model_fn()
        report = getattr(probe, "freeze_report", None)

    state_manager = tff.program.FileProgramStateManager(
        dirs["checkpoints"], keep_total=3, keep_first=False
    )
    state = learning_process.initialize()
    try:
        loaded, version = _run_async(state_manager.load_latest(state))
    except Exception as e:  # noqa: BLE001 - any failure means an unusable checkpoint
        raise ConfigError(
            f"The checkpoint in {dirs['checkpoints']} does not fit this experiment "
            f"({type(e).__name__}: {str(e)[:200]}). Use another --experiment_name or "
            "--root_output_dir."
        ) from e
    if loaded is not None:
        state = loaded
    rows = [r for r in _read_csv(metrics_path) if int(r["round"]) <= version]
    if version and len(rows) != version:
        raise ConfigError(
            f"{metrics_path} has {len(rows)} rows for the {version} checkpointed rounds; "
            "the results directory was changed by hand. Use another --experiment_name."
        )
    _write_csv_atomic(metrics_path, rows)

    preprocessing = Preprocessing(
        batch_size=config.client_batch_size,
        epochs=config.client_epochs_per_round,
        max_elements=config.max_elements_per_client,
    )
    if config.algorithm == "fedpt":
        eval_keras_model = model_fn().keras_model  # built with the frozen layers frozen
    else:
        eval_keras_model = keras_model_fn(config, task)()
    evaluator = Evaluator(eval_keras_model, task)
    writer = tf.summary.create_file_writer(dirs["logdir"])
    client_ids = list(task.train_data.client_ids)
    model_inputs: dict[str, tf.data.Dataset] = {}  # per client, mapped once
    setting = privacy_setting(config, len(client_ids)) if config.dp else None
    delta = target_delta(config, len(client_ids))
    if on_start is not None:
        on_start(version + 1)
    for round_num in range(version + 1, config.total_rounds + 1):
        ids, shuffle_seeds = sample_clients(config, client_ids, round_num)
        data = []
        for client_id, shuffle_seed in zip(ids, shuffle_seeds):
            if client_id not in model_inputs:
                model_inputs[client_id] = task.to_model_input(
                    task.train_data.create_tf_dataset_for_client(client_id)
                )
            data.append(
                task.client_dataset(
                    model_inputs[client_id], preprocessing, shuffle_seed, mapped=True
                )
            )
        start = time.perf_counter()
        if data:
            output = learning_process.next(state, data)
            state, metrics = output.state, output.metrics
        else:  # Poisson sampling drew nobody: the model stays, the round still counts
            metrics = {}
        round_time = time.perf_counter() - start
        row = _round_row(round_num, metrics, cost, rows[-1] if rows else None, round_time, len(ids))
        if setting is not None:
            row["privacy/noise_multiplier"] = setting.noise_multiplier
            row["privacy/epsilon"] = privacy.compute_epsilon(
                setting, round_num, delta, config.accountant
            )
            row["privacy/delta"] = delta
        if round_num % config.rounds_per_eval == 0 or round_num == config.total_rounds:
            for key, value in evaluator(learning_process.get_model_weights(state)).items():
                row[f"eval/{key}"] = value
        rows.append(row)
        _write_csv_atomic(metrics_path, rows)
        with writer.as_default(step=round_num):
            for key, value in row.items():
                if key != "round" and isinstance(value, (int, float)):
                    tf.summary.scalar(key, value)
        if round_num % config.rounds_per_checkpoint == 0 or round_num == config.total_rounds:
            _run_async(state_manager.save(state, round_num))
        if on_round_end is not None:
            on_round_end(round_num, row)
        if config.worker_restart_rounds > 0 and round_num % config.worker_restart_rounds == 0:
            runtime.restart_worker()  # bounds the TFF worker's memory growth
    writer.close()
    return ExperimentResult(
        rows=rows,
        final_state=state,
        model_weights=learning_process.get_model_weights(state),
        freeze_report=report,
        cost=cost,
        fedavg_cost=fedavg_cost,
        results_dir=dirs["results"],
        resumed_from_round=version,
    )


def load_latest_state(config: ExperimentConfig, task: Task):
    """The latest checkpoint of an experiment.

    Returns:
      (process, state, round_num): the experiment's learning process, its state at the
      latest checkpoint (the initial state if there is none) and that round (0 if none).
    """
    learning_process, _ = build_process(config, task)
    manager = tff.program.FileProgramStateManager(output_dirs(config)["checkpoints"])
    state = learning_process.initialize()
    loaded, version = _run_async(manager.load_latest(state))
    return learning_process, (loaded if loaded is not None else state), version


def latest_checkpoint_round(config: ExperimentConfig) -> int:
    """The round of the experiment's latest checkpoint (0 if none)."""
    manager = tff.program.FileProgramStateManager(output_dirs(config)["checkpoints"])
    versions = _run_async(manager.get_versions()) or []
    return max(versions, default=0)


def _run_async(coroutine):
    # Not asyncio.run: it clears the thread's event loop, which breaks later callers of
    # asyncio.get_event_loop() such as tff.simulation.run_training_process.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()

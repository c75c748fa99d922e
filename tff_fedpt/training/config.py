"""The experiment configuration: every option defined once (default, help, allowed values).

`ExperimentConfig` is the single definition of the training options. The absl flags of
the binaries are generated from its fields (`scripts/training_flags.py`), so a default,
a help text or a list of allowed values is written here and nowhere else. Rules that
belong to a library module (DP, compression, an algorithm's own options) are checked by
that module; `validate` checks the rest and gathers their messages as `ConfigError`.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from typing import Optional

from tff_fedpt import freezing, privacy

OPTIMIZERS = ("sgd", "sgdm", "adam")
CLIENT_WEIGHTINGS = ("num_examples", "uniform")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field (flag)."""


def option(default, help: str, *, choices: Optional[Sequence] = None, resumable: bool = False):
    """A config field with its flag help text and allowed values.

    `resumable` fields may change between a run and its resumption (they do not change
    what the run computes, only how long it runs or where it writes).
    """
    metadata = {"help": help, "choices": tuple(choices) if choices else None}
    metadata["resumable"] = resumable
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Everything that defines a training run. Field names are the binaries' flag names."""

    task: str = option("digits", "Task name (set by the binary).")
    algorithm: str = option(
        "fedpt",
        "Training algorithm (see tff_fedpt.training.algorithms; baselines register "
        "fedavg, small_model and pvt).",
    )
    model: Optional[str] = option(None, "Model name (default: the task's default model).")
    freeze: Optional[str] = option(
        None,
        "Freeze preset name, 'none', or comma-separated layer regexes (default: the "
        "task's default preset).",
    )
    frozen_seed: int = option(0, "Seed of the frozen weights (any int64).")
    frozen_generator: str = option(
        "philox",
        "How seeded frozen tensors are drawn: philox (TensorFlow's stateless ops) or portable "
        "(a counter-based hash that TensorFlow Lite runs as builtins; docs/portable_generator.md).",
        choices=freezing.GENERATORS,
    )
    total_rounds: int = option(50, "Number of training rounds.", resumable=True)
    clients_per_round: int = option(10, "Clients per round (expected number with poisson).")
    client_epochs_per_round: int = option(1, "Local epochs per round.")
    client_batch_size: int = option(20, "Client batch size.")
    max_elements_per_client: Optional[int] = option(None, "Keep at most this many examples.")
    client_optimizer: str = option("sgd", "Client optimizer.", choices=OPTIMIZERS)
    client_learning_rate: float = option(0.1, "Client learning rate.")
    client_momentum: float = option(0.9, "Client momentum (sgdm).")
    server_optimizer: str = option("sgd", "Server optimizer.", choices=OPTIMIZERS)
    server_learning_rate: float = option(1.0, "Server learning rate.")
    server_momentum: float = option(0.9, "Server momentum (sgdm).")
    server_adam_beta1: float = option(0.9, "Server Adam beta1.")
    server_adam_beta2: float = option(0.999, "Server Adam beta2.")
    server_adam_epsilon: float = option(1e-7, "Server Adam epsilon.")
    rounds_per_eval: int = option(10, "Evaluate every this many rounds.", resumable=True)
    rounds_per_checkpoint: int = option(10, "Checkpoint every this many rounds.", resumable=True)
    root_output_dir: str = option(
        "/tmp/tff_fedpt", "Root of checkpoints/results/logdir.", resumable=True
    )
    experiment_name: Optional[str] = option(
        None, "Experiment name (default: <task>_<algorithm>_<freeze>)."
    )
    seed: int = option(0, "Seed of client sampling, shuffling and model init.")
    client_weighting: Optional[str] = option(
        None, "Default: num_examples (uniform with --dp).", choices=CLIENT_WEIGHTINGS
    )
    pvt_trainable_fraction: float = option(
        0.5, "--algorithm=pvt: fraction of variables trained per round."
    )
    worker_restart_rounds: int = option(
        50, "Restart the TFF worker every this many rounds (0: never).", resumable=True
    )
    sampling: str = option("uniform", "Client sampling per round.", choices=privacy.SAMPLINGS)
    # Differential privacy (DP-FedAvg / DP-FedPT).
    dp: bool = option(False, "Train with user-level DP (DP-FedAvg aggregation).")
    noise_multiplier: Optional[float] = option(None, "DP noise multiplier (or --target_epsilon).")
    target_epsilon: Optional[float] = option(
        None, "Calibrate the noise multiplier to this epsilon."
    )
    clip: float = option(1.0, "L2 clipping norm (initial value with --adaptive_clip).")
    adaptive_clip: bool = option(False, "Adapt the clip to --target_quantile of update norms.")
    target_quantile: float = option(0.5, "Target quantile for --adaptive_clip.")
    target_delta: Optional[float] = option(
        None, "Target delta (default 1/number of training clients)."
    )
    accountant: str = option("rdp", "Privacy accountant.", choices=privacy.ACCOUNTANTS)
    # Compression of the trainable part (FedPT only).
    upload_bits: Optional[int] = option(
        None, "FedPT: quantize client uploads to this many bits (1..16)."
    )
    broadcast_bits: Optional[int] = option(
        None, "FedPT: broadcast the trainable weights in 8 or 16 bits."
    )

    # Pretrained frozen parts and adapters (every algorithm).
    pretrained_weights: Optional[str] = option(
        None,
        "A pretrained-weights file (scripts/pretrain.py; tff_fedpt.PretrainedWeights): every "
        "layer it holds starts from its values; with FedPT, the frozen layers keep them and "
        "only their fingerprint travels.",
    )
    adapter_layers: Optional[str] = option(
        None,
        "Comma-separated layer names/regexes given low-rank adapters (Dense, Conv2D, Embedding).",
    )
    adapter_rank: int = option(4, "Rank r of the adapters.")
    adapter_alpha: Optional[float] = option(None, "Adapter scale numerator alpha (default: rank).")
    adapter_mode: str = option(
        "lora",
        "lora: A and B trained; ffa: A frozen and regenerated from the seed, only B trained.",
        choices=("lora", "ffa"),
    )

    def hparams(self) -> dict[str, str]:
        return {k: str(v) for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes) -> ExperimentConfig:
        return dataclasses.replace(self, **changes)


def fields() -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(ExperimentConfig)


def field_type(field: dataclasses.Field) -> type:
    """The field's value type (bool, int, float or str), Optional stripped."""
    hint = typing.get_type_hints(ExperimentConfig)[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


RESUMABLE_FIELDS = frozenset(f.name for f in fields() if f.metadata["resumable"])


def resolve(config: ExperimentConfig, task) -> ExperimentConfig:
    """`config` with the task's defaults filled in (model, freeze, experiment_name)."""
    model = config.model or task.default_model
    freeze = config.freeze or task.default_freeze
    name = config.experiment_name or f"{config.task}_{config.algorithm}_{freeze}"
    return config.replace(model=model, freeze=freeze, experiment_name=name)


def check_positive(config: ExperimentConfig, names: Sequence[str]) -> None:
    for name in names:
        value = getattr(config, name)
        if value is None or not (isinstance(value, (int, float)) and value > 0):
            raise ConfigError(f"--{name} must be > 0; received {value!r}.")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{name} must be finite; received {value!r}.")


def check_choices(config: ExperimentConfig) -> None:
    for field in fields():
        choices = field.metadata["choices"]
        value = getattr(config, field.name)
        if choices and value is not None and value not in choices:
            raise ConfigError(f"--{field.name}: unknown value {value!r}; valid: {list(choices)}.")

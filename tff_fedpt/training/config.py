"""The experiment configuration: the union of the option groups, each owned by its user.

A group is a frozen dataclass of `option(...)` fields (default, help, allowed values),
declared in the module that uses it: `privacy.DPOptions`, `compression.CompressionOptions`,
`runtime.RuntimeOptions`, `frozen_lib.FreezeOptions`, `frozen_lib.PretrainedOptions`,
`adapters.AdapterOptions`, and here the task, loop and optimizer options. A package outside
the library adds its own groups with `register_group` when it is imported (an algorithm's
options: `algorithms.register` registers its `options` group).
`ExperimentConfig` is composed from `groups()` (one flat field per option, the binaries'
flag names) the first time it is asked for, so everything registered by then is in it;
`config.group(privacy.DPOptions)` hands a module its own options back. The
absl flags of the binaries are generated from the fields (`fedpt_cli/training_flags.py`),
so a new option is one field in its owner's group. Rules that belong to a library module
(DP, compression, an algorithm's own options) are checked by that module; `validate`
checks the rest and gathers their messages as `ConfigError`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional

from tff_fedpt import adapters, compression, features, privacy, runtime
from tff_fedpt import frozen as frozen_lib
from tff_fedpt.options import group_of, option, value_type

if TYPE_CHECKING:  # the class is composed on first use (`__getattr__` below)
    ExperimentConfig = Any

OPTIMIZERS = ("sgd", "sgdm", "adam")
CLIENT_WEIGHTINGS = ("num_examples", "uniform")

__all__ = ["ConfigError", "ExperimentConfig", "groups", "option", "register_group"]


class ConfigError(ValueError):
    """A configuration value is invalid.

    The message names the library's fields (`total_rounds must be > 0`); `fields` lists
    the names it uses, so that a binary can write them as its flags (`flag_message`).
    """

    def __init__(self, message: str, fields: Sequence[str] = ()):
        super().__init__(message)
        self.fields = tuple(fields)

    def flag_message(self) -> str:
        """The message with each of `fields` written as a flag (`--total_rounds`).

        A name of several words (`total_rounds`) is a field wherever it stands; `dp` too.
        A one-word name that is also an English word (`model`, `seed`) is a field only
        where it starts the message or is followed by `=`, `:`, ` /` or ` must`, so
        that "unknown model 'x'" stays prose.
        """
        message = str(self)
        for name in sorted(set(self.fields), key=len, reverse=True):
            field = rf"(?<![\w-]){re.escape(name)}(?!\w)"
            if "_" not in name and name != "dp":
                field = rf"(?:^|(?<=/ )){re.escape(name)}(?!\w)|{field}(?=[=:]| /| must)"
            message = re.sub(field, "--" + name, message)
        return message


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    """Which task, algorithm and model."""

    task: str = option("digits", "Task name (set by the binary).")
    algorithm: str = option(
        "fedpt",
        "Training algorithm: fedpt, or one that an imported package registered "
        "(tff_fedpt.training.algorithms).",
    )
    model: Optional[str] = option(None, "Model name (default: the task's default model).")


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    """The training loop: rounds, client sampling and data per round, outputs."""

    total_rounds: int = option(50, "Number of training rounds.", resumable=True)
    clients_per_round: int = option(10, "Clients per round (expected number with poisson).")
    client_epochs_per_round: int = option(1, "Local epochs per round.")
    client_batch_size: int = option(20, "Client batch size.")
    max_elements_per_client: Optional[int] = option(None, "Keep at most this many examples.")
    rounds_per_eval: int = option(10, "Evaluate every this many rounds.", resumable=True)
    rounds_per_checkpoint: int = option(10, "Checkpoint every this many rounds.", resumable=True)
    root_output_dir: str = option(
        "/tmp/tff_fedpt", "Root of checkpoints/results/logdir.", resumable=True
    )
    experiment_name: Optional[str] = option(
        None, "Experiment name (default: <task>_<algorithm>_<freeze>, and _dp with --dp)."
    )
    seed: int = option(0, "Seed of client sampling, shuffling and model init.")
    sampling: str = option("uniform", "Client sampling per round.", choices=privacy.SAMPLINGS)


@dataclasses.dataclass(frozen=True)
class OptimizerOptions:
    """Client and server optimizers, and how client updates are weighted."""

    client_optimizer: str = option("sgd", "Client optimizer.", choices=OPTIMIZERS)
    client_learning_rate: float = option(0.1, "Client learning rate.")
    client_momentum: float = option(0.9, "Client momentum (sgdm).")
    server_optimizer: str = option("sgd", "Server optimizer.", choices=OPTIMIZERS)
    server_learning_rate: float = option(1.0, "Server learning rate.")
    server_momentum: float = option(0.9, "Server momentum (sgdm).")
    server_adam_beta1: float = option(0.9, "Server Adam beta1.")
    server_adam_beta2: float = option(0.999, "Server Adam beta2.")
    server_adam_epsilon: float = option(1e-7, "Server Adam epsilon.")
    client_weighting: Optional[str] = option(
        None, "Default: num_examples (uniform with --dp).", choices=CLIENT_WEIGHTINGS
    )


_LIBRARY_GROUPS: tuple[type, ...] = (
    TaskOptions,
    frozen_lib.FreezeOptions,
    LoopOptions,
    OptimizerOptions,
    runtime.RuntimeOptions,
    privacy.DPOptions,
    compression.CompressionOptions,
    frozen_lib.PretrainedOptions,
    adapters.AdapterOptions,
    features.FeatureOptions,
)
_registered: list[type] = []
_composed: Optional[type] = None


def register_group(group: type) -> type:
    """Adds an options group (a frozen dataclass of `option` fields) to `ExperimentConfig`.

    Call it at import, before the first `ExperimentConfig` is asked for (a binary imports
    its algorithms' packages first). Registering a group again does nothing.

    Raises:
      RuntimeError: once `ExperimentConfig` has been composed without this group.
    """
    if group in groups():
        return group
    if _composed is not None:
        raise RuntimeError(
            f"options group {group.__qualname__} registered after ExperimentConfig was "
            f"composed; import {group.__module__} before using ExperimentConfig."
        )
    _registered.append(group)
    return group


def groups() -> tuple[type, ...]:
    """Every options group, in flag order: the task, freeze, loop and optimizer groups,
    then the registered ones, then the library's others."""
    return (*_LIBRARY_GROUPS[:4], *_registered, *_LIBRARY_GROUPS[4:])


def __getattr__(name: str):
    # ExperimentConfig and what is derived from it are composed on first use, after the
    # packages imported so far have registered their groups.
    if name == "ExperimentConfig":
        global _composed
        if _composed is None:
            _composed = _compose(groups())
        return _composed
    if name == "RESUMABLE_FIELDS":
        return frozenset(f.name for f in fields() if f.metadata["resumable"])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _compose(groups: Sequence[type]) -> type:
    owners: dict[str, type] = {}
    specs = []
    for group in groups:
        hints = typing.get_type_hints(group)
        for f in dataclasses.fields(group):
            if f.name in owners:
                raise TypeError(
                    f"option {f.name!r} is declared by {owners[f.name].__qualname__} and "
                    f"{group.__qualname__}; an option has one owner."
                )
            owners[f.name] = group
            metadata = {**f.metadata, "group": group}
            specs.append(
                (f.name, hints[f.name], dataclasses.field(default=f.default, metadata=metadata))
            )

    def hparams(self) -> dict[str, str]:
        return {k: str(v) for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def group(self, group_class):
        """This configuration's options of `group_class` (one of `GROUPS`)."""
        if group_class not in groups:
            raise TypeError(f"{group_class!r} is not an options group of ExperimentConfig.")
        return group_of(self, group_class)

    cls = dataclasses.make_dataclass(
        "ExperimentConfig",
        specs,
        frozen=True,
        namespace={"hparams": hparams, "replace": replace, "group": group},
    )
    cls.__module__ = __name__  # for pickling and reprs (make_dataclass's `module=`: 3.12)
    cls.__doc__ = (
        "Everything that defines a training run: the fields of every group in `GROUPS`, "
        "named as the binaries' flags."
    )
    return cls


def fields() -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(__getattr__("ExperimentConfig"))


def field_type(field: dataclasses.Field) -> type:
    """The field's value type (bool, int, float or str), Optional stripped."""
    return value_type(field.type)  # a type, not a string: _compose resolved the hints


def resolve(config: ExperimentConfig, task) -> ExperimentConfig:
    """`config` with the task's defaults filled in (model, freeze, experiment_name)."""
    model = config.model or task.default_model
    freeze = config.freeze or task.default_freeze
    # A DP run's default name says so: it would otherwise share a non-DP run's outputs.
    dp = "_dp" if config.dp else ""
    name = config.experiment_name or f"{config.task}_{config.algorithm}_{freeze}{dp}"
    return config.replace(model=model, freeze=freeze, experiment_name=name)


def check_positive(config: ExperimentConfig, names: Sequence[str]) -> None:
    for name in names:
        value = getattr(config, name)
        if value is None or not (isinstance(value, (int, float)) and value > 0):
            raise ConfigError(f"{name} must be > 0; received {value!r}.", [name])
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name} must be finite; received {value!r}.", [name])


def group_error(error: ValueError, *groups: type, also: Sequence[str] = ()) -> ConfigError:
    """`error` (raised by an options group's own check) as a ConfigError naming the fields
    of `groups` and `also`."""
    if isinstance(error, ConfigError):
        return error
    names = [f.name for g in groups for f in dataclasses.fields(g)]
    return ConfigError(str(error), [*names, *also])


def check_choices(config: ExperimentConfig) -> None:
    for field in fields():
        choices = field.metadata["choices"]
        value = getattr(config, field.name)
        if choices and value is not None and value not in choices:
            raise ConfigError(
                f"{field.name}: unknown value {value!r}; valid: {list(choices)}.", [field.name]
            )

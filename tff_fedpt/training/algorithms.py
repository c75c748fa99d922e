"""The algorithm registry: each training algorithm is one object, registered by name.

An algorithm knows which Keras model it trains, how to wrap it for TFF, how to build its
learning process from the parts the experiment builds (optimizers, aggregator,
weighting), its communication cost per round and the Keras model to evaluate. The
training loop and the binaries only ever talk to this interface.

FedPT is registered here. An algorithm defined elsewhere is registered, with its options
group, by the package that defines it (`baselines.register()`); the library never imports
its dependents (the binaries register the algorithms they offer).

Adding an algorithm: subclass `Algorithm` in one module, overriding `build_process`
(and whatever else differs from the defaults), and call `register(MyAlgorithm())` at
its bottom; see docs/training.md, "Adding an algorithm".
"""

from __future__ import annotations

import dataclasses
import functools
import os
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt import adapters, communication, features, frozen, keras_models, process
from tff_fedpt.tasks import Task
from tff_fedpt.training import config as config_lib
from tff_fedpt.training.config import ConfigError

if TYPE_CHECKING:
    from tff_fedpt.training.config import ExperimentConfig


@dataclasses.dataclass(frozen=True)
class ProcessParts:
    """What the experiment builds once for every algorithm."""

    client_optimizer: tff.learning.optimizers.Optimizer
    server_optimizer: tff.learning.optimizers.Optimizer
    model_aggregator: Optional[tff.aggregators.AggregationFactory]
    client_weighting: Optional[tff.learning.ClientWeighting]


class Algorithm:
    """One training algorithm. Subclasses set `name` and override `build_process`.

    Attributes:
      name: The registry name (the value of --algorithm).
      uses_freeze: Whether --freeze means something to it (FedPT, small model).
      compressible: Whether --upload_bits / --broadcast_bits apply.
      feature_trainable: Whether --train_on_features applies (its `client_input`).
      options: Its own options group (a frozen dataclass of `option` fields), added to
        `ExperimentConfig` when the algorithm is registered; None: none.
    """

    name: str = ""
    uses_freeze: bool = False
    compressible: bool = False
    feature_trainable: bool = False
    options: Optional[type] = None

    def check(self, config: ExperimentConfig, task: Task) -> None:
        """Raises ConfigError for options this algorithm cannot run with."""
        if self.uses_freeze:
            freeze_spec_of(config, task)

    def keras_model_fn(self, config: ExperimentConfig, task: Task) -> Callable[[], tf.keras.Model]:
        """The Keras model this algorithm trains (before any freezing), with the adapters
        of --adapter_layers."""
        return adapted_keras_model_fn(config, lambda: task.models[config.model](config.seed))

    def model_fn(
        self, config: ExperimentConfig, task: Task, keras_model_fn: Callable[[], tf.keras.Model]
    ) -> Callable[[], tff.learning.models.VariableModel]:
        """The TFF model_fn of `keras_model_fn`."""
        return tff_model_fn(keras_model_fn, task)

    def build_process(
        self, model_fn, config: ExperimentConfig, parts: ProcessParts
    ) -> tff.learning.templates.LearningProcess:
        raise NotImplementedError

    def communication_cost(
        self, learning_process: tff.learning.templates.LearningProcess
    ) -> Optional[communication.CommunicationCost]:
        """Bytes per client per round (None when it changes every round)."""
        return communication.communication_cost(learning_process)

    def eval_keras_model(self, model_fn, keras_model_fn) -> tf.keras.Model:
        """A Keras model with the same trainable / non-trainable split as the weights."""
        return keras_model_fn()

    def client_input(self, model_fn, config: ExperimentConfig) -> Optional[features.FeatureMap]:
        """What the client datasets (and the test set) pass through once before training:
        the frozen prefix's `FeatureMap` when the process trains on features, else None."""
        return None


_REGISTRY: dict[str, Algorithm] = {}


def register(algorithm: Algorithm) -> Algorithm:
    """Adds `algorithm` under `algorithm.name` (replacing one of the same name), and its
    options group to `ExperimentConfig` (see `config.register_group`)."""
    if not algorithm.name:
        raise ValueError(f"{type(algorithm).__name__} has no name.")
    if algorithm.options is not None:
        config_lib.register_group(algorithm.options)
    _REGISTRY[algorithm.name] = algorithm
    return algorithm


def names() -> tuple[str, ...]:
    """Every registered algorithm, in registration order (FedPT first)."""
    return tuple(_REGISTRY)


def get(name: str) -> Algorithm:
    if name not in _REGISTRY:
        raise ConfigError(
            f"algorithm: unknown algorithm {name!r}; valid: {list(names())} (an algorithm "
            "outside tff_fedpt is registered by the package that defines it).",
            ["algorithm"],
        )
    return _REGISTRY[name]


def tff_model_fn(keras_model_fn, task: Task, freeze: Optional[frozen.FreezeSpec] = None):
    """A TFF model_fn over `keras_model_fn` with the task's loss and metrics."""
    input_spec = task.input_spec  # eagerly, once: the task's input map may hold tables

    def model_fn():
        kwargs = dict(loss=task.loss_fn(), input_spec=input_spec, metrics=task.metrics_fn())
        if freeze is None:
            return tff.learning.models.from_keras_model(keras_model_fn(), **kwargs)
        return keras_models.from_keras_model(keras_model_fn(), freeze=freeze, **kwargs)

    return model_fn


# (id(task), model name) -> (the task, weakly; what TFF's FedAvg sends for that model):
# the same for every run of a grid (a Task holds mappings: not hashable).
_FEDAVG_COSTS: dict = {}


def fedavg_cost(task: Task, model: str) -> communication.CommunicationCost:
    """What TFF's FedAvg sends per client per round for `task.models[model]`: computed
    once per task and model (shapes do not depend on the seed)."""
    held = _FEDAVG_COSTS.get((id(task), model))
    if held is None or held[0]() is not task:
        model_fn = tff_model_fn(lambda: task.models[model](0), task)
        held = (weakref.ref(task), communication.fedavg_communication_cost(model_fn))
        for key in [k for k, (ref, _) in _FEDAVG_COSTS.items() if ref() is None]:
            del _FEDAVG_COSTS[key]  # tasks gone: their ids may be reused
        _FEDAVG_COSTS[(id(task), model)] = held
    return held[1]


def adapted_keras_model_fn(
    config: ExperimentConfig, keras_model_fn: Callable[[], tf.keras.Model]
) -> Callable[[], tf.keras.Model]:
    """`keras_model_fn` with the adapters of --adapter_layers (itself when unset)."""
    if not config.adapter_layers:
        return keras_model_fn
    patterns = [p.strip() for p in config.adapter_layers.split(",")]

    def adapted():
        return adapters.add_adapters(
            keras_model_fn(),
            patterns,
            rank=config.adapter_rank,
            alpha=config.adapter_alpha,
            mode=config.adapter_mode,
        )

    return adapted


@functools.lru_cache(maxsize=4)
def _load_pretrained(path: str, stat: tuple) -> frozen.PretrainedWeights:
    del stat  # part of the key: a file replaced at the same path is read again
    return frozen.PretrainedWeights.load(path)


def _file_stat(path: str) -> tuple:
    try:
        s = os.stat(path)
    except OSError:
        return ()  # PretrainedWeights.load names the missing file
    return (s.st_ino, s.st_size, s.st_mtime_ns)


def pretrained_weights(config: ExperimentConfig) -> Optional[frozen.PretrainedWeights]:
    """The weights of --pretrained_weights (read once per path), or None.

    Raises:
      ConfigError: naming the flag, for a file that is missing or not such a file.
    """
    if not config.pretrained_weights:
        return None
    try:
        return _load_pretrained(config.pretrained_weights, _file_stat(config.pretrained_weights))
    except ValueError as e:
        raise ConfigError(f"pretrained_weights: {e}", ["pretrained_weights"]) from None


def freeze_spec_of(config: ExperimentConfig, task: Task) -> frozen.FreezeSpec:
    """The FreezeSpec of `config.freeze` (a preset name, or comma-separated patterns),
    with --pretrained_weights as the frozen layers' values and --frozen_generator's draws."""
    presets = task.freeze_presets.get(config.model, {})
    held = pretrained_weights(config)
    if config.freeze in presets or config.freeze == frozen.NO_FREEZE:
        spec = frozen.parse_freeze(config.freeze, presets)
        return dataclasses.replace(spec, pretrained=held, generator=config.frozen_generator)
    try:
        spec = frozen.parse_freeze(config.freeze, presets)
        frozen.resolve_freeze(task.models[config.model](config.seed), spec)
    except (ValueError, TypeError) as e:
        raise ConfigError(
            f"freeze={config.freeze!r} is neither a preset of model {config.model} "
            f"({sorted([*presets, 'none'])}) nor a valid layer pattern: {e}",
            ["freeze"],
        ) from e
    return dataclasses.replace(spec, pretrained=held, generator=config.frozen_generator)


# model_fn -> {train_on_features mode: whether it trains on features}
_FEATURES_WANTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class FedPT(Algorithm):
    """FedPT: the frozen part is regenerated from a seed and never travels."""

    name = "fedpt"
    uses_freeze = True
    compressible = True
    feature_trainable = True

    def check(self, config, task):
        super().check(config, task)
        if config.train_on_features == "on":
            self._on_features(
                self.model_fn(config, task, self.keras_model_fn(config, task)), config
            )

    def model_fn(self, config, task, keras_model_fn):
        return tff_model_fn(keras_model_fn, task, freeze=freeze_spec_of(config, task))

    def build_process(self, model_fn, config, parts):
        return process.build_fedpt_process(
            model_fn,
            parts.client_optimizer,
            parts.server_optimizer,
            frozen_seed=config.frozen_seed,
            model_aggregator=parts.model_aggregator,
            client_weighting=parts.client_weighting,
            broadcast_bits=config.broadcast_bits,
            train_on_features=self._on_features(model_fn, config),
        )

    def client_input(self, model_fn, config):
        if not self._on_features(model_fn, config):
            return None
        return features.FeatureMap(
            model_fn, config.frozen_seed, memory_bytes=config.features_memory_mb << 20
        )

    @staticmethod
    def _on_features(model_fn, config) -> bool:
        # Asked by build_process and client_input of one model_fn: its model built once.
        known = _FEATURES_WANTED.setdefault(model_fn, {})
        if config.train_on_features not in known:
            with tf.Graph().as_default():
                try:
                    wanted = features.wanted(config.train_on_features, model_fn())
                except features.NoPrefixError as e:
                    raise ConfigError(str(e), ["train_on_features"]) from None
            known[config.train_on_features] = wanted
        return known[config.train_on_features]

    def eval_keras_model(self, model_fn, keras_model_fn):
        return model_fn().keras_model  # built with the frozen layers frozen


register(FedPT())

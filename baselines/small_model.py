"""FedAvg on a narrower, fully trainable model: the "just use a smaller model" baseline.

The width of the model's main layer is chosen so that the narrow model's parameter
count is as close as possible to FedPT's trainable count, so both send about the same
number of values per round.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from baselines import fedavg
from tff_fedpt import frozen
from tff_fedpt.training import algorithms
from tff_fedpt.training.config import ConfigError


def count_params(build: Callable[[int], tf.keras.Model], width: int) -> int:
    with tf.Graph().as_default():
        return int(build(width).count_params())


def matched_width(
    build: Callable[[int], tf.keras.Model], target_params: int, max_width: int = 1 << 16
) -> int:
    """The width >= 1 whose model has the parameter count closest to `target_params`.

    Args:
      build: width -> built Keras model; its parameter count must grow with width.
      target_params: The parameter count to match (FedPT's trainable count).
      max_width: Upper end of the search.

    Raises:
      ValueError: for a non-positive target.
    """
    if target_params < 1:
        raise ValueError(f"target_params must be >= 1; received {target_params}.")
    lo, hi = 1, max_width
    while lo < hi:  # smallest width with params >= target
        mid = (lo + hi) // 2
        if count_params(build, mid) >= target_params:
            hi = mid
        else:
            lo = mid + 1
    candidates = {lo, max(1, lo - 1)}
    return min(candidates, key=lambda w: (abs(count_params(build, w) - target_params), w))


def width_for(config, task) -> int:
    """Width of the narrow model matching FedPT's trainable count for `config.freeze`."""
    report = frozen.resolve_freeze(
        task.models[config.model](config.seed), algorithms.freeze_spec_of(config, task)
    )
    narrow = task.narrow_models[config.model]
    return matched_width(lambda w: narrow(config.seed, w), report.trainable_params)


class SmallModel(fedavg.FedAvg):
    """FedAvg on a narrower model with FedPT's trainable count (for the same --freeze)."""

    name = "small_model"
    uses_freeze = True

    def check(self, config, task):
        super().check(config, task)
        if config.model not in task.narrow_models:
            raise ConfigError(
                f"algorithm=small_model has no narrow variant of model {config.model} for "
                f"task {task.name}; models with one: {sorted(task.narrow_models)}.",
                ["algorithm"],
            )

    def keras_model_fn(self, config, task):
        width = width_for(config, task)
        return lambda: task.narrow_models[config.model](config.seed, width)

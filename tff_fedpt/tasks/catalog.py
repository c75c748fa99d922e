"""Every task's models without their data: builders, input specs and freeze presets.

For what needs a task's model but not its data (the device export, byte counts in
benchmarks), including tasks whose data cannot be downloaded here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import tensorflow as tf

from tff_fedpt import freezing
from tff_fedpt.tasks import digits, emnist, fashion_mnist, stackoverflow


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    build: Callable[[int], tf.keras.Model]  # seed -> built Keras model
    input_spec: tuple
    presets: Mapping[str, freezing.FreezeSpec]


def _images(shape):
    return (tf.TensorSpec([None, *shape], tf.float32), tf.TensorSpec([None], tf.int32))


_SO_VOCAB = 10000 + 4  # vocabulary 10,000 + pad, OOV, bos, eos
_SO_SPEC = (
    tf.TensorSpec([None, stackoverflow.SEQUENCE_LENGTH], tf.int32),
    tf.TensorSpec([None, stackoverflow.SEQUENCE_LENGTH], tf.int32),
)

MODELS: dict[str, ModelSpec] = {
    "digits/cnn": ModelSpec(digits.cnn, _images((8, 8, 1)), digits.PRESETS),
    "emnist/cnn": ModelSpec(
        lambda seed: emnist.cnn(seed, 62), _images((28, 28, 1)), emnist.PRESETS["cnn"]
    ),
    "emnist/mlp": ModelSpec(
        lambda seed: emnist.mlp(seed, 62), _images((28, 28, 1)), emnist.PRESETS["mlp"]
    ),
    "fashion_mnist/cnn": ModelSpec(
        fashion_mnist.cnn, _images((28, 28, 1)), fashion_mnist.PRESETS["cnn"]
    ),
    "fashion_mnist/mlp": ModelSpec(
        fashion_mnist.mlp, _images((28, 28, 1)), fashion_mnist.PRESETS["mlp"]
    ),
    "stackoverflow/lstm": ModelSpec(
        lambda seed: stackoverflow.lstm(seed, _SO_VOCAB), _SO_SPEC, stackoverflow.PRESETS["lstm"]
    ),
    "stackoverflow/transformer": ModelSpec(
        lambda seed: stackoverflow.transformer(seed, _SO_VOCAB),
        _SO_SPEC,
        stackoverflow.PRESETS["transformer"],
    ),
}


def model_spec(task: str, model: str) -> ModelSpec:
    key = f"{task}/{model}"
    if key not in MODELS:
        raise ValueError(f"--task/--model: unknown {key!r}; valid: {sorted(MODELS)}.")
    return MODELS[key]


def freeze_spec(spec: ModelSpec, freeze: str) -> freezing.FreezeSpec:
    """A preset name, 'none', or comma-separated layer patterns (`freezing.parse_freeze`)."""
    return freezing.parse_freeze(freeze, spec.presets)

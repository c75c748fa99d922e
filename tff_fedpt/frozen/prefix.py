"""The frozen prefix of a model: the longest run of its first layers whose output is a
deterministic function of the input, so that it could be computed once per example
instead of in every epoch of every round (`tff_fedpt.features` trains on it).

A layer belongs to the prefix when it trains nothing (every weight frozen, or none),
draws nothing at training time (no dropout, noise or random augmentation), keeps no
state across batches, passes no Keras mask on (features would lose it), and reads only
the previous layer's output, which nothing else reads. The prefix ends at the first
layer that breaks one of these, and is worth splitting only if it holds a frozen layer with weights.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf

from tff_fedpt.frozen.resolution import resolve_freeze
from tff_fedpt.frozen.spec import FreezeLike

# Layers that draw at training time (Keras' own, by class name); "Random*" preprocessing
# layers (RandomFlip, RandomCrop, ...) too.
_RANDOM = frozenset(
    {
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
    }
)


@dataclasses.dataclass(frozen=True)
class PrefixSplit:
    """A model's frozen prefix, as `frozen_prefix` finds it.

    Attributes:
      layers: The prefix's layers, in order.
      feature_shape: The prefix's output shape for one example (no batch dimension).
      feature_dtype: Its dtype.
      input_bytes_per_example: Bytes of one example's input.
      bytes_per_example: Bytes of one example's features (what storing them costs).
      stopped_at: Why the prefix ends where it does.
    """

    layers: tuple[str, ...]
    feature_shape: tuple[int, ...]
    feature_dtype: str
    input_bytes_per_example: int
    bytes_per_example: int
    stopped_at: str

    def format_table(self) -> str:
        """A few lines for binaries to print, like the freeze report."""
        ratio = self.bytes_per_example / max(self.input_bytes_per_example, 1)
        return "\n".join(
            [
                f"frozen prefix: {', '.join(self.layers)}",
                f"features per example: {self.feature_shape} {self.feature_dtype}, "
                f"{self.bytes_per_example:,} bytes ({ratio:.2f}x the input's "
                f"{self.input_bytes_per_example:,})",
                f"ends: {self.stopped_at}",
            ]
        )


def _bytes(shape, dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * tf.as_dtype(dtype).size


def _why_not(layer, frozen_names: set[str], previous) -> Optional[str]:
    """Why `layer` cannot join the prefix (None: it can)."""
    kind = type(layer).__name__
    if layer.weights and layer.name not in frozen_names:
        return f"layer {layer.name!r} ({kind}) trains"
    if kind in _RANDOM or kind.startswith("Random"):
        return f"layer {layer.name!r} ({kind}) draws at training time"
    if getattr(layer, "stateful", False):
        return f"layer {layer.name!r} ({kind}) keeps state across batches"
    if getattr(layer.output, "_keras_mask", None) is not None:
        return f"layer {layer.name!r} ({kind}) passes a Keras mask on"
    if len(layer.inbound_nodes) != 1 or layer.input is not previous:
        return f"layer {layer.name!r} ({kind}) reads more than the previous layer's output"
    return None


def frozen_prefix(
    keras_model: tf.keras.Model, freeze: FreezeLike = None, *, frozen_names=None
) -> Optional[PrefixSplit]:
    """The frozen prefix of `keras_model` under `freeze` (see the module docstring), or
    None when the model has none worth splitting (its first layer trains, or the run of
    deterministic first layers holds no frozen weight).

    Args:
      keras_model: A built functional or Sequential model with one input and one output.
      freeze: What `tff_fedpt.from_keras_model` would freeze.
      frozen_names: The frozen layers' names instead of `freeze` (a model already
        resolved: `PartiallyTrainableModel.freeze_report.frozen_layer_names`).
    """
    layers, stopped_at = _walk(keras_model, _frozen_names(keras_model, freeze, frozen_names))
    if not any(layer.weights for layer in layers):
        return None
    x = keras_model.inputs[0]
    output = layers[-1].output
    return PrefixSplit(
        layers=tuple(layer.name for layer in layers),
        feature_shape=tuple(output.shape[1:]),
        feature_dtype=output.dtype.name,
        input_bytes_per_example=_bytes(x.shape[1:], x.dtype),
        bytes_per_example=_bytes(output.shape[1:], output.dtype),
        stopped_at=stopped_at,
    )


def prefix_end(keras_model: tf.keras.Model, freeze: FreezeLike = None, *, frozen_names=None) -> str:
    """Why the run of frozen, deterministic first layers ends where it does."""
    return _walk(keras_model, _frozen_names(keras_model, freeze, frozen_names))[1]


def _frozen_names(keras_model, freeze, frozen_names) -> set[str]:
    if frozen_names is not None:
        return set(frozen_names)
    return set(resolve_freeze(keras_model, freeze).frozen_layer_names)


def _walk(keras_model, frozen_names: set[str]) -> tuple[list, str]:
    """(the prefix's layers, why it ends there)."""
    if len(keras_model.inputs) != 1 or len(keras_model.outputs) != 1:
        return [], "the model has more than one input or output"
    previous = keras_model.inputs[0]
    layers, stopped_at = [], "the model's output"
    body = [
        layer for layer in keras_model.layers if not isinstance(layer, tf.keras.layers.InputLayer)
    ]
    for layer in body[:-1]:  # the output layer always stays in the remainder
        reason = _why_not(layer, frozen_names, previous)
        if reason is None and len(layer.outbound_nodes) != 1:
            reason = f"the output of layer {layer.name!r} is read by more than one layer"
        if reason is not None:
            stopped_at = reason
            break
        layers.append(layer)
        previous = layer.output
    return layers, stopped_at


def split_model(
    keras_model: tf.keras.Model, split: PrefixSplit
) -> tuple[tf.keras.Model, tf.keras.Model]:
    """(prefix, remainder): two Keras models over the same layer objects (so the same
    weights), `remainder(prefix(x))` computing `keras_model(x)`.

    Raises:
      ValueError: when the layers after the prefix are not a chain either.
    """
    first_rest = keras_model.get_layer(index=len(split.layers) + _inputs(keras_model))
    prefix = tf.keras.Model(
        keras_model.inputs, keras_model.get_layer(split.layers[-1]).output, name="frozen_prefix"
    )
    features = tf.keras.Input(split.feature_shape, dtype=split.feature_dtype, name="features")
    previous, x = prefix.output, features
    rest = keras_model.layers[keras_model.layers.index(first_rest) :]
    for layer in rest:
        if len(layer.inbound_nodes) != 1 or layer.input is not previous:
            raise ValueError(
                f"split_model: layer {layer.name!r} after the prefix reads more than the "
                "previous layer's output; only chains of layers are split."
            )
        previous, x = layer.output, layer(x)
    return prefix, tf.keras.Model(features, x, name="remainder")


def _inputs(keras_model) -> int:
    return sum(isinstance(layer, tf.keras.layers.InputLayer) for layer in keras_model.layers)

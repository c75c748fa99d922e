"""Seeded frozen tensors: each drawn from the frozen seed with stateless ops that follow
its layer's own Keras initializer (`FrozenInitializer`, `generate_frozen_weights`), by
TensorFlow's Philox or the portable generator (`tff_fedpt.portable`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from fedpt_device import generator
from tff_fedpt import portable
from tff_fedpt.frozen.source import short_name

# The Keras initializer classes a seed regenerates (after the aliases below).
_REGENERATED = (
    "Zeros",
    "Ones",
    "Constant",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "VarianceScaling",
    "Orthogonal",
    "Identity",
)


@dataclasses.dataclass(frozen=True)
class FrozenInitializer:
    """How one frozen variable is drawn from the seed: a Keras initializer config.

    Attributes:
      name: The variable's name (for messages and reports).
      shape: The variable's shape.
      dtype: The variable's dtype name.
      class_name: The Keras initializer class (after aliases are resolved).
      config: The initializer's config (its `get_config()`), seed ignored.
      forget_bias_units: For an LSTM bias with `unit_forget_bias=True`, the number
        of units; the forget-gate slice is then ones, as Keras builds it.
      generator: "philox" (TensorFlow's stateless ops) or "portable" (`tff_fedpt.portable`).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    class_name: str
    config: tuple[tuple[str, Any], ...]
    forget_bias_units: int | None = None
    generator: str = "philox"

    # The frozen-source interface (`source.FrozenSource`), which
    # `pretrained.PretrainedValue` implements too.
    pretrained_value = None  # a seeded value is drawn, not held

    def for_device(self) -> FrozenInitializer:
        """The source a device file uses: this one (the device draws it from the seed)."""
        return self

    @property
    def constant_fill(self) -> float | None:
        """The value every element has (Zeros, Ones, Constant), else None: a device file
        fills such a tensor at run time instead of storing it."""
        if self.forget_bias_units is not None:
            return None
        return {"Zeros": 0.0, "Ones": 1.0, "Constant": dict(self.config).get("value")}.get(
            self.class_name
        )

    @property
    def builtins_only(self) -> bool:
        """Whether TensorFlow Lite builtins draw it: the portable generator does, and a
        constant or identity needs no random op; TensorFlow's Philox ops are no builtins."""
        return self.generator == "portable" or self.class_name in (
            "Zeros",
            "Ones",
            "Constant",
            "Identity",
        )

    def generate(self, seed: tf.Tensor) -> tf.Tensor:
        """Draws the value with stateless ops; `seed` is an int64 tensor of shape [2]:
        the frozen seed and this tensor's index in model order."""
        if self.generator == "portable":
            return self._generate_portable(seed)
        if self.forget_bias_units is not None:
            units = self.forget_bias_units
            part = dataclasses.replace(self, forget_bias_units=None, shape=(units,))
            rest = dataclasses.replace(self, forget_bias_units=None, shape=(2 * units,))
            sub = tf.random.experimental.stateless_split(seed, 2)
            return tf.concat(
                [
                    part.generate(sub[0]),
                    tf.ones((units,), dtype=self.dtype),
                    rest.generate(sub[1]),
                ],
                axis=0,
            )
        cfg = dict(self.config)
        shape = self.shape
        dtype = tf.as_dtype(self.dtype)
        cls = self.class_name
        if cls == "Zeros":
            return tf.zeros(shape, dtype)
        if cls == "Ones":
            return tf.ones(shape, dtype)
        if cls == "Constant":
            return tf.fill(shape, tf.cast(cfg.get("value", 0), dtype))
        if cls == "RandomNormal":
            return tf.random.stateless_normal(shape, seed, cfg["mean"], cfg["stddev"], dtype=dtype)
        if cls == "TruncatedNormal":
            return tf.random.stateless_truncated_normal(
                shape, seed, cfg["mean"], cfg["stddev"], dtype=dtype
            )
        if cls == "RandomUniform":
            return tf.random.stateless_uniform(
                shape, seed, cfg["minval"], cfg["maxval"], dtype=dtype
            )
        if cls == "VarianceScaling":  # Keras' fans and scale, shared with the portable one
            kind, low, high = generator.variance_scaling(
                cfg["scale"], cfg["mode"], cfg["distribution"], shape
            )
            if kind == "truncated_normal":
                return tf.random.stateless_truncated_normal(shape, seed, 0.0, high, dtype=dtype)
            if kind == "normal":
                return tf.random.stateless_normal(shape, seed, 0.0, high, dtype=dtype)
            return tf.random.stateless_uniform(shape, seed, low, high, dtype=dtype)
        if cls == "Orthogonal":
            gain = float(cfg.get("gain", 1.0))
            if len(shape) < 2:
                raise ValueError(
                    f"Orthogonal initializer needs a shape of rank >= 2; variable "
                    f"{self.name} has shape {shape}."
                )
            num_rows = int(np.prod(shape[:-1]))
            num_cols = shape[-1]
            flat_shape = (max(num_cols, num_rows), min(num_cols, num_rows))
            a = tf.random.stateless_normal(flat_shape, seed, dtype=dtype)
            q, r = tf.linalg.qr(a, full_matrices=False)
            q *= tf.sign(tf.linalg.diag_part(r))
            if num_rows < num_cols:
                q = tf.linalg.matrix_transpose(q)
            return gain * tf.reshape(q, shape)
        if cls == "Identity":
            if len(shape) != 2:
                raise ValueError(
                    f"Identity initializer needs a 2-D shape; variable {self.name} has "
                    f"shape {shape}."
                )
            return float(cfg.get("gain", 1.0)) * tf.eye(*shape, dtype=dtype)
        raise AssertionError(f"unreachable: {cls}")

    def _generate_portable(self, seed: tf.Tensor) -> tf.Tensor:
        value = portable.generate(self.class_name, dict(self.config), self.shape, seed[0], seed[1])
        value = tf.cast(value, self.dtype)
        if self.forget_bias_units is not None:  # the forget gate's slice is ones
            units = self.forget_bias_units
            ones = tf.ones((units,), value.dtype)
            value = tf.concat([value[:units], ones, value[2 * units :]], axis=0)
        return value


_VARIANCE_SCALING_ALIASES = {
    "GlorotUniform": ("fan_avg", "uniform"),
    "GlorotNormal": ("fan_avg", "truncated_normal"),
    "HeNormal": ("fan_in", "truncated_normal"),
    "HeUniform": ("fan_in", "uniform"),
    "LecunNormal": ("fan_in", "truncated_normal"),
    "LecunUniform": ("fan_in", "uniform"),
}
_SCALES = {"HeNormal": 2.0, "HeUniform": 2.0}


def _supported() -> str:
    """The supported initializers, VarianceScaling's aliases named with it."""
    aliases = ", ".join(_VARIANCE_SCALING_ALIASES)
    return ", ".join(
        f"VarianceScaling ({aliases})" if n == "VarianceScaling" else n for n in _REGENERATED
    )


def _initializer_record(initializer, variable: tf.Variable) -> FrozenInitializer:
    keras_init = tf.keras.initializers.get(initializer)
    cls = type(keras_init)
    # Only Keras' own classes: a subclass (even of a supported class) may draw other
    # values, which the seed could not reproduce.
    builtin = cls.__module__.split(".")[0] in ("keras", "tensorflow", "tf_keras")
    names = [cls.__name__] if builtin else []
    config = dict(keras_init.get_config()) if builtin else {}  # Keras' own have one
    config.pop("seed", None)
    class_name = None
    for name in names:
        if name in _VARIANCE_SCALING_ALIASES:
            mode, distribution = _VARIANCE_SCALING_ALIASES[name]
            config = {
                "scale": _SCALES.get(name, 1.0),
                "mode": mode,
                "distribution": distribution,
            }
            class_name = "VarianceScaling"
            break
        if name in _REGENERATED:
            class_name = name
            break
    if class_name is None:
        raise ValueError(
            f"Frozen variable {variable.name} uses initializer {cls.__module__}."
            f"{cls.__name__}, which tff_fedpt cannot regenerate from a seed. Supported "
            "(Keras' own classes, not subclasses): "
            f"{_supported()}. Use one of them for frozen layers."
        )
    return FrozenInitializer(
        name=variable.name,
        shape=tuple(variable.shape.as_list()),
        dtype=variable.dtype.name,
        class_name=class_name,
        config=tuple(sorted(config.items())),
    )


_ATTRIBUTE_ALIASES = {
    "recurrent_kernel": "recurrent_initializer",
    "embeddings": "embeddings_initializer",
}


def _owning_layer(layer, variable):
    """The innermost sub-layer (or RNN cell) that owns `variable`."""
    owner = layer
    for sub in layer._flatten_layers(include_self=False, recursive=True):  # noqa: SLF001
        if any(v is variable for v in sub._trainable_weights + sub._non_trainable_weights):  # noqa: SLF001
            owner = sub
    return owner


def frozen_initializer_for(layer, variable: tf.Variable) -> FrozenInitializer:
    """Finds how `layer` initializes `variable` and records it for seeded regeneration.

    Raises:
      ValueError: if the initializer cannot be found or regenerated.
    """
    owner = _owning_layer(layer, variable)
    attr = short_name(variable)
    candidates = [_ATTRIBUTE_ALIASES.get(attr, f"{attr}_initializer"), f"{attr}_initializer"]
    found = [getattr(owner, c) for c in candidates if getattr(owner, c, None) is not None]
    if not found:
        raise ValueError(
            f"Cannot find the initializer of frozen variable {variable.name} in layer "
            f"{layer.name} ({type(owner).__name__} has no attribute {candidates[0]!r}). "
            "Freeze only layers built from standard Keras layers."
        )
    record = _initializer_record(found[0], variable)
    if (
        attr == "bias"
        and getattr(owner, "unit_forget_bias", False)
        and isinstance(getattr(owner, "units", None), int)
        and record.shape == (4 * owner.units,)
    ):
        record = dataclasses.replace(record, forget_bias_units=int(owner.units))
    return record


def generate_frozen_weights(
    initializers: Sequence[FrozenInitializer], frozen_seed, indices: Sequence[int] | None = None
) -> list[tf.Tensor]:
    """Draws every frozen variable from `frozen_seed` with stateless random ops.

    Variable i uses the seed pair (frozen_seed, i), so values do not depend on the
    graph, the device placement or the order in which variables were created; the same
    seed gives bit-identical values eagerly, inside a `tf.function` and inside TFF
    computations on clients and server.

    Args:
      initializers: One `FrozenInitializer` per frozen variable, in model order.
      frozen_seed: An integer (Python or scalar int64 tensor).
      indices: Each initializer's index in the whole model's frozen variables (default
        0, 1, ...): a model's part draws its tensors as the whole model does.

    Returns:
      A list of tensors, one per entry of `initializers`.
    """
    seed = tf.cast(frozen_seed, tf.int64)
    indices = range(len(initializers)) if indices is None else indices
    return [
        init.generate(tf.stack([seed, tf.constant(i, tf.int64)]))
        for i, init in zip(indices, initializers)
    ]

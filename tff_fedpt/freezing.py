"""Freeze specifications and seeded generation of frozen weights.

A FedPT model has a fixed part ("frozen") that is drawn once from an integer seed
and never trained or communicated, and a trainable rest. This module decides which
layers are frozen (`FreezeSpec`, `resolve_freeze`) and regenerates the frozen
values from the seed with stateless random ops that follow each layer's own Keras
initializer (`FrozenInitializer`, `generate_frozen_weights`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np
import tensorflow as tf

from fedpt_device import generator
from tff_fedpt import portable
from tff_fedpt.options import option

NON_TRAINABLE_STATE_OPTIONS = ("error", "keep_initial")
GENERATORS = ("philox", "portable")


@dataclasses.dataclass(frozen=True)
class FreezeSpec:
    """Which layers of a Keras model are frozen at initialization.

    The criteria are combined: a layer is frozen if any given criterion selects it.
    Only layers that own parameters count (Flatten, Dropout, pooling are ignored).
    Layers are the model's top-level layers (`keras_model.layers`).

    Attributes:
      layers: Layer names or regular expressions (full match) to freeze.
      layer_types: Layer classes, or class names such as "Conv2D", to freeze.
      all_but_last: Freeze every parameter-owning layer except the last k.
      trainable_fraction: Target fraction of parameters left trainable, in (0, 1].
        Layers are frozen largest first (ties: the earlier layer first), skipping any
        layer whose freezing would push the trainable fraction below the target, so
        the result is the closest greedy fraction at or above the target.
      pretrained: A `tff_fedpt.PretrainedWeights`, or None. The frozen tensors it holds
        (by layer and weight name) keep its pretrained values, which never travel: the
        process carries their fingerprint instead. Every other frozen tensor (and an
        FFA adapter's A) is regenerated from the seed. None: every frozen tensor is
        seeded.
      generator: How seeded tensors are drawn: "philox" (TensorFlow's stateless random
        ops, the default) or "portable" (`tff_fedpt.portable`: a documented counter-based
        hash that converts to TensorFlow Lite builtins and that an app can reproduce
        natively; docs/portable_generator.md).
    """

    layers: tuple[str, ...] = ()
    layer_types: tuple[Union[str, type], ...] = ()
    all_but_last: int | None = None
    trainable_fraction: float | None = None
    pretrained: Any = None
    generator: str = "philox"

    def __post_init__(self):
        if self.generator not in GENERATORS:
            raise ValueError(
                f"FreezeSpec.generator must be one of {GENERATORS}; received {self.generator!r}."
            )
        if self.pretrained is not None and not hasattr(self.pretrained, "value_for"):
            raise TypeError(
                "FreezeSpec.pretrained must be a tff_fedpt.PretrainedWeights (from "
                "PretrainedWeights.from_keras_model or .load) or None; received "
                f"{type(self.pretrained).__name__}."
            )
        if isinstance(self.layers, str):
            object.__setattr__(self, "layers", (self.layers,))
        else:
            object.__setattr__(self, "layers", tuple(self.layers))
        if isinstance(self.layer_types, (str, type)):
            object.__setattr__(self, "layer_types", (self.layer_types,))
        else:
            object.__setattr__(self, "layer_types", tuple(self.layer_types))
        for pattern in self.layers:
            if not isinstance(pattern, str):
                raise TypeError(
                    f"FreezeSpec.layers must hold layer names or regular expressions "
                    f"(str); received {pattern!r} of type {type(pattern).__name__}."
                )
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(
                    f"FreezeSpec.layers: {pattern!r} is not a valid regular expression " f"({e})."
                ) from e
        if self.all_but_last is not None:
            if (
                isinstance(self.all_but_last, bool)
                or not isinstance(self.all_but_last, int)
                or self.all_but_last < 1
            ):
                raise ValueError(
                    "FreezeSpec.all_but_last must be an integer >= 1 (the number of "
                    f"last parameter layers left trainable); received {self.all_but_last!r}."
                )
        if self.trainable_fraction is not None:
            f = self.trainable_fraction
            if (
                isinstance(f, bool)
                or not isinstance(f, (int, float))
                or not math.isfinite(f)
                or not 0.0 < f <= 1.0
            ):
                raise ValueError(
                    "FreezeSpec.trainable_fraction must be a number in (0, 1]; " f"received {f!r}."
                )


FreezeLike = Union[FreezeSpec, str, Sequence[str], None]


NO_FREEZE = "none"


@dataclasses.dataclass(frozen=True)
class FreezeOptions:
    """What a training run freezes and how its frozen values are drawn; the binaries'
    flags of the same names."""

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
        choices=GENERATORS,
    )


def parse_freeze(text: str, presets: Mapping[str, FreezeSpec] | None = None) -> FreezeSpec:
    """The FreezeSpec a command line names: `"none"`, a preset name, or comma-separated
    layer names / regular expressions (the one parser of every binary and task).

    Raises:
      ValueError: for an empty pattern (`""`, `","`, `"a,,b"`), which would freeze
        nothing without a word, or an invalid regular expression.
    """
    presets = presets or {}
    if text == NO_FREEZE:
        return FreezeSpec()
    if text in presets:
        return presets[text]
    patterns = [p.strip() for p in text.split(",")]
    if not text.strip() or not all(patterns):
        raise ValueError(
            f"{text!r} has an empty layer pattern; name a preset "
            f"{sorted([*presets, NO_FREEZE])}, or layer names / regular expressions "
            "separated by single commas."
        )
    return FreezeSpec(layers=tuple(patterns))


def as_freeze_spec(freeze: FreezeLike) -> FreezeSpec:
    """Converts `freeze` (a FreezeSpec, `"none"`, a name/regex, a list of them, or None)."""
    if freeze is None:
        return FreezeSpec()
    if isinstance(freeze, FreezeSpec):
        return freeze
    if isinstance(freeze, str):
        return FreezeSpec() if freeze == NO_FREEZE else FreezeSpec(layers=(freeze,))
    if isinstance(freeze, Sequence) and all(isinstance(x, str) for x in freeze):
        return FreezeSpec(layers=tuple(freeze))
    raise TypeError(
        "`freeze` must be a tff_fedpt.FreezeSpec, a layer name or regular expression, "
        f"a list of them, or None; received {freeze!r}."
    )


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """Parameter counts of one layer after freeze resolution."""

    name: str
    layer_type: str
    trainable_params: int
    frozen_params: int

    @property
    def frozen(self) -> bool:
        """The whole layer is frozen (an adapted layer is frozen in part only)."""
        return self.frozen_params > 0 and self.trainable_params == 0


@dataclasses.dataclass(frozen=True)
class FreezeReport:
    """Result of resolving a FreezeSpec on a model: counts per layer and totals.

    Attributes:
      layers: One report per layer with parameters.
      target_fraction: The spec's `trainable_fraction` (None when it has none).
    """

    layers: tuple[LayerReport, ...]
    target_fraction: float | None = None

    @property
    def trainable_params(self) -> int:
        return sum(r.trainable_params for r in self.layers)

    @property
    def frozen_params(self) -> int:
        return sum(r.frozen_params for r in self.layers)

    @property
    def total_params(self) -> int:
        return self.trainable_params + self.frozen_params

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_params / max(self.total_params, 1)

    @property
    def frozen_layer_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.layers if r.frozen)

    @property
    def fraction_note(self) -> str | None:
        """Why the trainable fraction is over twice the spec's target, or None.

        Layers are frozen whole, so a model whose parameters sit in one large layer (TFF's
        EMNIST CNN: 98% in its dense layer) cannot approach most targets.
        """
        target = self.target_fraction
        if target is None or self.trainable_fraction <= 2 * target:
            return None
        largest = max((r for r in self.layers if not r.frozen), key=lambda r: r.trainable_params)
        left = 1 - largest.trainable_params / max(self.total_params, 1)
        return (
            f"trainable_fraction={target:g} is not reachable with whole layers: the closest "
            f"fraction at or above it is {100 * self.trainable_fraction:.2f}%; "
            f"{largest.name} holds {100 * (1 - left):.2f}% of the parameters, and freezing "
            f"it leaves at most {100 * left:.2f}% trainable. Name the layers to freeze, or "
            f"use a target of at most {left:.4g}."
        )

    def totals(self) -> dict[str, int]:
        """Returns {'trainable': ..., 'frozen': ..., 'total': ...} parameter counts."""
        return {
            "trainable": self.trainable_params,
            "frozen": self.frozen_params,
            "total": self.total_params,
        }

    def format_table(self) -> str:
        """A plain-text table of the per-layer counts (for binaries to print)."""
        rows = [("layer", "type", "trainable", "frozen")]
        rows += [
            (r.name, r.layer_type, f"{r.trainable_params:,}", f"{r.frozen_params:,}")
            for r in self.layers
        ]
        rows.append(
            (
                "total",
                f"{100 * self.trainable_fraction:.2f}% trainable",
                f"{self.trainable_params:,}",
                f"{self.frozen_params:,}",
            )
        )
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        table = "\n".join(
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths))
            )
            for row in rows
        )
        note = self.fraction_note
        return f"{table}\nnote: {note}" if note else table


def _num_params(variables) -> int:
    return int(sum(np.prod(v.shape.as_list(), dtype=np.int64) for v in variables))


def _type_matches(layer, layer_type) -> bool:
    if isinstance(layer_type, str):
        return any(cls.__name__ == layer_type for cls in type(layer).__mro__)
    return isinstance(layer, layer_type)


def resolve_freeze(keras_model: tf.keras.Model, freeze: FreezeLike) -> FreezeReport:
    """Decides which layers `freeze` selects in `keras_model`, without changing it.

    Args:
      keras_model: A built `tf.keras.Model` (functional or Sequential).
      freeze: A `FreezeSpec`, a layer name or regular expression, a list of them,
        or None (nothing frozen).

    Returns:
      A `FreezeReport` with trainable and frozen parameter counts per layer.

    Raises:
      ValueError: if a name, pattern or layer type matches no parameter layer, or
        the specification would freeze every parameter.
      TypeError: if `freeze` has the wrong type.
    """
    spec = as_freeze_spec(freeze)
    if not keras_model.built:
        raise ValueError(
            "keras_model must be built (have its weights created) before freezing; "
            "build it with an input shape first."
        )
    param_layers = [layer for layer in keras_model.layers if layer.weights]
    if not param_layers:
        raise ValueError("keras_model has no layer with parameters to train or freeze.")
    names = [layer.name for layer in param_layers]
    sizes = [_num_params(layer.weights) for layer in param_layers]
    frozen = [False] * len(param_layers)

    for pattern in spec.layers:
        hits = [i for i, n in enumerate(names) if re.fullmatch(pattern, n)]
        if not hits:
            raise ValueError(
                f"FreezeSpec.layers: {pattern!r} matches no layer with parameters. "
                f"Valid layer names: {names}."
            )
        for i in hits:
            frozen[i] = True
    for layer_type in spec.layer_types:
        hits = [i for i, lyr in enumerate(param_layers) if _type_matches(lyr, layer_type)]
        if not hits:
            shown = layer_type if isinstance(layer_type, str) else layer_type.__name__
            present = sorted({type(lyr).__name__ for lyr in param_layers})
            raise ValueError(
                f"FreezeSpec.layer_types: {shown!r} matches no layer with parameters. "
                f"Layer types in this model: {present}."
            )
        for i in hits:
            frozen[i] = True
    if spec.all_but_last is not None:
        k = spec.all_but_last
        if k >= len(param_layers):
            raise ValueError(
                f"FreezeSpec.all_but_last={k} leaves nothing to freeze: the model has "
                f"only {len(param_layers)} layers with parameters ({names})."
            )
        for i in range(len(param_layers) - k):
            frozen[i] = True
    if spec.trainable_fraction is not None:
        total = sum(sizes)
        trainable = sum(s for s, f in zip(sizes, frozen) if not f)
        order = sorted(range(len(sizes)), key=lambda i: (-sizes[i], i))
        for i in order:
            if frozen[i]:
                continue
            if (trainable - sizes[i]) / total >= spec.trainable_fraction:
                frozen[i] = True
                trainable -= sizes[i]

    if all(frozen):
        raise ValueError(
            f"The freeze specification {spec} freezes every parameter of the model "
            "(layers: "
            f"{names}); at least one layer must stay trainable."
        )
    reports = tuple(
        LayerReport(
            name=layer.name,
            layer_type=type(layer).__name__,
            trainable_params=0 if f else _num_params(layer.trainable_weights),
            frozen_params=size
            if f
            else _num_params(layer.non_trainable_weights)
            if getattr(layer, "frozen_by_design", False)
            else 0,
        )
        for layer, size, f in zip(param_layers, sizes, frozen)
    )
    return FreezeReport(layers=reports, target_fraction=spec.trainable_fraction)


# ---------------------------------------------------------------------------
# Seeded generation of frozen weights.


_SUPPORTED_INITIALIZERS = (
    "Zeros",
    "Ones",
    "Constant",
    "RandomNormal",
    "RandomUniform",
    "TruncatedNormal",
    "VarianceScaling (GlorotUniform, GlorotNormal, HeNormal, HeUniform, "
    "LecunNormal, LecunUniform)",
    "Orthogonal",
    "Identity",
)


@typing.runtime_checkable
class FrozenSource(typing.Protocol):
    """Where one frozen tensor's value comes from: drawn from the seed
    (`FrozenInitializer`, by TensorFlow's Philox or the portable generator) or held
    pretrained (`pretrained.PretrainedValue`). Callers ask these, never the kind."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def generate(self, seed: tf.Tensor) -> tf.Tensor:
        """The value, for the seed pair (frozen seed, tensor index)."""

    def for_device(self) -> FrozenSource:
        """The source a device file embeds or draws."""

    @property
    def pretrained_value(self) -> np.ndarray | None:
        """The held value (fingerprinted, compared exactly), or None when drawn."""

    @property
    def constant_fill(self) -> float | None:
        """The one value of every element, or None."""

    @property
    def builtins_only(self) -> bool:
        """Whether a builtin-only device file can produce it."""


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

    # The frozen-source interface (`FrozenSource`), which `pretrained.PretrainedValue`
    # implements too: what the process, the device export and the run record ask.
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


def _initializer_record(initializer, variable: tf.Variable) -> FrozenInitializer:
    keras_init = tf.keras.initializers.get(initializer)
    cls = type(keras_init)
    # Only Keras' own classes: a subclass (even of a supported class) may draw other
    # values, which the seed could not reproduce.
    builtin = cls.__module__.split(".")[0] in ("keras", "tensorflow", "tf_keras")
    names = [cls.__name__] if builtin else []
    config = dict(keras_init.get_config()) if hasattr(keras_init, "get_config") else {}
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
        if name in (
            "Zeros",
            "Ones",
            "Constant",
            "RandomNormal",
            "RandomUniform",
            "TruncatedNormal",
            "VarianceScaling",
            "Orthogonal",
            "Identity",
        ):
            class_name = name
            break
    if class_name is None:
        raise ValueError(
            f"Frozen variable {variable.name} uses initializer {cls.__module__}."
            f"{cls.__name__}, which tff_fedpt cannot regenerate from a seed. Supported "
            "(Keras' own classes, not subclasses): "
            f"{', '.join(_SUPPORTED_INITIALIZERS)}. Use one of them for frozen layers."
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
    attr = variable.name.split("/")[-1].split(":")[0]
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
        and hasattr(owner, "units")
        and record.shape == (4 * owner.units,)
    ):
        record = dataclasses.replace(record, forget_bias_units=int(owner.units))
    return record


def generate_frozen_weights(
    initializers: Sequence[FrozenInitializer], frozen_seed
) -> list[tf.Tensor]:
    """Draws every frozen variable from `frozen_seed` with stateless random ops.

    Variable i uses the seed pair (frozen_seed, i), so values do not depend on the
    graph, the device placement or the order in which variables were created; the same
    seed gives bit-identical values eagerly, inside a `tf.function` and inside TFF
    computations on clients and server.

    Args:
      initializers: One `FrozenInitializer` per frozen variable, in model order.
      frozen_seed: An integer (Python or scalar int64 tensor).

    Returns:
      A list of tensors, one per entry of `initializers`.
    """
    seed = tf.cast(frozen_seed, tf.int64)
    return [
        init.generate(tf.stack([seed, tf.constant(i, tf.int64)]))
        for i, init in enumerate(initializers)
    ]

"""Which layers a `FreezeSpec` selects in a model, and the per-layer counts
(`resolve_freeze`, `FreezeReport`)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import tensorflow as tf

from tff_fedpt.frozen.spec import FreezeLike, as_freeze_spec


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

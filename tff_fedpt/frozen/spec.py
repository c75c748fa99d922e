"""What is frozen: the freeze specification (`FreezeSpec`), the command-line form
(`parse_freeze`) and the options of a training run (`FreezeOptions`)."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

from tff_fedpt.frozen.pretrained import PretrainedWeights
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
        if self.pretrained is not None and not isinstance(self.pretrained, PretrainedWeights):
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

"""The interface of a frozen tensor's source, which every source implements: seeded
(`seeded.FrozenInitializer`, by TensorFlow's Philox or the portable generator) or
pretrained (`pretrained.PretrainedValue`). The process, the device export and the run
record ask a source these, never its kind."""

from __future__ import annotations

import typing

import numpy as np
import tensorflow as tf


def short_name(variable) -> str:
    """A variable's own name without its scopes and output index (`dense/kernel:0` ->
    `kernel`): how pretrained values and adapters name a layer's weights."""
    return variable.name.split("/")[-1].split(":")[0]


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

"""Pretrained frozen layers: values the clients already hold, identified by fingerprint.

`PretrainedWeights` holds a pretrained Keras model's values by layer and weight name
(taken eagerly from a Keras model, or loaded from the `.npz` file `save` writes) and is
given to a freeze specification: `FreezeSpec(layers=..., pretrained=weights)`. Each
frozen tensor it holds becomes a `PretrainedValue` source (`source.FrozenSource`).
Pretrained values never travel in a round: the server state and the broadcast carry
their fingerprint (`fingerprint.fingerprint`), and every client checks it before training.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Optional

import numpy as np
import tensorflow as tf

from tff_fedpt.frozen import store as store_lib
from tff_fedpt.frozen.fingerprint import fingerprint
from tff_fedpt.frozen.source import short_name
from tff_fedpt.options import option


@dataclasses.dataclass(frozen=True)
class PretrainedOptions:
    """Pretrained values of a training run (every algorithm); the binaries' flag."""

    pretrained_weights: Optional[str] = option(
        None,
        "A pretrained-weights file (scripts/pretrain.py; tff_fedpt.PretrainedWeights): every "
        "layer it holds starts from its values; with FedPT, the frozen layers keep them and "
        "only their fingerprint travels.",
    )


class FingerprintMismatchError(ValueError):
    """Pretrained frozen values differ from the ones a state, a run or a device holds."""


@dataclasses.dataclass(frozen=True, eq=False)
class PretrainedValue:
    """One frozen tensor whose value is pretrained (a `source.FrozenSource`, like
    `seeded.FrozenInitializer`: `generate(seed)` returns the value, seed unused)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    value: np.ndarray
    path: str | None = None
    file_digest: tuple[int, ...] | None = None
    constant_fill = None  # (the frozen-source interface, `source.FrozenSource`)
    builtins_only = True  # a constant in the file

    @property
    def pretrained_value(self) -> np.ndarray:
        return self.value

    def generate(self, seed) -> tf.Tensor:
        """The value: a constant, or (with `path`) read where the computation runs, from
        that machine's disk, and checked against the server's copy before use."""
        del seed
        if self.path is None:
            return tf.constant(self.value, dtype=self.dtype)
        data = tf.io.read_file(self.path)
        check = tf.debugging.assert_equal(
            tf.fingerprint(tf.reshape(data, [1]))[0],
            tf.constant(self.file_digest, tf.uint8),
            message=(
                f"{self.path}: the pretrained values of {self.name} on this machine differ "
                "from the server copy (another file, or a changed tensor); give every worker "
                "the same pretrained-weights store"
            ),
        )
        with tf.control_dependencies([check]):
            value = tf.io.parse_tensor(data, tf.as_dtype(self.dtype))
        return tf.reshape(value, self.shape)

    def for_device(self) -> PretrainedValue:
        """This value as a constant (what a device file embeds; it reads no store)."""
        return dataclasses.replace(self, path=None, file_digest=None)


def _check_finite(layers: Mapping[str, Mapping[str, np.ndarray]], source: str) -> None:
    """Raises ValueError naming the first tensor with an inf or NaN: such a value would
    train (every update zeroed as non-finite) and end with a useless model, silently."""
    for layer, weights in layers.items():
        for weight, value in weights.items():
            if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
                bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
                raise ValueError(
                    f"{source}: tensor {layer}/{weight} holds {bad} non-finite value(s) (inf or "
                    f"NaN) of {np.size(value)}; pretrained values must be finite."
                )


class PretrainedWeights(Mapping):
    """Pretrained values by layer name, then weight name (`"kernel"`, `"bias"`, ...).

    Build it eagerly, outside `model_fn`: from a Keras model holding the pretrained
    weights (`from_keras_model`, e.g. after `keras_model.load_weights(path)`), or from
    the file `save` wrote (`load`). Give it to `FreezeSpec(pretrained=...)`: the frozen
    layers it holds take its values, the other frozen layers are seeded.
    """

    def __init__(
        self,
        layers: Mapping[str, Mapping[str, np.ndarray]],
        source: str = "",
        store: str | None = None,
    ):
        self._layers = {
            str(layer): {str(w): np.asarray(v) for w, v in weights.items()}
            for layer, weights in layers.items()
        }
        self.source = source or "pretrained weights"
        _check_finite(self._layers, self.source)
        self.store = store
        self._digests: dict[str, tuple[int, ...]] = {}

    def save_for_workers(self, directory: str | os.PathLike) -> PretrainedWeights:
        """Writes one serialized tensor file per weight into `directory` (atomically) and
        returns these weights read from there: every machine that runs a client
        computation (a remote TFF worker) reads the values from its own disk at that same
        path, checked against this copy, so the values never travel with the computation.
        Copy the directory to every worker before training."""
        directory = os.fspath(directory)
        digests = store_lib.write_worker_store(self._layers, directory)
        stored = PretrainedWeights(self._layers, source=self.source, store=directory)
        stored._digests = digests
        return stored

    def source_for(self, layer_name: str, variable) -> PretrainedValue | None:
        """The frozen source of `variable` of layer `layer_name`, or None if not held."""
        value = self.value_for(layer_name, variable)
        if value is None:
            return None
        path = digest = None
        if self.store is not None:
            path = store_lib.tensor_path(self.store, layer_name, short_name(variable))
            digest = self._digests[path]  # of the bytes written (save_for_workers)
        return PretrainedValue(
            name=variable.name,
            shape=tuple(variable.shape.as_list()),
            dtype=variable.dtype.name,
            value=value,
            path=path,
            file_digest=digest,
        )

    @classmethod
    def from_keras_model(
        cls, keras_model: tf.keras.Model, layers: Sequence[str] | None = None
    ) -> PretrainedWeights:
        """The current values of `keras_model`'s layers (all, or those named)."""
        if not isinstance(keras_model, tf.keras.Model):
            raise TypeError(f"expected a tf.keras.Model; received {type(keras_model).__name__}.")
        wanted = None if layers is None else set(layers)
        names = [layer.name for layer in keras_model.layers if layer.weights]
        if wanted is not None and not wanted <= set(names):
            raise ValueError(
                f"PretrainedWeights: layers {sorted(wanted - set(names))} are not layers "
                f"with weights of the model ({names})."
            )
        values = {
            layer.name: {short_name(v): v.numpy() for v in layer.weights}
            for layer in keras_model.layers
            if layer.weights and (wanted is None or layer.name in wanted)
        }
        return cls(values, source=f"Keras model {keras_model.name!r}")

    @classmethod
    def load(cls, path: str | os.PathLike) -> PretrainedWeights:
        """Reads a file written by `save`.

        Raises:
          ValueError: naming the file, when it is missing, unreadable or not such a file.
        """
        path = os.fspath(path)
        return cls(store_lib.read_npz(path), source=path)

    def save(self, path: str | os.PathLike) -> str:
        """Writes the values to an `.npz` file (atomically); returns their fingerprint."""
        store_lib.write_npz(self._layers, os.fspath(path))
        return self.fingerprint()

    def fingerprint(self) -> str:
        """SHA-256 over every tensor, in layer then weight order (`fingerprint.fingerprint`)."""
        return fingerprint([v for weights in self._layers.values() for v in weights.values()])

    __hash__ = object.__hash__  # identity: a FreezeSpec holding it stays hashable

    def __eq__(self, other):
        return self is other

    def __getitem__(self, layer: str) -> Mapping[str, np.ndarray]:
        return self._layers[layer]

    def __iter__(self):
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def __repr__(self) -> str:
        return f"PretrainedWeights({self.source}, layers={list(self._layers)})"

    def value_for(self, layer_name: str, variable) -> np.ndarray | None:
        """The pretrained value of `variable` of layer `layer_name` (None if not held).

        Raises:
          ValueError: when the held value's shape or dtype is not the variable's.
        """
        held = self._layers.get(layer_name, {}).get(short_name(variable))
        if held is None:
            return None
        shape = tuple(variable.shape.as_list())
        if tuple(held.shape) != shape:
            raise ValueError(
                f"{self.source}: {layer_name}/{short_name(variable)} has shape "
                f"{tuple(held.shape)}; the model's variable {variable.name} has {shape}."
            )
        return held.astype(variable.dtype.as_numpy_dtype, copy=False)

    def initial_state(self, learning_process, model_fn):
        """`learning_process.initialize()` with every value held here put in place
        (`tff_fedpt.keras_models.initial_state`)."""
        from tff_fedpt import keras_models  # imports this module

        return keras_models.initial_state(learning_process, model_fn, self)

    def assign_to(self, keras_model: tf.keras.Model) -> int:
        """Assigns the held values to `keras_model`'s variables (eagerly); returns how many."""
        count = 0
        for layer in keras_model.layers:
            for variable in layer.weights:
                value = self.value_for(layer.name, variable)
                if value is not None:
                    variable.assign(value)
                    count += 1
        return count

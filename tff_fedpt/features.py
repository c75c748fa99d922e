"""Training on the frozen prefix's output: the prefix runs once per example, not in every
epoch of every round.

When a FedPT model's first layers are frozen and deterministic (`frozen.frozen_prefix`:
a pretrained backbone, a frozen embedding), their output for an example never changes.
A process built with `build_fedpt_process(..., train_on_features=True)` trains the rest
of the model (`remainder_model`) on that output; `FeatureMap` computes it once per
example for the client datasets (and, in `tff_fedpt.training`, for the test set:
`Evaluator(..., features=)`). The process's state, broadcast, upload, bytes and
`get_model_weights` are those of the full model's FedPT process; only the client
datasets change (features in place of inputs). This is an execution choice, like a
cache: on a model without randomness the trajectory is the full model's
(tests/test_features.py, to 1e-5).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt import frozen, runtime
from tff_fedpt.options import option

MODES = ("auto", "on", "off")
# Examples per record of a features file: a parse per example is per-example overhead in
# every round (a head on 4,944 examples of 12x12x64 features: 3.00 s a round with one
# record an example, 2.77 s with these; docs/features.md).
RECORD_EXAMPLES = 256


@dataclasses.dataclass(frozen=True)
class FeatureOptions:
    """Whether FedPT clients train on the frozen prefix's output; the binaries' flags."""

    train_on_features: str = option(
        "auto",
        "FedPT: clients train the layers after the model's frozen, deterministic prefix "
        "on the prefix's output, computed once per example (same process, bytes and "
        "results). auto: where the model has such a prefix; on: required; off: never.",
        choices=MODES,
        resumable=True,
    )
    features_memory_mb: int = option(
        4096,
        "Features kept in memory up to this many MiB; past it they go to temporary "
        "files (removed at exit).",
        resumable=True,
    )

    def check(self, *, algorithm: str, supported: bool) -> None:
        """Raises ValueError naming the option for values that cannot apply."""
        if self.train_on_features not in MODES:
            raise ValueError(
                f"train_on_features must be one of {MODES}; received {self.train_on_features!r}."
            )
        if self.train_on_features == "on" and not supported:
            raise ValueError(
                "train_on_features=on trains on a frozen prefix, which only FedPT has; "
                f"received algorithm={algorithm}."
            )
        if self.features_memory_mb < 0:
            raise ValueError(
                f"features_memory_mb must be >= 0; received {self.features_memory_mb}."
            )


class NoPrefixError(ValueError):
    """Features were asked for a model without a frozen, deterministic prefix."""


def prefix_split(model) -> Optional[frozen.PrefixSplit]:
    """The frozen prefix of a `PartiallyTrainableModel` (None: it has none)."""
    return frozen.frozen_prefix(
        model.keras_model, frozen_names=model.freeze_report.frozen_layer_names
    )


def required_split(model) -> frozen.PrefixSplit:
    """`prefix_split(model)`, or NoPrefixError saying where the prefix ends and why."""
    split = prefix_split(model)
    if split is None:
        first = next(
            (x for x in model.keras_model.layers if not isinstance(x, tf.keras.layers.InputLayer)),
            None,
        )
        why = frozen.prefix_end(
            model.keras_model, frozen_names=model.freeze_report.frozen_layer_names
        )
        raise NoPrefixError(
            "train_on_features: the model has no frozen, deterministic prefix to compute "
            f"once (from its first layer {getattr(first, 'name', None)!r}: {why}). Freeze "
            "its first layers, or leave train_on_features at auto or off."
        )
    return split


def wanted(mode: str, model) -> bool:
    """Whether to train `model` (a `PartiallyTrainableModel`) on features under
    `train_on_features=mode`. Raises NoPrefixError for "on" without a prefix."""
    if mode == "on":
        required_split(model)
        return True
    return mode == "auto" and prefix_split(model) is not None


def remainder_model(model, split: Optional[frozen.PrefixSplit] = None):
    """`split_models(model, split)[1]`: the part after the prefix, over features."""
    return split_models(model, split)[1]


def split_models(model, split: Optional[frozen.PrefixSplit] = None):
    """(the prefix as a Keras model, the layers after it as a `PartiallyTrainableModel`
    over features), split once (a second split would find the layers called twice).

    The remainder has the same layer objects (so the same variables and trainable
    weights, in the same order), the same loss and metrics, and as frozen sources the full
    model's own for its frozen tensors, with their indices in the full model (so each is
    drawn from the seed exactly as in the full model).

    Args:
      model: A `PartiallyTrainableModel` (`tff_fedpt.from_keras_model`).
      split: Its prefix (default: `required_split(model)`).
    """
    from tff_fedpt import keras_models  # imports this package's frozen sources

    split = split or required_split(model)
    prefix, rest = frozen.split_model(model.keras_model, split)
    kwargs = dict(model.keras_kwargs)
    kwargs["input_spec"] = _features_input_spec(kwargs["input_spec"], split)
    inner = tff.learning.models.from_keras_model(rest, **kwargs)
    index = {v.ref(): i for i, v in enumerate(model.keras_model.non_trainable_weights)}
    indices = tuple(index[v.ref()] for v in rest.non_trainable_weights)
    return prefix, keras_models.PartiallyTrainableModel(
        inner,
        rest,
        [model.frozen_initializers[i] for i in indices],
        model.freeze_report,
        kwargs,
        frozen_indices=indices,
    )


def _features_input_spec(input_spec, split: frozen.PrefixSplit):
    spec = tf.TensorSpec([None, *split.feature_shape], split.feature_dtype)
    if isinstance(input_spec, Mapping):
        return type(input_spec)({**input_spec, "x": spec})
    x, *rest = input_spec
    return type(input_spec)([spec, *rest])


def _prefix_with_frozen_values(model_fn: Callable, frozen_seed: int):
    """(prefix Keras model holding the frozen values of `frozen_seed`, split), eagerly."""
    model = model_fn()
    split = required_split(model)
    values = frozen.generate_frozen_weights(model.frozen_initializers, np.int64(frozen_seed))
    for variable, value in zip(model.non_trainable_variables, values):
        variable.assign(value)
    prefix, _ = frozen.split_model(model.keras_model, split)
    return prefix, split


class FeatureMap:
    """Maps a client's `(x, y)` examples (unbatched, as `Task.to_model_input` gives them)
    to `(features, y)` once, and keeps the result: in memory up to `memory_bytes` in all,
    past that in TFRecord files under `directory` (a temporary one when None).

    `tff_fedpt.training` hands every client's mapped dataset through it once; the
    shuffling and batching that follow are the task's own, so a client's batches are
    the full model's, made of features.
    """

    def __init__(
        self,
        model_fn: Callable,
        frozen_seed: int,
        *,
        memory_bytes: int = 4 << 30,
        directory: Optional[str] = None,
        batch_size: int = 256,
    ):
        self._prefix, self.split = _prefix_with_frozen_values(model_fn, frozen_seed)
        self._run = tf.function(lambda x: self._prefix(x, training=False), reduce_retracing=True)
        self._memory_bytes = int(memory_bytes)
        self._directory = directory
        self._batch_size = batch_size
        self.bytes_in_memory = 0
        self.examples = 0
        self.files = 0

    def __call__(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """`dataset`'s examples with `x` replaced by its features (an `(x, y)` tuple or a
        mapping with key `x`, as the model's input spec has it)."""
        features, rest = [], []
        for element in dataset.batch(self._batch_size):
            x, others = _split_x(element)
            features.append(self._run(x).numpy())
            rest.append(tf.nest.map_structure(lambda t: t.numpy(), others))
        spec = _split_x(dataset.element_spec)[1]
        if not features:
            empty = np.zeros((0, *self.split.feature_shape), self.split.feature_dtype)
            others = tf.nest.map_structure(
                lambda s: np.zeros((0, *s.shape), s.dtype.as_numpy_dtype), spec
            )
            return tf.data.Dataset.from_tensor_slices(_join_x(dataset.element_spec, empty, others))
        f = np.concatenate(features)
        others = tf.nest.map_structure(lambda *parts: np.concatenate(parts), *rest)
        self._check(f)
        self.examples += len(f)
        size = f.nbytes + sum(a.nbytes for a in tf.nest.flatten(others))
        if self.bytes_in_memory + size <= self._memory_bytes:
            self.bytes_in_memory += size
            return tf.data.Dataset.from_tensor_slices(_join_x(dataset.element_spec, f, others))
        return self._on_disk(f, others, dataset.element_spec)

    def _check(self, f: np.ndarray) -> None:
        if tuple(f.shape[1:]) != tuple(self.split.feature_shape):
            raise ValueError(
                f"FeatureMap: the prefix gave features of shape {tuple(f.shape[1:])}; the "
                f"remainder takes {tuple(self.split.feature_shape)}."
            )

    def _on_disk(self, f, y, element_spec) -> tf.data.Dataset:
        if self._directory is None:
            self._directory = tempfile.mkdtemp(prefix="fedpt_features_")
            # At exit, not with this object: its datasets outlive it and read the files.
            runtime.remove_at_exit(self._directory)
        os.makedirs(self._directory, exist_ok=True)
        path = os.path.join(self._directory, f"client_{self.files:06d}.tfrecord")
        self.files += 1
        flat = [f, *tf.nest.flatten(y)]
        with tf.io.TFRecordWriter(path + ".partial") as writer:
            for i in range(0, len(f), RECORD_EXAMPLES):
                chunk = [tf.io.serialize_tensor(a[i : i + RECORD_EXAMPLES]) for a in flat]
                writer.write(tf.io.serialize_tensor(tf.stack(chunk)).numpy())
        os.replace(path + ".partial", path)
        y_spec = _split_x(element_spec)[1]
        specs = [tf.TensorSpec(self.split.feature_shape, f.dtype), *tf.nest.flatten(y_spec)]

        def parse(record):
            parts = tf.io.parse_tensor(record, tf.string)
            values = [
                tf.ensure_shape(tf.io.parse_tensor(parts[i], s.dtype), [None, *s.shape])
                for i, s in enumerate(specs)
            ]
            x, rest = values[0], tf.nest.pack_sequence_as(y_spec, values[1:])
            return tf.data.Dataset.from_tensor_slices(_join_x(element_spec, x, rest))

        return tf.data.TFRecordDataset(path).flat_map(parse)


def _split_x(element):
    """(x, the rest) of an `(x, y, ...)` tuple or a mapping with key `x`."""
    if isinstance(element, Mapping):
        return element["x"], type(element)((k, v) for k, v in element.items() if k != "x")
    return element[0], tuple(element[1:])


def _join_x(like, x, rest):
    """`_split_x`'s inverse, in the structure of `like`."""
    if isinstance(like, Mapping):
        return type(like)((k, x if k == "x" else rest[k]) for k in like)
    return (x, *rest)

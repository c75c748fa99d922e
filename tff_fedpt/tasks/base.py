"""What a training task supplies: federated data, preprocessing, models, presets."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt import frozen


class DatasetNotFoundError(FileNotFoundError):
    """A task's data is not on disk and cannot be downloaded here."""


class DatasetError(ValueError):
    """A task's data file is there but unreadable (truncated, empty, wrong format)."""


# The Dirichlet concentrations a split accepts. Below the minimum numpy's sampler slows
# down without bound (1e-10: 6.5 s for one draw over 1,000 clients; 1e-12 never
# returns); above the maximum the split is IID to within sampling noise (ask for IID).
DIRICHLET_ALPHA_RANGE = (1e-3, 1e6)


def check_dirichlet_alpha(alpha) -> float:
    """`alpha` as a float, or a ValueError naming `dirichlet_alpha` and its range."""
    import numbers

    low, high = DIRICHLET_ALPHA_RANGE
    number = isinstance(alpha, numbers.Real) and not isinstance(alpha, bool)
    value = float(alpha) if number else float("nan")
    if not low <= value <= high:
        raise ValueError(
            f"dirichlet_alpha must be a number in [{low:g}, {high:g}] (small: strong label "
            f"skew; for an IID split ask for IID instead); received {alpha!r}."
        )
    return value


def dirichlet_deal(labels, num_clients: int, alpha: float, rng) -> list[list[int]]:
    """Example indices per client: for each class, the class's examples shuffled and
    split between clients in Dirichlet(alpha) proportions (small alpha: strong skew).
    Every example goes to exactly one client; a client may get none.

    Raises:
      ValueError: for an alpha outside `DIRICHLET_ALPHA_RANGE`.
    """
    import numpy as np

    alpha = check_dirichlet_alpha(alpha)
    shares: list[list[int]] = [[] for _ in range(num_clients)]
    for c in range(int(labels.max()) + 1):
        idx = rng.permutation(np.flatnonzero(labels == c))
        p = rng.dirichlet(np.full(num_clients, alpha))
        cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
        for client, part in enumerate(np.split(idx, cuts)):
            shares[client].extend(part.tolist())
    return shares


def check_sqlite(path: str, tables: tuple[str, ...], split_names: tuple[str, ...] = ()) -> None:
    """Raises DatasetError unless `path` is an SQLite file with `tables` (and, in table
    `examples`, rows of each of `split_names`), the format of TFF's cached data sets."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            found = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            missing = [t for t in tables if t not in found]
            if not missing:
                splits = {r[0] for r in db.execute("SELECT DISTINCT split_name FROM examples")}
                missing = [f"split {s!r}" for s in split_names if s not in splits]
    except sqlite3.DatabaseError as e:
        raise DatasetError(
            f"{path} is not a readable SQLite data set ({e}); it may be truncated or "
            "another file. Delete it and fetch it again."
        ) from None
    if missing:
        raise DatasetError(
            f"{path} lacks {', '.join(missing)} (found tables: {sorted(found) or 'none'}); "
            "it is not TFF's data set file, or it is truncated. Delete it and fetch it again."
        )


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A task's model without its data: what the device export and the byte counts of the
    benchmarks need (each task module's `CATALOG` maps model names to these).

    Attributes:
      build: seed -> a built, uncompiled Keras model (the task's default settings).
      input_spec: The `(x, y)` spec of one batch.
      presets: Freeze preset name -> `FreezeSpec`.
    """

    build: Callable[[int], tf.keras.Model]
    input_spec: tuple
    presets: Mapping[str, frozen.FreezeSpec]


def image_spec(shape) -> tuple:
    """The `(x, y)` spec of a batch of float images of `shape` with int32 labels."""
    return (tf.TensorSpec([None, *shape], tf.float32), tf.TensorSpec([None], tf.int32))


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How a client's raw dataset becomes training batches.

    Attributes:
      batch_size: Examples per batch (> 0).
      epochs: Local passes over the client's data per round (> 0).
      max_elements: Keep at most this many examples per client (None: all).
      shuffle_buffer: Shuffle buffer size (0 disables shuffling).
    """

    batch_size: int = 20
    epochs: int = 1
    max_elements: int | None = None
    shuffle_buffer: int = 100


@dataclasses.dataclass(frozen=True)
class Task:
    """A federated learning task.

    Attributes:
      name: Task name ("digits", "emnist", "stackoverflow").
      train_data: `tff.simulation.datasets.ClientData` of raw training examples.
      test_data: A centralized `tf.data.Dataset` of raw test examples.
      to_model_input: Maps a raw-example dataset to (x, y) examples, unbatched.
      models: Model name -> callable(seed) returning a built, uncompiled Keras model.
      freeze_presets: Model name -> {preset name -> FreezeSpec}.
      loss_fn: No-argument callable returning the Keras loss.
      metrics_fn: No-argument callable returning a list of Keras metrics.
      default_model: The model used when none is named.
      narrow_models: Model name -> callable(seed, width) building the same model with
        its main layer `width` units wide (for the small-model baseline).
      default_freeze: The freeze preset used when none is named.
      settings: The arguments the task was loaded with (recorded with a run's
        checkpoints: a resume with other settings is refused).
    """

    name: str
    train_data: tff.simulation.datasets.ClientData
    test_data: tf.data.Dataset
    to_model_input: Callable[[tf.data.Dataset], tf.data.Dataset]
    models: Mapping[str, Callable[[int], tf.keras.Model]]
    freeze_presets: Mapping[str, Mapping[str, frozen.FreezeSpec]]
    loss_fn: Callable[[], tf.keras.losses.Loss]
    metrics_fn: Callable[[], list]
    default_model: str
    narrow_models: Mapping[str, Callable[[int, int], tf.keras.Model]] = dataclasses.field(
        default_factory=dict
    )
    default_freeze: str = "none"
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def client_dataset(
        self,
        dataset: tf.data.Dataset,
        preprocessing: Preprocessing,
        seed: int,
        *,
        mapped: bool = False,
    ) -> tf.data.Dataset:
        """Training batches for one client; `seed` fixes the shuffle order.

        `dataset` holds raw examples, or (x, y) examples when `mapped` (a dataset from
        `to_model_input`, which the training loop builds once per client: tracing the
        map function anew every round grows memory).
        """
        if not mapped:
            dataset = self.to_model_input(dataset)
        if preprocessing.max_elements is not None:
            dataset = dataset.take(preprocessing.max_elements)
        if preprocessing.shuffle_buffer <= 0:
            return dataset.repeat(preprocessing.epochs).batch(preprocessing.batch_size)
        # One fixed-seed shuffle per epoch: a different order each epoch, and the same
        # orders whenever the seed is the same (a resumed run sees the same data).
        epochs = [
            dataset.shuffle(
                preprocessing.shuffle_buffer,
                seed=(seed * 1009 + epoch) % (2**31 - 1),
                reshuffle_each_iteration=False,
            )
            for epoch in range(preprocessing.epochs)
        ]
        combined = epochs[0]
        for more in epochs[1:]:
            combined = combined.concatenate(more)
        return combined.batch(preprocessing.batch_size)

    def test_batches(self, batch_size: int = 256) -> tf.data.Dataset:
        return self.to_model_input(self.test_data).batch(batch_size)

    @property
    def input_spec(self):
        """The (x, y) spec of one batch."""
        element = self.to_model_input(
            self.train_data.create_tf_dataset_for_client(self.train_data.client_ids[0])
        ).element_spec
        return tf.nest.map_structure(lambda s: tf.TensorSpec([None, *s.shape], s.dtype), element)

    def freeze_spec(self, model: str, preset: str) -> frozen.FreezeSpec:
        """The FreezeSpec of a named preset ("none" freezes nothing)."""
        presets = self.freeze_presets[model]
        if preset == "none":
            return frozen.FreezeSpec()
        if preset not in presets:
            raise ValueError(
                f"freeze: unknown preset {preset!r} for task {self.name} model {model}; "
                f"valid presets: {sorted([*presets, 'none'])}, or a layer-name pattern."
            )
        return presets[preset]

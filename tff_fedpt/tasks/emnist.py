"""EMNIST through TFF's own loader (`tff.simulation.datasets.emnist.load_data`)."""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt import frozen
from tff_fedpt.options import option
from tff_fedpt.tasks import base

DATABASE = "emnist_all.sqlite"


def default_cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".tff")


def cnn(seed: int = 0, num_classes: int = 62, dense_units: int = 128) -> tf.keras.Model:
    """TFF's EMNIST CNN: conv 3x3x32, conv 3x3x64, max-pool, dropout, dense 128,
    dropout, dense output (1,206,590 parameters for 62 classes)."""
    init = tf.keras.initializers.GlorotUniform
    return tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=(28, 28, 1)),
            tf.keras.layers.Conv2D(
                32, 3, activation="relu", name="conv1", kernel_initializer=init(seed)
            ),
            tf.keras.layers.Conv2D(
                64, 3, activation="relu", name="conv2", kernel_initializer=init(seed + 1)
            ),
            tf.keras.layers.MaxPool2D(2, name="pool"),
            tf.keras.layers.Dropout(0.25, seed=seed),
            tf.keras.layers.Flatten(name="flatten"),
            tf.keras.layers.Dense(
                dense_units, activation="relu", name="dense128", kernel_initializer=init(seed + 2)
            ),
            tf.keras.layers.Dropout(0.5, seed=seed + 1),
            tf.keras.layers.Dense(num_classes, name="logits", kernel_initializer=init(seed + 3)),
        ]
    )


def mlp(seed: int = 0, num_classes: int = 62, units: int = 200) -> tf.keras.Model:
    """A 784-200-200-classes MLP."""
    init = tf.keras.initializers.GlorotUniform
    return tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=(28, 28, 1)),
            tf.keras.layers.Flatten(name="flatten"),
            tf.keras.layers.Dense(
                units, activation="relu", name="dense1", kernel_initializer=init(seed)
            ),
            tf.keras.layers.Dense(
                units, activation="relu", name="dense2", kernel_initializer=init(seed + 1)
            ),
            tf.keras.layers.Dense(num_classes, name="logits", kernel_initializer=init(seed + 2)),
        ]
    )


PRESETS = {
    "cnn": {
        "dense128": frozen.FreezeSpec(layers=("dense128",)),
        "convs": frozen.FreezeSpec(layer_types=("Conv2D",)),
        "all_but_output": frozen.FreezeSpec(all_but_last=1),
    },
    "mlp": {
        "dense1": frozen.FreezeSpec(layers=("dense1",)),
        "all_but_output": frozen.FreezeSpec(all_but_last=1),
    },
}

# The models without the data (tff_fedpt.tasks.catalog): all 62 classes.
CATALOG = {
    "cnn": base.ModelSpec(lambda seed: cnn(seed, 62), base.image_spec((28, 28, 1)), PRESETS["cnn"]),
    "mlp": base.ModelSpec(lambda seed: mlp(seed, 62), base.image_spec((28, 28, 1)), PRESETS["mlp"]),
}


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """The task's options as the binary's flags (scripts/run_emnist.py)."""

    only_digits: bool = option(False, "EMNIST-10 instead of EMNIST-62.")
    cache_dir: Optional[str] = option(None, "Directory holding emnist_all.sqlite (default ~/.tff).")

    def load_kwargs(self) -> dict:
        """The arguments of `load` these options ask for."""
        return dataclasses.asdict(self)


def load(*, only_digits: bool = False, cache_dir: str | None = None) -> base.Task:
    """The EMNIST task (62 classes, or 10 with `only_digits`).

    Raises:
      DatasetNotFoundError: if `<cache_dir>/emnist_all.sqlite` is missing (it
        cannot be downloaded on a machine without network).
    """
    cache_dir = cache_dir or default_cache_dir()
    path = os.path.join(cache_dir, DATABASE)
    if not os.path.exists(path):
        raise base.DatasetNotFoundError(
            f"EMNIST data not found: looked for {path}. On a machine with network, "
            "run tff.simulation.datasets.emnist.load_data(cache_dir=...) once, or copy "
            f"{DATABASE} into that directory (or pass cache_dir: --cache_dir in the binaries)."
        )
    prefix = "digits_only" if only_digits else "all"
    base.check_sqlite(path, ("examples", "client_metadata"), (f"{prefix}_train", f"{prefix}_test"))
    train, test = tff.simulation.datasets.emnist.load_data(
        only_digits=only_digits, cache_dir=cache_dir
    )
    num_classes = 10 if only_digits else 62

    def to_model_input(ds):
        return ds.map(
            lambda e: (tf.reshape(e["pixels"], [28, 28, 1]), tf.cast(e["label"], tf.int32))
        )

    return base.Task(
        name="emnist",
        train_data=train,
        test_data=test.create_tf_dataset_from_all_clients(),
        to_model_input=to_model_input,
        models={
            "cnn": lambda seed=0: cnn(seed, num_classes),
            "mlp": lambda seed=0: mlp(seed, num_classes),
        },
        freeze_presets=PRESETS,
        loss_fn=lambda: tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics_fn=lambda: [tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        default_model="cnn",
        narrow_models={
            "cnn": lambda seed, width: cnn(seed, num_classes, dense_units=width),
            "mlp": lambda seed, width: mlp(seed, num_classes, units=width),
        },
        default_freeze="dense128",
        settings=dict(only_digits=only_digits, database_bytes=os.path.getsize(path)),
    )

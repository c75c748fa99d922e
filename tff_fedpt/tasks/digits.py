"""The embedded task: UCI handwritten digits (shipped inside scikit-learn), federated.

1,797 real 8x8 grey-scale images of the digits 0-9. They are dealt to clients with a
seeded Dirichlet label skew, and each client's examples are split into train and test
parts, so the task runs with no network at all.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt import frozen
from tff_fedpt.options import option
from tff_fedpt.tasks import base

NUM_CLASSES = 10


def _load_images():
    from sklearn.datasets import load_digits  # ships with scikit-learn

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., np.newaxis]
    return images, digits.target.astype(np.int32)


def partition(labels: np.ndarray, num_clients: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Deals example indices to clients with Dirichlet(alpha) label proportions.

    For each class, the class's examples are shuffled and split between clients in
    proportions drawn from Dirichlet(alpha); small alpha gives strong label skew.
    Every client gets at least two examples.
    """
    rng = np.random.default_rng(seed)
    for _ in range(_MAX_DEALS):
        shares = base.dirichlet_deal(labels, num_clients, alpha, rng)
        if min(len(s) for s in shares) >= 2:
            return [np.array(sorted(s), dtype=np.int64) for s in shares]
    raise ValueError(
        f"dirichlet_alpha={alpha:g} with num_clients={num_clients}: {_MAX_DEALS} draws all "
        "left a client with fewer than 2 examples; raise dirichlet_alpha or lower "
        "num_clients."
    )


_MAX_DEALS = 1000


def cnn(seed: int = 0, dense_units: int = 2048) -> tf.keras.Model:
    """Conv 3x3x16, conv 3x3x32, a wide dense layer, the output layer.

    With `dense_units=2048` the dense layer holds 1,050,624 of 1,080,394 parameters.
    """
    init = tf.keras.initializers.GlorotUniform
    return tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=(8, 8, 1)),
            tf.keras.layers.Conv2D(
                16, 3, activation="relu", name="conv1", kernel_initializer=init(seed)
            ),
            tf.keras.layers.Conv2D(
                32, 3, activation="relu", name="conv2", kernel_initializer=init(seed + 1)
            ),
            tf.keras.layers.Flatten(name="flatten"),
            tf.keras.layers.Dense(
                dense_units, activation="relu", name="dense", kernel_initializer=init(seed + 2)
            ),
            tf.keras.layers.Dense(NUM_CLASSES, name="logits", kernel_initializer=init(seed + 3)),
        ]
    )


# Training settings chosen on this task, used by run_digits.py, the demo and the
# comparison scripts (ExperimentConfig field -> value).
RECOMMENDED = dict(
    total_rounds=80,
    client_epochs_per_round=5,
    client_batch_size=10,
    client_learning_rate=0.1,
    rounds_per_eval=5,
)

PRESETS = {
    "dense": frozen.FreezeSpec(layers=("dense",)),
    "convs": frozen.FreezeSpec(layer_types=("Conv2D",)),
    "all_but_output": frozen.FreezeSpec(all_but_last=1),
}

# The models without the data (tff_fedpt.tasks.catalog).
CATALOG = {"cnn": base.ModelSpec(cnn, base.image_spec((8, 8, 1)), PRESETS)}


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """The task's options as the binary's flags (scripts/run_digits.py)."""

    num_clients: int = option(100, "Number of simulated clients.")
    dirichlet_alpha: float = option(0.5, "Label-skew concentration (small = more skew).")

    def load_kwargs(self) -> dict:
        """The arguments of `load` these options ask for."""
        return dict(num_clients=self.num_clients, alpha=self.dirichlet_alpha)


_DEFAULTS = DataOptions()


def load(
    *,
    num_clients: int = _DEFAULTS.num_clients,
    alpha: float = _DEFAULTS.dirichlet_alpha,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> base.Task:
    """The digits task.

    Args:
      num_clients: Number of clients (2 to 800).
      alpha: Dirichlet concentration of the label skew (in
        `base.DIRICHLET_ALPHA_RANGE`; small = more skew).
      test_fraction: Fraction of each client's examples held out for testing.
      seed: Seed of the partition.

    Raises:
      ValueError: for out-of-range arguments.
    """
    if not 2 <= num_clients <= 800:
        raise ValueError(f"num_clients must be in [2, 800]; received {num_clients}.")
    base.check_dirichlet_alpha(alpha)
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); received {test_fraction}.")
    images, labels = _load_images()
    rng = np.random.default_rng(seed + 1)
    train, test_x, test_y = collections.OrderedDict(), [], []
    for client, idx in enumerate(partition(labels, num_clients, alpha, seed)):
        idx = rng.permutation(idx)
        n_test = max(1, int(round(test_fraction * len(idx))))
        train_idx, test_idx = idx[n_test:], idx[:n_test]
        train[f"client_{client:03d}"] = collections.OrderedDict(
            pixels=images[train_idx], label=labels[train_idx]
        )
        test_x.append(images[test_idx])
        test_y.append(labels[test_idx])
    test = tf.data.Dataset.from_tensor_slices(
        collections.OrderedDict(pixels=np.concatenate(test_x), label=np.concatenate(test_y))
    )
    return base.Task(
        name="digits",
        train_data=tff.simulation.datasets.TestClientData(train),
        test_data=test,
        to_model_input=lambda ds: ds.map(lambda e: (e["pixels"], e["label"])),
        models={"cnn": cnn},
        freeze_presets={"cnn": PRESETS},
        loss_fn=lambda: tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics_fn=lambda: [tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        default_model="cnn",
        narrow_models={"cnn": lambda seed, width: cnn(seed, dense_units=width)},
        default_freeze="dense",
        settings=dict(num_clients=num_clients, alpha=alpha, test_fraction=test_fraction, seed=seed),
    )

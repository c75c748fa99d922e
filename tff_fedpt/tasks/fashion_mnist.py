"""Fashion-MNIST: 70,000 real 28x28 grey-scale images of 10 clothing classes, federated.

Data: the four standard IDX files (gzipped or not), looked for in `data_dir`, then in
Debian's package (`apt-get install dataset-fashion-mnist` puts them in
/usr/share/datasets/fashion-mnist), then in Keras' cache (~/.keras/datasets/fashion-mnist),
then fetched by Keras where there is a network. The 60,000 training images are dealt to
`num_clients` clients with a seeded Dirichlet label skew (or IID), every example to exactly
one client and every client at least one example; the 10,000 test images are the central
test set. Models: TFF's EMNIST CNN with 10 outputs (its dense layer's width a setting) and
the 2-hidden-layer MLP.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import hashlib
import heapq
import os
import zlib
from collections.abc import Sequence
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt import frozen
from tff_fedpt.options import option
from tff_fedpt.tasks import base, emnist

NUM_CLASSES = 10
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
KERAS_DIR = os.path.join("~", ".keras", "datasets", "fashion-mnist")
# name, magic, shape (None: any count; the real files hold 60,000 and 10,000).
FILES = {
    "train_images": ("train-images-idx3-ubyte", 0x803, (None, 28, 28)),
    "train_labels": ("train-labels-idx1-ubyte", 0x801, (None,)),
    "test_images": ("t10k-images-idx3-ubyte", 0x803, (None, 28, 28)),
    "test_labels": ("t10k-labels-idx1-ubyte", 0x801, (None,)),
}
GET_DATA = (
    "Get the files with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu, as root; "
    "`make data` does it) or, on a machine with network, "
    "`python -c 'import tensorflow as tf; tf.keras.datasets.fashion_mnist.load_data()'`, "
    "or pass data_dir (--data_dir in the binaries): a directory holding the four IDX files."
)


def read_idx(path: str, magic: int, shape: Optional[tuple[int, ...]] = None) -> np.ndarray:
    """Reads an IDX file (gzipped if the name ends in .gz) of unsigned bytes.

    Args:
      path: The file.
      magic: The expected magic number (0x803 images, 0x801 labels).
      shape: The expected shape; None entries match any size (None: any shape).

    Raises:
      base.DatasetError: naming the file, for a wrong magic number, header, shape or a
        truncated body.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise base.DatasetError(f"{path} cannot be read ({e}).") from None
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        found = hex(int.from_bytes(data[:4], "big")) if len(data) >= 4 else "nothing"
        raise base.DatasetError(
            f"{path} is not an IDX file of this kind: magic number {found}, expected "
            f"{hex(magic)}."
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise base.DatasetError(f"{path} is truncated inside its header.")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if shape is not None and (
        len(dims) != len(shape) or any(e is not None and d != e for d, e in zip(dims, shape))
    ):
        raise base.DatasetError(f"{path} holds shape {dims}, expected {tuple(shape)}.")
    size = int(np.prod(dims))
    if len(data) - header != size:
        raise base.DatasetError(
            f"{path} has {len(data) - header} data bytes, expected {size} for shape {dims} "
            "(truncated or padded)."
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def _file_in(directory: str, name: str) -> Optional[str]:
    for candidate in (name + ".gz", name):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            return path
    return None


def find_data_dir(data_dir: Optional[str] = None, *, download: bool = True) -> str:
    """The first directory holding all four files: `data_dir`, Debian's, Keras' cache;
    else Keras' download (where there is a network).

    Raises:
      base.DatasetNotFoundError: naming the places looked in and how to get the files.
    """
    places = [data_dir] if data_dir else [DEBIAN_DIR, os.path.expanduser(KERAS_DIR)]
    for place in places:
        if all(_file_in(place, name) for name, _, _ in FILES.values()):
            return place
    if download and not data_dir:
        try:
            tf.keras.datasets.fashion_mnist.load_data()
        except Exception:  # noqa: BLE001 - no network here: fall through to the message
            pass
        else:
            return os.path.expanduser(KERAS_DIR)
    looked = ", ".join(places)
    raise base.DatasetNotFoundError(
        f"Fashion-MNIST not found: looked for the four IDX files in {looked}"
        f"{'' if data_dir else ' and tried Keras download'}. {GET_DATA}"
    )


def load_arrays(data_dir: Optional[str] = None) -> dict[str, np.ndarray]:
    """The four arrays, checked (uint8 images, uint8 labels)."""
    directory = find_data_dir(data_dir)
    arrays = {}
    for key, (name, magic, shape) in FILES.items():
        arrays[key] = read_idx(_file_in(directory, name), magic, shape)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise base.DatasetError(
                f"{_file_in(directory, FILES[split + '_images'][0])} holds {len(images)} "
                f"images but {_file_in(directory, FILES[split + '_labels'][0])} "
                f"{len(labels)} labels."
            )
        if labels.max(initial=0) >= NUM_CLASSES:
            raise base.DatasetError(
                f"{_file_in(directory, FILES[split + '_labels'][0])} holds labels >= "
                f"{NUM_CLASSES}; it is not Fashion-MNIST."
            )
    return arrays


def data_fingerprint(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the four arrays (names, shapes and bytes, in `FILES` order): the run
    record holds it, so a resume on other images or labels is refused."""
    digest = hashlib.sha256()
    for key in FILES:
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def split_public(num_examples: int, public_fraction: float, seed: int):
    """(public indices, client indices): a seeded `public_fraction` of the training set
    held out as the server's public data (for central pretraining); the clients hold the
    rest. Its own random stream, so the clients' split does not depend on it.

    Raises:
      ValueError: for a fraction outside [0, 1).
    """
    if isinstance(public_fraction, bool) or not 0 <= public_fraction < 1:
        raise ValueError(f"public_fraction must be in [0, 1); received {public_fraction!r}.")
    order = np.random.default_rng([seed, 0x5EED]).permutation(num_examples)
    cut = int(round(public_fraction * num_examples))
    return np.sort(order[:cut]), np.sort(order[cut:])


def public_data(
    data_dir: Optional[str] = None,
    *,
    public_fraction: float = 0.2,
    classes: Optional[Sequence[int]] = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """The server's public data for central pretraining, and the test set.

    Returns:
      {"x", "y"}: the held-out training examples (`split_public`) of `classes` (all
      when None), and {"test_x", "test_y"}: the 10,000 test images. Images are float32
      in [0, 1] of shape (28, 28, 1), labels int32.
    """
    if not public_fraction > 0:
        raise ValueError(
            f"public_fraction must be > 0 for public data; received {public_fraction}."
        )
    arrays = load_arrays(data_dir)
    labels = arrays["train_labels"].astype(np.int32)
    public, _ = split_public(len(labels), public_fraction, seed)
    if classes is not None:
        bad = sorted(set(classes) - set(range(NUM_CLASSES)))
        if bad or not classes:
            raise ValueError(
                f"classes must be a non-empty subset of 0..9; received {list(classes)}."
            )
        public = public[np.isin(labels[public], list(classes))]
    return {
        "x": _images(arrays["train_images"][public]),
        "y": labels[public],
        "test_x": _images(arrays["test_images"]),
        "test_y": arrays["test_labels"].astype(np.int32),
    }


def client_examples(
    data_dir: Optional[str] = None, *, public_fraction: float = 0.2, seed: int = 0
) -> dict[str, np.ndarray]:
    """The clients' training examples pooled (what `split_public` leaves after the
    server's hold-out, before `partition`), and the test set, as `public_data` gives them.

    Raises:
      ValueError: for a fraction outside [0, 1).
    """
    split_public(0, public_fraction, seed)  # checks the fraction before reading files
    arrays = load_arrays(data_dir)
    _, held = split_public(len(arrays["train_labels"]), public_fraction, seed)
    return {
        "x": _images(arrays["train_images"][held]),
        "y": arrays["train_labels"][held].astype(np.int32),
        "test_x": _images(arrays["test_images"]),
        "test_y": arrays["test_labels"].astype(np.int32),
    }


def _images(array: np.ndarray) -> np.ndarray:
    return (array.astype(np.float32) / 255.0)[..., np.newaxis]


def partition(
    labels: np.ndarray, num_clients: int, alpha: Optional[float], seed: int
) -> list[np.ndarray]:
    """Deals every example to exactly one of `num_clients` clients.

    alpha=None: IID (a seeded shuffle cut into near-equal parts). Otherwise, per class,
    the class's examples are split in Dirichlet(alpha) proportions (small alpha: strong
    label skew); then each client left empty takes one example from the largest client,
    so every client has at least one.
    """
    if not 1 <= num_clients <= len(labels):
        raise ValueError(
            f"num_clients must be in [1, {len(labels)}] (one example each at least); "
            f"received {num_clients}."
        )
    rng = np.random.default_rng(seed)
    if alpha is None:
        return [np.sort(p) for p in np.array_split(rng.permutation(len(labels)), num_clients)]
    shares = base.dirichlet_deal(labels, num_clients, alpha, rng)
    # Each empty client, in order, takes the last example of the largest client (the
    # lowest index among equals): a heap of (-size, index) with stale entries skipped.
    heap = [(-len(share), k) for k, share in enumerate(shares)]
    heapq.heapify(heap)
    for client in range(num_clients):
        if shares[client]:
            continue
        while True:
            size, donor = heapq.heappop(heap)
            if -size == len(shares[donor]):
                break
        shares[client].append(shares[donor].pop())
        heapq.heappush(heap, (-len(shares[donor]), donor))
        heapq.heappush(heap, (-1, client))
    return [np.array(sorted(s), dtype=np.int64) for s in shares]


def cnn(seed: int = 0, dense_units: int = 128) -> tf.keras.Model:
    """TFF's EMNIST CNN with 10 outputs (1,199,882 parameters at dense_units=128)."""
    return emnist.cnn(seed, NUM_CLASSES, dense_units=dense_units)


def mlp(seed: int = 0, units: int = 200) -> tf.keras.Model:
    return emnist.mlp(seed, NUM_CLASSES, units=units)


def _presets(dense_layer: str) -> dict[str, frozen.FreezeSpec]:
    return {
        "dense": frozen.FreezeSpec(layers=(dense_layer,)),
        "all_but_output": frozen.FreezeSpec(all_but_last=1),
        **{f"trainable_{f:g}": frozen.FreezeSpec(trainable_fraction=f) for f in (0.5, 0.1, 0.02)},
    }


PRESETS = {
    "cnn": {**_presets("dense128"), "convs": frozen.FreezeSpec(layer_types=("Conv2D",))},
    "mlp": _presets("dense1"),
}

# The models without the data (tff_fedpt.tasks.catalog).
CATALOG = {
    "cnn": base.ModelSpec(cnn, base.image_spec((28, 28, 1)), PRESETS["cnn"]),
    "mlp": base.ModelSpec(mlp, base.image_spec((28, 28, 1)), PRESETS["mlp"]),
}


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """The task's options as the binary's flags (scripts/run_fashion_mnist.py)."""

    data_dir: Optional[str] = option(
        None, "Directory of the four IDX files (default: Debian's, then Keras' cache)."
    )
    num_clients: int = option(1000, "Number of training clients.")
    dirichlet_alpha: float = option(0.5, "Label-skew concentration (small = more skew).")
    iid: bool = option(False, "Deal the examples IID instead of with Dirichlet label skew.")
    dense_units: int = option(128, "Width of the CNN's dense layer.")
    public_fraction: float = option(
        0.0,
        "Fraction of the training set held out as the server's public data (scripts/pretrain.py "
        "pretrains on it); the clients hold the rest.",
    )

    def load_kwargs(self) -> dict:
        """The arguments of `load` these options ask for."""
        return dict(
            data_dir=self.data_dir,
            num_clients=self.num_clients,
            alpha=None if self.iid else self.dirichlet_alpha,
            dense_units=self.dense_units,
            public_fraction=self.public_fraction,
        )


_DEFAULTS = DataOptions()
# `load` arguments that change the models only: `tasks.with_model_settings` rebuilds the
# models with them and keeps the data.
MODEL_SETTINGS = ("dense_units",)


def build_models(dense_units: int = _DEFAULTS.dense_units) -> dict:
    """Model name -> callable(seed) building it, the CNN's dense layer `dense_units` wide."""
    if not (isinstance(dense_units, int) and dense_units >= 1):
        raise ValueError(f"dense_units must be an integer >= 1; received {dense_units!r}.")
    return {
        "cnn": lambda seed=0: cnn(seed, dense_units),
        "mlp": lambda seed=0: mlp(seed),
    }


def load(
    *,
    data_dir: Optional[str] = None,
    num_clients: int = _DEFAULTS.num_clients,
    alpha: Optional[float] = _DEFAULTS.dirichlet_alpha,
    seed: int = 0,
    dense_units: int = _DEFAULTS.dense_units,
    public_fraction: float = _DEFAULTS.public_fraction,
) -> base.Task:
    """The Fashion-MNIST task.

    Args:
      data_dir: Directory of the four IDX files (default: Debian's, then Keras').
      num_clients: Number of training clients (1 to 60,000).
      alpha: Dirichlet concentration of the label skew; None for IID.
      seed: Seed of the partition.
      dense_units: Width of the CNN's dense layer.
      public_fraction: Fraction of the training set held out as the server's public data
        (`public_data`, for `scripts/pretrain.py`); the clients hold the rest.

    Raises:
      base.DatasetNotFoundError: if the files are nowhere to be found.
      base.DatasetError: if a file is truncated or not what it should be.
      ValueError: for out-of-range arguments.
    """
    if not dense_units >= 1:
        raise ValueError(f"dense_units must be >= 1; received {dense_units}.")
    if alpha is not None:
        base.check_dirichlet_alpha(alpha)
    split_public(0, public_fraction, seed)  # checks the fraction before reading files
    arrays = load_arrays(data_dir)
    _, held = split_public(len(arrays["train_labels"]), public_fraction, seed)
    images = _images(arrays["train_images"][held])
    labels = arrays["train_labels"][held].astype(np.int32)
    train = collections.OrderedDict()
    for client, idx in enumerate(partition(labels, num_clients, alpha, seed)):
        train[f"client_{client:05d}"] = collections.OrderedDict(
            pixels=images[idx], label=labels[idx]
        )
    test = tf.data.Dataset.from_tensor_slices(
        collections.OrderedDict(
            pixels=(arrays["test_images"].astype(np.float32) / 255.0)[..., np.newaxis],
            label=arrays["test_labels"].astype(np.int32),
        )
    )
    return base.Task(
        name="fashion_mnist",
        train_data=tff.simulation.datasets.TestClientData(train),
        test_data=test,
        to_model_input=lambda ds: ds.map(lambda e: (e["pixels"], e["label"])),
        models=build_models(dense_units),
        freeze_presets=PRESETS,
        loss_fn=lambda: tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics_fn=lambda: [tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        default_model="cnn",
        narrow_models={
            "cnn": lambda seed, width: cnn(seed, dense_units=width),
            "mlp": lambda seed, width: mlp(seed, units=width),
        },
        default_freeze="dense",
        settings=dict(
            num_clients=num_clients,
            alpha=alpha,
            seed=seed,
            dense_units=dense_units,
            public_fraction=public_fraction,
            data_sha256=data_fingerprint(arrays),
        ),
    )

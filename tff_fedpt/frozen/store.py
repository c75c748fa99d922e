"""Where pretrained values are kept: the `.npz` file `PretrainedWeights.save` writes and
`load` reads, and the per-tensor store that remote TFF workers read from their own disk
(`PretrainedWeights.save_for_workers`)."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping

import numpy as np
import tensorflow as tf

_ORDER = "__order__"

Layers = Mapping[str, Mapping[str, np.ndarray]]


def read_npz(path: str) -> dict[str, dict[str, np.ndarray]]:
    """The layers of a file written by `write_npz`, by layer then weight name.

    Raises:
      ValueError: naming the file, when it is missing, unreadable or not such a file.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            order = json.loads(str(data[_ORDER]))
            arrays = {key: data[key] for key in order}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"{path} is not a pretrained-weights file from PretrainedWeights.save "
            f"({type(e).__name__}: {e})."
        ) from None
    layers: dict[str, dict[str, np.ndarray]] = {}
    for key in order:
        layer, weight = key.rsplit("/", 1)
        layers.setdefault(layer, {})[weight] = arrays[key]
    return layers


def write_npz(layers: Layers, path: str) -> None:
    """Writes `layers` to an `.npz` file (atomically: a temporary name, then rename),
    with their order."""
    order = [f"{layer}/{w}" for layer, weights in layers.items() for w in weights]
    arrays = {f"{layer}/{w}": v for layer, ws in layers.items() for w, v in ws.items()}
    tmp = f"{path}.tmp{os.getpid()}.npz"
    np.savez(tmp, **{_ORDER: np.array(json.dumps(order))}, **arrays)
    os.replace(tmp, path)


def tensor_path(directory: str, layer: str, weight: str) -> str:
    """The store's file of one weight."""
    safe = f"{layer}__{weight}".replace("/", "_")
    return os.path.join(directory, f"{safe}.tensor")


def file_digest(data: bytes) -> tuple[int, ...]:
    """TensorFlow's `tf.fingerprint` (farmhash64) of a file's bytes, as the client
    computation computes it on the worker: 8 unsigned bytes."""
    digest = tf.fingerprint(tf.constant([data], tf.string))[0]
    return tuple(int(b) for b in digest.numpy())


def write_worker_store(layers: Layers, directory: str) -> dict[str, tuple[int, ...]]:
    """Writes one serialized tensor file per weight into `directory` (each atomically);
    returns {path: `file_digest` of the bytes written}."""
    if not tf.executing_eagerly():
        raise RuntimeError("save_for_workers runs eagerly (outside model_fn).")
    os.makedirs(directory, exist_ok=True)
    digests = {}
    for layer, weights in layers.items():
        for weight, value in weights.items():
            path = tensor_path(directory, layer, weight)
            data = tf.io.serialize_tensor(tf.constant(value)).numpy()
            digests[path] = file_digest(data)
            tmp = f"{path}.tmp{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
    return digests

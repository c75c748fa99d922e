"""What both halves of the FedPT wire agree on: the TensorFlow Lite file's signature and
tensor names, the frozen seed and its check, the pretrained fingerprint and its encoding,
the device's error and update types, and the file check that needs no schema.

The library (`tff_fedpt.device`, `tff_fedpt.process`, `tff_fedpt.frozen`) and the
TensorFlow-free device client (`fedpt_device.client`) both import these names from here
(NumPy only); neither reaches into the other.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

SIGNATURES = ("start_round", "train", "evaluate", "get_update", "frozen_weights")
# Only in files whose frozen part is (in part) pretrained: the values ship inside the file,
# once, with the app; this signature returns their fingerprint, checked each round.
FINGERPRINT_SIGNATURE = "frozen_fingerprint"
# Only in files that train on the frozen prefix's output: x -> {"features": ...}, run once
# per local example (after a start_round, which fills the frozen values), its output kept
# by the app and given to train and evaluate in place of x.
FEATURES_SIGNATURE = "features"
SEED = "frozen_seed"


def trainable_name(i: int) -> str:
    """The name of the i-th trainable tensor in the start_round signature."""
    return f"trainable_{i:03d}"


def delta_name(i: int) -> str:
    """The name of the i-th delta tensor in the get_update signature."""
    return f"delta_{i:03d}"


class DeviceError(ValueError):
    """A bad value at the device boundary; the message names the signature and argument."""


@dataclasses.dataclass(frozen=True)
class DeviceUpdate:
    """What one device uploads: the trainable delta (initial - trained) and its weight."""

    delta: list[np.ndarray]
    weight: float
    num_examples: int


def fingerprint_words(hex_digest: str) -> np.ndarray:
    """The 64-hex-digit fingerprint as int32[8] (big-endian words)."""
    return np.frombuffer(bytes.fromhex(hex_digest), dtype=">i4").astype(np.int32)


def fingerprint_hex(words) -> str:
    """int32[8] back to the 64-hex-digit fingerprint."""
    return np.asarray(words, dtype=np.int32).astype(">i4").tobytes().hex()


def mismatch_message(where: str, expected: str, received: str) -> str:
    return (
        f"{where}: the pretrained frozen values have fingerprint {received}, but "
        f"{expected} was expected; these are other pretrained weights (another file, or "
        "a changed tensor). Use the weights the run was started with. (These fingerprints "
        "cover the frozen pretrained tensors only, as a state carries them; a file's "
        "PretrainedWeights.fingerprint(), printed when it is saved, covers every tensor it "
        "holds and differs when the model freezes only some.)"
    )


def check_frozen_seed(frozen_seed: Any, name: str = "frozen_seed") -> np.int64:
    """`frozen_seed` as an int64, or the error that names it.

    Accepts a Python or numpy integer (or a 0-d integer array) within int64's range;
    a float, a bool, or a value outside int64 (such as `np.uint64(2**64 - 1)`, which
    would wrap to -1) is refused rather than converted.

    Raises:
      TypeError: for a value that is not an integer.
      ValueError: for an integer outside [-2**63, 2**63 - 1].
    """
    value = frozen_seed
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{name} must be an int64 scalar; received {type(frozen_seed).__name__} "
            f"{frozen_seed!r}."
        )
    info = np.iinfo(np.int64)
    if not info.min <= int(value) <= info.max:
        raise ValueError(
            f"{name} must fit in a signed 64-bit integer [{info.min}, {info.max}]; "
            f"received {int(value)}."
        )
    return np.int64(int(value))


TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier of every .tflite file, at byte 4


def read_file_header(tflite_model) -> tuple[bytes, str]:
    """(the file's bytes, how to name it) after the checks that need no flatbuffer
    schema: readable, not empty, the `TFL3` identifier at byte 4."""
    if isinstance(tflite_model, (bytes, bytearray, memoryview)):
        data, source = bytes(tflite_model), "the model bytes"
    elif isinstance(tflite_model, (str, os.PathLike)):
        source = os.fspath(tflite_model)
        try:
            with open(source, "rb") as f:
                data = f.read()
        except OSError as e:
            raise DeviceError(f"{source}: cannot be read ({e.strerror}).") from None
    else:
        raise DeviceError(
            "the model must be a .tflite file's path or its bytes; received "
            f"{type(tflite_model).__name__}."
        )
    if not data:
        raise DeviceError(f"{source} is empty (0 bytes); expected a file from export_tflite.")
    if data[4:8] != TFLITE_IDENTIFIER:
        raise DeviceError(
            f"{source} is not a TensorFlow Lite file ({len(data):,} bytes starting "
            f"{data[:8]!r}; a .tflite file has {TFLITE_IDENTIFIER!r} at byte 4)."
        )
    return data, source

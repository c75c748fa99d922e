"""The fingerprint of pretrained frozen values, which travels in their place.

SHA-256, as 64 hex digits, over the pretrained frozen tensors in model order (the order
of the model's non-trainable variables); for each tensor the bytes of
`f"{dtype}{shape}\\n"` (dtype as numpy names it, e.g. `float32`; shape as a Python
tuple, e.g. `(9216, 128)`), then its values in C order, little-endian. In the state and
the broadcast it travels as int32[8] (`fedpt_device.protocol.fingerprint_words`: the
digest's 32 bytes as 8 big-endian words), 32 bytes per client per round.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

FINGERPRINT_WORDS = 8


def fingerprint(values: Sequence[np.ndarray]) -> str:
    """SHA-256 (hex) over `values` in order: see this module's docstring."""
    digest = hashlib.sha256()
    for value in values:
        array = np.ascontiguousarray(value)
        little = array.astype(array.dtype.newbyteorder("<"), copy=False)
        digest.update(f"{array.dtype.name}{tuple(array.shape)}\n".encode())
        digest.update(little.tobytes(order="C"))
    return digest.hexdigest()


def sources_fingerprint(sources: Sequence[Any]) -> str | None:
    """The fingerprint of the pretrained sources among `sources` (None: there are none)."""
    values = [s.pretrained_value for s in sources if s.pretrained_value is not None]
    return fingerprint(values) if values else None

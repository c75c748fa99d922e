"""FedPT's weights on the server: the state's trainable weights to the full model's
`ModelWeights` and back (the seed's frozen weights added or checked), the broadcast
payload, and the checks `next` and `set_model_weights` run in Python first."""

from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedpt_device import protocol
from fedpt_device.protocol import FINGERPRINT_SIGNATURE as FINGERPRINT
from fedpt_device.protocol import SEED
from tff_fedpt import frozen as frozen_lib

ModelWeights = tff.learning.models.ModelWeights


def weight_functions(frozen_initializers, fingerprint):
    """(payload, to_full_weights, from_full_weights) for the composer: the broadcast is
    the trainable weights and the seed; the full weights add the seed's frozen ones."""

    def payload(weights, seed, fingerprint=None):
        value = collections.OrderedDict(trainable=weights.trainable, frozen_seed=seed)
        if fingerprint is not None:
            value[FINGERPRINT] = fingerprint
        return value

    def to_full_weights(weights, seed, fingerprint=None):
        frozen = frozen_lib.generate_frozen_weights(frozen_initializers, seed)
        return ModelWeights(trainable=list(weights.trainable), non_trainable=list(frozen))

    def from_full_weights(model_weights, seed, fingerprint=None):
        frozen = frozen_lib.generate_frozen_weights(frozen_initializers, seed)
        checks = [
            tf.debugging.assert_equal(
                given,
                expected,
                message=(
                    f"set_model_weights: frozen (non-trainable) weight {i} "
                    f"({init.name}) does not match the weights generated from this "
                    "process's frozen_seed; FedPT cannot accept other frozen values"
                ),
            )
            for i, (given, expected, init) in enumerate(
                zip(model_weights.non_trainable, frozen, frozen_initializers)
            )
        ]
        with tf.control_dependencies(checks):
            trainable = [tf.identity(w) for w in model_weights.trainable]
        return ModelWeights(trainable=trainable, non_trainable=[])

    arity = 2 if fingerprint is None else 3
    return tuple(fixed_arity(f, arity) for f in (payload, to_full_weights, from_full_weights))


def fixed_arity(fn, n):
    """`fn` taking exactly n positional arguments (TFF traces no defaults or varargs)."""
    if n == 2:
        return lambda a, b: fn(a, b)
    return lambda a, b, c: fn(a, b, c)


def state_fingerprint(state) -> str | None:
    """The pretrained fingerprint a FedPT state carries (hex), or None."""
    words = getattr(state, FINGERPRINT, None)
    return None if words is None else protocol.fingerprint_hex(words)


def next_check(fingerprint):
    """Refuses, in one Python line, a state made with other pretrained values (each
    client checks it again in the computation)."""

    def check(state, client_data):
        del client_data
        held = state_fingerprint(state)
        if held is not None and held != fingerprint:
            raise frozen_lib.FingerprintMismatchError(
                protocol.mismatch_message("next", held, fingerprint)
            )

    return check


def set_model_weights_check(records):
    """Names a frozen weight that is not the seed's, in Python, before TFF runs
    `set_model_weights` (whose own check would surface as a buried gRPC error)."""

    def check(state, model_weights):
        given = list(getattr(model_weights, "non_trainable", None) or [])
        seed = getattr(state, SEED, None)
        if seed is not None and len(given) != len(records):
            raise ValueError(
                f"set_model_weights: {len(given)} frozen (non-trainable) weights received; "
                f"this process has {len(records)} ({[r.name for r in records]})."
            )
        if seed is not None and given:
            expected = frozen_lib.generate_frozen_weights(records, np.int64(seed))
            for i, (value, want, record) in enumerate(zip(given, expected, records)):
                value = np.asarray(value)
                if value.shape != tuple(record.shape):
                    raise ValueError(
                        f"set_model_weights: frozen weight {i} ({record.name}) has shape "
                        f"{value.shape}; expected {tuple(record.shape)}."
                    )
                held = record.pretrained_value
                if held is not None:
                    # TFF's runtime compares pretrained values exactly; so does this check.
                    if not np.array_equal(value, held):
                        diff = float(np.max(np.abs(value - held)))
                        raise ValueError(
                            f"set_model_weights: frozen weight {i} ({record.name}) is not the "
                            f"pretrained value this process holds (max difference {diff:.3g}); "
                            "FedPT keeps pretrained frozen values as they are."
                        )
                    continue
                # Tolerance: the QR behind orthogonal initializers differs by float32
                # ulps between eager TensorFlow and TFF's runtime (which checks exactly).
                if not np.allclose(value, np.asarray(want), rtol=0, atol=1e-6):
                    diff = float(np.max(np.abs(value - np.asarray(want))))
                    raise ValueError(
                        f"set_model_weights: frozen weight {i} ({record.name}) is not the one "
                        f"frozen_seed={int(seed)} generates (max difference {diff:.3g}); "
                        "FedPT regenerates frozen weights from the seed and cannot take others."
                    )

    return check

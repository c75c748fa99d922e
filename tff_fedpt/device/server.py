"""The server side of device rounds: the exact broadcast of a FedPT process's state
(`broadcast_payload`), and the next state from untrusted device updates through the
process's own aggregator and server optimizer (`apply_device_updates`)."""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedpt_device.protocol import DeviceUpdate
from tff_fedpt import composer, compression


def broadcast_payload(learning_process, state) -> collections.OrderedDict:
    """Exactly what `learning_process` broadcasts from `state`: OrderedDict(trainable=[...],
    frozen_seed=...), after the process's own distributor (so a quantized broadcast
    arrives dequantized, as on the clients)."""
    parts = _device_parts("broadcast_payload", learning_process)
    constants = [getattr(state, k) for k in parts.constants]
    value = parts.payload(state.global_model_weights, *constants)
    return compression.as_received(parts.distributor, value)


def _device_parts(where: str, learning_process) -> composer.Parts:
    """The parts of a process whose client work devices can run, or a clear error."""
    parts = composer.parts(learning_process)
    if parts.device_rounds is not None:
        raise ValueError(f"{where}: this process cannot run on devices: {parts.device_rounds}")
    return parts


def _upload_specs(parts) -> list[tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of each tensor a client uploads, from the aggregator's type."""
    value_type = parts.aggregator.next.type_signature.parameter[1].member
    return [(tuple(t.shape), np.dtype(t.dtype)) for t in value_type]


class _Delta(list):
    """A checked delta; `zeroed` names why it was zeroed ("" when it was not)."""

    zeroed = ""


# Bounds on what one device may upload. Within them, any number of devices sums to a
# finite float32 aggregate (2**24 * 1e9 = 1.7e16 per device; float32 reaches 3.4e38), so
# one device cannot make the round non-finite and lose the others' work. 2**24 is also
# the largest example count a float32 weight holds exactly.
MAX_UPDATE_WEIGHT = float(2**24)
MAX_ABS_DELTA = 1e9


def _untrusted_update(index: int, update, expected) -> tuple[_Delta, np.float32]:
    """One device's upload, checked as untrusted input: (delta, weight) to aggregate.

    As TFF's own client step does (`build_model_delta_update_with_tff_optimizer`), a
    delta holding a non-finite value is zeroed and given weight 0, so the round keeps
    the other devices' work; so is an update whose weight is negative, non-finite or above
    `MAX_UPDATE_WEIGHT`, or whose delta exceeds `MAX_ABS_DELTA` (`_Delta.zeroed` says
    why). A structure that is not the process's upload type is refused.
    """
    where = f"apply_device_updates: update {index}"
    delta = getattr(update, "delta", None)
    weight = getattr(update, "weight", None)
    if delta is None or weight is None:
        raise ValueError(
            f"{where} is a {type(update).__name__}; expected a DeviceUpdate (from "
            "DeviceClient.get_update or .train)."
        )
    if isinstance(delta, (np.ndarray, tf.Tensor)) or not isinstance(delta, Sequence):
        raise ValueError(f"{where}: delta must be a list of tensors; received {type(delta)}.")
    if len(delta) != len(expected):
        raise ValueError(
            f"{where} has {len(delta)} delta tensors; the process uploads {len(expected)}."
        )
    out = _Delta()
    for i, (value, (shape, dtype)) in enumerate(zip(delta, expected)):
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: delta {i} is not a numeric tensor ({e}).") from None
        if array.shape != shape or not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise ValueError(
                f"{where}: delta {i} has shape {array.shape} and dtype {array.dtype}; "
                f"expected shape {shape} and dtype {dtype}."
            )
        out.append(array)
    try:
        weight = float(weight)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: weight must be a number; received {weight!r}.") from None
    if not all(np.all(np.isfinite(a)) for a in out):
        reason = "non_finite"
    elif not 0 <= weight <= MAX_UPDATE_WEIGHT:  # NaN fails too
        reason = "bad_weight"
    elif any(a.size and float(np.max(np.abs(a))) > MAX_ABS_DELTA for a in out):
        reason = "delta_too_large"
    else:
        return _Delta(a.astype(dtype, copy=False) for a, (_, dtype) in zip(out, expected)), (
            np.float32(weight)
        )
    zeroed = _Delta(np.zeros(shape, dtype) for shape, dtype in expected)
    zeroed.zeroed = reason
    return zeroed, np.float32(0.0)


def apply_device_updates(learning_process, state, updates: Sequence[DeviceUpdate]):
    """The next state from device updates, through the process's aggregator and finalizer.

    Each update is untrusted input: one whose delta holds a non-finite value or exceeds
    `MAX_ABS_DELTA`, or whose weight is negative, non-finite or above `MAX_UPDATE_WEIGHT`,
    is zeroed with weight 0 (as TFF's client step treats a client whose training
    diverged), so no device can lose the others' work; an update of the wrong structure is
    refused.

    Returns:
      `tff.learning.templates.LearningProcessOutput(state, metrics)` with the
      aggregator's and finalizer's measurements, the round's communication and
      `devices/non_finite_updates`, `devices/bad_weight_updates` and
      `devices/delta_too_large_updates` (how many updates were zeroed, and why).

    Raises:
      ValueError: naming the update and what is wrong with it.
    """
    if not updates:
        raise ValueError("apply_device_updates: no updates received.")
    parts = _device_parts("apply_device_updates", learning_process)
    expected = _upload_specs(parts)
    checked = [_untrusted_update(i, u, expected) for i, u in enumerate(updates)]
    # The server half of `next` itself (composer.Parts.server_step): the same aggregator,
    # finalizer and communication accounting. The devices ran the client work, whose
    # state (client hyperparameters) a round does not change, nor does the broadcast's.
    new_state, server_metrics = parts.server_step(
        state,
        state.distributor,
        state.client_work,
        [list(delta) for delta, _ in checked],
        [weight for _, weight in checked],
    )
    metrics = collections.OrderedDict(
        aggregator=server_metrics["aggregator"],
        finalizer=server_metrics["finalizer"],
        communication=collections.OrderedDict(
            (k, int(v)) for k, v in server_metrics["communication"].items()
        ),
        devices=collections.OrderedDict(
            (f"{reason}_updates", sum(delta.zeroed == reason for delta, _ in checked))
            for reason in ("non_finite", "bad_weight", "delta_too_large")
        ),
    )
    return tff.learning.templates.LearningProcessOutput(new_state, metrics)

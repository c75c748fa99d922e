"""Compression of what FedPT still sends: quantized uploads and a quantized broadcast.

- Uploads: TFF's own `tff.aggregators.EncodedSumFactory.quantize_above_threshold`
  (uniform quantization with stochastic rounding, bit-packed; from
  tensorflow_model_optimization's tensor encoding) inside a `tff.aggregators.MeanFactory`:
  `quantized_mean(bits)`. Pass it as `model_aggregator`.
- Broadcast: `build_quantized_broadcast_process(value_type, bits)`, a TFF distribution
  process that quantizes each float tensor at the server to `bits` (8 or 16) with its
  min and max, broadcasts the integers, and dequantizes at the clients. The server keeps
  full-precision weights; clients train from the dequantized ones and send their delta
  against them. `build_fedpt_process(..., broadcast_bits=8)` uses it.

Both are counted by their encoded TFF types (see `tff_fedpt.communication.traffic`).

Differential privacy: quantizing the broadcast is post-processing of a DP model and
keeps the guarantee. Quantizing a clipped update can lengthen it past the clipping
norm (each coordinate moves by up to one quantization step), which voids the
sensitivity bound DP-FedAvg's noise is calibrated to, so `check_dp_compatible` refuses
quantized uploads with DP.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt.options import option

UPLOAD_BITS = range(1, 17)  # what TFF's uniform quantization accepts
BROADCAST_BITS = (8, 16)
_INT_DTYPES = {8: tf.uint8, 16: tf.uint16}


@dataclasses.dataclass(frozen=True)
class CompressionOptions:
    """Compression of FedPT's trainable part; the binaries' flags of the same names."""

    upload_bits: Optional[int] = option(
        None, "FedPT: quantize client uploads to this many bits (1..16)."
    )
    broadcast_bits: Optional[int] = option(
        None, "FedPT: broadcast the trainable weights in 8 or 16 bits."
    )

    def check(self, *, algorithm: str, compressible: bool, dp: bool) -> None:
        """Checks these options for `algorithm` (with or without DP).

        Raises:
          ValueError: naming the option, the value received and what is valid.
        """
        if self.upload_bits is None and self.broadcast_bits is None:
            return
        if not compressible:
            raise ValueError(
                "upload_bits / broadcast_bits compress FedPT's trainable part and "
                f"need algorithm=fedpt; received algorithm={algorithm}."
            )
        if self.upload_bits is not None:
            check_upload_bits(self.upload_bits)
        if self.broadcast_bits is not None:
            check_broadcast_bits(self.broadcast_bits)
        if dp:
            check_dp_compatible(
                upload_bits=self.upload_bits,
                broadcast_bits=self.broadcast_bits,
            )


def check_upload_bits(bits: int, name: str = "upload_bits") -> None:
    if not isinstance(bits, (int, np.integer)) or bits not in UPLOAD_BITS:
        raise ValueError(
            f"{name} must be an integer in 1..16 (TFF's uniform quantization); "
            f"received {bits!r}."
        )


def check_broadcast_bits(bits: int, name: str = "broadcast_bits") -> None:
    if not isinstance(bits, (int, np.integer)) or bits not in BROADCAST_BITS:
        raise ValueError(
            f"{name} must be one of {list(BROADCAST_BITS)} (the broadcast is sent as "
            f"uint8 or uint16); received {bits!r}."
        )


def _check_threshold(threshold: int) -> None:
    if not isinstance(threshold, (int, np.integer)) or threshold < 0:
        raise ValueError(f"threshold must be an integer >= 0; received {threshold!r}.")


def quantized_mean(bits: int = 8, threshold: int = 0) -> tff.aggregators.MeanFactory:
    """Weighted mean whose client values are uniformly quantized to `bits` before upload.

    Args:
      bits: Bits per value, 1..16.
      threshold: Tensors with at most this many elements are sent unquantized. TFF's
        `compression_aggregator` uses 20,000, which would leave every trainable tensor
        of the EMNIST CNN with its dense layer frozen uncompressed; quantization already
        pays for itself from a handful of elements (8 bytes of min/max per tensor).
    """
    check_upload_bits(bits)
    _check_threshold(threshold)
    return tff.aggregators.MeanFactory(
        tff.aggregators.EncodedSumFactory.quantize_above_threshold(
            quantization_bits=bits, threshold=threshold
        )
    )


def check_dp_compatible(
    *, upload_bits: Optional[int], broadcast_bits: Optional[int], name: str = "upload_bits"
) -> None:
    """Raises ValueError if compression would break DP-FedAvg's guarantee."""
    del broadcast_bits  # post-processing of a DP model: always compatible
    if upload_bits is not None:
        raise ValueError(
            f"{name} cannot be combined with DP: quantizing a clipped update can make "
            "it longer than the clipping norm (each coordinate moves by up to one "
            "quantization step), so the noise would no longer cover the sensitivity and "
            "the reported epsilon would be wrong. Use broadcast_bits (post-processing, "
            "compatible) or drop the DP setting."
        )


def _quantized(spec: tff.TensorType, threshold: int) -> bool:
    return np.dtype(spec.dtype).kind == "f" and int(np.prod(spec.shape)) > threshold


def build_quantized_broadcast_process(
    value_type: tff.Type, bits: int = 8, threshold: int = 0
) -> tff.learning.templates.DistributionProcess:
    """A distribution process that sends float tensors as `bits`-bit integers.

    Each float tensor with more than `threshold` elements is sent as its min and max
    (float32) and `round((x - min) / (max - min) * (2**bits - 1))` as uint8 / uint16;
    other tensors (the int64 frozen seed, tiny tensors) go as they are. The
    measurements report the largest absolute dequantization error of the round.

    Args:
      value_type: The (non-federated) type of the broadcast value, a structure of
        tensors with fully defined shapes.
      bits: 8 or 16.
      threshold: Tensors with at most this many elements are sent as they are.
    """
    check_broadcast_bits(bits)
    _check_threshold(threshold)
    levels = float(2**bits - 1)
    int_dtype = _INT_DTYPES[bits]
    specs = tff.structure.flatten(value_type)
    for spec in specs:
        if not isinstance(spec, tff.TensorType) or spec.shape is None or None in spec.shape:
            raise TypeError(
                f"value_type must be a structure of fully defined tensors; found {spec} in "
                f"{value_type}."
            )
    flags = [_quantized(spec, threshold) for spec in specs]

    def encode_one(x):
        lo, hi = tf.reduce_min(x), tf.reduce_max(x)
        scale = (hi - lo) / levels
        safe = tf.where(scale > 0, scale, tf.ones_like(scale))
        q = tf.cast(tf.round((x - lo) / safe), int_dtype)
        return collections.OrderedDict(values=q, min_max=tf.stack([lo, hi]))

    def decode_one(encoded, dtype):
        lo, hi = encoded["min_max"][0], encoded["min_max"][1]
        return tf.cast(lo + tf.cast(encoded["values"], tf.float32) * (hi - lo) / levels, dtype)

    def flat(value):
        return tff.structure.flatten(tff.structure.from_container(value, recursive=True))

    @tff.tensorflow.computation(value_type)
    def encode(value):
        return [encode_one(tf.cast(x, tf.float32)) if f else x for x, f in zip(flat(value), flags)]

    encoded_type = encode.type_signature.result

    @tff.tensorflow.computation(encoded_type)
    def decode(encoded):
        flat = [
            decode_one(e, spec.dtype) if f else e for e, f, spec in zip(list(encoded), flags, specs)
        ]
        return tff.types.type_to_py_container(
            tff.structure.pack_sequence_as(value_type, flat), value_type
        )

    @tff.tensorflow.computation(value_type, decode.type_signature.result)
    def max_error(original, decoded):
        errors = [
            tf.reduce_max(tf.abs(tf.cast(a, tf.float32) - tf.cast(b, tf.float32)))
            for a, b, f in zip(flat(original), flat(decoded), flags)
            if f
        ]
        return tf.reduce_max(tf.stack(errors)) if errors else tf.constant(0.0)

    @tff.federated_computation
    def init_fn():
        return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(
        init_fn.type_signature.result, tff.FederatedType(value_type, tff.SERVER)
    )
    def next_fn(state, value):
        encoded = tff.federated_map(encode, value)
        at_clients = tff.federated_map(decode, tff.federated_broadcast(encoded))
        error = tff.federated_map(
            max_error, tff.federated_zip((value, tff.federated_map(decode, encoded)))
        )
        return tff.templates.MeasuredProcessOutput(
            state=state,
            result=at_clients,
            measurements=tff.federated_zip(
                collections.OrderedDict(
                    bits=tff.federated_value(np.int32(bits), tff.SERVER), max_abs_error=error
                )
            ),
        )

    return QuantizedBroadcastProcess(init_fn, next_fn, encode=encode, decode=decode)


class QuantizedBroadcastProcess(tff.learning.templates.DistributionProcess):
    """A `DistributionProcess` that also carries its `encode` and `decode` computations
    (what the server sends, what clients reconstruct), for code that broadcasts itself
    (`tff_fedpt.device`)."""

    def __init__(self, initialize_fn, next_fn, *, encode, decode):
        super().__init__(initialize_fn, next_fn)
        self.encode = encode
        self.decode = decode


def as_received(distributor, value):
    """`value` as clients receive it from `distributor`: quantized and dequantized for a
    quantized broadcast, unchanged for TFF's plain broadcast."""
    if isinstance(distributor, QuantizedBroadcastProcess):
        return distributor.decode(distributor.encode(value))
    return value

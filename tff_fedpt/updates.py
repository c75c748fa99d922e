"""The one rule for a client update that holds a non-finite value, inside a TensorFlow
computation: as TFF's own client step (`build_model_delta_client_work`) does, the whole
delta is zeroed and its weight set to 0, so the round keeps the other clients' work. The
server applies the same rule to device uploads it receives, as untrusted NumPy input
(`tff_fedpt.device.apply_device_updates`, with bounds of its own)."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def zero_unless_finite(
    delta: Sequence[tf.Tensor], weight: tf.Tensor, *, builtins_only: bool = False
) -> tuple[list[tf.Tensor], tf.Tensor]:
    """(delta, weight) unchanged when every value of `delta` is finite, else zeros and 0.

    Args:
      delta: The update's tensors.
      weight: Its float32 weight.
      builtins_only: Test finiteness as `d - d == 0` (exactly when `d` is finite):
        TensorFlow Lite has no builtin IsFinite.

    The zeros are a broadcast scalar, so a converted device file stores no zeros of the
    update's size.
    """
    if builtins_only:
        finite = tf.reduce_all([tf.reduce_all(tf.equal(d - d, 0.0)) for d in delta])
    else:
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(d)) for d in delta])
    zeroed = [tf.where(finite, d, tf.constant(0, d.dtype)) for d in delta]
    return zeroed, tf.where(finite, weight, tf.constant(0, weight.dtype))

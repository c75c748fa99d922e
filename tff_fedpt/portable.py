"""The portable frozen-weight generator in TensorFlow ops (`fedpt_device.generator` holds
the algorithm and its NumPy reference; docs/portable_generator.md its test vectors).

Select it per process with `FreezeSpec(generator="portable")`: the simulation, the remote
workers and the device export then draw every seeded frozen tensor with it, and its ops
convert to TensorFlow Lite builtins, so a device needs neither Flex nor TensorFlow's
Philox to regenerate the frozen part.
"""

from __future__ import annotations

import tensorflow as tf

from fedpt_device import generator


class _TFOps:
    """`fedpt_device.generator.NumpyOps`, in TensorFlow ops (all TFLite builtins)."""

    def int32(self, value):
        return tf.cast(value, tf.int32)

    def arange(self, n, like):
        # the limit depends on a runtime value, so the converter stores no n-long constant
        return tf.range(tf.constant(n, tf.int32) + 0 * like)

    def mul(self, x, constant):
        return x * tf.constant(generator.as_int32(constant), tf.int32)

    def add(self, x, constant):
        return x + tf.constant(generator.as_int32(constant), tf.int32)

    def xor(self, x, y):
        return tf.bitwise.bitwise_xor(x, y)

    def sar(self, x, k):
        return tf.bitwise.right_shift(x, tf.constant(k, tf.int32))

    def sub_mul(self, x, y, constant):
        return x - y * tf.constant(constant, tf.int32)

    def seed_words(self, seed):
        words = tf.bitcast(tf.cast(seed, tf.int64), tf.int32)  # [low, high] (little-endian)
        return words[0], words[1]

    def to_float(self, m):
        return tf.cast(m, tf.float32)

    def f32(self, value):
        return tf.constant(value, tf.float32)

    def log(self, x):
        return tf.math.log(x)

    def cos(self, x):
        return tf.math.cos(x)

    def sqrt(self, x):
        return tf.math.sqrt(x)

    def abs(self, x):
        return tf.math.abs(x)

    def where(self, condition, x, y):
        return tf.where(condition, x, y)

    def minimum(self, x, y):
        return tf.minimum(x, y)

    def clip(self, x, lo, hi):
        return tf.minimum(tf.maximum(x, tf.constant(lo, tf.float32)), tf.constant(hi, tf.float32))

    def reshape(self, x, shape):
        return tf.reshape(x, shape)

    def one_hot(self, k, depth):
        return tf.one_hot(k, depth, dtype=tf.float32)

    def one_hot_rows(self, n, depth):
        return tf.one_hot(tf.range(n), depth, dtype=tf.float32)

    def rows_from(self, k, m):
        return tf.cast(tf.range(m) >= k, tf.float32)

    def column(self, r, k):
        return tf.gather(r, k, axis=1)

    def matmul(self, a, b):
        return tf.matmul(a, b)

    def reduce_sum(self, x, axis=None):
        return tf.reduce_sum(x, axis=axis)

    def loop(self, n, body, state, reverse=False):
        start, step = (n - 1, -1) if reverse else (0, 1)
        out = tf.while_loop(
            lambda k, *_: k >= 0 if reverse else k < n,
            lambda k, *s: (k + step, *body(k, *s)),
            (tf.constant(start, tf.int32), *state),
        )
        return tuple(out[1:])

    def transpose(self, x):
        return tf.transpose(x)

    def fill(self, shape, value):
        return tf.fill(shape, tf.constant(value, tf.float32))

    def eye(self, rows, cols):
        return tf.eye(rows, cols, dtype=tf.float32)


TF = _TFOps()


def generate(class_name: str, config: dict, shape, seed, tensor: int) -> tf.Tensor:
    """One frozen tensor drawn with the portable generator; `seed` an int64 scalar."""
    return generator.generate(TF, class_name, config, shape, seed, tensor)

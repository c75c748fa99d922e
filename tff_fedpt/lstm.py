"""Keras' LSTM layer, built without its cuDNN variant where no GPU is visible."""

from __future__ import annotations

import tensorflow as tf


def keras_lstm(units: int, **kwargs) -> tf.keras.layers.LSTM:
    """`tf.keras.layers.LSTM(units, **kwargs)`, the same class, weights and results.

    A Keras LSTM built outside a graph traces a cuDNN variant beside the standard one each
    time it is called in a function (for the grappler to choose between them at run time),
    which on a machine without a GPU is never run: the character model builds in 1.9 s
    with it and 0.25 s without it. Without a GPU the layer is therefore built as Keras
    builds it inside a graph, on the standard path; outputs and gradients are the same bit
    for bit (tests/test_adapters.py). With a GPU visible nothing changes.
    """
    layer = tf.keras.layers.LSTM(units, **kwargs)
    if not tf.config.list_logical_devices("GPU"):
        # Keras' own switch (set in the layer's __init__ from the same conditions).
        layer._could_use_gpu_kernel = False
    return layer

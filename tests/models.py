"""Tiny deterministic models and data shared by the tests."""

import collections

import numpy as np
import tensorflow as tf

import tff_fedpt

INPUT_SPEC = collections.OrderedDict(
    x=tf.TensorSpec([None, 4], tf.float32), y=tf.TensorSpec([None, 1], tf.int32)
)


def mlp(hidden_trainable=True):
    """4-8-3 MLP with seeded initializers (same values in TFF graphs and eagerly)."""
    model = tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=(4,)),
            tf.keras.layers.Dense(
                8,
                activation="relu",
                name="hidden",
                kernel_initializer=tf.keras.initializers.GlorotUniform(seed=1),
            ),
            tf.keras.layers.Dense(
                3, name="out", kernel_initializer=tf.keras.initializers.GlorotUniform(seed=2)
            ),
        ]
    )
    model.get_layer("hidden").trainable = hidden_trainable
    return model


def loss():
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def fedpt_model_fn(freeze="hidden"):
    def model_fn():
        return tff_fedpt.from_keras_model(mlp(), loss=loss(), input_spec=INPUT_SPEC, freeze=freeze)

    return model_fn


def client_data(num_clients=3, examples=10, batch=5, seed=0):
    rng = np.random.default_rng(seed)
    datasets = []
    for c in range(num_clients):
        n = examples + c  # unequal sizes so weighting matters
        x = rng.normal(size=(n, 4)).astype(np.float32)
        y = rng.integers(0, 3, size=(n, 1)).astype(np.int32)
        datasets.append(
            tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(batch)
        )
    return datasets

"""Centralized evaluation of model weights on the task's test set."""

from __future__ import annotations

import functools

import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt import frozen
from tff_fedpt.tasks import Task


class Evaluator:
    """Evaluates `ModelWeights` on a Keras model with the task's loss and metrics.

    `keras_model` must have the same trainable / non-trainable split as the
    `ModelWeights` it is given (for FedPT: the layers of the freeze spec frozen). With
    `features` (a `tff_fedpt.features.FeatureMap` of the same model), the test set passes
    through the frozen prefix once and each evaluation runs the layers after it.
    """

    def __init__(
        self, keras_model: tf.keras.Model, task: Task, batch_size: int = 256, *, features=None
    ):
        self._weights_model = keras_model
        self._keras_model = keras_model
        self._loss_fn = task.loss_fn()
        self._loss = tf.keras.metrics.Mean(name="loss")
        self._metrics = [self._loss, *task.metrics_fn()]
        if features is None:
            self._dataset = task.test_batches(batch_size)
        else:
            self._keras_model = frozen.split_model(keras_model, features.split)[1]
            self._dataset = features(task.to_model_input(task.test_data)).batch(batch_size)
        # Each evaluator traces once, for its own model. A partial, not a closure: TF
        # counts traces by Python code object, so the closures of a grid's evaluators
        # (one per run, in one process) added up to "5 out of the last 5 calls triggered
        # tf.function retracing" warnings.
        self._run = tf.function(functools.partial(_evaluate, self))

    def __call__(self, weights: tff.learning.models.ModelWeights) -> dict[str, float]:
        weights.assign_weights_to(self._weights_model)
        return {name: float(value) for name, value in self._run(self._dataset).items()}


def _evaluate(evaluator: Evaluator, dataset):
    for metric in evaluator._metrics:
        metric.reset_state()
    for x, y in dataset:
        predictions = evaluator._keras_model(x, training=False)
        evaluator._loss.update_state(
            evaluator._loss_fn(y, predictions), sample_weight=tf.shape(y)[0]
        )
        for metric in evaluator._metrics[1:]:
            metric.update_state(y, predictions)
    return {m.name: m.result() for m in evaluator._metrics}

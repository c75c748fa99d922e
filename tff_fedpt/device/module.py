"""The `tf.Module` a device file is converted from: its state and its signatures (see
`tff_fedpt.device`)."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_federated as tff

from fedpt_device import protocol
from fedpt_device.protocol import SEED, delta_name, trainable_name
from tff_fedpt import builtin_ops, updates
from tff_fedpt.device.state import FrozenStores, OptimizerState


class ClientModule(tf.Module):
    """The device's state and its signatures: start_round, train, evaluate, get_update,
    frozen_weights (and frozen_fingerprint with pretrained frozen values; and features
    with `prefix`, when `model` is the part after the frozen prefix of `frozen_model`)."""

    def __init__(
        self,
        model,
        optimizer,
        client_weighting,
        batch_spec,
        builtins_only=False,
        *,
        frozen_model=None,
        prefix=None,
    ):
        super().__init__()
        self._builtins_only = builtins_only
        # Not tracked: SavedModel would trace the Keras layers' own call functions, which
        # read the frozen tensors bound below. The variables the signatures use are
        # tracked explicitly instead.
        object.__setattr__(self, "_model", model)
        self._local_variables = list(model.local_variables)
        self._uniform = client_weighting == tff.learning.ClientWeighting.UNIFORM
        self._trainable = list(model.trainable_variables)
        # Every frozen tensor of the whole model, the prefix's too: its features are
        # computed on the device from the same seed or pretrained values.
        self._frozen = FrozenStores(frozen_model or model)
        self._initial = [
            tf.Variable(tf.zeros([0], v.dtype), shape=tf.TensorShape(None), name=f"initial_{i}")
            for i, v in enumerate(self._trainable)
        ]
        self._optimizer = OptimizerState(optimizer, self._trainable)
        self._num_examples = tf.Variable(tf.constant(0, tf.int64))
        self._started = tf.Variable(tf.constant(False))
        x_spec, y_spec = batch_spec
        trainable_specs = [
            tf.TensorSpec(v.shape, v.dtype, name=trainable_name(i))
            for i, v in enumerate(self._trainable)
        ]
        self.start_round = tf.function(
            self._start_round,
            input_signature=[trainable_specs, tf.TensorSpec([], tf.int64, name=SEED)],
        )
        self.train = tf.function(self._train, input_signature=[x_spec, y_spec])
        self.evaluate = tf.function(self._evaluate, input_signature=[x_spec, y_spec])
        self.get_update = tf.function(self._get_update, input_signature=[])
        self.frozen_weights = tf.function(self._frozen.values, input_signature=[])
        if prefix is not None:
            object.__setattr__(self, "_prefix", prefix[0])
            self.features = tf.function(self._features, input_signature=[prefix[1]])
        self.fingerprint = self._frozen.fingerprint
        if self.fingerprint is not None:
            words = protocol.fingerprint_words(self.fingerprint)
            self.frozen_fingerprint = tf.function(
                lambda: {"fingerprint": tf.constant(words)}, input_signature=[]
            )

    def _start_round(self, trainable, frozen_seed):
        self._frozen.fill(frozen_seed)
        for i, (variable, value) in enumerate(zip(self._trainable, trainable)):
            variable.assign(value)
            self._initial[i].assign(tf.reshape(value, [-1]))
        self._optimizer.reset(frozen_seed)
        self._num_examples.assign(0)
        self._started.assign(True)
        return {"started": tf.constant(True)}

    def _loss(self, x, y, training):
        """(loss, predictions) of one batch: the model's own forward pass, or with
        builtins only the Keras model under builtin gradients and the builtin loss."""
        if not self._builtins_only:
            output = self._model.forward_pass((x, y), training=training)
            return output.loss, output.predictions
        predictions = self._model.keras_model(x, training=training)
        return builtin_ops.loss(self._model.loss, y, predictions), predictions

    def _train(self, x, y):
        self._frozen.bind()
        with tf.GradientTape() as tape:
            loss, _ = self._loss(x, y, training=True)
        if self._builtins_only:
            with builtin_ops.gradients():
                gradients = tape.gradient(loss, self._trainable)
        else:
            gradients = tape.gradient(loss, self._trainable)
        self._optimizer.step(self._trainable, gradients)
        self._num_examples.assign_add(tf.shape(y, out_type=tf.int64)[0])
        return {"loss": loss}

    def _features(self, x):
        self._frozen.bind()
        return {"features": self._prefix(x, training=False)}

    def _evaluate(self, x, y):
        self._frozen.bind()
        loss, predictions = self._loss(x, y, training=False)
        return {"loss": loss, "predictions": predictions}

    def _get_update(self):
        delta = [
            tf.reshape(initial, v.shape) - v for initial, v in zip(self._initial, self._trainable)
        ]
        weight = tf.constant(1.0) if self._uniform else tf.cast(self._num_examples, tf.float32)
        delta, weight = updates.zero_unless_finite(delta, weight, builtins_only=self._builtins_only)
        result = {delta_name(i): d for i, d in enumerate(delta)}
        result["weight"] = weight
        result["num_examples"] = self._num_examples.read_value()
        return result

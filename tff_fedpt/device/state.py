"""The device's state that a `.tflite` client keeps between its signatures: the frozen
tensors (`FrozenStores`) and the client optimizer's state (`OptimizerState`), each in
variables of undefined shape, so that the converter stores none of their values in the
file."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from tff_fedpt import frozen as frozen_lib


def runtime_fill(shape, value, dtype, seed):
    """`tf.fill(shape, value)` whose shape depends on `seed`, so the converter cannot fold
    it into a constant of that size in the file."""
    dims = tf.constant(list(shape), tf.int64) + 0 * tf.cast(seed, tf.int64)
    return tf.fill(dims, tf.cast(value, dtype))


def _owners(keras_model: tf.keras.Model, variable: tf.Variable) -> list[tuple[Any, str]]:
    """(object, attribute) pairs through which a layer reads `variable` in `call`."""
    found = []
    for module in [keras_model, *keras_model.submodules]:
        for attr, value in list(vars(module).items()):
            if value is variable and not attr.startswith("_"):
                found.append((module, attr))
    return found


class FrozenStores(tf.Module):
    """Each frozen variable of a model as an empty store of undefined shape, filled from
    its source at the start of a round (`fill`) and read by its layer through the
    attribute that held the original variable (`bind`)."""

    def __init__(self, model):
        super().__init__()
        frozen = list(model.non_trainable_variables)
        # Pretrained values ship inside the file (a device reads no worker store).
        self.sources = [s.for_device() for s in model.frozen_initializers]
        self.stores = [
            tf.Variable(tf.zeros([0], v.dtype), shape=tf.TensorShape(None), name=f"frozen_{i}")
            for i, v in enumerate(frozen)
        ]
        self._bindings = []
        for i, variable in enumerate(frozen):
            owners = _owners(model.keras_model, variable)
            if not owners:
                raise TypeError(
                    f"frozen variable {variable.name} is not an attribute of any layer, so "
                    "the device client cannot substitute its regenerated value."
                )
            self._bindings.append((owners, i, variable.shape))
        self.fingerprint = frozen_lib.sources_fingerprint(self.sources)

    def fill(self, seed) -> None:
        """Every store from its source, for the round's frozen seed."""
        generated = frozen_lib.generate_frozen_weights(self.sources, seed)
        for store, value, source in zip(self.stores, generated, self.sources):
            if source.constant_fill is not None:  # made at run time, not stored in the file
                value = runtime_fill(source.shape, source.constant_fill, value.dtype, seed)
            store.assign(tf.reshape(value, [-1]))

    def bind(self) -> None:
        """Points each layer's attribute at its store, in the graph being traced."""
        for owners, i, shape in self._bindings:
            value = tf.reshape(self.stores[i], shape)
            for module, attr in owners:
                object.__setattr__(module, attr, value)

    def values(self) -> dict[str, tf.Tensor]:
        return {
            f"frozen_{i:03d}": tf.reshape(store, shape)
            for (_, i, shape), store in zip(self._bindings, self.stores)
        }


class OptimizerState(tf.Module):
    """A `tff.learning.optimizers.Optimizer`'s state (hyperparameters and slots, e.g.
    momentum) for the trainable variables, re-initialized every round; slots are stored
    flat."""

    def __init__(self, optimizer, trainable):
        super().__init__()
        self._optimizer = optimizer
        self._specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)
        self._state = tf.nest.map_structure(
            lambda t: tf.Variable(
                tf.zeros([0], t.dtype) if t.shape.rank else t,
                shape=tf.TensorShape(None) if t.shape.rank else t.shape,
            ),
            self._fresh(),
        )

    def _fresh(self, seed=None):
        """The optimizer's initial state; with `seed` (a runtime value), all-zero slots
        are made at run time, so the converter stores no zeros of the trainable size."""

        def leaf(t):
            t = tf.convert_to_tensor(t)
            static = tf.get_static_value(t)
            if seed is not None and t.shape.rank and static is not None and not static.any():
                return runtime_fill(t.shape, 0, t.dtype, seed)
            return t

        return tf.nest.map_structure(leaf, self._optimizer.initialize(self._specs))

    def assign(self, state) -> None:
        tf.nest.map_structure(
            lambda v, t: v.assign(tf.reshape(t, [-1]) if t.shape.rank else t),
            self._state,
            tf.nest.map_structure(tf.convert_to_tensor, state),
        )

    def reset(self, seed) -> None:
        self.assign(self._fresh(seed))

    def tensors(self):
        return tf.nest.map_structure(
            lambda v, t: tf.reshape(v, t.shape) if t.shape.rank else tf.identity(v),
            self._state,
            self._fresh(),
        )

    def step(self, trainable, gradients) -> None:
        """One optimizer step on the trainable variables."""
        state, updated = self._optimizer.next(self.tensors(), tuple(trainable), tuple(gradients))
        for variable, value in zip(trainable, updated):
            variable.assign(value)
        self.assign(state)

"""Partially trainable TFF models from Keras models."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt import adapters, frozen


class PartiallyTrainableModel(tff.learning.models.VariableModel):
    """A `tff.learning.models.VariableModel` whose non-trainable part is seeded.

    Behaves exactly like the model `tff.learning.models.from_keras_model` builds,
    with the frozen layers' weights in `non_trainable_variables`. It additionally
    knows how to regenerate every non-trainable variable from an integer seed
    (`frozen_initializers`) and reports the freeze resolution (`freeze_report`).
    Build it with `tff_fedpt.from_keras_model`.
    """

    def __init__(
        self,
        inner: tff.learning.models.VariableModel,
        keras_model: tf.keras.Model,
        frozen_initializers: Sequence[frozen.FrozenInitializer],
        freeze_report: frozen.FreezeReport,
        keras_kwargs: dict,
        frozen_indices: Sequence[int] | None = None,
    ):
        self._inner = inner
        self._keras_kwargs = dict(keras_kwargs)
        self._keras_model = keras_model
        self._frozen_initializers = tuple(frozen_initializers)
        self._freeze_report = freeze_report
        self._frozen_indices = tuple(
            range(len(frozen_initializers)) if frozen_indices is None else frozen_indices
        )

    @property
    def keras_model(self) -> tf.keras.Model:
        return self._keras_model

    @property
    def frozen_initializers(self) -> tuple[frozen.FrozenInitializer, ...]:
        """One record per `non_trainable_variables` entry, in the same order."""
        return self._frozen_initializers

    @property
    def frozen_indices(self) -> tuple[int, ...]:
        """Each frozen tensor's index in the seed's draws: its position in the whole
        model's frozen tensors (`generate_frozen_weights`). 0, 1, ... except for the part
        of a model after its frozen prefix (`tff_fedpt.features.remainder_model`)."""
        return self._frozen_indices

    @property
    def freeze_report(self) -> frozen.FreezeReport:
        return self._freeze_report

    @property
    def keras_kwargs(self) -> dict:
        """What `tff.learning.models.from_keras_model` was given besides the Keras model
        (loss, input_spec, metrics, loss_weights)."""
        return dict(self._keras_kwargs)

    @property
    def loss(self):
        """The Keras loss the model was built with (the device's builtin-only export
        rewrites it in TensorFlow Lite builtins)."""
        return self._keras_kwargs["loss"]

    # Delegation to TFF's Keras model wrapper.
    @property
    def trainable_variables(self):
        return self._inner.trainable_variables

    @property
    def non_trainable_variables(self):
        return self._inner.non_trainable_variables

    @property
    def local_variables(self):
        return self._inner.local_variables

    @property
    def input_spec(self):
        return self._inner.input_spec

    def predict_on_batch(self, x, training=True):
        return self._inner.predict_on_batch(x, training=training)

    def forward_pass(self, batch_input, training=True):
        return self._inner.forward_pass(batch_input, training=training)

    def report_local_unfinalized_metrics(self):
        return self._inner.report_local_unfinalized_metrics()

    def metric_finalizers(self):
        return self._inner.metric_finalizers()

    def reset_metrics(self):
        return self._inner.reset_metrics()


def _frozen_source(layer, variable, held, generator):
    """Where a frozen tensor's value comes from: the pretrained weights that hold it
    (unless the layer regenerates it from the seed by design, as FFA's A), else the seed
    through `generator`."""
    seeded = frozen.short_name(variable) in getattr(layer, "seeded_weights", ())
    source = None if held is None or seeded else held.source_for(layer.name, variable)
    if source is not None:
        return source
    record = frozen.frozen_initializer_for(layer, variable)
    return dataclasses.replace(record, generator=generator)


def from_keras_model(
    keras_model: tf.keras.Model,
    *,
    loss,
    input_spec,
    metrics=None,
    freeze: frozen.FreezeLike,
    loss_weights=None,
    non_trainable_state: str = "error",
) -> PartiallyTrainableModel:
    """Builds a partially trainable `tff.learning.models.VariableModel`.

    Like `tff.learning.models.from_keras_model`, plus a freeze specification. The
    layers that `freeze` selects get `trainable = False`; their weights are never
    trained and, in `tff_fedpt.build_fedpt_process`, never communicated: every
    client regenerates them from the process's `frozen_seed` with stateless random
    ops that follow each layer's own Keras initializer.

    Like `tff.learning.models.from_keras_model`, this must be called inside the
    `model_fn` passed to the process builder, on a freshly built Keras model.

    Args:
      keras_model: An uncompiled, built functional or Sequential `tf.keras.Model`.
      loss: A `tf.keras.losses.Loss` (or a list, as in TFF).
      input_spec: The `(x, y)` spec of one batch, as in TFF.
      metrics: Optional list of `tf.keras.metrics.Metric` (or constructors).
      freeze: A `tff_fedpt.FreezeSpec`, a layer name or regular expression, a list
        of them, or None to freeze nothing.
      loss_weights: As in `tff.learning.models.from_keras_model`.
      non_trainable_state: What to do with variables Keras updates outside the
        optimizer in layers that stay trainable (BatchNormalization moving mean and
        variance). "error" (default) refuses such a model. "keep_initial" treats them
        like frozen weights: they stay at their initializer values on the server,
        are regenerated on every client, and the client's local updates to them
        are discarded after each round -- the same as TFF's FedAvg, which never
        aggregates non-trainable variables. Inference then normalizes with those
        initial statistics.

    Returns:
      A `PartiallyTrainableModel`.

    Raises:
      ValueError: for a freeze specification that matches no layer or freezes
        everything, a layer that was already non-trainable, unsupported
        initializers, or non-trainable state without an opt-in.
      TypeError: for arguments of the wrong type.
    """
    if not isinstance(keras_model, tf.keras.Model):
        raise TypeError(
            "keras_model must be a tf.keras.Model; received " f"{type(keras_model).__name__}."
        )
    if non_trainable_state not in frozen.NON_TRAINABLE_STATE_OPTIONS:
        raise ValueError(
            f"non_trainable_state must be one of {frozen.NON_TRAINABLE_STATE_OPTIONS}; "
            f"received {non_trainable_state!r}."
        )
    already_frozen = [
        layer.name for layer in keras_model.layers if layer.weights and not layer.trainable
    ]
    if already_frozen:
        raise ValueError(
            f"Layers {already_frozen} already have trainable=False. tff_fedpt "
            "regenerates frozen weights from a seed, so values set on them would be "
            "lost; leave them trainable and select them with `freeze` instead."
        )
    report = frozen.resolve_freeze(keras_model, freeze)
    frozen_names = set(report.frozen_layer_names)
    for layer in keras_model.layers:
        if layer.name in frozen_names:
            layer.trainable = False
    if non_trainable_state == "error":
        live = [
            v.name
            for layer in keras_model.layers
            if layer.name not in frozen_names and not getattr(layer, "frozen_by_design", False)
            for v in layer.non_trainable_weights
        ]
        if live:
            raise ValueError(
                f"Variables {live} are updated by Keras outside the optimizer "
                "(BatchNormalization moving statistics) in layers that stay trainable. "
                "FedPT cannot train or communicate them. Freeze those layers, remove "
                "them, or pass non_trainable_state='keep_initial' to keep them at their "
                "initial values (TFF's FedAvg behaviour)."
            )
    owners = {}
    for layer in keras_model.layers:
        for v in layer.weights:
            owners[v.ref()] = layer
    spec = frozen.as_freeze_spec(freeze)
    held = spec.pretrained
    initializers = []
    for v in keras_model.non_trainable_weights:
        layer = owners.get(v.ref())
        if layer is None:
            raise ValueError(
                f"Non-trainable variable {v.name} belongs to no top-level layer of the "
                "model; tff_fedpt cannot regenerate it from a seed."
            )
        initializers.append(_frozen_source(layer, v, held, spec.generator))
    if held is not None and all(s.pretrained_value is None for s in initializers):
        raise ValueError(
            f"FreezeSpec.pretrained ({held.source}) holds no frozen tensor of this model: "
            f"it holds layers {sorted(held)}, the frozen tensors are "
            f"{[v.name for v in keras_model.non_trainable_weights]}."
        )
    keras_kwargs = dict(
        loss=loss, input_spec=input_spec, loss_weights=loss_weights, metrics=metrics
    )
    inner = tff.learning.models.from_keras_model(keras_model, **keras_kwargs)
    if len(inner.non_trainable_variables) != len(initializers) or any(
        a is not b for a, b in zip(inner.non_trainable_variables, keras_model.non_trainable_weights)
    ):
        raise AssertionError("TFF's non-trainable variables do not line up with the Keras model's.")
    return PartiallyTrainableModel(inner, keras_model, initializers, report, keras_kwargs)


def keras_model_from_state(
    learning_process, state, model_fn, *, merge_adapters: bool = True
) -> tf.keras.Model:
    """A plain Keras model holding a state's weights: the trained part and the frozen
    part in place (regenerated from the seed or pretrained), every layer trainable again,
    for inference, export or fine-tuning outside TFF.

    Args:
      learning_process: The FedPT process (`build_fedpt_process`) that `state` is of.
      state: A state of that process (`initialize()`, `next(...).state`, a checkpoint).
      model_fn: The process's model function (a `PartiallyTrainableModel` each call).
      merge_adapters: Fold low-rank adapters into their base layers (`merge_adapters`),
        giving the original architecture; False keeps the adapter layers.

    Returns:
      A `tf.keras.Model` whose predictions equal the TFF model's on these weights.

    Raises:
      TypeError: if `model_fn` does not return a `PartiallyTrainableModel`.
    """
    model = model_fn()
    if not isinstance(model, PartiallyTrainableModel):
        raise TypeError(
            "keras_model_from_state: model_fn must return a tff_fedpt.PartiallyTrainableModel "
            f"(tff_fedpt.from_keras_model); it returned {type(model).__name__}."
        )
    learning_process.get_model_weights(state).assign_weights_to(model)
    keras_model = model.keras_model
    if merge_adapters and any(isinstance(x, adapters.ADAPTER_TYPES) for x in keras_model.layers):
        keras_model = adapters.merge_adapters(keras_model)
    for layer in keras_model.layers:
        layer.trainable = True
    return keras_model


def overwrite_weights(held: frozen.PretrainedWeights, model_weights, keras_model: tf.keras.Model):
    """`model_weights` (a `tff.learning.models.ModelWeights` of `keras_model`, in its
    trainable / non-trainable order) with every value `held` holds put in its place: the
    starting point of a run from pretrained weights, for any algorithm."""
    owner = {}
    for layer in keras_model.layers:
        for variable in layer.weights:
            owner[variable.ref()] = layer.name

    def replaced(variables, values):
        out = []
        for variable, value in zip(variables, values):
            value_held = held.value_for(owner.get(variable.ref(), ""), variable)
            out.append(np.asarray(value) if value_held is None else value_held)
        return out

    return tff.learning.models.ModelWeights(
        trainable=replaced(keras_model.trainable_weights, model_weights.trainable),
        non_trainable=replaced(keras_model.non_trainable_weights, model_weights.non_trainable),
    )


def initial_state(learning_process, model_fn, held: frozen.PretrainedWeights):
    """`learning_process.initialize()` with every value `held` holds put in place: the
    trainable layers it holds start from them (the frozen ones are its values already,
    checked by fingerprint), so a run starts from the whole pretrained model, as the
    binaries' `--pretrained_weights` does.

    Args:
      learning_process: A process built on `model_fn` (FedPT, or TFF's FedAvg on a
        `tff_fedpt.from_keras_model` model).
      model_fn: Its model function; each call returns a `PartiallyTrainableModel`.
      held: The pretrained weights.

    Returns:
      The state, through `learning_process.set_model_weights`.

    Raises:
      TypeError: if `model_fn` returns a model without a Keras model.
    """
    model = model_fn()
    if not isinstance(model, PartiallyTrainableModel):
        raise TypeError(
            "initial_state: model_fn must return a tff_fedpt.PartiallyTrainableModel "
            f"(tff_fedpt.from_keras_model); it returned {type(model).__name__}."
        )
    state = learning_process.initialize()
    weights = overwrite_weights(held, learning_process.get_model_weights(state), model.keras_model)
    return learning_process.set_model_weights(state, weights)

"""Converting a FedPT client into a TensorFlow Lite file (`export_tflite`), and what a
file needs of the runtime (`flex_ops`)."""

from __future__ import annotations

import collections
import tempfile
from collections.abc import Callable
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedpt_device.protocol import (
    FEATURES_SIGNATURE,
    FINGERPRINT_SIGNATURE,
    SIGNATURES,
    DeviceError,
)
from tff_fedpt import builtin_ops, features, keras_models
from tff_fedpt.device.module import ClientModule


def export_tflite(
    model_fn: Callable[[], keras_models.PartiallyTrainableModel],
    client_optimizer: tff.learning.optimizers.Optimizer,
    *,
    client_weighting: tff.learning.ClientWeighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
    batch_size: Optional[int] = None,
    builtins_only: bool = False,
    train_on_features: bool = False,
) -> bytes:
    """Converts a FedPT client into a TensorFlow Lite flatbuffer (see the module doc).

    Args:
      model_fn: The FedPT process's model function (`tff_fedpt.from_keras_model`).
      client_optimizer: The process's client optimizer (`tff.learning.optimizers`,
        e.g. `build_sgdm(0.1)` or `build_sgdm(0.1, momentum=0.9)`).
      client_weighting: As in the process: NUM_EXAMPLES (the default) or UNIFORM.
      batch_size: Fix the batch dimension (None: any batch size).
      builtins_only: Produce a file with TensorFlow Lite builtin ops only (no Flex op),
        which the slim runtimes (`tflite_runtime`, `fedpt_device.SlimDeviceClient`) run:
        it needs `batch_size` and frozen tensors that are pretrained or drawn by the
        portable generator (`FreezeSpec(generator="portable")`); ReLU, max pooling,
        convolution and the loss get gradients written in builtins
        (`tff_fedpt.builtin_ops`).
      train_on_features: The file trains the part after the model's frozen prefix on
        the prefix's output (`tff_fedpt.features`), as the process built with the same
        flag: a `features` signature (x -> features, run once per local example after a
        start_round) is added, and train and evaluate take features in place of x.

    Returns:
      The `.tflite` file's bytes. Without `builtins_only`, ops that TensorFlow Lite
      lacks (the stateless RNG, gradients of some ops) run through the Flex delegate:
      see `flex_ops`.

    Raises:
      TypeError: for a model that is not a `PartiallyTrainableModel`, or an optimizer
        that is not a `tff.learning.optimizers.Optimizer`.
      ValueError: for a `batch_size` below 1.
      DeviceError: with `builtins_only`, for a model that needs an op with no builtin
        formulation (one line naming the layers and ops).
    """
    if not isinstance(client_optimizer, tff.learning.optimizers.Optimizer):
        raise TypeError(
            "client_optimizer must be a tff.learning.optimizers.Optimizer (e.g. "
            f"tff.learning.optimizers.build_sgdm(0.1)); received {type(client_optimizer)}."
        )
    if batch_size is not None and (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        raise ValueError(
            f"batch_size must be None (any batch size) or an integer >= 1; received {batch_size!r}."
        )
    model = model_fn()
    if not isinstance(model, keras_models.PartiallyTrainableModel):
        raise TypeError(
            "model_fn must return a model from tff_fedpt.from_keras_model; it returned "
            f"{type(model).__name__}."
        )

    if builtins_only:
        _check_builtins_only(model, batch_size)

    def fixed(spec):
        return tf.TensorSpec([batch_size, *spec.shape[1:]], spec.dtype)

    x_spec, y_spec = (
        (model.input_spec["x"], model.input_spec["y"])
        if isinstance(model.input_spec, collections.abc.Mapping)
        else tuple(model.input_spec)
    )
    trained, extra = model, {}
    if train_on_features:
        split = features.required_split(model)
        prefix, trained = features.split_models(model, split)
        extra = dict(frozen_model=model, prefix=(prefix, fixed(x_spec)))
        x_spec = tf.TensorSpec([None, *split.feature_shape], split.feature_dtype)
    module = ClientModule(
        trained,
        client_optimizer,
        client_weighting,
        (fixed(x_spec), fixed(y_spec)),
        builtins_only=builtins_only,
        **extra,
    )
    with tempfile.TemporaryDirectory() as directory:
        names = (
            *SIGNATURES,
            *((FINGERPRINT_SIGNATURE,) if module.fingerprint is not None else ()),
            *((FEATURES_SIGNATURE,) if train_on_features else ()),
        )
        try:
            signatures = {name: getattr(module, name).get_concrete_function() for name in names}
        except NotImplementedError as e:  # a builtin gradient's limits (builtin_ops)
            # Raised while tracing, the message carries autograph's trace; its last line
            # is the gradient's own.
            detail = str(e).strip().splitlines()[-1].strip()
            detail = detail.removeprefix("NotImplementedError:").strip()
            raise DeviceError(
                f"the model cannot be exported with TensorFlow Lite builtins only: {detail}."
            ) from None
        # (the builtin gradients are part of the traced graphs; SavedModel need not
        # re-trace them as gradient functions of their own)
        options = tf.saved_model.SaveOptions(experimental_custom_gradients=not builtins_only)
        tf.saved_model.save(module, directory, signatures=signatures, options=options)
        converter = tf.lite.TFLiteConverter.from_saved_model(directory, signature_keys=list(names))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if not builtins_only:
            converter.target_spec.supported_ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
        converter.experimental_enable_resource_variables = True
        try:
            return converter.convert()
        except Exception as error:  # the converter's own error types vary
            if not builtins_only:
                raise
            layers = [layer.name for layer in model.keras_model.layers]
            message = builtin_ops.conversion_error(error, signatures.values(), layers)
            raise DeviceError(message) from None


def _check_builtins_only(model, batch_size) -> None:
    """What a builtin-only export needs, checked before tracing (one line each)."""
    if batch_size is None:
        raise DeviceError(
            "export_tflite(builtins_only=True) needs a fixed batch_size (a dynamic batch "
            "dimension leaves BroadcastGradientArgs, which has no builtin); received None."
        )
    seeded = [r.name for r in model.frozen_initializers if not r.builtins_only]
    if seeded:
        raise DeviceError(
            f"export_tflite(builtins_only=True): frozen tensors {seeded} are drawn by "
            "TensorFlow's Philox (StatelessRandom* ops, no builtin formulation); build the "
            'model with FreezeSpec(..., generator="portable").'
        )
    try:
        builtin_ops.loss(model.loss, tf.zeros([1], tf.int32), tf.zeros([1, 2]))
    except NotImplementedError as e:
        raise DeviceError(
            f"export_tflite(builtins_only=True): no builtin formulation of {e}; supported "
            "losses: SparseCategoricalCrossentropy, MeanSquaredError."
        ) from None


def flex_ops(tflite_model: bytes) -> list[str]:
    """The TensorFlow ops the file runs through the Flex delegate (select TF ops)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(tflite_model, 0)
    names = set()
    for code in model.operatorCodes:
        custom = code.customCode.decode() if code.customCode else ""
        if custom.startswith("Flex"):
            names.add(custom[len("Flex") :])
    return sorted(names)

"""FedPT on the device: a TensorFlow Lite client that regenerates the frozen part itself.

`export_tflite(model_fn, client_optimizer)` writes one `.tflite` flatbuffer with four
signatures a device app calls each round:

    start_round(trainable_000.., frozen_seed)  the broadcast: trainable weights and the
                                               seed; the frozen part is regenerated on
                                               the device (stateless RNG, as in TFF)
    train(x, y) -> loss                        one optimizer step on one batch
    evaluate(x, y) -> loss, predictions        one batch, training=False
    get_update() -> delta_000.., weight        what the device uploads: initial minus
                                               trained trainable weights, and its weight
    frozen_weights() -> frozen_000..           the regenerated frozen tensors (checks)

The file holds no frozen values: every frozen tensor lives in a variable of undefined
shape that starts empty and is filled by `start_round` (the converter stores a
variable's initial value in the file, so a frozen variable of fixed shape would add its
full size). What the file does hold: the trainable variables' initial values, the tiny
optimizer and metric state, and the graph. Size ~= 4 * trainable parameters + graph.

`DeviceClient` runs the file in `tf.lite.Interpreter` as a device would (its own
batching, epochs and shuffling), and checks what crosses the boundary.
`broadcast_payload` and `apply_device_updates` are the server side: the exact broadcast
of a FedPT process's state, and the next state from a list of device updates through the
process's own aggregator and server optimizer.
"""

from __future__ import annotations

import collections
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedpt_device import Client, protocol
from fedpt_device.protocol import (
    FINGERPRINT_SIGNATURE,
    SEED,
    SIGNATURES,
    DeviceError,
    DeviceUpdate,
    delta_name,
    read_file_header,
    trainable_name,
)
from tff_fedpt import (
    builtin_ops,
    composer,
    compression,
    freezing,
    keras_models,
    pretrained,
)


def _owners(keras_model: tf.keras.Model, variable: tf.Variable) -> list[tuple[Any, str]]:
    """(object, attribute) pairs through which a layer reads `variable` in `call`."""
    found = []
    for module in [keras_model, *keras_model.submodules]:
        for attr, value in list(vars(module).items()):
            if value is variable and not attr.startswith("_"):
                found.append((module, attr))
    return found


class _ClientModule(tf.Module):
    """The device's state and its four signatures (see the module docstring)."""

    def __init__(self, model, optimizer, client_weighting, batch_spec, builtins_only=False):
        super().__init__()
        self._builtins_only = builtins_only
        # Not tracked: SavedModel would trace the Keras layers' own call functions, which
        # read the frozen tensors bound below. The variables the signatures use are
        # tracked explicitly instead.
        object.__setattr__(self, "_model", model)
        self._local_variables = list(model.local_variables)
        self._optimizer = optimizer
        self._uniform = client_weighting == tff.learning.ClientWeighting.UNIFORM
        keras_model = model.keras_model
        self._trainable = list(model.trainable_variables)
        frozen = list(model.non_trainable_variables)
        # Pretrained values ship inside the file (a device reads no worker store).
        self._frozen_records = [r.for_device() for r in model.frozen_initializers]
        # Each frozen variable: an empty store of undefined shape, filled by start_round,
        # read by its layer through the attribute that held the original variable.
        self._frozen_stores = [
            tf.Variable(tf.zeros([0], v.dtype), shape=tf.TensorShape(None), name=f"frozen_{i}")
            for i, v in enumerate(frozen)
        ]
        self._bindings = []
        for i, variable in enumerate(frozen):
            owners = _owners(keras_model, variable)
            if not owners:
                raise TypeError(
                    f"frozen variable {variable.name} is not an attribute of any layer, so "
                    "the device client cannot substitute its regenerated value."
                )
            self._bindings.append((owners, i, variable.shape))
        self._initial = [
            tf.Variable(tf.zeros([0], v.dtype), shape=tf.TensorShape(None), name=f"initial_{i}")
            for i, v in enumerate(self._trainable)
        ]
        specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in self._trainable)
        self._optimizer_specs = specs
        # Optimizer state (hyperparameters and slots, e.g. momentum), re-initialized by
        # start_round; slots are stored flat in variables of undefined shape.
        self._optimizer_state = tf.nest.map_structure(
            lambda t: tf.Variable(
                tf.zeros([0], t.dtype) if t.shape.rank else t,
                shape=tf.TensorShape(None) if t.shape.rank else t.shape,
            ),
            self._fresh_optimizer_state(),
        )
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
        self.frozen_weights = tf.function(self._frozen_weights, input_signature=[])
        self.fingerprint = pretrained.sources_fingerprint(self._frozen_records)
        if self.fingerprint is not None:
            words = protocol.fingerprint_words(self.fingerprint)
            self.frozen_fingerprint = tf.function(
                lambda: {"fingerprint": tf.constant(words)}, input_signature=[]
            )

    def _fresh_optimizer_state(self, seed=None):
        """The optimizer's initial state; with `seed` (a runtime value), all-zero slots
        are made at run time, so the converter stores no zeros of the trainable size."""

        def leaf(t):
            t = tf.convert_to_tensor(t)
            static = tf.get_static_value(t)
            if seed is not None and t.shape.rank and static is not None and not static.any():
                return _runtime_fill(t.shape, 0, t.dtype, seed)
            return t

        return tf.nest.map_structure(leaf, self._optimizer.initialize(self._optimizer_specs))

    def _assign_optimizer_state(self, state):
        tf.nest.map_structure(
            lambda v, t: v.assign(tf.reshape(t, [-1]) if t.shape.rank else t),
            self._optimizer_state,
            tf.nest.map_structure(tf.convert_to_tensor, state),
        )

    def _bind_frozen(self):
        for owners, i, shape in self._bindings:
            value = tf.reshape(self._frozen_stores[i], shape)
            for module, attr in owners:
                object.__setattr__(module, attr, value)

    def _start_round(self, trainable, frozen_seed):
        seed = frozen_seed
        generated = freezing.generate_frozen_weights(self._frozen_records, seed)
        for store, value, record in zip(self._frozen_stores, generated, self._frozen_records):
            if record.constant_fill is not None:  # made at run time, not stored in the file
                value = _runtime_fill(record.shape, record.constant_fill, value.dtype, seed)
            store.assign(tf.reshape(value, [-1]))
        for i, (variable, value) in enumerate(zip(self._trainable, trainable)):
            variable.assign(value)
            self._initial[i].assign(tf.reshape(value, [-1]))
        self._assign_optimizer_state(self._fresh_optimizer_state(seed))
        self._num_examples.assign(0)
        self._started.assign(True)
        return {"started": tf.constant(True)}

    def _optimizer_state_tensors(self):
        return tf.nest.map_structure(
            lambda v, t: tf.reshape(v, t.shape) if t.shape.rank else tf.identity(v),
            self._optimizer_state,
            self._fresh_optimizer_state(),
        )

    def _loss(self, x, y, training):
        """(loss, predictions) of one batch: the model's own forward pass, or with
        builtins only the Keras model under builtin gradients and the builtin loss."""
        if not self._builtins_only:
            output = self._model.forward_pass((x, y), training=training)
            return output.loss, output.predictions
        predictions = self._model.keras_model(x, training=training)
        return builtin_ops.loss(self._model.loss, y, predictions), predictions

    def _train(self, x, y):
        self._bind_frozen()
        with tf.GradientTape() as tape:
            loss, _ = self._loss(x, y, training=True)
        if self._builtins_only:
            with builtin_ops.gradients():
                gradients = tape.gradient(loss, self._trainable)
        else:
            gradients = tape.gradient(loss, self._trainable)
        state, updated = self._optimizer.next(
            self._optimizer_state_tensors(), tuple(self._trainable), tuple(gradients)
        )
        for variable, value in zip(self._trainable, updated):
            variable.assign(value)
        self._assign_optimizer_state(state)
        self._num_examples.assign_add(tf.shape(y, out_type=tf.int64)[0])
        return {"loss": loss}

    def _evaluate(self, x, y):
        self._bind_frozen()
        loss, predictions = self._loss(x, y, training=False)
        return {"loss": loss, "predictions": predictions}

    def _frozen_weights(self):
        return {
            f"frozen_{i:03d}": tf.reshape(store, shape)
            for (_, i, shape), store in zip(self._bindings, self._frozen_stores)
        }

    def _get_update(self):
        delta = [
            tf.reshape(initial, v.shape) - v for initial, v in zip(self._initial, self._trainable)
        ]
        if self._builtins_only:  # IsFinite is no builtin; d - d is 0 exactly when finite
            finite = tf.reduce_all([tf.reduce_all(tf.equal(d - d, 0.0)) for d in delta])
        else:
            finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(d)) for d in delta])
        delta = [tf.where(finite, d, tf.constant(0, d.dtype)) for d in delta]  # no big zeros
        weight = tf.constant(1.0) if self._uniform else tf.cast(self._num_examples, tf.float32)
        result = {delta_name(i): d for i, d in enumerate(delta)}
        result["weight"] = tf.where(finite, weight, 0.0)
        result["num_examples"] = self._num_examples.read_value()
        return result


def _runtime_fill(shape, value, dtype, seed):
    """`tf.fill(shape, value)` whose shape depends on `seed`, so the converter cannot fold
    it into a constant of that size in the file."""
    dims = tf.constant(list(shape), tf.int64) + 0 * tf.cast(seed, tf.int64)
    return tf.fill(dims, tf.cast(value, dtype))


def export_tflite(
    model_fn: Callable[[], keras_models.PartiallyTrainableModel],
    client_optimizer: tff.learning.optimizers.Optimizer,
    *,
    client_weighting: tff.learning.ClientWeighting = tff.learning.ClientWeighting.NUM_EXAMPLES,
    batch_size: Optional[int] = None,
    builtins_only: bool = False,
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
    module = _ClientModule(
        model,
        client_optimizer,
        client_weighting,
        (fixed(x_spec), fixed(y_spec)),
        builtins_only=builtins_only,
    )
    with tempfile.TemporaryDirectory() as directory:
        names = SIGNATURES if module.fingerprint is None else (*SIGNATURES, FINGERPRINT_SIGNATURE)
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


def read_tflite(tflite_model: bytes | bytearray | str | os.PathLike) -> bytes:
    """The bytes of a FedPT client file, checked before any interpreter sees them.

    A damaged file handed to TensorFlow Lite's interpreter can crash the process (a
    truncated export segfaults it), so the file is checked here first: it is read whole,
    must carry the `TFL3` flatbuffer identifier, must parse completely (every table,
    vector and buffer inside the file's bounds) and must hold the signatures
    `export_tflite` writes.

    Args:
      tflite_model: The file's path, or its bytes.

    Returns:
      The file's bytes.

    Raises:
      DeviceError: naming the file and what is wrong with it.
    """
    data, source = read_file_header(tflite_model)
    from tensorflow.lite.python import schema_py_generated as schema

    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
        for buffer in model.buffers or []:
            if buffer.offset > 1 and buffer.offset + buffer.size > len(data):
                raise ValueError(f"a buffer ends at byte {buffer.offset + buffer.size:,}")
    except Exception as e:  # noqa: BLE001 - any parse failure means a damaged file
        raise DeviceError(
            f"{source} is truncated or damaged ({len(data):,} bytes; its contents cannot "
            f"be read: {e}). Export it again."
        ) from None
    found = sorted(d.signatureKey.decode() for d in model.signatureDefs or [])
    missing = sorted(set(SIGNATURES) - set(found))
    if missing:
        raise DeviceError(
            f"{source} lacks the signatures {missing} (it has {found}); it is not a FedPT "
            "client from export_tflite, or an old one. Export it again."
        )
    return data


class DeviceClient(Client):
    """One device: a `.tflite` client run in `tf.lite.Interpreter` (with the Flex delegate
    where the file needs it). `fedpt_device.SlimDeviceClient` is its twin on the slim
    runtime, without TensorFlow.

    Args:
      tflite_model: The file's bytes or path (from `export_tflite`).

    Raises:
      DeviceError: for a file that is missing, empty, truncated, not TensorFlow Lite, or
        lacks the FedPT signatures (checked by `read_tflite` before the interpreter
        loads it).
    """

    def __init__(self, tflite_model: bytes | str | os.PathLike):
        super().__init__(tf.lite.Interpreter(model_content=read_tflite(tflite_model)))


# ---------------------------------------------------------------------------
# Server side.


def broadcast_payload(learning_process, state) -> collections.OrderedDict:
    """Exactly what `learning_process` broadcasts from `state`: OrderedDict(trainable=[...],
    frozen_seed=...), after the process's own distributor (so a quantized broadcast
    arrives dequantized, as on the clients)."""
    parts = _device_parts("broadcast_payload", learning_process)
    constants = [getattr(state, k) for k in parts.constants]
    value = parts.payload(state.global_model_weights, *constants)
    return compression.as_received(parts.distributor, value)


def _device_parts(where: str, learning_process) -> composer.Parts:
    """The parts of a process whose client work devices can run, or a clear error."""
    parts = composer.parts(learning_process)
    if parts.device_rounds is not None:
        raise ValueError(f"{where}: this process cannot run on devices: {parts.device_rounds}")
    return parts


def _upload_specs(parts) -> list[tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of each tensor a client uploads, from the aggregator's type."""
    value_type = parts.aggregator.next.type_signature.parameter[1].member
    return [(tuple(t.shape), np.dtype(t.dtype)) for t in value_type]


class _Delta(list):
    """A checked delta; `zeroed` names why it was zeroed ("" when it was not)."""

    zeroed = ""


# Bounds on what one device may upload. Within them, any number of devices sums to a
# finite float32 aggregate (2**24 * 1e9 = 1.7e16 per device; float32 reaches 3.4e38), so
# one device cannot make the round non-finite and lose the others' work. 2**24 is also
# the largest example count a float32 weight holds exactly.
MAX_UPDATE_WEIGHT = float(2**24)
MAX_ABS_DELTA = 1e9


def _untrusted_update(index: int, update, expected) -> tuple[_Delta, np.float32]:
    """One device's upload, checked as untrusted input: (delta, weight) to aggregate.

    As TFF's own client step does (`build_model_delta_update_with_tff_optimizer`), a
    delta holding a non-finite value is zeroed and given weight 0, so the round keeps
    the other devices' work; so is an update whose weight is negative, non-finite or above
    `MAX_UPDATE_WEIGHT`, or whose delta exceeds `MAX_ABS_DELTA` (`_Delta.zeroed` says
    why). A structure that is not the process's upload type is refused.
    """
    where = f"apply_device_updates: update {index}"
    delta = getattr(update, "delta", None)
    weight = getattr(update, "weight", None)
    if delta is None or weight is None:
        raise ValueError(
            f"{where} is a {type(update).__name__}; expected a DeviceUpdate (from "
            "DeviceClient.get_update or .train)."
        )
    if isinstance(delta, (np.ndarray, tf.Tensor)) or not isinstance(delta, Sequence):
        raise ValueError(f"{where}: delta must be a list of tensors; received {type(delta)}.")
    if len(delta) != len(expected):
        raise ValueError(
            f"{where} has {len(delta)} delta tensors; the process uploads {len(expected)}."
        )
    out = _Delta()
    for i, (value, (shape, dtype)) in enumerate(zip(delta, expected)):
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: delta {i} is not a numeric tensor ({e}).") from None
        if array.shape != shape or not np.can_cast(array.dtype, dtype, casting="same_kind"):
            raise ValueError(
                f"{where}: delta {i} has shape {array.shape} and dtype {array.dtype}; "
                f"expected shape {shape} and dtype {dtype}."
            )
        out.append(array)
    try:
        weight = float(weight)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: weight must be a number; received {weight!r}.") from None
    if not all(np.all(np.isfinite(a)) for a in out):
        reason = "non_finite"
    elif not 0 <= weight <= MAX_UPDATE_WEIGHT:  # NaN fails too
        reason = "bad_weight"
    elif any(a.size and float(np.max(np.abs(a))) > MAX_ABS_DELTA for a in out):
        reason = "delta_too_large"
    else:
        return _Delta(a.astype(dtype, copy=False) for a, (_, dtype) in zip(out, expected)), (
            np.float32(weight)
        )
    zeroed = _Delta(np.zeros(shape, dtype) for shape, dtype in expected)
    zeroed.zeroed = reason
    return zeroed, np.float32(0.0)


def apply_device_updates(learning_process, state, updates: Sequence[DeviceUpdate]):
    """The next state from device updates, through the process's aggregator and finalizer.

    Each update is untrusted input: one whose delta holds a non-finite value or exceeds
    `MAX_ABS_DELTA`, or whose weight is negative, non-finite or above `MAX_UPDATE_WEIGHT`,
    is zeroed with weight 0 (as TFF's client step treats a client whose training
    diverged), so no device can lose the others' work; an update of the wrong structure is
    refused.

    Returns:
      `tff.learning.templates.LearningProcessOutput(state, metrics)` with the
      aggregator's and finalizer's measurements, the round's communication and
      `devices/non_finite_updates`, `devices/bad_weight_updates` and
      `devices/delta_too_large_updates` (how many updates were zeroed, and why).

    Raises:
      ValueError: naming the update and what is wrong with it.
    """
    if not updates:
        raise ValueError("apply_device_updates: no updates received.")
    parts = _device_parts("apply_device_updates", learning_process)
    expected = _upload_specs(parts)
    checked = [_untrusted_update(i, u, expected) for i, u in enumerate(updates)]
    # The server half of `next` itself (composer.Parts.server_step): the same aggregator,
    # finalizer and communication accounting. The devices ran the client work, whose
    # state (client hyperparameters) a round does not change, nor does the broadcast's.
    new_state, server_metrics = parts.server_step(
        state,
        state.distributor,
        state.client_work,
        [list(delta) for delta, _ in checked],
        [weight for _, weight in checked],
    )
    metrics = collections.OrderedDict(
        aggregator=server_metrics["aggregator"],
        finalizer=server_metrics["finalizer"],
        communication=collections.OrderedDict(
            (k, int(v)) for k, v in server_metrics["communication"].items()
        ),
        devices=collections.OrderedDict(
            (f"{reason}_updates", sum(delta.zeroed == reason for delta, _ in checked))
            for reason in ("non_finite", "bad_weight", "delta_too_large")
        ),
    )
    return tff.learning.templates.LearningProcessOutput(new_state, metrics)

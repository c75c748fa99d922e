"""The FedPT learning process: only the trainable part of the model travels."""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any, NamedTuple, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from fedpt_device import protocol
from fedpt_device.protocol import FINGERPRINT_SIGNATURE as FINGERPRINT
from fedpt_device.protocol import SEED
from tff_fedpt import composer, compression, keras_models, weights
from tff_fedpt import frozen as frozen_lib
from tff_fedpt._tff_internals import factory_utils, model_delta_client_work

ModelWeights = tff.learning.models.ModelWeights


class FedPTState(NamedTuple):
    """Server state of a FedPT process.

    Attributes:
      global_model_weights: `ModelWeights` holding the trainable weights only
        (`non_trainable` is empty: frozen weights are regenerated from the seed).
      frozen_seed: The int64 seed of the frozen weights.
      distributor: State of the distributor (broadcast) process.
      client_work: State of the client work process (client optimizer hparams).
      aggregator: State of the model update aggregator.
      finalizer: State of the finalizer (server optimizer state).
      communication: Cumulative bytes broadcast and uploaded over all rounds.
    """

    global_model_weights: Any
    frozen_seed: Any
    distributor: Any
    client_work: Any
    aggregator: Any
    finalizer: Any
    communication: Any


class PretrainedFedPTState(NamedTuple):
    """Server state of a FedPT process with pretrained frozen tensors: a `FedPTState`
    plus `frozen_fingerprint`, the int32[8] fingerprint of the pretrained values
    (`tff_fedpt.frozen.fingerprint`), which the broadcast carries and every client checks."""

    global_model_weights: Any
    frozen_seed: Any
    frozen_fingerprint: Any
    distributor: Any
    client_work: Any
    aggregator: Any
    finalizer: Any
    communication: Any


def _frozen_sources_of(model) -> tuple[tuple, tuple[int, ...]]:
    """(the frozen sources of `model`'s frozen tensors, their indices in the seed's draws)."""
    if isinstance(model, keras_models.PartiallyTrainableModel):
        return model.frozen_initializers, model.frozen_indices
    if not isinstance(model, tff.learning.models.VariableModel):
        raise TypeError(
            "model_fn must return a tff.learning.models.VariableModel (build it with "
            f"tff_fedpt.from_keras_model); it returned {type(model).__name__}."
        )
    if model.non_trainable_variables:
        names = [v.name for v in model.non_trainable_variables]
        raise TypeError(
            "model_fn returned a model with non-trainable variables "
            f"{names} that tff_fedpt cannot regenerate from a seed. Build the model "
            "with tff_fedpt.from_keras_model(..., freeze=...)."
        )
    return (), ()


class _ClientModel(NamedTuple):
    """What a client trains: its model function, the frozen sources of that model's
    frozen tensors and their indices in the seed's draws, its data type and its metrics'
    finalizers; and the full model's frozen sources (what the server regenerates)."""

    model_fn: Callable
    sources: tuple
    indices: tuple
    data_type: Any
    metric_finalizers: Any
    full_sources: tuple


def _client_model(model_fn, train_on_features: bool) -> _ClientModel:
    """Asks one model, built in a graph of its own, all the process needs to know of it
    before tracing (a model can take seconds to build: an LSTM's backend selection)."""
    client_fn = model_fn
    if train_on_features:
        from tff_fedpt import features  # imports keras_models, which imports this module

        def client_fn():
            return features.remainder_model(model_fn())

    with tf.Graph().as_default():
        full = model_fn()
        full_sources, _ = _frozen_sources_of(full)
        model = features.remainder_model(full) if train_on_features else full
        sources, indices = _frozen_sources_of(model)
        data_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
        finalizers = model.metric_finalizers()
    return _ClientModel(client_fn, sources, indices, data_type, finalizers, full_sources)


def _build_client_work(
    client_model: _ClientModel, optimizer, checked, loop_implementation, broadcast_type, expected
):
    """ClientWorkProcess: rebuild frozen weights from the seed, train, send delta.

    `expected`: the pretrained fingerprint the broadcast must carry (None: nothing
    pretrained is frozen).

    The training step is TFF's own FedAvg client update
    (`build_model_delta_update_with_tff_optimizer`), so with nothing frozen a
    client computes exactly what TFF's FedAvg client computes.
    """
    whimsy_state = optimizer.initialize(tf.TensorSpec(shape=(), dtype=tf.float32))
    initial_hparams = optimizer.get_hparams(whimsy_state)

    @tff.federated_computation
    def init_fn():
        return tff.federated_value(initial_hparams, tff.SERVER)

    hparams_type = init_fn.type_signature.result.member

    @tff.tensorflow.computation(hparams_type)
    def get_hparams_fn(state):
        return state

    @tff.tensorflow.computation(hparams_type, hparams_type)
    def set_hparams_fn(state, hparams):
        del state
        return hparams

    model_fn, data_type = client_model.model_fn, client_model.data_type

    @tff.tensorflow.computation(hparams_type, broadcast_type, data_type)
    def client_update_computation(hparams, broadcast, dataset):
        checks = []
        if expected is not None:  # the client's pretrained values are the server's
            checks.append(
                tf.debugging.assert_equal(
                    broadcast[FINGERPRINT],
                    tf.constant(protocol.fingerprint_words(expected)),
                    message=protocol.mismatch_message(
                        "FedPT client", "the broadcast fingerprint", expected
                    ),
                )
            )
        with tf.control_dependencies(checks):  # nothing trains before the check
            trainable = [tf.identity(t) for t in broadcast["trainable"]]
        frozen = frozen_lib.generate_frozen_weights(
            client_model.sources, broadcast[SEED], client_model.indices
        )
        initial_weights = ModelWeights(trainable=trainable, non_trainable=list(frozen))
        client_update = model_delta_client_work.build_model_delta_update_with_tff_optimizer(
            model_fn=model_fn,
            weighting=checked.client_weighting,
            loop_implementation=loop_implementation,
        )
        return client_update(optimizer, initial_weights, dataset, hparams)

    metrics_aggregation_fn = checked.metrics_aggregator(client_model.metric_finalizers)

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(broadcast_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(state, broadcast, client_data):
        state_at_clients = tff.federated_broadcast(state)
        client_result, model_outputs = tff.federated_map(
            client_update_computation, (state_at_clients, broadcast, client_data)
        )
        train_metrics = metrics_aggregation_fn(model_outputs)
        measurements = tff.federated_zip(collections.OrderedDict(train=train_metrics))
        return tff.templates.MeasuredProcessOutput(state, client_result, measurements)

    return tff.learning.templates.ClientWorkProcess(
        init_fn, next_fn, get_hparams_fn=get_hparams_fn, set_hparams_fn=set_hparams_fn
    )


def _checked(
    model_fn,
    client_optimizer_fn,
    server_optimizer_fn,
    frozen_seed,
    model_aggregator,
    client_weighting,
    metrics_aggregator,
    broadcast_bits,
):
    """Validates build_fedpt_process's arguments; returns the defaulted ones."""
    if not callable(model_fn) or isinstance(
        model_fn, (tf.keras.Model, tff.learning.models.VariableModel)
    ):
        raise TypeError(
            "model_fn must be a no-argument callable returning a new model (e.g. "
            "lambda: tff_fedpt.from_keras_model(...)); received "
            f"{type(model_fn).__name__}."
        )
    if not isinstance(client_optimizer_fn, tff.learning.optimizers.Optimizer):
        raise TypeError(
            "client_optimizer_fn must be a tff.learning.optimizers.Optimizer (e.g. "
            "tff.learning.optimizers.build_sgdm(0.1)); received "
            f"{type(client_optimizer_fn).__name__}."
        )
    if server_optimizer_fn is None:
        server_optimizer_fn = default_server_optimizer()
    if not isinstance(server_optimizer_fn, tff.learning.optimizers.Optimizer):
        raise TypeError(
            "server_optimizer_fn must be a tff.learning.optimizers.Optimizer or None; "
            f"received {type(server_optimizer_fn).__name__}."
        )
    protocol.check_frozen_seed(frozen_seed)
    if broadcast_bits is not None:
        compression.check_broadcast_bits(broadcast_bits)
    if model_aggregator is None:
        model_aggregator = tff.aggregators.MeanFactory()
    if isinstance(model_aggregator, tff.aggregators.WeightedAggregationFactory):
        weighted = True
    elif isinstance(model_aggregator, tff.aggregators.UnweightedAggregationFactory):
        weighted = False
    else:
        raise TypeError(
            "model_aggregator must be a tff.aggregators factory (weighted or "
            f"unweighted); received {type(model_aggregator).__name__}."
        )
    if client_weighting is None:
        client_weighting = (
            tff.learning.ClientWeighting.NUM_EXAMPLES
            if weighted
            else tff.learning.ClientWeighting.UNIFORM
        )
    if not isinstance(client_weighting, tff.learning.ClientWeighting):
        raise TypeError(
            "client_weighting must be a tff.learning.ClientWeighting; received "
            f"{client_weighting!r}."
        )
    if not weighted and client_weighting != tff.learning.ClientWeighting.UNIFORM:
        raise ValueError(
            f"model_aggregator {type(model_aggregator).__name__} is unweighted, so it "
            f"cannot apply client_weighting={client_weighting}; use "
            "tff.learning.ClientWeighting.UNIFORM (or leave it as None)."
        )
    if metrics_aggregator is None:
        metrics_aggregator = tff.learning.metrics.sum_then_finalize
    if not weighted:
        model_aggregator = factory_utils.as_weighted_aggregator(model_aggregator)
    return _Checked(server_optimizer_fn, model_aggregator, client_weighting, metrics_aggregator)


class _Checked(NamedTuple):
    """build_fedpt_process's arguments, defaulted (the aggregator factory weighted)."""

    server_optimizer: tff.learning.optimizers.Optimizer
    model_aggregator: tff.aggregators.WeightedAggregationFactory
    client_weighting: tff.learning.ClientWeighting
    metrics_aggregator: Callable


def default_server_optimizer() -> tff.learning.optimizers.Optimizer:
    """The server optimizer when none is given: SGD at learning rate 1 (the server adds
    the mean client delta, FedAvg's own update), for FedPT and the baselines alike."""
    return tff.learning.optimizers.build_sgdm(learning_rate=1.0)


def build_fedpt_process(
    model_fn: Callable[[], tff.learning.models.VariableModel],
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    server_optimizer_fn: Optional[tff.learning.optimizers.Optimizer] = None,
    *,
    frozen_seed: int = 0,
    model_aggregator: Optional[tff.aggregators.AggregationFactory] = None,
    client_weighting: Optional[tff.learning.ClientWeighting] = None,
    metrics_aggregator=None,
    loop_implementation: tff.learning.LoopImplementation = (
        tff.learning.LoopImplementation.DATASET_REDUCE
    ),
    broadcast_bits: Optional[int] = None,
    train_on_features: bool = False,
) -> tff.learning.templates.LearningProcess:
    """Builds a FedPT learning process (federated training of a partially trainable model).

    Each round the server broadcasts the trainable weights and the int64
    `frozen_seed`, and nothing else. Each client regenerates the frozen weights
    from the seed with stateless random ops, trains the trainable variables only
    (TFF's FedAvg client update), and uploads the trainable delta and its weight.
    The delta is aggregated with `model_aggregator` and applied to the trainable
    weights with `server_optimizer_fn`. With nothing frozen this is exactly
    `tff.learning.algorithms.build_weighted_fed_avg`.

    The returned process has type signatures

    * `initialize`: `( -> S@SERVER)`
    * `next`: `(<S@SERVER, {B*}@CLIENTS> -> <state=S@SERVER, metrics=M@SERVER>)`

    where `S` is a `tff_fedpt.FedPTState` (trainable `ModelWeights`, the seed,
    component states and cumulative communication), `B*` the client datasets, and
    `M` an `OrderedDict` with `distributor`, `client_work` (training metrics),
    `aggregator`, `finalizer` and `communication` entries; `communication` holds bytes
    per client and per round, down and up, from the TFF types of what is broadcast and
    uploaded (`tff_fedpt.communication.traffic`: compressed values at encoded size).

    `get_model_weights(state)` returns the full `tff.learning.models.ModelWeights`
    (trainable and the seed's frozen weights), so `build_fed_eval`, Keras export and
    `tff.simulation.run_training_process` work unchanged; `set_model_weights` takes a
    full `ModelWeights` and raises if its frozen part is not the seed's.

    Args:
      model_fn: A no-argument callable returning a new model from
        `tff_fedpt.from_keras_model` (or any `tff.learning.models.VariableModel`
        without non-trainable variables). It must build the model from scratch.
      client_optimizer_fn: A `tff.learning.optimizers.Optimizer` for clients.
      server_optimizer_fn: A `tff.learning.optimizers.Optimizer` for the server;
        defaults to SGD with learning rate 1.0, as in TFF's FedAvg.
      frozen_seed: Integer seed of the frozen weights.
      model_aggregator: A `tff.aggregators` factory for the trainable delta,
        weighted or unweighted. Defaults to `tff.aggregators.MeanFactory()`.
      client_weighting: A `tff.learning.ClientWeighting`. Defaults to NUM_EXAMPLES
        for weighted aggregators and UNIFORM for unweighted ones.
      metrics_aggregator: As in TFF's FedAvg; defaults to
        `tff.learning.metrics.sum_then_finalize`.
      loop_implementation: A `tff.learning.LoopImplementation`.
      broadcast_bits: If 8 or 16, the trainable weights are broadcast uniformly quantized
        to that many bits (`compression.build_quantized_broadcast_process`); the server
        keeps full precision. Quantized uploads: `compression.quantized_mean(bits)`.
      train_on_features: Clients train the layers after the model's frozen,
        deterministic prefix on its output (`tff_fedpt.features`): the client datasets
        hold `(features, y)` (`features.FeatureMap`) instead of `(x, y)`. State, types
        of the state and broadcast, bytes and `get_model_weights` are unchanged.

    Returns:
      A `tff.learning.templates.LearningProcess`.

    Raises:
      TypeError: for arguments of the wrong type.
      ValueError: for invalid values (a seed outside int64, NUM_EXAMPLES weighting with
        an unweighted aggregator, `train_on_features` without a frozen prefix).
    """
    checked = _checked(
        model_fn,
        client_optimizer_fn,
        server_optimizer_fn,
        frozen_seed,
        model_aggregator,
        client_weighting,
        metrics_aggregator,
        broadcast_bits,
    )
    client_model = _client_model(model_fn, train_on_features)
    frozen_initializers = client_model.full_sources
    fingerprint = frozen_lib.sources_fingerprint(frozen_initializers)
    initial_model_weights_fn = _initial_model_weights_fn(model_fn)
    model_weights_type = initial_model_weights_fn.type_signature.result
    broadcast_type, constants, distributor = _broadcast(
        model_weights_type, frozen_seed, fingerprint, broadcast_bits
    )
    client_work = _build_client_work(
        client_model, client_optimizer_fn, checked, loop_implementation, broadcast_type, fingerprint
    )
    aggregator = checked.model_aggregator.create(
        model_weights_type.trainable, tff.TensorType(np.float32)
    )
    finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
        checked.server_optimizer, model_weights_type
    )
    payload, to_full_weights, from_full_weights = weights.weight_functions(
        frozen_initializers, fingerprint
    )
    return composer.compose_learning_process(
        state_class=FedPTState if fingerprint is None else PretrainedFedPTState,
        initial_model_weights=initial_model_weights_fn,
        constants=constants,
        distributor=distributor,
        client_work=client_work,
        aggregator=aggregator,
        finalizer=finalizer,
        payload=payload,
        to_full_weights=to_full_weights,
        from_full_weights=from_full_weights,
        full_weights_type=_full_weights_type(model_weights_type, frozen_initializers),
        check_next=None if fingerprint is None else weights.next_check(fingerprint),
        check_set_model_weights=weights.set_model_weights_check(frozen_initializers),
    )


def _initial_model_weights_fn(model_fn):
    @tff.tensorflow.computation
    def initial_model_weights_fn():
        return ModelWeights(
            trainable=[tf.identity(v) for v in model_fn().trainable_variables],
            non_trainable=[],
        )

    return initial_model_weights_fn


def _broadcast(model_weights_type, frozen_seed, fingerprint, broadcast_bits):
    """(the broadcast's type, its constant fields, the distributor): the trainable
    weights, the seed and, with pretrained frozen values, their fingerprint."""
    broadcast_fields = [
        ("trainable", model_weights_type.trainable),
        (SEED, tff.TensorType(np.int64)),
    ]
    constants = {SEED: np.int64(frozen_seed)}
    if fingerprint is not None:
        broadcast_fields.append(
            (FINGERPRINT, tff.TensorType(np.int32, [frozen_lib.FINGERPRINT_WORDS]))
        )
        constants[FINGERPRINT] = protocol.fingerprint_words(fingerprint)
    broadcast_type = tff.StructWithPythonType(broadcast_fields, collections.OrderedDict)
    if broadcast_bits is None:
        distributor = tff.learning.templates.build_broadcast_process(broadcast_type)
    else:
        distributor = compression.build_quantized_broadcast_process(broadcast_type, broadcast_bits)
    return broadcast_type, constants, distributor


def _full_weights_type(model_weights_type, frozen_initializers):
    """The type of `get_model_weights`: the trainable weights and every frozen one."""
    frozen_specs = [tf.TensorSpec(init.shape, init.dtype) for init in frozen_initializers]
    return tff.StructWithPythonType(
        [
            ("trainable", model_weights_type.trainable),
            ("non_trainable", tff.types.tensorflow_to_type(frozen_specs)),
        ],
        ModelWeights,
    )

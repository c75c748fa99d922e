"""Partial variable training (PVT; Yang et al., arXiv 2110.05607) as a LearningProcess.

Every round a seeded schedule picks a subset of the model's variables; clients train only
those (the gradients of the others are zeroed, so with a fresh SGD / momentum / Adam
state they do not move) and upload only their delta. Unlike FedPT nothing is frozen for
good: over the rounds every variable gets trained, and the server must broadcast the whole
model, since a sampled cross-device client has not seen it before.

Communication is accounted from the TFF types of the variables actually selected each
round: bytes down = all weights, bytes up = the selected variables + one float32 weight.
"""

from __future__ import annotations

import collections
import math
from typing import Any, NamedTuple, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt import communication

ModelWeights = tff.learning.models.ModelWeights


class PVTState(NamedTuple):
    global_model_weights: Any
    schedule_round: Any
    aggregator: Any
    finalizer: Any
    communication: Any


def variable_mask(schedule_seed, round_num, num_variables: int, num_selected: int):
    """A 0/1 float vector selecting `num_selected` of `num_variables`, from (seed, round)."""
    scores = tf.random.stateless_uniform(
        [num_variables], tf.cast(tf.stack([schedule_seed, round_num]), tf.int64)
    )
    _, chosen = tf.math.top_k(scores, k=num_selected)
    return tf.scatter_nd(chosen[:, tf.newaxis], tf.ones([num_selected]), [num_variables])


def build_pvt_process(
    model_fn,
    client_optimizer_fn: tff.learning.optimizers.Optimizer,
    server_optimizer_fn: Optional[tff.learning.optimizers.Optimizer] = None,
    *,
    trainable_fraction: float = 0.5,
    schedule_seed: int = 0,
    model_aggregator: Optional[tff.aggregators.WeightedAggregationFactory] = None,
) -> tff.learning.templates.LearningProcess:
    """Builds partial variable training.

    `next`: `(<S@SERVER, {B*}@CLIENTS> -> <state=S@SERVER, metrics=M@SERVER>)`, with
    `M` holding `client_work`, `aggregator`, `finalizer` and `communication` (as in
    FedPT: clients, bytes per client, per round and cumulative, and `selected_variables`).

    Args:
      model_fn: No-argument callable returning a `tff.learning.models.VariableModel`.
      client_optimizer_fn: A `tff.learning.optimizers.Optimizer` (restarted each round).
      server_optimizer_fn: Server optimizer; defaults to SGD with learning rate 1.
      trainable_fraction: Fraction of the variables trained each round, in (0, 1].
      schedule_seed: Seed of the per-round selection.
      model_aggregator: A weighted `tff.aggregators` factory (default MeanFactory).

    Raises:
      ValueError: for a fraction outside (0, 1].
    """
    if not 0 < trainable_fraction <= 1:
        raise ValueError(f"trainable_fraction must be in (0, 1]; received {trainable_fraction!r}.")
    if server_optimizer_fn is None:
        server_optimizer_fn = tff.learning.optimizers.build_sgdm(learning_rate=1.0)
    model_aggregator = model_aggregator or tff.aggregators.MeanFactory()

    @tff.tensorflow.computation
    def initial_weights_fn():
        return ModelWeights.from_model(model_fn())

    weights_type = initial_weights_fn.type_signature.result
    with tf.Graph().as_default():
        model = model_fn()
        data_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
        metrics_fn = tff.learning.metrics.sum_then_finalize(model.metric_finalizers())
    num_variables = len(weights_type.trainable)
    num_selected = max(1, math.ceil(trainable_fraction * num_variables))
    variable_bytes = np.array(
        [communication.type_bytes(t) for t in weights_type.trainable], np.int64
    )
    broadcast_bytes = communication.type_bytes(weights_type)
    weight_bytes = 4
    mask_type = tff.TensorType(np.float32, [num_variables])

    @tff.tensorflow.computation(weights_type, mask_type, data_type)
    def client_update(weights, mask, dataset):
        model = model_fn()
        model_weights = ModelWeights.from_model(model)
        optimizer = client_optimizer_fn

        @tf.function
        def train(weights, mask, dataset):
            tf.nest.map_structure(lambda v, t: v.assign(t), model_weights, weights)

            def reduce_fn(state, batch):
                num_examples, opt_state = state
                with tf.GradientTape() as tape:
                    output = model.forward_pass(batch, training=True)
                grads = tape.gradient(output.loss, model_weights.trainable)
                grads = [g * mask[i] for i, g in enumerate(grads)]
                opt_state, updated = optimizer.next(
                    opt_state, tuple(model_weights.trainable), tuple(grads)
                )
                for v, u in zip(model_weights.trainable, updated):
                    v.assign(u)
                return num_examples + tf.cast(output.num_examples, tf.int64), opt_state

            specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in model_weights.trainable)
            initial = (tf.constant(0, tf.int64), optimizer.initialize(specs))
            num_examples, _ = dataset.reduce(initial, reduce_fn)
            delta = [
                (a - b) * mask[i]
                for i, (a, b) in enumerate(zip(weights.trainable, model_weights.trainable))
            ]
            delta, non_finite = _zero_if_non_finite(delta)
            weight = tf.where(non_finite, 0.0, tf.cast(num_examples, tf.float32))
            return delta, weight, model.report_local_unfinalized_metrics()

        return train(weights, mask, dataset)

    aggregator = model_aggregator.create(weights_type.trainable, tff.TensorType(np.float32))
    finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
        server_optimizer_fn, weights_type
    )

    @tff.tensorflow.computation
    def zero_communication():
        return collections.OrderedDict(
            broadcast_bytes=tf.constant(0, tf.int64), upload_bytes=tf.constant(0, tf.int64)
        )

    @tff.federated_computation
    def init_fn():
        return tff.federated_zip(
            PVTState(
                global_model_weights=tff.federated_eval(initial_weights_fn, tff.SERVER),
                schedule_round=tff.federated_value(np.int64(0), tff.SERVER),
                aggregator=aggregator.initialize(),
                finalizer=finalizer.initialize(),
                communication=tff.federated_eval(zero_communication, tff.SERVER),
            )
        )

    state_type = init_fn.type_signature.result.member

    @tff.tensorflow.computation(tf.int64)
    def mask_for(round_num):
        return variable_mask(schedule_seed, round_num, num_variables, num_selected)

    @tff.tensorflow.computation(tff.TensorType(np.float32))
    def one(weight):
        del weight
        return tf.constant(1, tf.int64)

    @tff.tensorflow.computation(state_type.communication, tf.int64, mask_type)
    def account(cumulative, clients, mask):
        per_client_up = tf.reduce_sum(tf.cast(mask, tf.int64) * variable_bytes) + weight_bytes
        new, metrics = communication.account_round(
            cumulative, clients, broadcast_bytes, per_client_up
        )
        metrics["selected_variables"] = tf.cast(tf.reduce_sum(mask), tf.int64)
        return new, metrics

    @tff.tensorflow.computation(tf.int64)
    def increment(r):
        return r + 1

    @tff.federated_computation(
        init_fn.type_signature.result, tff.FederatedType(data_type, tff.CLIENTS)
    )
    def next_fn(state, data):
        round_num = tff.federated_map(increment, state.schedule_round)
        mask = tff.federated_map(mask_for, round_num)
        delta, weight, outputs = tff.federated_map(
            client_update,
            (
                tff.federated_broadcast(state.global_model_weights),
                tff.federated_broadcast(mask),
                data,
            ),
        )
        aggregated = aggregator.next(state.aggregator, delta, weight)
        finalized = finalizer.next(state.finalizer, state.global_model_weights, aggregated.result)
        clients = tff.federated_sum(tff.federated_map(one, weight))
        new_comm, comm_metrics = tff.federated_map(
            account, tff.federated_zip((state.communication, clients, mask))
        )
        new_state = tff.federated_zip(
            PVTState(
                global_model_weights=finalized.result,
                schedule_round=round_num,
                aggregator=aggregated.state,
                finalizer=finalized.state,
                communication=new_comm,
            )
        )
        metrics = tff.federated_zip(
            collections.OrderedDict(
                client_work=tff.federated_zip(collections.OrderedDict(train=metrics_fn(outputs))),
                aggregator=aggregated.measurements,
                finalizer=finalized.measurements,
                communication=comm_metrics,
            )
        )
        return tff.learning.templates.LearningProcessOutput(new_state, metrics)

    @tff.tensorflow.computation(state_type)
    def get_model_weights(state):
        return state.global_model_weights

    @tff.tensorflow.computation(state_type, state_type.global_model_weights)
    def set_model_weights(state, weights):
        return PVTState(
            global_model_weights=weights,
            schedule_round=state.schedule_round,
            aggregator=state.aggregator,
            finalizer=state.finalizer,
            communication=state.communication,
        )

    return tff.learning.templates.LearningProcess(
        init_fn, next_fn, get_model_weights, set_model_weights
    )


def _zero_if_non_finite(values):
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in values])
    return [tf.where(finite, v, tf.zeros_like(v)) for v in values], tf.logical_not(finite)

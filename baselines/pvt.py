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

from baselines.options import PVTOptions
from tff_fedpt import communication, composer, process, updates
from tff_fedpt.training import algorithms
from tff_fedpt.training.config import ConfigError

ModelWeights = tff.learning.models.ModelWeights


class PVTState(NamedTuple):
    """Server state of PVT; `client_work` holds the schedule's round counter."""

    global_model_weights: Any
    distributor: Any
    client_work: Any
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


def check_trainable_fraction(fraction, prefix: str = "") -> None:
    """Raises ValueError unless `fraction` (the share of variables trained per round) is a
    number in (0, 1]; the message names `prefix + "trainable_fraction"`."""
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not 0 < fraction <= 1
    ):
        raise ValueError(f"{prefix}trainable_fraction must be in (0, 1]; received {fraction!r}.")


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
    `M` holding `distributor`, `client_work`, `aggregator`, `finalizer` and
    `communication` (as in FedPT: clients, bytes per client, per round and cumulative,
    and `selected_variables`). Composed with FedPT's composer
    (`tff_fedpt.composer.compose_learning_process`).

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
    check_trainable_fraction(trainable_fraction)
    if server_optimizer_fn is None:
        server_optimizer_fn = process.default_server_optimizer()
    model_aggregator = model_aggregator or tff.aggregators.MeanFactory()

    @tff.tensorflow.computation
    def initial_weights_fn():
        return ModelWeights.from_model(model_fn())

    weights_type = initial_weights_fn.type_signature.result
    with tf.Graph().as_default():
        model = model_fn()
        data_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
    num_variables = len(weights_type.trainable)
    num_selected = max(1, math.ceil(trainable_fraction * num_variables))
    variable_bytes = np.array(
        [communication.type_bytes(t) for t in weights_type.trainable], np.int64
    )

    def mask_for(round_num):
        return variable_mask(schedule_seed, round_num, num_variables, num_selected)

    client_work = _build_client_work(
        model_fn, client_optimizer_fn, weights_type, data_type, mask_for, num_variables
    )
    distributor = tff.learning.templates.build_broadcast_process(weights_type)
    aggregator = model_aggregator.create(weights_type.trainable, tff.TensorType(np.float32))
    finalizer = tff.learning.templates.build_apply_optimizer_finalizer(
        server_optimizer_fn, weights_type
    )

    def upload_accounting(round_num):
        mask = mask_for(round_num)
        return collections.OrderedDict(
            upload_bytes=tf.reduce_sum(tf.cast(mask, tf.int64) * variable_bytes) + 4,
            selected_variables=tf.cast(tf.reduce_sum(mask), tf.int64),
        )

    def identity(weights):
        return tf.nest.map_structure(tf.identity, weights)

    return composer.compose_learning_process(
        state_class=PVTState,
        initial_model_weights=initial_weights_fn,
        constants={},
        distributor=distributor,
        client_work=client_work,
        aggregator=aggregator,
        finalizer=finalizer,
        payload=identity,
        to_full_weights=identity,
        from_full_weights=identity,
        full_weights_type=weights_type,
        upload_accounting=upload_accounting,
        device_rounds=(
            "PVT's clients train the variables of the round's schedule, kept in the "
            "server's client work state, which devices do not advance; FedPT processes "
            "(build_fedpt_process) run on devices."
        ),
    )


def _build_client_work(model_fn, optimizer, weights_type, data_type, mask_for, num_variables):
    """ClientWorkProcess: the server state is the schedule's round; each round it
    broadcasts the round's mask and clients train the selected variables only."""
    mask_type = tff.TensorType(np.float32, [num_variables])
    with tf.Graph().as_default():
        metrics_fn = tff.learning.metrics.sum_then_finalize(model_fn().metric_finalizers())

    @tff.tensorflow.computation(weights_type, mask_type, data_type)
    def client_update(weights, mask, dataset):
        model = model_fn()
        model_weights = ModelWeights.from_model(model)

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
            delta, weight = updates.zero_unless_finite(delta, tf.cast(num_examples, tf.float32))
            return (
                tff.learning.templates.ClientResult(update=delta, update_weight=weight),
                model.report_local_unfinalized_metrics(),
            )

        return train(weights, mask, dataset)

    @tff.federated_computation
    def init_fn():
        return tff.federated_value(np.int64(0), tff.SERVER)

    @tff.tensorflow.computation(tf.int64)
    def next_round(round_num):
        return round_num + 1, mask_for(round_num + 1)

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(round_num, weights, data):
        new_round, mask = tff.federated_map(next_round, round_num)
        result, outputs = tff.federated_map(
            client_update, (weights, tff.federated_broadcast(mask), data)
        )
        measurements = tff.federated_zip(collections.OrderedDict(train=metrics_fn(outputs)))
        return tff.templates.MeasuredProcessOutput(new_round, result, measurements)

    return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)


class PVT(algorithms.Algorithm):
    """Partial variable training; its upload changes every round (see the metrics)."""

    name = "pvt"
    options = PVTOptions

    def check(self, config, task):
        try:
            check_trainable_fraction(config.group(PVTOptions).pvt_trainable_fraction, "pvt_")
        except ValueError as e:
            raise ConfigError(str(e), ["pvt_trainable_fraction"]) from None

    def build_process(self, model_fn, config, parts):
        return build_pvt_process(
            model_fn,
            parts.client_optimizer,
            parts.server_optimizer,
            trainable_fraction=config.group(PVTOptions).pvt_trainable_fraction,
            schedule_seed=config.seed,
            model_aggregator=parts.model_aggregator,
        )

    def communication_cost(self, learning_process):
        return None

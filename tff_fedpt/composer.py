"""One composer for learning processes that keep part of the model off the wire.

FedPT (the frozen part never travels) and partial variable training (a different part
travels each round) share the same skeleton: server state with the global weights, a
distributor, a client work process, an aggregator, a finalizer and cumulative
communication; `next` runs them in that order and accounts the round's bytes; the model
weights and hyperparameters are read and written through the state. This module writes
that skeleton once, in the shape of TFF's `compose_learning_process`, plus the two
places where the algorithms differ: what the server broadcasts from its state, and how
the server's weights relate to the full model's `ModelWeights`.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt import communication


@dataclasses.dataclass(frozen=True)
class Parts:
    """The components a composed process runs, for code that drives a round itself
    (device clients: `tff_fedpt.device`).

    Attributes:
      server_step: The server half of `next`, as a federated computation
        `(state, distributor_state, client_work_state, update@CLIENTS,
        update_weight@CLIENTS) -> (state, metrics)` with `metrics` holding
        `aggregator`, `finalizer` and `communication`: `next` runs it after the client
        work, and the device path (`tff_fedpt.device.apply_device_updates`) runs it on
        the devices' uploads, so both update and account a round with the same code.
      device_rounds: None when devices can run this process's client work (its state
        is not advanced by the clients); otherwise why they cannot.
    """

    constants: tuple[str, ...]
    payload: tff.Computation
    distributor: tff.templates.MeasuredProcess
    aggregator: tff.templates.AggregationProcess
    server_step: tff.Computation
    device_rounds: Optional[str] = None


class ComposedLearningProcess(tff.learning.templates.LearningProcess):
    """A `tff.learning.templates.LearningProcess` that also carries its `parts`, its
    per-round cost when it is the same every round (`declared_cost`, read by
    `tff_fedpt.communication_cost`), and optional Python checks run before `next` and
    `set_model_weights` (a clear error in one line, before TFF runs the computation).
    """

    def __init__(
        self,
        *args,
        parts: Parts,
        declared_cost=None,
        check_next: Optional[Callable] = None,
        check_set_model_weights: Optional[Callable] = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.parts = parts
        self.declared_cost = declared_cost
        self._check_next = check_next
        self._check_set_model_weights = check_set_model_weights

    @property
    def next(self) -> tff.Computation:
        return _Checked.wrap(super().next, self._check_next)

    @property
    def set_model_weights(self) -> tff.Computation:
        return _Checked.wrap(super().set_model_weights, self._check_set_model_weights)


class _Checked:
    """A computation called after `check(*args)`; everything else (type_signature, ...)
    is the computation's."""

    def __init__(self, computation, check):
        self._computation = computation
        self._check = check

    @classmethod
    def wrap(cls, computation, check):
        return computation if check is None else cls(computation, check)

    def __getattr__(self, name):
        return getattr(self._computation, name)

    def __call__(self, *args):
        self._check(*args)
        return self._computation(*args)


def parts(learning_process) -> Parts:
    """The components of a process built by `compose_learning_process`.

    Raises:
      TypeError: for a process built elsewhere (e.g. TFF's own FedAvg).
    """
    if not isinstance(learning_process, ComposedLearningProcess):
        raise TypeError(
            "expected a process built by tff_fedpt (build_fedpt_process); received "
            f"{type(learning_process).__name__}, whose parts are not known."
        )
    return learning_process.parts


def compose_learning_process(
    *,
    state_class: type,
    initial_model_weights: tff.Computation,
    constants: Mapping[str, Any],
    distributor: tff.templates.MeasuredProcess,
    client_work: tff.learning.templates.ClientWorkProcess,
    aggregator: tff.templates.AggregationProcess,
    finalizer: tff.learning.templates.FinalizerProcess,
    payload: Callable,
    to_full_weights: Callable,
    from_full_weights: Callable,
    full_weights_type: tff.Type,
    upload_accounting: Optional[Callable] = None,
    device_rounds: Optional[str] = None,
    check_next: Optional[Callable] = None,
    check_set_model_weights: Optional[Callable] = None,
) -> ComposedLearningProcess:
    """Composes a LearningProcess whose state is `state_class`.

    Args:
      state_class: A NamedTuple with the fields global_model_weights, distributor,
        client_work, aggregator, finalizer, communication, and one per `constants` key.
      initial_model_weights: No-argument TF computation: the weights the server keeps
        (and the finalizer updates).
      constants: Server values fixed for the whole of training (e.g. the frozen seed),
        by state field name.
      distributor: Takes `payload`'s result at SERVER, delivers it to CLIENTS.
      client_work: Takes the distributor's result and the client data.
      aggregator: Created for the client work's update type, weighted.
      finalizer: Applies the aggregate to `global_model_weights`.
      payload: TensorFlow function (weights, *constants) -> what is broadcast.
      to_full_weights: TensorFlow function (weights, *constants) -> the full model's
        `ModelWeights` (for get_model_weights).
      from_full_weights: TensorFlow function (full `ModelWeights`, *constants) ->
        weights (for set_model_weights; may assert what it cannot accept).
      full_weights_type: The TFF type of the full model's `ModelWeights`.
      upload_accounting: TensorFlow function (client_work state after the round) ->
        OrderedDict with int64 `upload_bytes` per client and any extra int64
        communication metrics. None: the aggregator's input type gives the bytes,
        the same every round, and the cost is declared for `communication_cost`.
      device_rounds: None when devices can run the client work (see `Parts`);
        otherwise the reason they cannot, given to whoever tries.
      check_next: Python function (state, client_data) run before `next`; raises
        to refuse.
      check_set_model_weights: Python function (state, model_weights) run before
        `set_model_weights`; raises to refuse.

    Returns:
      A `ComposedLearningProcess` (a `tff.learning.templates.LearningProcess`), its
      cost declared for `tff_fedpt.communication_cost` when it is the same every round.
    """
    names = tuple(constants)
    broadcast_bytes = communication.traffic(distributor.next).broadcast_bytes_per_client
    upload_bytes = communication.traffic(aggregator.next).upload_bytes_per_client
    init_fn = _initialize(
        state_class,
        initial_model_weights,
        constants,
        distributor,
        client_work,
        aggregator,
        finalizer,
    )
    state_type = init_fn.type_signature.result.member
    payload_fn = tff.tensorflow.computation(
        payload, state_type.global_model_weights, *[state_type[k] for k in names]
    )
    accounting = _accounting(state_type, broadcast_bytes, upload_bytes, upload_accounting)
    server_step = _server_step(
        state_class,
        init_fn.type_signature.result,
        names,
        client_work,
        aggregator,
        finalizer,
        accounting,
    )
    next_fn = _next(
        init_fn.type_signature.result, names, payload_fn, distributor, client_work, server_step
    )
    get_model_weights_fn, set_model_weights_fn, get_hparams_fn, set_hparams_fn = _accessors(
        state_class,
        state_type,
        names,
        client_work,
        finalizer,
        to_full_weights,
        from_full_weights,
        full_weights_type,
    )
    cost = None
    if upload_accounting is None:  # the same every round
        cost = communication.CommunicationCost(
            broadcast_bytes_per_client=broadcast_bytes, upload_bytes_per_client=upload_bytes
        )
    return ComposedLearningProcess(
        init_fn,
        next_fn,
        get_model_weights_fn,
        set_model_weights_fn,
        get_hparams_fn=get_hparams_fn,
        set_hparams_fn=set_hparams_fn,
        parts=Parts(
            constants=names,
            payload=payload_fn,
            distributor=distributor,
            aggregator=aggregator,
            server_step=server_step,
            device_rounds=device_rounds,
        ),
        declared_cost=cost,
        check_next=check_next,
        check_set_model_weights=check_set_model_weights,
    )


def _initialize(
    state_class, initial_model_weights, constants, distributor, client_work, aggregator, finalizer
):
    """The process's `initialize`: every component's initial state, the constants, and
    no bytes moved yet."""

    @tff.tensorflow.computation
    def initial_communication():
        zero = tf.constant(0, tf.int64)
        return collections.OrderedDict(broadcast_bytes=zero, upload_bytes=zero)

    @tff.federated_computation
    def init_fn():
        fields = dict(
            global_model_weights=tff.federated_eval(initial_model_weights, tff.SERVER),
            distributor=distributor.initialize(),
            client_work=client_work.initialize(),
            aggregator=aggregator.initialize(),
            finalizer=finalizer.initialize(),
            communication=tff.federated_eval(initial_communication, tff.SERVER),
        )
        fields.update({k: tff.federated_value(v, tff.SERVER) for k, v in constants.items()})
        return tff.federated_zip(state_class(**fields))

    return init_fn


def _server_step(
    state_class, federated_state_type, names, client_work, aggregator, finalizer, accounting
):
    """The server half of a round (see `Parts.server_step`): aggregate the clients'
    updates, apply them with the finalizer, account the round's bytes."""
    state_member = federated_state_type.member
    one_client, upload_fn, account = accounting
    client_result_type = client_work.next.type_signature.result.result.member

    @tff.federated_computation(
        federated_state_type,
        tff.FederatedType(state_member.distributor, tff.SERVER),
        tff.FederatedType(state_member.client_work, tff.SERVER),
        tff.FederatedType(client_result_type.update, tff.CLIENTS),
        tff.FederatedType(client_result_type.update_weight, tff.CLIENTS),
    )
    def server_step(state, distributor_state, client_work_state, update, update_weight):
        aggregator_output = aggregator.next(state.aggregator, update, update_weight)
        finalizer_output = finalizer.next(
            state.finalizer, state.global_model_weights, aggregator_output.result
        )
        clients = tff.federated_sum(tff.federated_map(one_client, update_weight))
        upload = tff.federated_map(upload_fn, client_work_state)
        new_communication, communication_metrics = tff.federated_map(
            account, tff.federated_zip((state.communication, clients, upload))
        )
        fields = dict(
            global_model_weights=finalizer_output.result,
            distributor=distributor_state,
            client_work=client_work_state,
            aggregator=aggregator_output.state,
            finalizer=finalizer_output.state,
            communication=new_communication,
        )
        fields.update({k: getattr(state, k) for k in names})
        metrics = collections.OrderedDict(
            aggregator=aggregator_output.measurements,
            finalizer=finalizer_output.measurements,
            communication=communication_metrics,
        )
        return tff.federated_zip(state_class(**fields)), tff.federated_zip(metrics)

    return server_step


def _next(federated_state_type, names, payload_fn, distributor, client_work, server_step):
    """The process's `next`: broadcast the payload, run the client work, then
    `server_step`."""

    def with_constants(state, value):
        if not names:
            return value
        return tff.federated_zip((value, *(getattr(state, k) for k in names)))

    @tff.federated_computation(federated_state_type, client_work.next.type_signature.parameter[2])
    def next_fn(state, client_data):
        broadcast = tff.federated_map(payload_fn, with_constants(state, state.global_model_weights))
        distributor_output = distributor.next(state.distributor, broadcast)
        client_work_output = client_work.next(
            state.client_work, distributor_output.result, client_data
        )
        new_state, server_metrics = server_step(
            state,
            distributor_output.state,
            client_work_output.state,
            client_work_output.result.update,
            client_work_output.result.update_weight,
        )
        metrics = collections.OrderedDict(
            distributor=distributor_output.measurements,
            client_work=client_work_output.measurements,
            aggregator=server_metrics.aggregator,
            finalizer=server_metrics.finalizer,
            communication=server_metrics.communication,
        )
        return tff.learning.templates.LearningProcessOutput(new_state, tff.federated_zip(metrics))

    return next_fn


def _accounting(state_type, broadcast_bytes, upload_bytes, upload_accounting):
    """The round's communication accounting: (one_client: weight -> 1, upload_fn: client
    work state -> upload metrics, account: (cumulative, clients, upload) -> (new
    cumulative, metrics)), all with `communication.account_round`."""

    @tff.tensorflow.computation(tff.TensorType(np.float32))
    def one_client(weight):
        del weight
        return tf.constant(1, tf.int64)

    if upload_accounting is None:  # the same every round: the aggregator's input type

        def upload_accounting(client_work_state):
            del client_work_state
            return collections.OrderedDict(upload_bytes=tf.constant(upload_bytes, tf.int64))

    upload_fn = tff.tensorflow.computation(upload_accounting, state_type.client_work)

    @tff.tensorflow.computation(state_type.communication, tf.int64, upload_fn.type_signature.result)
    def account(cumulative, clients, upload):
        new, metrics = communication.account_round(
            cumulative, clients, broadcast_bytes, upload["upload_bytes"]
        )
        metrics.update((k, v) for k, v in upload.items() if k != "upload_bytes")
        return new, metrics

    return one_client, upload_fn, account


def _accessors(
    state_class,
    state_type,
    names,
    client_work,
    finalizer,
    to_full_weights,
    from_full_weights,
    full_weights_type,
):
    """get/set_model_weights and get/set_hparams of a composed process's state."""

    @tff.tensorflow.computation(state_type)
    def get_model_weights_fn(state):
        return to_full_weights(state.global_model_weights, *(getattr(state, k) for k in names))

    @tff.tensorflow.computation(state_type, full_weights_type)
    def set_model_weights_fn(state, model_weights):
        weights = from_full_weights(model_weights, *(getattr(state, k) for k in names))
        return _replace(state_class, state, global_model_weights=weights)

    @tff.tensorflow.computation(state_type)
    def get_hparams_fn(state):
        return collections.OrderedDict(
            client_work=client_work.get_hparams(state.client_work),
            finalizer=finalizer.get_hparams(state.finalizer),
        )

    @tff.tensorflow.computation(state_type, get_hparams_fn.type_signature.result)
    def set_hparams_fn(state, hparams):
        return _replace(
            state_class,
            state,
            client_work=client_work.set_hparams(state.client_work, hparams["client_work"]),
            finalizer=finalizer.set_hparams(state.finalizer, hparams["finalizer"]),
        )

    return get_model_weights_fn, set_model_weights_fn, get_hparams_fn, set_hparams_fn


def _replace(state_class, state, **changes):
    return state_class(**{f: changes.get(f, getattr(state, f)) for f in state_class._fields})

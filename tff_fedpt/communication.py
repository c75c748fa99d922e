"""Communication cost computed from TFF types."""

from __future__ import annotations

import collections
import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt._tff_internals import building_blocks, tree_analysis


def type_bytes(type_spec: tff.Type) -> int:
    """Bytes needed to send a value of `type_spec` (sum of its tensors' sizes).

    Args:
      type_spec: A `tff.Type` made of tensors with fully defined shapes (federated
        types count their member type once).

    Returns:
      The number of bytes, an int.

    Raises:
      ValueError: if a tensor has an undefined shape or a variable-size dtype.
    """
    if isinstance(type_spec, tff.FederatedType):
        return type_bytes(type_spec.member)
    if isinstance(type_spec, tff.TensorType):
        if type_spec.shape is None or any(d is None for d in type_spec.shape):
            raise ValueError(f"Cannot count bytes of a tensor of unknown shape: {type_spec}.")
        dtype = np.dtype(type_spec.dtype)
        if dtype.kind in "OSU":
            raise ValueError(f"Cannot count bytes of variable-size dtype: {type_spec}.")
        return int(np.prod(type_spec.shape, dtype=np.int64)) * dtype.itemsize
    if isinstance(type_spec, tff.StructType):
        return sum(type_bytes(t) for t in type_spec)
    raise ValueError(f"Cannot count bytes of {type_spec} (not a tensor or struct).")


@dataclasses.dataclass(frozen=True)
class CommunicationCost:
    """Bytes one client receives and sends per round."""

    broadcast_bytes_per_client: int
    upload_bytes_per_client: int

    @property
    def bytes_per_client(self) -> int:
        return self.broadcast_bytes_per_client + self.upload_bytes_per_client

    def reduction_versus(self, other: CommunicationCost) -> float:
        """How many times fewer bytes per round this costs than `other`."""
        return other.bytes_per_client / self.bytes_per_client


def _client_bytes(type_spec: tff.Type) -> int:
    """Bytes of the CLIENTS-placed values inside `type_spec` (functions and others: 0)."""
    if isinstance(type_spec, tff.FederatedType):
        return type_bytes(type_spec.member) if type_spec.placement is tff.CLIENTS else 0
    if isinstance(type_spec, tff.StructType):
        return sum(_client_bytes(t) for t in type_spec)
    return 0


def traffic(comp: tff.Computation) -> CommunicationCost:
    """Bytes per client that `comp` moves between server and clients, read from its body.

    Every `federated_broadcast` counts the bytes of its value; every intrinsic that
    takes values placed at CLIENTS and returns a value at SERVER (federated_sum,
    federated_aggregate, federated_mean, secure sums, ...) counts the bytes of those
    client values. These are the types TFF actually moves, so an encoded value counts
    with its encoded size (e.g. bit-packed int32 and min/max floats for TFF's uniform
    quantization), not as float32.

    Args:
      comp: A federated `tff.Computation`, such as `aggregator.next` or
        `distributor.next` of a learning process's components.

    Returns:
      A `CommunicationCost` with per-client broadcast (down) and upload (up) bytes.
    """
    down = up = 0

    def visit(node):
        nonlocal down, up
        if not (
            isinstance(node, building_blocks.Call)
            and isinstance(node.function, building_blocks.Intrinsic)
        ):
            return
        result = node.type_signature
        argument = node.argument.type_signature if node.argument is not None else None
        if node.function.uri == "federated_broadcast":
            down += type_bytes(argument)
        elif (
            argument is not None
            and isinstance(result, tff.FederatedType)
            and result.placement is tff.SERVER
        ):
            up += _client_bytes(argument)

    tree_analysis.visit_preorder(comp.to_building_block(), visit)
    return CommunicationCost(broadcast_bytes_per_client=down, upload_bytes_per_client=up)


def account_round(cumulative, clients, broadcast_bytes_per_client, upload_bytes_per_client):
    """TensorFlow: a round's communication for `clients` clients, added to `cumulative`.

    For use inside a `tff.tensorflow.computation` of a learning process.

    Args:
      cumulative: `OrderedDict(broadcast_bytes=, upload_bytes=)` int64 totals so far.
      clients: int64 number of clients in the round.
      broadcast_bytes_per_client, upload_bytes_per_client: ints or int64 tensors.

    Returns:
      (new cumulative totals, the round's `communication` metrics).
    """
    down = tf.cast(broadcast_bytes_per_client, tf.int64)
    up = tf.cast(upload_bytes_per_client, tf.int64)
    new = collections.OrderedDict(
        broadcast_bytes=cumulative["broadcast_bytes"] + clients * down,
        upload_bytes=cumulative["upload_bytes"] + clients * up,
    )
    metrics = collections.OrderedDict(
        clients=clients,
        broadcast_bytes_per_client=down,
        upload_bytes_per_client=up,
        round_broadcast_bytes=clients * down,
        round_upload_bytes=clients * up,
        cumulative_broadcast_bytes=new["broadcast_bytes"],
        cumulative_upload_bytes=new["upload_bytes"],
    )
    return new, metrics


def communication_cost(process: tff.learning.templates.LearningProcess) -> CommunicationCost:
    """Per-client bytes per round of a FedPT process or of TFF's composed FedAvg.

    A process built by this package (FedPT, with or without compression) declares its
    cost, measured by `traffic` on its distributor and aggregator. A process composed by
    `tff.learning.templates.compose_learning_process`, such as
    `tff.learning.algorithms.build_weighted_fed_avg`, broadcasts all of its
    `global_model_weights`, trainable and non-trainable, and uploads the trainable delta
    plus one float32 client weight (what `build_model_delta_client_work` hands to the
    aggregator), without compression: read from its state type.

    Args:
      process: A `tff.learning.templates.LearningProcess`.

    Returns:
      A `CommunicationCost`.

    Raises:
      TypeError: if the state type has no `global_model_weights`.
    """
    declared = getattr(process, "declared_cost", None)  # composer.ComposedLearningProcess
    if declared is not None:
        return declared
    state_type = process.initialize.type_signature.result.member
    names = dict(tff.structure.iter_elements(state_type))
    if "global_model_weights" not in names:
        raise TypeError(
            "communication_cost needs a process whose state has global_model_weights "
            f"(a composed TFF learning process or a FedPT process); state type is "
            f"{state_type}."
        )
    return _cost(names["global_model_weights"])


def fedavg_communication_cost(model_fn) -> CommunicationCost:
    """What `tff.learning.algorithms.build_weighted_fed_avg(model_fn, ...)` sends.

    Equal to `communication_cost` of that process, without building it: the full
    `ModelWeights` go down, the trainable delta and a float32 weight come up.

    Args:
      model_fn: A no-argument callable returning a `tff.learning.models.VariableModel`.
    """
    with tf.Graph().as_default():
        weights_type = tff.learning.models.weights_type_from_model(model_fn())
    return _cost(weights_type)


def _cost(weights_type) -> CommunicationCost:
    upload = type_bytes(weights_type.trainable) + np.dtype(np.float32).itemsize
    return CommunicationCost(
        broadcast_bytes_per_client=type_bytes(weights_type), upload_bytes_per_client=upload
    )

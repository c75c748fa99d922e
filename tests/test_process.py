import collections

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import tff_fedpt
from tff_fedpt import frozen as frozen_lib

from . import models


def _sgd(lr):
    return tff.learning.optimizers.build_sgdm(learning_rate=lr)


def _run(process, state, data, rounds):
    for _ in range(rounds):
        output = process.next(state, data)
        state = output.state
    return state, output.metrics


def _max_abs_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))


def test_nothing_frozen_equals_tff_fedavg():
    """Oracle: with nothing frozen, FedPT is TFF's weighted FedAvg."""
    data = models.client_data()
    fedpt = tff_fedpt.build_fedpt_process(
        models.fedpt_model_fn(freeze=None), _sgd(0.1), _sgd(0.5), frozen_seed=5
    )
    fedavg = tff.learning.algorithms.build_weighted_fed_avg(
        lambda: tff.learning.models.from_keras_model(
            models.mlp(), loss=models.loss(), input_spec=models.INPUT_SPEC
        ),
        _sgd(0.1),
        _sgd(0.5),
    )
    fedpt_state = fedpt.initialize()
    initial = fedpt.get_model_weights(fedpt_state)
    assert initial.non_trainable == []
    fedavg_state = fedavg.set_model_weights(fedavg.initialize(), initial)
    fedpt_state, fedpt_metrics = _run(fedpt, fedpt_state, data, 3)
    fedavg_state, fedavg_metrics = _run(fedavg, fedavg_state, data, 3)
    a = fedpt.get_model_weights(fedpt_state)
    b = fedavg.get_model_weights(fedavg_state)
    assert _max_abs_diff(a.trainable, b.trainable) <= 1e-5
    assert _max_abs_diff(a.trainable, initial.trainable) > 1e-3  # it trained
    np.testing.assert_allclose(
        fedpt_metrics["client_work"]["train"]["loss"],
        fedavg_metrics["client_work"]["train"]["loss"],
        rtol=1e-5,
    )


def test_frozen_layers_equal_tff_fedavg_with_trainable_false():
    data = models.client_data()
    fedpt = tff_fedpt.build_fedpt_process(
        models.fedpt_model_fn(freeze="hidden"), _sgd(0.1), frozen_seed=11
    )
    fedavg = tff.learning.algorithms.build_weighted_fed_avg(
        lambda: tff.learning.models.from_keras_model(
            models.mlp(hidden_trainable=False), loss=models.loss(), input_spec=models.INPUT_SPEC
        ),
        _sgd(0.1),
    )
    fedpt_state = fedpt.initialize()
    initial = fedpt.get_model_weights(fedpt_state)
    fedavg_state = fedavg.set_model_weights(fedavg.initialize(), initial)
    seen_frozen = []
    for _ in range(3):
        fedpt_state = fedpt.next(fedpt_state, data).state
        fedavg_state = fedavg.next(fedavg_state, data).state
        seen_frozen.append(fedpt.get_model_weights(fedpt_state).non_trainable)
    a = fedpt.get_model_weights(fedpt_state)
    b = fedavg.get_model_weights(fedavg_state)
    assert _max_abs_diff(a.trainable, b.trainable) <= 1e-5
    assert _max_abs_diff(a.trainable, initial.trainable) > 1e-3
    # Frozen weights never change and equal the seed's regeneration.
    records = models.fedpt_model_fn("hidden")().frozen_initializers
    regenerated = [t.numpy() for t in frozen_lib.generate_frozen_weights(records, 11)]
    for frozen in seen_frozen + [initial.non_trainable, b.non_trainable]:
        for x, y in zip(frozen, regenerated):
            np.testing.assert_array_equal(x, y)


def test_different_seed_different_frozen_weights():
    p1 = tff_fedpt.build_fedpt_process(models.fedpt_model_fn(), _sgd(0.1), frozen_seed=1)
    p2 = tff_fedpt.build_fedpt_process(models.fedpt_model_fn(), _sgd(0.1), frozen_seed=2)
    w1 = p1.get_model_weights(p1.initialize()).non_trainable
    w2 = p2.get_model_weights(p2.initialize()).non_trainable
    assert not np.array_equal(w1[0], w2[0])


def test_broadcast_carries_no_frozen_tensor():
    process = tff_fedpt.build_fedpt_process(models.fedpt_model_fn(), _sgd(0.1))
    state_type = process.next.type_signature.parameter[0].member
    # Server state: trainable weights (8x3 kernel, 3 bias) and the seed only.
    assert (
        str(state_type.global_model_weights)
        == "<trainable=<float32[8,3],float32[3]>,non_trainable=<>>"
    )
    assert str(state_type.frozen_seed) == "int64"
    # Nothing of the frozen hidden layer's shapes (4x8 kernel, 8 bias) is in the
    # state or the metrics of `next`, so nothing frozen can be broadcast.
    signature = str(process.next.type_signature)
    assert "float32[4,8]" not in signature
    assert "float32[8]" not in signature
    # The full weights are available to the server on demand.
    full_type = process.get_model_weights.type_signature.result
    assert "float32[4,8]" in str(full_type)


def test_communication_metrics_and_helper_agree():
    data = models.client_data(num_clients=3)
    process = tff_fedpt.build_fedpt_process(models.fedpt_model_fn(), _sgd(0.1))
    state = process.initialize()
    metrics = [None, None]
    for r in range(2):
        output = process.next(state, data)
        state, metrics[r] = output.state, output.metrics["communication"]
    # Broadcast: 8*3 + 3 float32 trainable values and one int64 seed = 108 + 8 bytes.
    # Upload: 27 float32 delta values and one float32 weight = 112 bytes.
    assert metrics[1]["clients"] == 3
    assert metrics[1]["broadcast_bytes_per_client"] == 116
    assert metrics[1]["upload_bytes_per_client"] == 112
    assert metrics[1]["round_broadcast_bytes"] == 348
    assert metrics[1]["round_upload_bytes"] == 336
    assert metrics[1]["cumulative_broadcast_bytes"] == 696
    assert metrics[1]["cumulative_upload_bytes"] == 672
    cost = tff_fedpt.communication_cost(process)
    assert cost == tff_fedpt.CommunicationCost(116, 112)
    fedavg = tff.learning.algorithms.build_weighted_fed_avg(
        lambda: tff.learning.models.from_keras_model(
            models.mlp(), loss=models.loss(), input_spec=models.INPUT_SPEC
        ),
        _sgd(0.1),
    )
    # FedAvg broadcasts all 4*8+8+8*3+3 = 67 floats (268 bytes), uploads 67+1 floats.
    assert tff_fedpt.communication_cost(fedavg) == tff_fedpt.CommunicationCost(268, 272)


def emnist_cnn(num_classes=62):
    """TFF's EMNIST CNN (conv32, conv64, max-pool, dropout, dense128, dropout, output)."""
    return tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=(28, 28, 1)),
            tf.keras.layers.Conv2D(32, 3, activation="relu"),
            tf.keras.layers.Conv2D(64, 3, activation="relu"),
            tf.keras.layers.MaxPool2D(2),
            tf.keras.layers.Dropout(0.25),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(128, activation="relu", name="dense128"),
            tf.keras.layers.Dropout(0.5),
            tf.keras.layers.Dense(num_classes, name="logits"),
        ]
    )


def test_emnist_cnn_dense_frozen_is_45x_cheaper():
    spec = (tf.TensorSpec([None, 28, 28, 1]), tf.TensorSpec([None, 1], tf.int32))

    def fedpt_fn():
        return tff_fedpt.from_keras_model(
            emnist_cnn(), loss=models.loss(), input_spec=spec, freeze="dense128"
        )

    def fedavg_fn():
        return tff.learning.models.from_keras_model(
            emnist_cnn(), loss=models.loss(), input_spec=spec
        )

    report = fedpt_fn().freeze_report
    assert report.totals() == {"trainable": 26814, "frozen": 1179776, "total": 1206590}
    fedpt = tff_fedpt.build_fedpt_process(fedpt_fn, _sgd(0.1))
    fedavg = tff.learning.algorithms.build_weighted_fed_avg(fedavg_fn, _sgd(0.1))
    fedpt_cost = tff_fedpt.communication_cost(fedpt)
    fedavg_cost = tff_fedpt.communication_cost(fedavg)
    assert fedpt_cost == tff_fedpt.CommunicationCost(26814 * 4 + 8, 26814 * 4 + 4)
    assert fedavg_cost == tff_fedpt.CommunicationCost(1206590 * 4, 1206590 * 4 + 4)
    assert tff_fedpt.fedavg_communication_cost(fedavg_fn) == fedavg_cost
    # 1,206,590 / 26,814 parameters = 44.9985x per direction; the 8-byte seed makes the
    # round 44.996x: "45x" to the one decimal that FACTS.md and the paper quote.
    ratio = fedpt_cost.reduction_versus(fedavg_cost)
    assert round(ratio, 1) >= 45.0
    np.testing.assert_allclose(ratio, (2 * 1206590 * 4 + 4) / (2 * 26814 * 4 + 12), rtol=1e-12)


def test_get_model_weights_works_with_fed_eval_and_keras_export():
    data = models.client_data()
    process = tff_fedpt.build_fedpt_process(models.fedpt_model_fn(), _sgd(0.1), frozen_seed=4)
    state = process.next(process.initialize(), data).state
    weights = process.get_model_weights(state)
    evaluation = tff.learning.algorithms.build_fed_eval(models.fedpt_model_fn())
    eval_state = evaluation.set_model_weights(evaluation.initialize(), weights)
    eval_metrics = evaluation.next(eval_state, data).metrics
    eval_loss = eval_metrics["client_work"]["eval"]["current_round_metrics"]["loss"]
    # The same loss computed with a plain Keras model holding the exported weights.
    keras_model = models.mlp(hidden_trainable=False)  # the same trainable split
    weights.assign_weights_to(keras_model)
    losses, counts = [], []
    for ds in data:
        for batch in ds:
            losses.append(
                float(models.loss()(batch["y"], keras_model(batch["x"]))) * len(batch["y"])
            )
            counts.append(len(batch["y"]))
    np.testing.assert_allclose(eval_loss, sum(losses) / sum(counts), rtol=1e-5)


def test_run_training_process_works_unchanged():
    data = models.client_data()
    process = tff_fedpt.build_fedpt_process(models.fedpt_model_fn(), _sgd(0.1))
    seen = []
    state = tff.simulation.run_training_process(
        process,
        training_selection_fn=lambda round_num: data,
        total_rounds=2,
        metrics_managers=[_Recorder(seen)],
    )
    assert [r for r, _ in seen] == [0, 1, 2] or [r for r, _ in seen][-2:] == [1, 2]
    assert process.get_model_weights(state).non_trainable


class _Recorder(tff.program.ReleaseManager):
    def __init__(self, seen):
        self._seen = seen

    async def release(self, value, key=None):
        self._seen.append((key, value))


def test_set_model_weights_rejects_other_frozen_weights():
    process = tff_fedpt.build_fedpt_process(models.fedpt_model_fn(), _sgd(0.1), frozen_seed=3)
    state = process.initialize()
    weights = process.get_model_weights(state)
    new_trainable = [w + 1.0 for w in weights.trainable]
    accepted = process.set_model_weights(
        state, tff.learning.models.ModelWeights(new_trainable, weights.non_trainable)
    )
    assert _max_abs_diff(process.get_model_weights(accepted).trainable, new_trainable) == 0
    bad = tff.learning.models.ModelWeights(
        weights.trainable, [w + 1.0 for w in weights.non_trainable]
    )
    message = r"frozen weight 0 \(.*\) is not the one frozen_seed=3 generates \(max difference 1\)"
    with pytest.raises(ValueError, match=message):
        process.set_model_weights(state, bad)
    # The computation itself checks too (inside TFF, for callers that bypass Python).
    with pytest.raises(Exception, match="does not match the weights generated from this"):
        process.set_model_weights._computation(state, bad)


def test_non_finite_client_update_is_zeroed_like_fedavg():
    data = models.client_data(num_clients=2)
    x = np.full((4, 4), np.nan, np.float32)
    y = np.zeros((4, 1), np.int32)
    nan_client = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(x=x, y=y)).batch(2)
    process = tff_fedpt.build_fedpt_process(models.fedpt_model_fn(), _sgd(0.1), frozen_seed=2)
    state = process.initialize()
    with_nan = process.next(state, data + [nan_client]).state
    without = process.next(state, data).state
    a = process.get_model_weights(with_nan).trainable
    b = process.get_model_weights(without).trainable
    assert all(np.all(np.isfinite(w)) for w in a)
    assert _max_abs_diff(a, b) <= 1e-6


def test_unweighted_aggregator_and_uniform_weighting():
    data = models.client_data()
    process = tff_fedpt.build_fedpt_process(
        models.fedpt_model_fn(), _sgd(0.1), model_aggregator=tff.aggregators.UnweightedMeanFactory()
    )
    state, metrics = _run(process, process.initialize(), data, 2)
    assert metrics["communication"]["clients"] == 3
    with pytest.raises(ValueError, match="is unweighted, so it cannot apply client_weighting"):
        tff_fedpt.build_fedpt_process(
            models.fedpt_model_fn(),
            _sgd(0.1),
            model_aggregator=tff.aggregators.UnweightedMeanFactory(),
            client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES,
        )


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        (
            dict(client_optimizer_fn=tf.keras.optimizers.SGD(0.1)),
            TypeError,
            "client_optimizer_fn must be a tff.learning.optimizers.Optimizer",
        ),
        (
            dict(server_optimizer_fn="sgd"),
            TypeError,
            "server_optimizer_fn must be a tff.learning.optimizers.Optimizer or None; received str",
        ),
        (
            dict(frozen_seed=1.5),
            TypeError,
            "frozen_seed must be an int64 scalar; received float 1.5",
        ),
        (dict(frozen_seed=2**70), ValueError, "frozen_seed must fit in a signed 64-bit integer"),
        (
            dict(model_aggregator="mean"),
            TypeError,
            "model_aggregator must be a tff.aggregators factory",
        ),
        (
            dict(client_weighting="uniform"),
            TypeError,
            "client_weighting must be a tff.learning.ClientWeighting",
        ),
    ],
)
def test_bad_arguments(kwargs, error, message):
    args = dict(model_fn=models.fedpt_model_fn(), client_optimizer_fn=_sgd(0.1))
    args.update(kwargs)
    with pytest.raises(error, match=message):
        tff_fedpt.build_fedpt_process(**args)


def test_model_fn_must_return_a_regenerable_model():
    with pytest.raises(TypeError, match="model_fn must be a no-argument callable"):
        tff_fedpt.build_fedpt_process(models.mlp(), _sgd(0.1))

    def plain_frozen():
        return tff.learning.models.from_keras_model(
            models.mlp(hidden_trainable=False), loss=models.loss(), input_spec=models.INPUT_SPEC
        )

    with pytest.raises(TypeError, match="cannot regenerate from a seed"):
        tff_fedpt.build_fedpt_process(plain_frozen, _sgd(0.1))

"""Training on the frozen prefix's output (tff_fedpt.features): the same process, bytes
and trajectory as the full model's FedPT process, with the prefix run once per example."""

import collections
import gc

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import tff_fedpt
from tff_fedpt import communication, features
from tff_fedpt import frozen as frozen_lib

from . import models

INIT = tf.keras.initializers.GlorotUniform


def _model(dropout=None):
    """4 -> first (frozen) -> second (trained) -> third (frozen) -> out (trained): the
    prefix is `first`; the remainder holds a frozen layer, drawn at index 2 and 3 of the
    seed's draws (not 0 and 1)."""
    layers = [
        tf.keras.layers.Dense(8, activation="relu", name="first", kernel_initializer=INIT(1)),
        tf.keras.layers.Dense(8, activation="relu", name="second", kernel_initializer=INIT(2)),
        tf.keras.layers.Dense(8, activation="tanh", name="third", kernel_initializer=INIT(3)),
        tf.keras.layers.Dense(3, name="out", kernel_initializer=INIT(4)),
    ]
    if dropout is not None:
        layers.insert(1, tf.keras.layers.Dropout(dropout, name="drop"))
    return tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=(4,)), *layers])


def _model_fn(dropout=None, freeze="first|third"):
    def model_fn():
        return tff_fedpt.from_keras_model(
            _model(dropout), loss=models.loss(), input_spec=models.INPUT_SPEC, freeze=freeze
        )

    return model_fn


def _examples(num_clients=3, seed=0):
    rng = np.random.default_rng(seed)
    return [
        tf.data.Dataset.from_tensor_slices(
            collections.OrderedDict(
                x=rng.normal(size=(9 + c, 4)).astype(np.float32),
                y=rng.integers(0, 3, size=(9 + c, 1)).astype(np.int32),
            )
        )
        for c in range(num_clients)
    ]


def _trajectory(process, data, rounds=3):
    state = process.initialize()
    losses = []
    for _ in range(rounds):
        output = process.next(state, data)
        state = output.state
        losses.append(output.metrics["client_work"]["train"]["loss"])
    return process.get_model_weights(state), losses


def _sgd(lr):
    return tff.learning.optimizers.build_sgdm(learning_rate=lr)


@pytest.mark.parametrize("dropout", [None, 0.0])
def test_training_on_features_follows_the_full_models_trajectory(dropout):
    """Three rounds of FedPT on features equal FedPT on inputs to 1e-5: the same weights
    (prefix, remainder and the remainder's frozen layer), the same losses, the same state
    type and bytes. With a Dropout after the prefix it stays in the remainder (rate 0:
    the only rate whose draw cannot differ between two runs)."""
    model_fn = _model_fn(dropout)
    full = tff_fedpt.build_fedpt_process(model_fn, _sgd(0.1), frozen_seed=7)
    split = tff_fedpt.build_fedpt_process(
        model_fn, _sgd(0.1), frozen_seed=7, train_on_features=True
    )
    assert full.initialize.type_signature == split.initialize.type_signature
    assert communication.communication_cost(full) == communication.communication_cost(split)
    examples = _examples()
    feature_map = features.FeatureMap(model_fn, frozen_seed=7)
    assert feature_map.split.layers == ("first",)
    weights_full, losses_full = _trajectory(full, [d.batch(4) for d in examples])
    weights_split, losses_split = _trajectory(split, [feature_map(d).batch(4) for d in examples])
    for a, b in zip(
        [*weights_full.trainable, *weights_full.non_trainable],
        [*weights_split.trainable, *weights_split.non_trainable],
    ):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(losses_full, losses_split, rtol=1e-5)
    assert abs(losses_full[-1] - losses_full[0]) > 1e-3  # it trained
    assert feature_map.examples == sum(9 + c for c in range(3))


def test_the_remainder_draws_its_frozen_tensors_as_the_full_model_does():
    with tf.Graph().as_default():
        model = _model_fn()()
        rest = features.remainder_model(model)
        assert rest.frozen_indices == (2, 3)  # third's kernel and bias
        assert [s.name for s in rest.frozen_initializers] == [
            s.name for s in model.frozen_initializers[2:]
        ]
        assert len(rest.trainable_variables) == len(model.trainable_variables)
    full = frozen_lib.generate_frozen_weights(model.frozen_initializers, 7)
    part = frozen_lib.generate_frozen_weights(rest.frozen_initializers, 7, rest.frozen_indices)
    for a, b in zip(full[2:], part):
        np.testing.assert_array_equal(a, b)


def test_features_past_the_memory_bound_go_to_files_and_read_back_the_same(tmp_path, monkeypatch):
    model_fn = _model_fn()
    in_memory = features.FeatureMap(model_fn, 3)
    on_disk = features.FeatureMap(model_fn, 3, memory_bytes=0, directory=str(tmp_path))
    data = _examples(1)[0]
    a = list(in_memory(data).as_numpy_iterator())
    b = list(on_disk(data).as_numpy_iterator())
    assert on_disk.files == 1 and on_disk.bytes_in_memory == 0
    assert [p.name for p in tmp_path.iterdir()] == ["client_000000.tfrecord"]
    assert len(a) == len(b) == 9
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["x"], y["x"])
        np.testing.assert_array_equal(x["y"], y["y"])
    # Records hold chunks of examples (here 4, 4 and 1): the same examples, one by one.
    monkeypatch.setattr(features, "RECORD_EXAMPLES", 4)
    chunked = features.FeatureMap(model_fn, 3, memory_bytes=0)(data)
    assert chunked.element_spec == in_memory(data).element_spec
    for x, y in zip(a, list(chunked.as_numpy_iterator()), strict=True):
        np.testing.assert_array_equal(x["x"], y["x"])
        np.testing.assert_array_equal(x["y"], y["y"])
    assert in_memory(data.take(0)).cardinality() == 0
    kept = features.FeatureMap(model_fn, 3, memory_bytes=0)(data)  # the map itself dropped
    gc.collect()
    assert len(list(kept)) == 9  # its temporary files stay until exit


def test_a_model_without_a_frozen_prefix_is_refused_in_one_line():
    with pytest.raises(features.NoPrefixError, match="layer 'first' \\(Dense\\) trains"):
        tff_fedpt.build_fedpt_process(_model_fn(freeze="third"), _sgd(0.1), train_on_features=True)
    with pytest.raises(features.NoPrefixError, match="layer 'first' \\(Dense\\) trains"):
        features.FeatureMap(_model_fn(freeze="second|third"), 0)
    model = _model(dropout=0.5)
    assert "layer 'drop' (Dropout) draws at training time" in frozen_lib.prefix_end(model, "first")


def test_a_layer_that_passes_a_mask_on_ends_the_prefix():
    """A masked embedding's features would lose the mask the LSTM after it reads."""
    inputs = tf.keras.Input((5,), dtype=tf.int32)
    x = tf.keras.layers.Embedding(10, 4, mask_zero=True, name="embedding")(inputs)
    x = tf.keras.layers.LSTM(4, name="lstm")(x)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2, name="out")(x))
    assert frozen_lib.frozen_prefix(model, "embedding") is None
    assert "passes a Keras mask on" in frozen_lib.prefix_end(model, "embedding")


def test_a_run_on_features_gives_the_rows_of_a_run_on_inputs(tmp_path):
    """The training layer: digits with its convolutions frozen (prefix conv1, conv2,
    flatten; no dropout) trains and evaluates on features by default, and every round's
    loss and test accuracy are those of the same run with train_on_features=off."""
    from tff_fedpt import training
    from tff_fedpt.tasks import load_task

    task = load_task("digits", num_clients=20)
    config = training.ExperimentConfig(
        freeze="convs",
        total_rounds=3,
        clients_per_round=3,
        client_epochs_per_round=2,
        rounds_per_eval=1,
        root_output_dir=str(tmp_path),
    )
    on = training.build_experiment(config.replace(experiment_name="on"), task)
    assert on.client_input is not None
    assert on.client_input.split.layers == ("conv1", "conv2", "flatten")
    rows_on = training.run_experiment(config.replace(experiment_name="on"), task).rows
    off = config.replace(experiment_name="off", train_on_features="off")
    assert training.build_experiment(off, task).client_input is None
    rows_off = training.run_experiment(off, task).rows
    for a, b in zip(rows_on, rows_off):
        for key in ("train/loss", "eval/loss", "eval/accuracy"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
        assert a["broadcast_bytes_per_client"] == b["broadcast_bytes_per_client"]
    with pytest.raises(training.ConfigError, match="train_on_features.*first layer 'conv1'"):
        training.build_experiment(config.replace(freeze="dense", train_on_features="on"), task)
    with pytest.raises(training.ConfigError, match="train_on_features=on.*fedavg"):
        training.build_experiment(
            config.replace(algorithm="fedavg", freeze="none", train_on_features="on"), task
        )


# ---------------------------------------------------------------------------
# The device: a `features` signature, and train / evaluate on features.

DIGITS_SPEC = (tf.TensorSpec([None, 8, 8, 1]), tf.TensorSpec([None], tf.int32))


def _digits_fn(generator="philox"):
    from tff_fedpt.tasks import digits

    def model_fn():
        return tff_fedpt.from_keras_model(
            digits.cnn(0, 64),
            loss=models.loss(),
            input_spec=DIGITS_SPEC,
            freeze=frozen_lib.FreezeSpec(layers=("conv1", "conv2"), generator=generator),
        )

    return model_fn


def _digits_clients(seed):
    rng = np.random.default_rng(seed)
    return [
        (rng.random((12, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 12).astype(np.int32))
        for _ in range(3)
    ]


def _reference_round(process, state, feature_map, data, batch):
    datasets = [feature_map(tf.data.Dataset.from_tensor_slices(d)).batch(batch) for d in data]
    return process.next(state, datasets)


def _assert_same_trainable(out, ref):
    for a, b in zip(
        out.state.global_model_weights.trainable, ref.state.global_model_weights.trainable
    ):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_device_round_on_features_equals_process_next(tmp_path):
    """The Flex file: start_round, features once per example, train on them; two rounds
    of three devices equal the features process's `next` to 1e-5. Kept features (an app's
    store) give the same update as features computed in train; a stored-features file is
    refused by a client whose frozen prefix computes otherwise (another frozen seed)."""
    from tff_fedpt import device

    model_fn, optimizer = _digits_fn(), tff.learning.optimizers.build_sgdm(0.1, momentum=0.9)
    process = tff_fedpt.build_fedpt_process(
        model_fn, optimizer, frozen_seed=4, train_on_features=True
    )
    tflite = device.export_tflite(model_fn, optimizer, train_on_features=True)
    feature_map = features.FeatureMap(model_fn, 4)
    state = process.initialize()
    for round_num in range(2):
        data = _digits_clients(round_num)
        payload = device.broadcast_payload(process, state)
        updates = []
        for x, y in data:
            client = device.DeviceClient(tflite)
            assert client.trains_on_features
            client.start_round(payload["trainable"], payload["frozen_seed"])
            updates.append(client.train(x, y, batch_size=4))
        kept = device.DeviceClient(tflite)
        kept.start_round(payload["trainable"], payload["frozen_seed"])
        stored = kept.features(data[0][0])
        assert stored.shape == (12, 512)
        again = kept.train(stored, data[0][1], batch_size=4, x_is_features=True)
        np.testing.assert_array_equal(again.delta[0], updates[0].delta[0])
        out = device.apply_device_updates(process, state, updates)
        ref = _reference_round(process, state, feature_map, data, 4)
        _assert_same_trainable(out, ref)
        state = ref.state
    with pytest.raises(protocol_error(), match="features: argument 'x' has shape"):
        kept.features(np.zeros((2, 8, 8), np.float32))
    path = tmp_path / "kept.npz"
    np.testing.assert_array_equal(kept.save_features(path, data[0][0]), stored)
    np.testing.assert_array_equal(kept.load_features(path), stored)
    other = device.DeviceClient(tflite)
    other.start_round(payload["trainable"], 5)  # other frozen values, same layers and shapes
    with pytest.raises(protocol_error(), match=r"another frozen prefix \(frozen seed 4, "):
        other.load_features(path)
    (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:200])
    with pytest.raises(protocol_error(), match="load_features: cannot read .*cut.npz"):
        kept.load_features(tmp_path / "cut.npz")
    with pytest.raises(protocol_error(), match="expected \\(None, 512\\)"):
        kept.train(np.zeros((2, 8, 8, 1), np.float32), data[0][1][:2], batch_size=2,
                   x_is_features=True)  # fmt: skip


def protocol_error():
    from fedpt_device import protocol

    return protocol.DeviceError


def test_a_builtin_only_features_file_trains_on_the_slim_runtime(tmp_path):
    """Builtins only (portable generator, fixed batch): no Flex op, and
    `python -m fedpt_device` on the slim runtime (which maps x through the features
    signature itself) equals the features process's `next` to 1e-5."""
    from tests.test_portable import _run_slim
    from tff_fedpt import device

    model_fn, optimizer = _digits_fn("portable"), tff.learning.optimizers.build_sgdm(0.1)
    process = tff_fedpt.build_fedpt_process(
        model_fn, optimizer, frozen_seed=2, train_on_features=True
    )
    tflite = device.export_tflite(
        model_fn, optimizer, batch_size=4, builtins_only=True, train_on_features=True
    )
    assert device.flex_ops(tflite) == []
    path = tmp_path / "client.tflite"
    path.write_bytes(tflite)
    state = process.initialize()
    data = _digits_clients(5)
    # Features in calls of any size (the runtime resizes the fixed batch of 4): the same.
    client = device.DeviceClient(tflite)
    client.start_round(**{k: v for k, v in device.broadcast_payload(process, state).items()
                          if k in ("trainable", "frozen_seed")})  # fmt: skip
    whole = client.features(data[0][0])
    for batch_size in (1, 3, 100):
        np.testing.assert_array_equal(client.features(data[0][0], batch_size), whole)
    with pytest.raises(protocol_error(), match="batch_size must be an integer >= 1"):
        client.features(data[0][0], 0)
    # A prefix whose ops kept the export's batch (stood in: the rows of a batch of 4).
    client._runners["features"] = lambda x: {"features": np.zeros((4, *whole.shape[1:]))}
    with pytest.raises(protocol_error(), match="prefix fixes its batch at 4; pass that"):
        client.features(data[0][0], 1)
    payload = device.broadcast_payload(process, state)
    updates = _run_slim(tmp_path, path, payload, data, 4)
    out = device.apply_device_updates(process, state, updates)
    _assert_same_trainable(
        out, _reference_round(process, state, features.FeatureMap(model_fn, 2), data, 4)
    )
    # The features one example per call on the device: the same updates.
    per_example = _run_slim(tmp_path, path, payload, data, 4, "--features_batch_size=1")
    for a, b in zip(per_example, updates):
        for x, y in zip(a.delta, b.delta):
            np.testing.assert_array_equal(x, y)

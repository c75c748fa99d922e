"""The TensorFlow Lite device client against the simulation (TFF's process is the oracle)."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import tff_fedpt
from fedpt_device import protocol
from tff_fedpt import communication, device
from tff_fedpt import frozen as frozen_lib
from tff_fedpt.tasks import digits

DIGITS_SPEC = (tf.TensorSpec([None, 8, 8, 1]), tf.TensorSpec([None], tf.int32))
SEQ_SPEC = (tf.TensorSpec([None, 6], tf.int32), tf.TensorSpec([None, 6], tf.int32))


def _loss():
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _digits_fn(dense_units=2048):
    return lambda: tff_fedpt.from_keras_model(
        digits.cnn(0, dense_units), loss=_loss(), input_spec=DIGITS_SPEC, freeze="dense"
    )


def _recurrent():
    """Embedding (uniform), LSTM (Glorot = variance scaling, orthogonal recurrent kernel,
    forget-gate bias), a Dense with a RandomUniform kernel and zeros bias, and the output."""
    return tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=(6,), dtype=tf.int32),
            tf.keras.layers.Embedding(20, 8, name="embedding"),
            tf.keras.layers.LSTM(8, return_sequences=True, name="lstm"),
            tf.keras.layers.Dense(
                8, name="uniform", kernel_initializer=tf.keras.initializers.RandomUniform()
            ),
            tf.keras.layers.Dense(20, name="logits"),
        ]
    )


def _recurrent_fn(freeze):
    return lambda: tff_fedpt.from_keras_model(
        _recurrent(), loss=_loss(), input_spec=SEQ_SPEC, freeze=freeze
    )


def _digits_data(seed=0):
    rng = np.random.default_rng(seed)
    return [
        (rng.random((12, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 12).astype(np.int32))
        for _ in range(3)
    ]


def _seq_data(seed=0):
    rng = np.random.default_rng(seed)
    return [
        (
            rng.integers(0, 20, (9, 6)).astype(np.int32),
            rng.integers(0, 20, (9, 6)).astype(np.int32),
        )
        for _ in range(3)
    ]


def _device_round(process, state, tflite, data, batch_size):
    payload = device.broadcast_payload(process, state)
    updates, clients = [], []
    for x, y in data:
        client = device.DeviceClient(tflite)
        client.start_round(payload["trainable"], payload["frozen_seed"])
        updates.append(client.train(x, y, batch_size=batch_size))
        clients.append(client)
    return device.apply_device_updates(process, state, updates), clients


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))


@pytest.mark.parametrize(
    "model_fn,data,batch,optimizer,broadcast_bits",
    [
        (_digits_fn(), _digits_data(), 5, tff.learning.optimizers.build_sgdm(0.1), None),
        (_digits_fn(), _digits_data(1), 4, tff.learning.optimizers.build_sgdm(0.1, 0.9), 8),
        (_recurrent_fn("embedding"), _seq_data(), 4, tff.learning.optimizers.build_sgdm(0.5), None),
        (
            _recurrent_fn("lstm"),
            _seq_data(2),
            4,
            tff.learning.optimizers.build_sgdm(0.5, 0.9),
            None,
        ),
    ],
    ids=["digits-sgd", "digits-momentum-8bit-broadcast", "embedding-frozen", "lstm-frozen"],
)
def test_a_round_of_device_clients_equals_process_next(
    model_fn, data, batch, optimizer, broadcast_bits
):
    process = tff_fedpt.build_fedpt_process(model_fn, optimizer, broadcast_bits=broadcast_bits)
    tflite = device.export_tflite(model_fn, optimizer)
    state = process.initialize()
    for _ in range(2):  # two rounds: the second starts from the first's state
        out, _ = _device_round(process, state, tflite, data, batch)
        datasets = [tf.data.Dataset.from_tensor_slices((x, y)).batch(batch) for x, y in data]
        ref = process.next(state, datasets)
        # Measured max difference: ~4e-8 (float32 sums in another order in TFLite kernels).
        assert (
            _max_diff(
                out.state.global_model_weights.trainable, ref.state.global_model_weights.trainable
            )
            < 1e-5
        )
        assert (
            out.state.communication["broadcast_bytes"] == ref.state.communication["broadcast_bytes"]
        )
        assert out.state.communication["upload_bytes"] == ref.state.communication["upload_bytes"]
        # The round's communication metrics: the same keys and values as next's.
        assert out.metrics["communication"] == {
            k: int(v) for k, v in ref.metrics["communication"].items()
        }
        state = ref.state
    if broadcast_bits:
        payload = device.broadcast_payload(process, state)
        exact = process.get_model_weights(state).trainable
        assert 0 < _max_diff(payload["trainable"], exact) < 0.01  # dequantized 8-bit values


def test_frozen_tensors_regenerated_on_device_match_the_process():
    model_fn = _recurrent_fn("embedding|lstm|uniform")
    process = tff_fedpt.build_fedpt_process(model_fn, tff.learning.optimizers.build_sgdm(0.1))
    state = process.initialize()
    client = device.DeviceClient(
        device.export_tflite(model_fn, tff.learning.optimizers.build_sgdm(0.1))
    )
    payload = device.broadcast_payload(process, state)
    client.start_round(payload["trainable"], payload["frozen_seed"])
    on_device = client.frozen_weights()
    simulated = process.get_model_weights(state).non_trainable
    records = model_fn().frozen_initializers
    eager = frozen_lib.generate_frozen_weights(records, np.int64(0))
    families = [r.class_name for r in records]
    assert set(families) >= {"RandomUniform", "VarianceScaling", "Orthogonal", "Zeros"}
    assert any("lstm" in r.name and "bias" in r.name for r in records)  # forget-gate bias
    for record, dev, sim, eag in zip(records, on_device, simulated, eager):
        np.testing.assert_array_equal(dev, eag)  # bit-identical to TensorFlow
        if record.class_name == "Orthogonal":
            # The QR decomposition run by TFF's C++ runtime differs from TensorFlow's own
            # (eager or TFLite Flex) by at most a few float32 ulps; measured 1.5e-7.
            assert float(np.max(np.abs(dev - sim))) < 5e-7, record.name
        else:
            np.testing.assert_array_equal(dev, sim, err_msg=record.name)


def test_the_file_holds_no_frozen_tensor():
    sizes, trainable = {}, {}
    for width in (1024, 4096):
        model_fn = _digits_fn(width)
        sizes[width] = len(device.export_tflite(model_fn, tff.learning.optimizers.build_sgdm(0.1)))
        with tf.Graph().as_default():
            model = model_fn()
            trainable[width] = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
            frozen = sum(int(np.prod(v.shape)) for v in model.non_trainable_variables)
        # The 4096-wide frozen layer alone would be 16.8 MB in float32.
        # file = 4 bytes x trainable parameters (their initial values) + graph and state.
        assert sizes[width] - 4 * trainable[width] < 150_000, (width, sizes[width])
        assert sizes[width] < 4 * frozen / 10
    # 4x the frozen parameters; the file grows by the trainable output layer only.
    grown = sizes[4096] - sizes[1024]
    assert abs(grown - 4 * (trainable[4096] - trainable[1024])) < 1_000, grown


def test_bad_inputs_at_the_device_boundary_are_named():
    model_fn = _digits_fn()
    optimizer = tff.learning.optimizers.build_sgdm(0.1)
    tflite = device.export_tflite(model_fn, optimizer)
    process = tff_fedpt.build_fedpt_process(model_fn, optimizer)
    payload = device.broadcast_payload(process, process.initialize())
    client = device.DeviceClient(tflite)
    x, y = _digits_data()[0]
    with pytest.raises(protocol.DeviceError, match="train: called before start_round"):
        client.train_step(x, y)
    weights = list(payload["trainable"])
    with pytest.raises(protocol.DeviceError, match="start_round: 5 trainable tensors received"):
        client.start_round(weights[:-1], 0)
    bad = [*weights[:-1], np.zeros((3,), np.float32)]
    with pytest.raises(
        protocol.DeviceError,
        match=r"start_round: argument 'trainable_005' has shape \(3,\); expected \(10,\)",
    ):
        client.start_round(bad, 0)
    bad = [*weights[:-1], weights[-1].astype(np.float64)]
    with pytest.raises(
        protocol.DeviceError, match="'trainable_005' has dtype float64; expected float32"
    ):
        client.start_round(bad, 0)
    for seed in (1.5, "0"):
        with pytest.raises(protocol.DeviceError, match="'frozen_seed' must be an int64 scalar"):
            client.start_round(weights, seed)
    client.start_round(weights, payload["frozen_seed"])
    with pytest.raises(protocol.DeviceError, match="get_update: read before any training"):
        client.get_update()
    with pytest.raises(protocol.DeviceError, match=r"train: argument 'x' has shape \(12, 8, 8\)"):
        client.train_step(x[..., 0], y)
    with pytest.raises(protocol.DeviceError, match="train: argument 'y' has dtype int64"):
        client.train_step(x, y.astype(np.int64))
    update = client.train(x, y, batch_size=5, epochs=2, shuffle_seed=3)
    assert update.num_examples == 24 and update.weight == 24.0
    with pytest.raises(TypeError, match="model_fn must return a model from tff_fedpt"):
        device.export_tflite(
            lambda: tff.learning.models.from_keras_model(
                digits.cnn(0), loss=_loss(), input_spec=DIGITS_SPEC
            ),
            optimizer,
        )
    assert "StatelessRandomUniformV2" in device.flex_ops(tflite)
    assert communication.communication_cost(process).broadcast_bytes_per_client > 0


# ---------------------------------------------------------------------------
# Untrusted input at the device boundary: the file, the seed, the updates.


@pytest.fixture(scope="module")
def small_client():
    """A small digits FedPT client, exported once: (model_fn, optimizer, file bytes)."""
    model_fn = _digits_fn(64)
    optimizer = tff.learning.optimizers.build_sgdm(0.1)
    return model_fn, optimizer, device.export_tflite(model_fn, optimizer)


def test_the_documented_runtime_adapter_trains_as_the_device_client(small_client):
    """docs/device.md's "Adding a device runtime", as written: a round through its adapter
    equals DeviceClient's bit for bit, and every signature went through the adapter."""
    with open(os.path.join(ROOT, "docs", "device.md")) as f:
        docs = f.read()
    code = re.search(r"## Adding a device runtime.*?```python\n(.*?)```", docs, re.S).group(1)
    namespace = {"__name__": "__docs__"}
    exec(compile(code, "docs/device.md", "exec"), namespace)  # noqa: S102
    model_fn, optimizer, tflite = small_client
    process = tff_fedpt.build_fedpt_process(model_fn, optimizer)
    payload = device.broadcast_payload(process, process.initialize())
    x = np.random.default_rng(0).random((10, 8, 8, 1), np.float32)
    y = np.arange(10, dtype=np.int32) % 10
    counting = namespace["CountingClient"](tflite)
    updates = []
    for client in (counting, device.DeviceClient(tflite)):
        client.start_round(payload["trainable"], payload["frozen_seed"])
        updates.append(client.train(x, y, batch_size=4))
    counted, reference = updates
    assert all(np.array_equal(a, b) for a, b in zip(counted.delta, reference.delta))
    assert counted.weight == reference.weight
    calls = counting._interpreter.calls  # noqa: SLF001 - the adapter's own record
    assert calls["start_round"] == 1 and calls["train"] == 3 and calls["get_update"] == 1


def test_damaged_files_are_refused_before_the_interpreter_sees_them(small_client, tmp_path):
    _, _, tflite = small_client
    cases = {
        "half.tflite": (tflite[: len(tflite) // 2], "is truncated or damaged"),
        "head.tflite": (tflite[:100], "is truncated or damaged"),
        "last_byte_missing.tflite": (tflite[:-1], "is truncated or damaged"),
        "text.tflite": (b"this is not a model\n" * 10, "is not a TensorFlow Lite file"),
        "empty.tflite": (b"", "is empty (0 bytes)"),
        "short.tflite": (b"TF", "is not a TensorFlow Lite file"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        # Unchecked, the interpreter segfaults (exit 139) on a truncated file, raises a
        # ValueError without the file's name for text and "model_path or model_content"
        # for an empty file.
        with pytest.raises(protocol.DeviceError, match=re.escape(message)) as error:
            device.DeviceClient(str(path))
        assert str(path) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(protocol.DeviceError, match="the model bytes is truncated or damaged"):
        device.DeviceClient(tflite[:-7])
    with pytest.raises(protocol.DeviceError, match=f"{tmp_path}: cannot be read"):
        device.DeviceClient(str(tmp_path))  # a directory
    with pytest.raises(protocol.DeviceError, match="missing.tflite: cannot be read"):
        device.DeviceClient(str(tmp_path / "missing.tflite"))
    assert device.read_tflite(tflite) == tflite


def test_seeds_and_training_arguments_outside_their_range_are_named(small_client):
    model_fn, optimizer, tflite = small_client
    process = tff_fedpt.build_fedpt_process(model_fn, optimizer)
    weights = device.broadcast_payload(process, process.initialize())["trainable"]
    client = device.DeviceClient(tflite)
    bad_seeds = [
        (2**63, "must fit in a signed 64-bit integer"),  # was an OverflowError
        (np.uint64(2**64 - 1), "must fit in a signed 64-bit integer"),  # was the seed -1
        (np.array(1.5), "must be an int64 scalar; received ndarray"),  # was the seed 1
        (True, "must be an int64 scalar"),
        (np.array([1, 2]), "must be an int64 scalar"),
    ]
    for seed, message in bad_seeds:
        with pytest.raises(
            protocol.DeviceError, match=f"start_round: argument 'frozen_seed' {message}"
        ):
            client.start_round(weights, seed)
    client.start_round(weights, np.array(3))  # a 0-d integer array is a seed
    client.start_round(weights, np.uint64(5))
    x, y = _digits_data()[0]
    for kwargs, message in (
        (dict(batch_size=0), "train: batch_size must be >= 1; received 0"),
        (dict(batch_size=2.5), "train: batch_size must be an integer >= 1; received float"),
        (dict(batch_size=4, epochs=0), "train: epochs must be >= 1; received 0"),
    ):
        with pytest.raises(protocol.DeviceError, match=message):
            client.train(x, y, **kwargs)
    with pytest.raises(ValueError, match="batch_size must be None .* or an integer >= 1"):
        device.export_tflite(model_fn, optimizer, batch_size=0)


def test_device_updates_are_untrusted_a_nan_device_is_zeroed_as_tff_zeroes_a_nan_client(
    small_client,
):
    model_fn, optimizer, tflite = small_client
    process = tff_fedpt.build_fedpt_process(model_fn, optimizer)
    state = process.initialize()
    payload = device.broadcast_payload(process, state)
    (x, y), (x_bad, y_bad) = _digits_data()[:2]
    x_bad = x_bad.copy()
    x_bad[0, 0, 0, 0] = np.nan  # this client's training diverges: a NaN delta
    client = device.DeviceClient(tflite)
    client.start_round(payload["trainable"], payload["frozen_seed"])
    good = client.train(x, y, batch_size=4)
    # What an app that skipped the file's own check would send: NaN, weight 12.
    bad = protocol.DeviceUpdate([np.full_like(d, np.nan) for d in good.delta], 12.0, 12)
    out = device.apply_device_updates(process, state, [good, bad])
    ref = process.next(
        state,
        [tf.data.Dataset.from_tensor_slices(d).batch(4) for d in ((x, y), (x_bad, y_bad))],
    )
    # Unzeroed, the NaN update makes the aggregate non-finite and the finalizer drops the
    # whole round (update_non_finite=1), losing the good device's work.
    assert out.metrics["finalizer"]["update_non_finite"] == 0
    assert out.metrics["devices"]["non_finite_updates"] == 1
    after, expected = out.state.global_model_weights, ref.state.global_model_weights
    assert _max_diff(after.trainable, expected.trainable) < 1e-5
    assert _max_diff(after.trainable, state.global_model_weights.trainable) > 1e-4  # it moved

    def refused(updates, message):
        with pytest.raises(ValueError, match=message) as error:
            device.apply_device_updates(process, state, updates)
        assert "\n" not in str(error.value) and len(str(error.value)) < 300, str(error.value)

    # A weight or delta that one device sends wrongly (negative, non-finite, finite in
    # float64 but not float32, two weights that overflow together, a huge delta) zeroes
    # that update alone: the round is the good device's, and the metrics say why.
    huge = [np.full_like(d, 1e38) for d in good.delta]
    for bad, reason in (
        ([protocol.DeviceUpdate(good.delta, -6.0, 6)], "bad_weight"),
        ([protocol.DeviceUpdate(good.delta, float("inf"), 6)], "bad_weight"),
        ([protocol.DeviceUpdate(good.delta, 1e39, 6)], "bad_weight"),
        ([protocol.DeviceUpdate(good.delta, 3e38, 6)] * 2, "bad_weight"),
        ([protocol.DeviceUpdate(huge, 6.0, 6)], "delta_too_large"),
    ):
        out = device.apply_device_updates(process, state, [good, *bad])
        alone = device.apply_device_updates(process, state, [good])
        assert out.metrics["finalizer"]["update_non_finite"] == 0
        assert out.metrics["devices"][f"{reason}_updates"] == len(bad), reason
        got, want = out.state.global_model_weights, alone.state.global_model_weights
        assert _max_diff(got.trainable, want.trainable) < 1e-6, reason
    refused(
        [protocol.DeviceUpdate(good.delta[:-1], 6.0, 6)],
        "update 0 has 5 delta tensors; the process uploads 6",
    )
    refused(
        [protocol.DeviceUpdate([*good.delta[:-1], np.zeros(3, np.float32)], 6.0, 6)],
        r"update 0: delta 5 has shape \(3,\) and dtype float32; expected shape \(10,\)",
    )
    refused([good, "garbage"], "update 1 is a str; expected a DeviceUpdate")

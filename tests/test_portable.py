"""The portable generator (NumPy reference, TensorFlow, TensorFlow Lite builtins), the
builtin-only export, and device clients on the slim runtime in a process without
TensorFlow."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import tff_fedpt
from fedpt_device import generator, protocol
from tff_fedpt import adapters, device, portable
from tff_fedpt.tasks import digits, emnist

from . import scripts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLIM_PYTHON = os.path.join(ROOT, ".venv-slim", "bin", "python")
SPEC = (tf.TensorSpec([None, 8, 8, 1]), tf.TensorSpec([None], tf.int32))
SEEDS = (0, 7, -1, 2**40 + 5, 2**63 - 1, -(2**63))
GLOROT = ("VarianceScaling", {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform"})
# Every initializer family: (class name, config, shape, bit-identical across runtimes).
FAMILIES = (
    (*GLOROT, (33, 17), True),
    (
        "VarianceScaling",
        {"scale": 2.0, "mode": "fan_in", "distribution": "uniform"},
        (3, 3, 4, 5),
        True,
    ),
    ("RandomUniform", {"minval": -0.05, "maxval": 0.05}, (1000,), True),
    ("Zeros", {}, (7,), True),
    ("Ones", {}, (7,), True),
    ("Constant", {"value": 0.5}, (2, 3), True),
    ("Identity", {"gain": 2.0}, (4, 4), True),
    ("RandomNormal", {"mean": 1.0, "stddev": 2.0}, (1000,), False),
    ("TruncatedNormal", {"mean": 0.0, "stddev": 1.0}, (1000,), False),
    (
        "VarianceScaling",
        {"scale": 1.0, "mode": "fan_avg", "distribution": "truncated_normal"},
        (20, 30),
        False,
    ),
    ("Orthogonal", {"gain": 1.0}, (12, 8), False),
)


def _loss():
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _np(class_name, config, shape, seed, tensor=3):
    return generator.generate(generator.NUMPY, class_name, config, shape, seed, tensor)


def _tf(class_name, config, shape, seed, tensor=3):
    return portable.generate(class_name, config, shape, tf.constant(seed, tf.int64), tensor).numpy()


def test_numpy_tensorflow_and_builtin_interpreter_agree_for_every_family():
    class Module(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([], tf.int64)])
        def draw(self, seed):
            return {
                f"t{i}": portable.generate(c, cfg, shape, seed, 3)
                for i, (c, cfg, shape, _) in enumerate(FAMILIES)
            }

    module = Module()
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.draw.get_concrete_function()], module
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    model = converter.convert()
    assert device.flex_ops(model) == []
    interpreter = tf.lite.Interpreter(
        model_content=model,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    runner = interpreter.get_signature_runner()
    for seed in SEEDS:
        lite = runner(seed=np.array(seed, np.int64))
        for i, (c, cfg, shape, exact) in enumerate(FAMILIES):
            reference = _np(c, cfg, shape, seed)
            values = [_tf(c, cfg, shape, seed), lite[f"t{i}"]]
            for value in values:
                assert value.shape == reference.shape and value.dtype == np.float32
                if exact:
                    np.testing.assert_array_equal(value, reference, err_msg=f"{c} {seed}")
                else:  # log, cos, sqrt and the orthogonal family's sums: to rounding
                    np.testing.assert_allclose(value, reference, atol=2e-5, rtol=1e-5)


def test_the_distributions_follow_the_keras_initializers():
    n = 200_000
    u = _np("RandomUniform", {"minval": -0.05, "maxval": 0.05}, (n,), 11)
    assert u.min() >= -0.05 and u.max() < np.float32(0.05)  # exactly in range
    assert abs(u.mean()) < 3 * 0.1 / np.sqrt(12 * n) * 2 and abs(u.std() - 0.1 / np.sqrt(12)) < 1e-3
    # Glorot uniform limit sqrt(6 / (fan_in + fan_out))
    g = _np(*GLOROT, (400, 500), 5)
    limit = np.sqrt(6 / 900)
    assert g.min() >= -limit and g.max() < limit and abs(g.max() - limit) < 1e-3
    z = _np("RandomNormal", {"mean": 1.0, "stddev": 2.0}, (n,), 12)
    assert abs(z.mean() - 1.0) < 0.02 and abs(z.std() - 2.0) < 0.02
    quantiles = np.quantile((z - 1) / 2, [0.025, 0.5, 0.975])
    np.testing.assert_allclose(quantiles, [-1.96, 0.0, 1.96], atol=0.03)
    t = _np("TruncatedNormal", {"mean": 0.0, "stddev": 1.0}, (n,), 13)
    assert np.abs(t).max() <= 2.0 and abs(t.std() - generator.TRUNCATED_STDDEV) < 0.01
    q = _np("Orthogonal", {"gain": 1.0}, (64, 32), 14)
    np.testing.assert_allclose(q.T @ q, np.eye(32), atol=1e-5)
    # ... and it is Keras' Q: the QR of the same normal draw, R's diagonal made positive.
    normal = generator.draw(generator.NUMPY, "normal", 14, 3, (64, 32), 0.0, 1.0)
    keras_q, r = np.linalg.qr(normal.astype(np.float64))
    np.testing.assert_allclose(q, keras_q * np.sign(np.diag(r)), atol=1e-5)
    # Streams and tensors are independent: no correlation between tensors 0 and 1.
    a = _np("RandomUniform", {"minval": 0.0, "maxval": 1.0}, (n,), 3, tensor=0)
    b = _np("RandomUniform", {"minval": 0.0, "maxval": 1.0}, (n,), 3, tensor=1)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.01
    assert not np.array_equal(
        a, _np("RandomUniform", {"minval": 0.0, "maxval": 1.0}, (n,), 4, tensor=0)
    )


def _doc_vectors():
    """The test-vector table of docs/portable_generator.md, by its first cell."""
    with open(os.path.join(ROOT, "docs", "portable_generator.md")) as f:
        text = f.read()
    table = text[text.index("### Test vectors") :].split("\n\n")[1]
    rows = [line.strip("|").split("|") for line in table.splitlines()[2:]]
    return {cells[0].strip().strip("`"): cells[1].strip() for cells in rows}


def test_published_test_vectors():
    """The values printed in docs/portable_generator.md, from the NumPy reference."""
    ops, doc = generator.NUMPY, _doc_vectors()
    assert doc["mix(1)"] == str(int(generator.mix(ops, np.int32(1))))

    def ints(values):
        return ", ".join(str(int(v)) for v in values)

    assert doc["`m` for seed 0, tensor 0, stream 0, j = 0..3".strip("`")] == ints(
        generator.bits24(ops, 0, 0, 0, 4)
    )
    assert doc["`m` for seed 2**40 + 5, tensor 3, stream 1, j = 0..3".strip("`")] == ints(
        generator.bits24(ops, 2**40 + 5, 3, 1, 4)
    )
    glorot = _np(*GLOROT, (2, 2), 0, tensor=0).ravel()
    hexes = [float.hex(float(v)).replace("0000000p", "p").rstrip("0") for v in glorot]
    printed = doc["Glorot uniform (2, 2), seed 0, tensor 0 (float32, hex)"].split(", ")
    assert [float.fromhex(h) for h in printed] == [float(v) for v in glorot], hexes


def _portable_fn(freeze=("dense",), dense_units=64, adapt=None):
    def model_fn():
        keras_model = digits.cnn(0, dense_units)
        if adapt:
            keras_model = adapters.add_adapters(keras_model, adapt, rank=4, mode="ffa")
        return tff_fedpt.from_keras_model(
            keras_model,
            loss=_loss(),
            input_spec=SPEC,
            freeze=tff_fedpt.FreezeSpec(layers=freeze, generator="portable"),
        )

    return model_fn


def test_a_portable_process_holds_the_reference_values():
    process = tff_fedpt.build_fedpt_process(
        _portable_fn(), tff.learning.optimizers.build_sgdm(0.1), frozen_seed=2**40 + 5
    )
    frozen = process.get_model_weights(process.initialize()).non_trainable
    records = _portable_fn()().frozen_initializers
    assert [r.generator for r in records] == ["portable", "portable"]
    for i, (record, value) in enumerate(zip(records, frozen)):
        reference = generator.generate(
            generator.NUMPY, record.class_name, dict(record.config), record.shape, 2**40 + 5, i
        )
        np.testing.assert_array_equal(value, reference)
    with pytest.raises(
        ValueError,
        match=r"FreezeSpec.generator must be one of \('philox', 'portable'\); received 'pcg'",
    ):
        tff_fedpt.FreezeSpec(layers=("dense",), generator="pcg")


def _run_slim(tmp_path, tflite_path, payload, data, batch_size, *flags):
    """Trains the clients in .venv-slim (tflite_runtime, no TensorFlow); their updates."""
    assert os.path.exists(SLIM_PYTHON), "no .venv-slim: run `make slim` (make test does)"
    round_file, updates_file = tmp_path / "round.npz", tmp_path / "updates.npz"
    arrays = {f"trainable_{i:03d}": t for i, t in enumerate(payload["trainable"])}
    arrays["frozen_seed"] = np.int64(payload["frozen_seed"])
    arrays["batch_size"] = np.int64(batch_size)
    for c, (x, y) in enumerate(data):
        arrays[f"x_{c:03d}"], arrays[f"y_{c:03d}"] = x, y
    np.savez(round_file, **arrays)
    result = subprocess.run(
        [
            SLIM_PYTHON,
            "-m",
            "fedpt_device",
            f"--model={tflite_path}",
            f"--round={round_file}",
            f"--updates={updates_file}",
            "--check_no_tensorflow",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": ROOT},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "3 clients trained on the slim runtime" in result.stdout
    with np.load(updates_file) as f:
        out = dict(f)
    updates = []
    for c in range(len(data)):
        delta = [out[k] for k in sorted(k for k in out if k.startswith(f"delta_{c:03d}_"))]
        updates.append(
            protocol.DeviceUpdate(
                delta, float(out[f"weight_{c:03d}"]), int(out[f"num_examples_{c:03d}"])
            )
        )
    return updates


def test_builtin_only_clients_on_the_slim_runtime_equal_process_next(tmp_path):
    model_fn = _portable_fn()
    optimizer = tff.learning.optimizers.build_sgdm(0.1, momentum=0.9)
    process = tff_fedpt.build_fedpt_process(model_fn, optimizer, frozen_seed=9)
    tflite = device.export_tflite(model_fn, optimizer, batch_size=4, builtins_only=True)
    assert device.flex_ops(tflite) == []
    tf.lite.Interpreter(
        model_content=tflite,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    ).allocate_tensors()
    path = tmp_path / "client.tflite"
    path.write_bytes(tflite)
    rng = np.random.default_rng(0)
    state = process.initialize()
    for _ in range(2):
        data = [
            (rng.random((12, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 12).astype(np.int32))
            for _ in range(3)
        ]
        updates = _run_slim(tmp_path, path, device.broadcast_payload(process, state), data, 4)
        out = device.apply_device_updates(process, state, updates)
        ref = process.next(state, [tf.data.Dataset.from_tensor_slices(d).batch(4) for d in data])
        for a, b in zip(
            out.state.global_model_weights.trainable, ref.state.global_model_weights.trainable
        ):
            np.testing.assert_allclose(a, b, atol=1e-5)
        state = ref.state


def test_builtin_only_exports_of_the_issue_models():
    optimizer = tff.learning.optimizers.build_sgdm(0.1)

    # TFF's EMNIST CNN, dense layer frozen, convolutions (and dropout) trained.
    def emnist_fn():
        return tff_fedpt.from_keras_model(
            emnist.cnn(0, 62),
            loss=_loss(),
            input_spec=(tf.TensorSpec([None, 28, 28, 1]), tf.TensorSpec([None], tf.int32)),
            freeze=tff_fedpt.FreezeSpec(layers=("dense128",), generator="portable"),
        )

    tflite = device.export_tflite(emnist_fn, optimizer, batch_size=20, builtins_only=True)
    assert device.flex_ops(tflite) == [] and len(tflite) < 400_000  # no frozen or batch constants
    # A frozen convolutional backbone with a trained head, and with FFA adapters on dense.
    for fn in (
        _portable_fn(freeze=("conv1", "conv2", "dense")),
        _portable_fn(freeze=("conv1", "conv2"), adapt="dense"),
    ):
        assert (
            device.flex_ops(device.export_tflite(fn, optimizer, batch_size=4, builtins_only=True))
            == []
        )


def test_what_cannot_be_exported_builtin_only_is_one_line():
    optimizer = tff.learning.optimizers.build_sgdm(0.1)

    def softsign_fn():
        inputs = tf.keras.Input([4])
        hidden = tf.keras.layers.Dense(8, name="frozen")(inputs)
        hidden = tf.keras.layers.Dense(8, activation="softsign", name="soft")(hidden)
        keras_model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, name="out")(hidden))
        return tff_fedpt.from_keras_model(
            keras_model,
            loss=_loss(),
            input_spec=(tf.TensorSpec([None, 4]), tf.TensorSpec([None], tf.int32)),
            freeze=tff_fedpt.FreezeSpec(layers=("frozen",), generator="portable"),
        )

    def odd_pool_fn():
        keras_model = tf.keras.Sequential(
            [
                tf.keras.layers.InputLayer(input_shape=(7, 7, 1)),
                tf.keras.layers.Conv2D(2, 1, name="conv"),
                tf.keras.layers.MaxPool2D(2, padding="same"),
                tf.keras.layers.Flatten(),
                tf.keras.layers.Dense(3, name="frozen"),
            ]
        )
        return tff_fedpt.from_keras_model(
            keras_model,
            loss=_loss(),
            input_spec=(tf.TensorSpec([None, 7, 7, 1]), tf.TensorSpec([None], tf.int32)),
            freeze=tff_fedpt.FreezeSpec(layers=("frozen",), generator="portable"),
        )

    cases = (
        (softsign_fn, 2, r"no builtin formulation of Softsign \(in soft\)"),
        (odd_pool_fn, 2, r"padding 'same' needs an input divisible by the window; got input 7x7"),
        (_portable_fn(), None, "needs a fixed batch_size"),
        (
            lambda: tff_fedpt.from_keras_model(
                digits.cnn(0, 64), loss=_loss(), input_spec=SPEC, freeze=("dense",)
            ),
            4,
            r"frozen tensors \['dense/kernel:0'\] are drawn by TensorFlow's Philox",
        ),
    )
    for fn, batch, pattern in cases:
        with pytest.raises(protocol.DeviceError, match=pattern) as error:
            device.export_tflite(fn, optimizer, batch_size=batch, builtins_only=True)
        assert "\n" not in str(error.value)


def test_export_binary_builtins_only_needs_a_batch_size():
    result = scripts.run(
        [
            sys.executable,
            os.path.join(ROOT, "scripts", "export_device_model.py"),
            "--builtins_only",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "--builtins_only needs --batch_size" in lines[0]


def test_builtin_max_pool_gradient_follows_tensorflows_tie_rule():
    """Tied maxima (a zero background through a conv without activation): TensorFlow sends
    the gradient to the first maximum of each window in row-major order; so must the
    builtin gradient, or a device round drifts from `process.next`."""
    from tff_fedpt import builtin_ops

    rng = np.random.default_rng(0)
    x = np.zeros((2, 6, 6, 1), np.float32)
    x[:, 2:4, 1:5, :] = rng.integers(0, 3, (2, 2, 4, 1))  # small integers: ties inside too
    model = tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=(6, 6, 1)),
            tf.keras.layers.Conv2D(3, 1, kernel_initializer="ones", bias_initializer="zeros"),
            tf.keras.layers.MaxPool2D(2),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(4, kernel_initializer=tf.keras.initializers.GlorotUniform(1)),
        ]
    )

    def grads(builtin):
        with tf.GradientTape() as tape:
            out = tf.reduce_sum(model(x) ** 2)
        if builtin:
            with builtin_ops.gradients():
                return tape.gradient(out, model.trainable_variables)
        return tape.gradient(out, model.trainable_variables)

    for ours, theirs in zip(tf.function(lambda: grads(True))(), grads(False)):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6, atol=1e-6)

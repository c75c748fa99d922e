"""Pretrained frozen layers: never sent, exactly used, identified by fingerprint."""

import asyncio
import hashlib
import io

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import tff_fedpt
from fedpt_device import protocol
from tff_fedpt import device, frozen
from tff_fedpt.tasks import digits

from . import scripts

SPEC = (tf.TensorSpec([None, 8, 8, 1]), tf.TensorSpec([None], tf.int32))
WIDTH = 64


def _loss():
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _weights(seed):
    """'Pretrained' values: another seed's model, so they differ from every seeded draw."""
    return frozen.PretrainedWeights.from_keras_model(digits.cnn(seed, WIDTH))


def _model_fn(weights, layers=("conv1", "dense")):
    spec = tff_fedpt.FreezeSpec(layers=layers, pretrained=weights)
    return lambda: tff_fedpt.from_keras_model(
        digits.cnn(0, WIDTH), loss=_loss(), input_spec=SPEC, freeze=spec
    )


def _data(n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [
        (rng.random((12, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 12).astype(np.int32))
        for _ in range(n)
    ]


def _datasets(data, batch=4):
    return [tf.data.Dataset.from_tensor_slices(d).batch(batch) for d in data]


def test_fingerprint_is_sha256_over_dtype_shape_and_bytes_as_documented():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.array([1, -2], dtype=np.int32)
    digest = hashlib.sha256()
    digest.update(b"float32(2, 3)\n" + a.astype("<f4").tobytes())
    digest.update(b"int32(2,)\n" + b.astype("<i4").tobytes())
    assert frozen.fingerprint([a, b]) == digest.hexdigest()
    # A published test vector (docs/pretrained.md): one float32 zero.
    assert frozen.fingerprint([np.zeros((1,), np.float32)]) == (
        hashlib.sha256(b"float32(1,)\n" + b"\0\0\0\0").hexdigest()
    )
    words = protocol.fingerprint_words(digest.hexdigest())
    assert words.dtype == np.int32 and words.shape == (8,)
    assert protocol.fingerprint_hex(words) == digest.hexdigest()


def test_pretrained_values_never_travel_and_are_used_exactly():
    held = _weights(7)
    process = tff_fedpt.build_fedpt_process(
        _model_fn(held), tff.learning.optimizers.build_sgdm(0.1)
    )
    broadcast = str(process.next.type_signature)
    # The frozen tensors (conv1 3x3x1x16 and the 512x64 dense kernel) are in no type that
    # crosses the network: the broadcast is the trainable part, the seed and 32 bytes.
    assert "float32[512,64]" not in broadcast and "float32[3,3,1,16]" not in broadcast
    cost = tff_fedpt.communication_cost(process)
    trainable = 3 * 3 * 16 * 32 + 32 + WIDTH * 10 + 10
    assert cost.broadcast_bytes_per_client == 4 * trainable + 8 + 32
    assert cost.upload_bytes_per_client == 4 * trainable + 4
    state = process.initialize()
    full = process.get_model_weights(state)
    expected = [held["conv1"]["kernel"], held["conv1"]["bias"]]
    expected += [held["dense"]["kernel"], held["dense"]["bias"]]
    for got, want in zip(full.non_trainable, expected):
        np.testing.assert_array_equal(got, want)  # exactly the given values
    assert tff_fedpt.weights.state_fingerprint(state) == frozen.fingerprint(expected)

    # Clients train from exactly those values: TFF's own FedAvg, started from the same
    # full weights with the same layers frozen (it broadcasts them), gives the same round.
    def fedavg_model_fn():
        keras_model = digits.cnn(0, WIDTH)
        for layer in keras_model.layers:
            layer.trainable = layer.name not in ("conv1", "dense")
        return tff.learning.models.from_keras_model(keras_model, loss=_loss(), input_spec=SPEC)

    fedavg = tff.learning.algorithms.build_weighted_fed_avg(
        fedavg_model_fn, tff.learning.optimizers.build_sgdm(0.1)
    )
    reference = fedavg.set_model_weights(fedavg.initialize(), full)
    data = _datasets(_data())
    ours = process.get_model_weights(process.next(state, data).state)
    theirs = fedavg.get_model_weights(fedavg.next(reference, data).state)
    for a, b in zip(ours.trainable, theirs.trainable):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_pretrained_and_seeded_frozen_layers_mix():
    held = frozen.PretrainedWeights({"conv1": dict(_weights(7)["conv1"])}, source="conv1 only")
    model_fn = _model_fn(held)
    model = model_fn()
    kinds = [type(s).__name__ for s in model.frozen_initializers]
    assert kinds == ["PretrainedValue", "PretrainedValue", "FrozenInitializer", "FrozenInitializer"]
    process = tff_fedpt.build_fedpt_process(model_fn, tff.learning.optimizers.build_sgdm(0.1))
    state = process.initialize()
    full = process.get_model_weights(state).non_trainable
    np.testing.assert_array_equal(full[0], held["conv1"]["kernel"])
    seeded = frozen.generate_frozen_weights(model.frozen_initializers, np.int64(0))
    np.testing.assert_array_equal(full[2], seeded[2])  # the seed's draw for tensor 2


def test_another_pretrained_file_is_refused_with_both_fingerprints(tmp_path):
    held = _weights(7)
    path = tmp_path / "pretrained.npz"
    saved = held.save(path)
    loaded = frozen.PretrainedWeights.load(path)
    assert loaded.fingerprint() == saved == held.fingerprint()
    ours = tff_fedpt.build_fedpt_process(_model_fn(loaded), tff.learning.optimizers.build_sgdm(0.1))
    changed = {k: dict(v) for k, v in held.items()}
    changed["dense"]["bias"] = changed["dense"]["bias"] + 1e-3  # one tensor changed
    other = tff_fedpt.build_fedpt_process(
        _model_fn(frozen.PretrainedWeights(changed)), tff.learning.optimizers.build_sgdm(0.1)
    )
    state = other.initialize()
    theirs, mine = (tff_fedpt.weights.state_fingerprint(s) for s in (state, ours.initialize()))
    assert theirs != mine
    with pytest.raises(frozen.FingerprintMismatchError) as error:
        ours.next(state, _datasets(_data()))
    message = str(error.value)
    assert theirs in message and mine in message and "\n" not in message
    # It says which tensors it covers: a file's own fingerprint (printed when saved) covers
    # every tensor the file holds.
    assert "cover the frozen pretrained tensors only" in message
    # The clients check it too, inside the computation (past the Python check).
    with pytest.raises(Exception, match="FedPT client: the pretrained frozen values"):
        ours.next._computation(state, _datasets(_data()))
    # A file that is not one.
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.npz is not a pretrained-weights file"):
        frozen.PretrainedWeights.load(tmp_path / "junk.npz")


def test_pretrained_weights_that_hold_no_frozen_tensor_or_other_shapes_are_refused():
    logits_only = frozen.PretrainedWeights({"logits": dict(_weights(7)["logits"])})
    with pytest.raises(ValueError, match="holds no frozen tensor of this model"):
        _model_fn(logits_only)()
    wide = frozen.PretrainedWeights.from_keras_model(digits.cnn(7, 2 * WIDTH))
    with pytest.raises(ValueError, match=r"dense/kernel has shape \(512, 128\)"):
        _model_fn(wide)()
    with pytest.raises(TypeError, match="FreezeSpec.pretrained must be a tff_fedpt.Pretrained"):
        tff_fedpt.FreezeSpec(layers=("dense",), pretrained={"dense": {}})


def test_a_device_round_with_pretrained_frozen_layers_equals_process_next():
    held = _weights(7)
    model_fn = _model_fn(held)
    optimizer = tff.learning.optimizers.build_sgdm(0.1)
    process = tff_fedpt.build_fedpt_process(model_fn, optimizer)
    tflite = device.export_tflite(model_fn, optimizer)
    state = process.initialize()
    payload = device.broadcast_payload(process, state)
    data = _data(3)
    updates = []
    for x, y in data:
        client = device.DeviceClient(tflite)
        assert client.fingerprint == tff_fedpt.weights.state_fingerprint(state)
        client.start_round(
            payload["trainable"], payload["frozen_seed"], payload["frozen_fingerprint"]
        )
        np.testing.assert_array_equal(client.frozen_weights()[2], held["dense"]["kernel"])
        updates.append(client.train(x, y, batch_size=4))
    out = device.apply_device_updates(process, state, updates)
    ref = process.next(state, _datasets(data))
    for a, b in zip(
        out.state.global_model_weights.trainable, ref.state.global_model_weights.trainable
    ):
        np.testing.assert_allclose(a, b, atol=1e-5)
    client = device.DeviceClient(tflite)
    with pytest.raises(protocol.DeviceError, match="pass the broadcast's 'frozen_fingerprint'"):
        client.start_round(payload["trainable"], payload["frozen_seed"])
    wrong = "0" * 64
    with pytest.raises(protocol.DeviceError, match=f"but {wrong} was expected") as error:
        client.start_round(payload["trainable"], payload["frozen_seed"], wrong)
    assert client.fingerprint in str(error.value)


def test_binary_resume_on_other_pretrained_values_is_refused(tmp_path):
    """--pretrained_weights on a training binary: FedPT with FFA adapters over a pretrained
    base runs; a resume after the file's values changed (same path) is one line."""
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = tmp_path / "pretrained.npz"
    first = frozen.PretrainedWeights.from_keras_model(digits.cnn(7)).save(path)

    def run(rounds):
        return scripts.run(
            [
                sys.executable,
                os.path.join(root, "scripts", "run_digits.py"),
                "--num_clients=20",
                "--clients_per_round=3",
                f"--total_rounds={rounds}",
                "--rounds_per_eval=2",
                "--noprogress",
                f"--root_output_dir={tmp_path}/out",
                f"--pretrained_weights={path}",
                "--freeze=conv1",
                "--adapter_layers=dense",
                "--adapter_mode=ffa",
                "--adapter_rank=2",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            timeout=300,
        )

    result = run(2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LoRADense" in result.stdout  # the freeze table shows the adapted layer
    second = frozen.PretrainedWeights.from_keras_model(digits.cnn(8)).save(path)
    result = run(3)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert f"pretrained:sha256: saved '{first}', now '{second}'" in lines[0]


def test_pretrained_fedpt_composes_with_dp_and_compression():
    """DP aggregation, quantized uploads and a quantized broadcast: the fingerprint
    arrives intact (every client checks it) and only the trainable part is sent."""
    from tff_fedpt import compression, privacy

    held = _weights(7)
    data = _datasets(_data(3))
    plain = tff_fedpt.communication_cost(
        tff_fedpt.build_fedpt_process(_model_fn(held), tff.learning.optimizers.build_sgdm(0.1))
    )
    for options in (
        dict(broadcast_bits=8),
        dict(model_aggregator=compression.quantized_mean(8)),
        dict(
            model_aggregator=privacy.build_dp_aggregator(
                noise_multiplier=0.5, clients_per_round=3, clip=1.0
            )
        ),
    ):
        process = tff_fedpt.build_fedpt_process(
            _model_fn(held), tff.learning.optimizers.build_sgdm(0.1), **options
        )
        out = process.next(process.initialize(), data)
        assert out.metrics["client_work"]["train"]["num_examples"] == 36, options
        full = process.get_model_weights(out.state)
        np.testing.assert_array_equal(full.non_trainable[2], held["dense"]["kernel"])
        if "broadcast_bits" in options:
            cost = tff_fedpt.communication_cost(process)
            assert cost.broadcast_bytes_per_client < plain.broadcast_bytes_per_client / 3


class _ArraysIterator(tff.program.FederatedDataSourceIterator):
    """Clients' (x, y) arrays, selected in turn. (TFF's `DatasetDataSource` cannot be used
    here: `train_model` deep-copies the iterator and TF 2.14 datasets do not deep-copy.)"""

    def __init__(self, data, position=0):
        self._data, self._position = data, position

    @property
    def federated_type(self):
        return tff.FederatedType(
            tff.SequenceType(_datasets(self._data)[0].element_spec), tff.CLIENTS
        )

    def select(self, k=None):
        chosen = [self._data[(self._position + i) % len(self._data)] for i in range(k)]
        self._position += k
        return _datasets(chosen)

    def to_bytes(self):
        buffer = io.BytesIO()
        arrays = {f"{i}_{j}": a for i, pair in enumerate(self._data) for j, a in enumerate(pair)}
        np.savez(buffer, position=self._position, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, buffer):
        with np.load(io.BytesIO(buffer)) as f:
            n = (len(f.files) - 1) // 2
            return cls([(f[f"{i}_0"], f[f"{i}_1"]) for i in range(n)], int(f["position"]))

    def __eq__(self, other):
        return self.to_bytes() == other.to_bytes()


class _ArraysSource(tff.program.FederatedDataSource):
    def __init__(self, data):
        self._data = data

    @property
    def federated_type(self):
        return self.iterator().federated_type

    def iterator(self):
        return _ArraysIterator(self._data)


class _Released(tff.program.ReleaseManager):
    def __init__(self):
        self.values = {}

    async def release(self, value, key=None):
        self.values[key] = value


def _train_model(process, data, state_dir, rounds):
    """`tff.learning.programs.train_model` in a native federated context, as a TFF program
    runs it: a federated data source, state saved to (and resumed from) files."""
    context = tff.program.NativeFederatedContext(
        tff.backends.native.create_async_local_cpp_execution_context()
    )
    released, metrics = _Released(), _Released()
    # A loop of its own: asyncio.run would leave the thread without a current loop, which
    # TFF's synchronous helpers (tff.simulation.run_training_process) then cannot get.
    loop = asyncio.new_event_loop()
    program = tff.learning.programs.train_model(
        train_process=process,
        train_data_source=_ArraysSource(data),
        train_per_round_clients=2,
        train_total_rounds=rounds,
        program_state_manager=tff.program.FileProgramStateManager(str(state_dir)),
        model_output_manager=released,
        train_metrics_manager=metrics,
        evaluation_manager=None,
        evaluation_periodicity=1,
    )
    try:
        with tff.framework.get_context_stack().install(context):
            loop.run_until_complete(program)
    finally:
        loop.close()
    return released, sorted(metrics.values)


def test_pretrained_fedpt_runs_in_tff_train_model_and_resumes_only_on_the_same_values(
    tmp_path,
):
    held = _weights(7)
    optimizer = tff.learning.optimizers.build_sgdm(0.1)
    process = tff_fedpt.build_fedpt_process(_model_fn(held), optimizer)
    initial = process.get_model_weights(process.initialize())
    data = _data(3)
    released, rounds = _train_model(process, data, tmp_path / "state", rounds=2)
    assert rounds == [1, 2]
    (state,) = released.values.values()  # the final state, released once
    fingerprint = tff_fedpt.weights.state_fingerprint(process.initialize())
    assert tff_fedpt.weights.state_fingerprint(state) == fingerprint
    weights = process.get_model_weights(state)
    frozen_values = [held["conv1"]["kernel"], held["conv1"]["bias"]]
    frozen_values += [held["dense"]["kernel"], held["dense"]["bias"]]
    for got, want in zip(weights.non_trainable, frozen_values):
        np.testing.assert_array_equal(got, want)  # the full model, pretrained part exact
    assert any(not np.array_equal(a, b) for a, b in zip(weights.trainable, initial.trainable))
    # The saved program state holds the fingerprint: a program resumed with other
    # pretrained values stops at its first round with both fingerprints named.
    changed = {k: dict(v) for k, v in held.items()}
    changed["dense"]["kernel"] = changed["dense"]["kernel"] * 1.5
    other = tff_fedpt.build_fedpt_process(_model_fn(frozen.PretrainedWeights(changed)), optimizer)
    with pytest.raises(frozen.FingerprintMismatchError) as error:
        _train_model(other, data, tmp_path / "state", rounds=3)
    assert fingerprint in str(error.value)
    # Resumed with the same values it carries on from round 2 to 3.
    released, rounds = _train_model(process, data, tmp_path / "state", rounds=3)
    assert rounds == [3] and len(released.values) == 1


def test_non_finite_values_are_refused_where_they_enter(tmp_path):
    good = {"dense": {"kernel": np.ones((2, 2), np.float32)}}
    for bad in (np.inf, np.nan):
        values = {"dense": {"kernel": np.array([[1.0, bad], [0.0, 1.0]], np.float32)}}
        with pytest.raises(ValueError, match=r"tensor dense/kernel holds 1 non-finite value"):
            frozen.PretrainedWeights(values)
    # A file written by another tool (np.savez directly) is checked when loaded.
    path = str(tmp_path / "w.npz")
    frozen.PretrainedWeights(good).save(path)
    with np.load(path) as data:
        arrays = dict(data)
    arrays["dense/kernel"] = np.full((2, 2), np.nan, np.float32)
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=r"w.npz: tensor dense/kernel holds 4 non-finite"):
        frozen.PretrainedWeights.load(path)
    # A truncated file is one ValueError naming it, not a BadZipFile traceback.
    with open(path, "rb") as f:
        head = f.read(60)
    with open(path, "wb") as f:
        f.write(head)
    with pytest.raises(ValueError, match="is not a pretrained-weights file"):
        frozen.PretrainedWeights.load(path)


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--dense_units=0", "--dense_units must be >= 1; received 0"),
        ("--learning_rate=inf", "--learning_rate must be a finite number > 0; received inf"),
        ("--output={tmp}", "is a directory; name a file"),
        ("--output=/proc/x/w.npz", "cannot create its directory"),
    ],
)
def test_pretrain_bad_flags_are_one_line(tmp_path, flag, message):
    import os
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = scripts.run(
        [sys.executable, os.path.join(root, "scripts", "pretrain.py"), flag.format(tmp=tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=120,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert message in lines[0]


def test_initial_state_starts_trainable_layers_from_the_pretrained_weights():
    base = digits.cnn(7, 32)
    held = frozen.PretrainedWeights.from_keras_model(base)
    spec = tff_fedpt.FreezeSpec(layers=("conv1", "conv2"), pretrained=held)

    def model_fn():
        return tff_fedpt.from_keras_model(
            digits.cnn(0, 32),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            input_spec=(tf.TensorSpec([None, 8, 8, 1]), tf.TensorSpec([None], tf.int32)),
            freeze=spec,
        )

    process = tff_fedpt.build_fedpt_process(model_fn, tff.learning.optimizers.build_sgdm(0.1))
    fresh = process.get_model_weights(process.initialize())
    state = held.initial_state(process, model_fn)
    weights = process.get_model_weights(state)
    # Trainable: dense and logits (kernel, bias each), now the pretrained model's.
    expected = [held[n][w] for n in ("dense", "logits") for w in ("kernel", "bias")]
    for got, want in zip(weights.trainable, expected):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(fresh.trainable[0], expected[0])  # initialize() alone: fresh
    process.next(state, [tf.data.Dataset.from_tensor_slices(
        (np.zeros((4, 8, 8, 1), np.float32), np.zeros(4, np.int32))).batch(2)])  # fmt: skip
    with pytest.raises(TypeError, match="must return a tff_fedpt.PartiallyTrainableModel"):
        held.initial_state(process, lambda: None)


def test_set_model_weights_refuses_a_pretrained_value_off_by_one_ulp_in_one_line():
    held = _weights(7)
    process = tff_fedpt.build_fedpt_process(
        _model_fn(held), tff.learning.optimizers.build_sgdm(0.1)
    )
    state = process.initialize()
    weights = process.get_model_weights(state)
    assert process.set_model_weights(state, weights) is not None  # the same values: taken
    nudged_values = [np.array(v) for v in weights.non_trainable]
    nudged_values[0].flat[0] = np.nextafter(nudged_values[0].flat[0], np.float32(np.inf))  # one ulp
    nudged = tff.learning.models.ModelWeights(weights.trainable, nudged_values)
    with pytest.raises(
        ValueError, match=r"frozen weight 0 \(conv1/kernel:0\) is not the pretrained"
    ) as e:
        process.set_model_weights(state, nudged)
    assert "\n" not in str(e.value) and "frozen_seed" not in str(e.value)

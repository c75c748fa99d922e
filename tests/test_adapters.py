"""Low-rank adapters over frozen layers (LoRA and FFA-LoRA)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import tff_fedpt
from tff_fedpt import adapters, device
from tff_fedpt import frozen as frozen_lib
from tff_fedpt.tasks import digits

SPEC = (tf.TensorSpec([None, 8, 8, 1]), tf.TensorSpec([None], tf.int32))
SEQ_SPEC = (tf.TensorSpec([None, 5], tf.int32), tf.TensorSpec([None], tf.int32))
WIDTH = 64


def _loss():
    return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _sequence_model(seed=0):
    tf.keras.utils.set_random_seed(seed)
    return tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=(5,), dtype=tf.int32),
            tf.keras.layers.Embedding(30, 8, name="embedding"),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(10, name="logits"),
        ]
    )


def _randomize_b(keras_model, seed=1):
    rng = np.random.default_rng(seed)
    for layer in keras_model.layers:
        if isinstance(layer, adapters.ADAPTER_TYPES):
            layer.lora_b.assign(rng.normal(0, 0.1, layer.lora_b.shape).astype(np.float32))


@pytest.mark.parametrize("mode", adapters.MODES)
def test_adapters_start_as_their_base_layers_and_merge_exactly(mode):
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    ids = np.random.default_rng(0).integers(0, 30, (4, 5)).astype(np.int32)
    for model, layers, inputs in (
        (digits.cnn(0, WIDTH), ["conv1", "dense"], x),  # Conv2D and Dense
        (_sequence_model(), ["embedding", "logits"], ids),  # Embedding and Dense
    ):
        adapted = adapters.add_adapters(model, layers, rank=3, alpha=6.0, mode=mode)
        assert [type(lyr).__name__ for lyr in adapted.layers if lyr.name in layers] == [
            type(adapters._adapted_layer(lyr, 3, 6.0, mode)).__name__
            for lyr in model.layers
            if lyr.name in layers
        ]
        # B = 0: exactly the base layer (the low-rank term adds zeros).
        np.testing.assert_array_equal(adapted(inputs).numpy(), model(inputs).numpy())
        _randomize_b(adapted)
        moved = adapted(inputs).numpy()
        assert np.max(np.abs(moved - model(inputs).numpy())) > 1e-3
        merged = adapters.merge_adapters(adapted)
        assert not any(isinstance(lyr, adapters.ADAPTER_TYPES) for lyr in merged.layers)
        np.testing.assert_allclose(merged(inputs).numpy(), moved, atol=1e-5)


def test_bad_adapter_requests_are_named():
    model = digits.cnn(0, WIDTH)
    with pytest.raises(ValueError, match="'nope' matches no layer"):
        adapters.add_adapters(model, "nope")
    with pytest.raises(ValueError, match="rank must be an integer >= 1; received 0"):
        adapters.add_adapters(model, "dense", rank=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        adapters.add_adapters(model, "dense", mode="both")
    flat = tf.keras.Sequential(
        [tf.keras.layers.InputLayer(input_shape=(4,)), tf.keras.layers.LayerNormalization()]
    )
    with pytest.raises(ValueError, match="is a LayerNormalization; adapters cover"):
        adapters.add_adapters(flat, ".*")


def _adapted_fn(mode, held=None, rank=4):
    def model_fn():
        model = adapters.add_adapters(digits.cnn(0, WIDTH), "dense", rank=rank, mode=mode)
        spec = tff_fedpt.FreezeSpec(layers=("conv1",), pretrained=held)
        return tff_fedpt.from_keras_model(model, loss=_loss(), input_spec=SPEC, freeze=spec)

    return model_fn


def test_ffa_sends_b_only_and_lora_sends_a_and_b():
    conv2, logits = 3 * 3 * 16 * 32 + 32, WIDTH * 10 + 10
    rank = 4
    a, b = 512 * rank, rank * WIDTH
    for mode, sent in (("lora", a + b), ("ffa", b)):
        process = tff_fedpt.build_fedpt_process(
            _adapted_fn(mode, rank=rank), tff.learning.optimizers.build_sgdm(0.1)
        )
        cost = tff_fedpt.communication_cost(process)
        # Upload: every trainable value (conv2, the adapter factors, logits) + the weight.
        assert cost.upload_bytes_per_client == 4 * (conv2 + sent + logits) + 4, mode
    report = _adapted_fn("ffa")().freeze_report
    dense = [r for r in report.layers if r.name == "dense"][0]
    assert (dense.trainable_params, dense.frozen_params) == (b, 512 * WIDTH + WIDTH + a)
    assert not dense.frozen and "dense" not in report.frozen_layer_names


def test_ffa_with_a_pretrained_base_a_device_round_equals_process_next():
    base = digits.cnn(7, WIDTH)  # the "pretrained" model
    held = frozen_lib.PretrainedWeights.from_keras_model(base)
    model_fn = _adapted_fn("ffa", held)
    model = model_fn()
    kinds = {s.name.split(":")[0]: type(s).__name__ for s in model.frozen_initializers}
    assert kinds == {
        "conv1/kernel": "PretrainedValue",
        "conv1/bias": "PretrainedValue",
        "dense/kernel": "PretrainedValue",  # the adapter's base
        "dense/bias": "PretrainedValue",
        "dense/lora_a": "FrozenInitializer",  # FFA: A regenerated from the seed
    }
    optimizer = tff.learning.optimizers.build_sgdm(0.2)
    process = tff_fedpt.build_fedpt_process(model_fn, optimizer, frozen_seed=5)
    state = process.initialize()
    full = process.get_model_weights(state)
    np.testing.assert_array_equal(full.non_trainable[2], held["dense"]["kernel"])
    tflite = device.export_tflite(model_fn, optimizer)
    payload = device.broadcast_payload(process, state)
    rng = np.random.default_rng(0)
    data = [
        (rng.random((12, 8, 8, 1)).astype(np.float32), rng.integers(0, 10, 12).astype(np.int32))
        for _ in range(3)
    ]
    updates = []
    for x, y in data:
        client = device.DeviceClient(tflite)
        client.start_round(
            payload["trainable"], payload["frozen_seed"], payload["frozen_fingerprint"]
        )
        updates.append(client.train(x, y, batch_size=4))
    out = device.apply_device_updates(process, state, updates)
    ref = process.next(state, [tf.data.Dataset.from_tensor_slices(d).batch(4) for d in data])
    after = out.state.global_model_weights.trainable
    for a, b in zip(after, ref.state.global_model_weights.trainable):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # The merged Keras model of the trained state computes what the adapted one does.
    keras_model = model_fn().keras_model
    process.get_model_weights(ref.state).assign_weights_to(keras_model)
    merged = adapters.merge_adapters(keras_model)
    x = data[0][0]
    np.testing.assert_allclose(merged(x).numpy(), keras_model(x).numpy(), atol=1e-5)


def test_lora_a_differs_per_layer_is_reproducible_and_seeded(recwarn):
    def model():
        inputs = tf.keras.Input([6])
        hidden = tf.keras.layers.Dense(6, name="d1")(inputs)
        hidden = tf.keras.layers.Dense(6, name="d2")(hidden)
        return tf.keras.Model(inputs, tf.keras.layers.Dense(2, name="out")(hidden))

    def a_of(seed=0):
        adapted = adapters.add_adapters(model(), ["d1", "d2"], rank=4, seed=seed)
        return [adapted.get_layer(n).lora_a.numpy() for n in ("d1", "d2")]

    first, again, other = a_of(), a_of(), a_of(seed=5)
    assert not np.allclose(first[0], first[1])  # one A per layer
    np.testing.assert_array_equal(first[0], again[0])  # the same on every call
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.allclose(first[0], other[0])
    # The layer of index k draws with HeUniform(seed + k), as documented.
    np.testing.assert_array_equal(first[1], tf.keras.initializers.HeUniform(seed=1)((6, 4)))
    assert not [w for w in recwarn if "unseeded" in str(w.message)]
    with pytest.raises(ValueError, match=r"adapter layers: '\(' is not a regular expression"):
        adapters.add_adapters(model(), "(", rank=2)


@pytest.mark.parametrize("kind", ["seeded", "pretrained", "ffa", "lora"])
def test_keras_model_from_state_predicts_as_the_tff_model(kind):
    held = frozen_lib.PretrainedWeights.from_keras_model(digits.cnn(7, WIDTH))
    if kind in ("ffa", "lora"):
        model_fn = _adapted_fn(kind, held=held)
    else:
        spec = tff_fedpt.FreezeSpec(
            layers=("conv1", "dense"), pretrained=held if kind == "pretrained" else None
        )

        def model_fn():
            return tff_fedpt.from_keras_model(
                digits.cnn(0, WIDTH), loss=_loss(), input_spec=SPEC, freeze=spec
            )

    process = tff_fedpt.build_fedpt_process(
        model_fn, tff.learning.optimizers.build_sgdm(0.5), frozen_seed=3
    )
    rng = np.random.default_rng(0)
    x = rng.random((12, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, 12).astype(np.int32)
    state = process.next(
        process.initialize(), [tf.data.Dataset.from_tensor_slices((x, y)).batch(4)]
    ).state
    keras_model = tff_fedpt.keras_model_from_state(process, state, model_fn)
    reference = model_fn()
    process.get_model_weights(state).assign_weights_to(reference)
    expected = reference.predict_on_batch(x, training=False).numpy()
    np.testing.assert_allclose(keras_model(x).numpy(), expected, atol=1e-5)
    assert all(layer.trainable for layer in keras_model.layers)
    assert not any(isinstance(lyr, adapters.ADAPTER_TYPES) for lyr in keras_model.layers)
    if kind == "pretrained":  # the frozen values in place
        np.testing.assert_array_equal(
            keras_model.get_layer("conv1").kernel.numpy(), held["conv1"]["kernel"]
        )
    kept = tff_fedpt.keras_model_from_state(process, state, model_fn, merge_adapters=False)
    adapted = any(isinstance(lyr, adapters.ADAPTER_TYPES) for lyr in kept.layers)
    assert adapted == (kind in ("ffa", "lora"))


def test_keras_lstm_without_its_cudnn_variant_computes_the_same_bit_for_bit():
    """tff_fedpt.lstm.keras_lstm (what the tasks build) on a machine without a GPU: the
    same class and weights as Keras' LSTM, on the standard path only; outputs and
    gradients equal a Keras LSTM built with both variants, masked steps included."""
    from tff_fedpt.lstm import keras_lstm

    def model(make):
        return tf.keras.Sequential(
            [
                tf.keras.layers.InputLayer(input_shape=(12,), dtype=tf.int32),
                tf.keras.layers.Embedding(20, 4, mask_zero=True, name="embedding"),
                make(8, return_sequences=True, name="lstm1"),
                make(8, return_sequences=True, name="lstm2"),
                tf.keras.layers.Dense(20, name="logits"),
            ]
        )

    tf.keras.utils.set_random_seed(0)
    keras = model(tf.keras.layers.LSTM)
    ours = model(keras_lstm)
    ours.set_weights(keras.get_weights())
    assert [type(layer) for layer in ours.layers] == [type(layer) for layer in keras.layers]
    assert [w.name for w in ours.weights] == [w.name for w in keras.weights]
    assert keras.layers[1]._could_use_gpu_kernel and not ours.layers[1]._could_use_gpu_kernel
    rng = np.random.default_rng(0)
    x = rng.integers(1, 20, (3, 12)).astype(np.int32)
    x[:, 9:] = 0
    y = rng.integers(0, 20, (3, 12)).astype(np.int32)

    def outputs_and_gradients(m):
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                out = m(x)
                loss = _loss()(y, out)
            return out, [tf.convert_to_tensor(g) for g in tape.gradient(loss, m.weights)]

        out, grads = step()
        return [out.numpy()] + [g.numpy() for g in grads]

    for a, b in zip(outputs_and_gradients(keras), outputs_and_gradients(ours)):
        np.testing.assert_array_equal(a, b)


def test_lstm_adapters_compute_keras_lstm_merge_exactly_and_train_in_fedpt():
    from tff_fedpt.tasks import shakespeare

    model = shakespeare.char_lstm(0, units=16)
    x = np.random.default_rng(0).integers(1, 90, (3, 80)).astype(np.int32)
    x[:, 50:] = 0  # padding: Keras' LSTM keeps its state over masked steps
    adapted = adapters.add_adapters(model, ["lstm1", "lstm2"], rank=2, alpha=4.0)
    assert [type(layer).__name__ for layer in adapted.layers[1:3]] == ["LoRALSTM"] * 2
    np.testing.assert_array_equal(adapted(x).numpy(), model(x).numpy())  # B = 0
    for layer in adapted.layers[1:3]:
        layer.lora_b.assign(tf.random.stateless_normal(layer.lora_b.shape, [1, 2]) * 0.1)
    moved = adapted(x).numpy()
    assert np.max(np.abs(moved - model(x).numpy())) > 1e-3
    merged = adapters.merge_adapters(adapted)
    assert [type(layer).__name__ for layer in merged.layers] == [
        "Embedding",
        "LSTM",
        "LSTM",
        "Dense",
    ]
    np.testing.assert_allclose(merged(x).numpy(), moved, atol=1e-6)
    with pytest.raises(ValueError, match="LSTM adapters cover Keras' default LSTM"):
        bare = tf.keras.Sequential(
            [tf.keras.layers.InputLayer(input_shape=(5, 3)), tf.keras.layers.LSTM(4, dropout=0.1)]
        )
        adapters.add_adapters(bare, ".*")
    # In FedPT over a pretrained base: A and B travel (lora), or B only (ffa).
    held = frozen_lib.PretrainedWeights.from_keras_model(shakespeare.char_lstm(5, units=16))
    for mode, factors in (("lora", (24 + 32) * 2 + 2 * 2 * 64), ("ffa", 2 * 2 * 64)):

        def model_fn(mode=mode):
            keras_model = adapters.add_adapters(
                shakespeare.char_lstm(0, units=16), ["lstm1", "lstm2"], rank=2, mode=mode
            )
            return tff_fedpt.from_keras_model(
                keras_model,
                loss=_loss(),
                input_spec=shakespeare.CATALOG["chars"].input_spec,
                freeze=tff_fedpt.FreezeSpec(layers=("embedding",), pretrained=held),
            )

        process = tff_fedpt.build_fedpt_process(model_fn, tff.learning.optimizers.build_sgdm(0.5))
        logits = 16 * 90 + 90
        assert (
            tff_fedpt.communication_cost(process).upload_bytes_per_client
            == 4 * (factors + logits) + 4
        ), mode
        data = [tf.data.Dataset.from_tensor_slices((x, x)).batch(2)]
        state = process.next(process.initialize(), data).state
        frozen = process.get_model_weights(state).non_trainable
        np.testing.assert_array_equal(frozen[1], held["lstm1"]["kernel"])  # the pretrained base

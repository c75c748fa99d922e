import re

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import tff_fedpt
from tff_fedpt import frozen


def cnn():
    """Conv, conv, dense-wide, dense-out: 4 parameter layers."""
    return tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=(8, 8, 1)),
            tf.keras.layers.Conv2D(4, 3, name="conv1"),
            tf.keras.layers.Conv2D(8, 3, name="conv2"),
            tf.keras.layers.Flatten(name="flatten"),
            tf.keras.layers.Dense(64, name="dense_wide"),
            tf.keras.layers.Dropout(0.1),
            tf.keras.layers.Dense(10, name="out"),
        ]
    )


# Parameter counts: conv1 3*3*1*4+4=40, conv2 3*3*4*8+8=296,
# dense_wide (4*4*8=128)*64+64=8256, out 64*10+10=650; total 9242.
SIZES = {"conv1": 40, "conv2": 296, "dense_wide": 8256, "out": 650}


def test_unreachable_fraction_is_explained():
    """Target 0.2: only 0.893 is reachable at or above it (dense_wide would leave 0.107)."""
    report = tff_fedpt.resolve_freeze(cnn(), tff_fedpt.FreezeSpec(trainable_fraction=0.2))
    assert report.fraction_note == (
        "trainable_fraction=0.2 is not reachable with whole layers: the closest fraction at "
        "or above it is 89.33%; dense_wide holds 89.33% of the parameters, and freezing it "
        "leaves at most 10.67% trainable. Name the layers to freeze, or use a target of at "
        "most 0.1067."
    )
    assert report.format_table().endswith("note: " + report.fraction_note)
    reachable = tff_fedpt.resolve_freeze(cnn(), tff_fedpt.FreezeSpec(trainable_fraction=0.1))
    assert reachable.fraction_note is None and "note:" not in reachable.format_table()


@pytest.mark.parametrize(
    "spec,frozen",
    [
        ("dense_wide", {"dense_wide"}),
        (["conv.*"], {"conv1", "conv2"}),
        (tff_fedpt.FreezeSpec(layer_types=("Conv2D",)), {"conv1", "conv2"}),
        (tff_fedpt.FreezeSpec(layer_types=(tf.keras.layers.Dense,)), {"dense_wide", "out"}),
        (tff_fedpt.FreezeSpec(all_but_last=1), {"conv1", "conv2", "dense_wide"}),
        (tff_fedpt.FreezeSpec(all_but_last=3), {"conv1"}),
        # Target 0.2: freezing dense_wide leaves 986/9242 = 0.107 < 0.2, so it is
        # skipped; then out (650) leaves 8592/9242, conv2 leaves 8296, conv1 8256 ...
        # greedy largest-first: out -> 0.93, conv2 -> 0.897, conv1 -> 0.893 (all >= 0.2).
        (tff_fedpt.FreezeSpec(trainable_fraction=0.2), {"out", "conv2", "conv1"}),
        # Target 0.1: dense_wide fits (986/9242 = 0.107 >= 0.1); out (336/9242) and
        # conv2 (690/9242) would go below 0.1 and are skipped; conv1 leaves
        # 946/9242 = 0.1024 >= 0.1 and is frozen.
        (tff_fedpt.FreezeSpec(trainable_fraction=0.1), {"dense_wide", "conv1"}),
        (tff_fedpt.FreezeSpec(trainable_fraction=0.11), {"out", "conv2", "conv1"}),
        (tff_fedpt.FreezeSpec(trainable_fraction=1.0), set()),
        (None, set()),
    ],
)
def test_resolution_and_report(spec, frozen):
    report = tff_fedpt.resolve_freeze(cnn(), spec)
    assert set(report.frozen_layer_names) == frozen
    for layer in report.layers:
        assert layer.trainable_params + layer.frozen_params == SIZES[layer.name]
        assert layer.frozen == (layer.name in frozen)
    expected_frozen = sum(SIZES[n] for n in frozen)
    assert report.totals() == {
        "trainable": 9242 - expected_frozen,
        "frozen": expected_frozen,
        "total": 9242,
    }
    assert "total" in report.format_table()


@pytest.mark.parametrize(
    "spec,message",
    [
        ("dense_missing", "'dense_missing' matches no layer with parameters. Valid layer names"),
        ("flatten", "'flatten' matches no layer with parameters"),
        (tff_fedpt.FreezeSpec(layer_types=("LSTM",)), "'LSTM' matches no layer"),
        (".*", "freezes every parameter"),
        (tff_fedpt.FreezeSpec(all_but_last=4), "all_but_last=4 leaves nothing to freeze"),
    ],
)
def test_bad_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        tff_fedpt.resolve_freeze(cnn(), spec)


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, float("nan")])
def test_fraction_out_of_range(fraction):
    with pytest.raises(ValueError, match=r"trainable_fraction must be a number in \(0, 1\]"):
        tff_fedpt.FreezeSpec(trainable_fraction=fraction)


def test_bad_spec_types():
    with pytest.raises(ValueError, match="all_but_last must be an integer >= 1"):
        tff_fedpt.FreezeSpec(all_but_last=0)
    with pytest.raises(ValueError, match="not a valid regular expression"):
        tff_fedpt.FreezeSpec(layers=("conv[",))
    with pytest.raises(TypeError, match="`freeze` must be a tff_fedpt.FreezeSpec"):
        tff_fedpt.resolve_freeze(cnn(), 3)


def _bn_model():
    return tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=(4,)),
            tf.keras.layers.Dense(8, name="hidden"),
            tf.keras.layers.BatchNormalization(name="bn"),
            tf.keras.layers.Dense(3, name="out"),
        ]
    )


def _spec():
    return (tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None, 1], tf.int32))


def test_batch_norm_statistics_need_opt_in():
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with pytest.raises(ValueError, match="BatchNormalization moving statistics"):
        tff_fedpt.from_keras_model(_bn_model(), loss=loss, input_spec=_spec(), freeze="hidden")
    # Frozen BN layer: its statistics are frozen too, nothing to opt into.
    model = tff_fedpt.from_keras_model(
        _bn_model(), loss=loss, input_spec=_spec(), freeze=["hidden", "bn"]
    )
    assert len(model.non_trainable_variables) == 6
    # Opt-in: statistics regenerated from their initializers (zeros / ones).
    model = tff_fedpt.from_keras_model(
        _bn_model(),
        loss=loss,
        input_spec=_spec(),
        freeze="hidden",
        non_trainable_state="keep_initial",
    )
    names = [v.name for v in model.non_trainable_variables]
    assert names[-2:] == ["bn/moving_mean:0", "bn/moving_variance:0"]
    values = frozen.generate_frozen_weights(model.frozen_initializers, 0)
    np.testing.assert_array_equal(values[-2], np.zeros(8))
    np.testing.assert_array_equal(values[-1], np.ones(8))
    with pytest.raises(ValueError, match="non_trainable_state must be one of"):
        tff_fedpt.from_keras_model(
            _bn_model(), loss=loss, input_spec=_spec(), freeze="hidden", non_trainable_state="x"
        )


def test_already_frozen_layer_is_rejected():
    model = cnn()
    model.get_layer("conv1").trainable = False
    with pytest.raises(ValueError, match=r"Layers \['conv1'\] already have trainable=False"):
        tff_fedpt.from_keras_model(
            model,
            loss=tf.keras.losses.MeanSquaredError(),
            input_spec=_spec(),
            freeze="dense_wide",
        )


def test_unsupported_initializer_is_rejected():
    model = tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=(4,)),
            tf.keras.layers.Dense(
                8, name="hidden", kernel_initializer=lambda shape, dtype=None: tf.zeros(shape)
            ),
            tf.keras.layers.Dense(3, name="out"),
        ]
    )
    with pytest.raises(ValueError, match="cannot regenerate from a seed. Supported"):
        tff_fedpt.from_keras_model(
            model,
            loss=tf.keras.losses.MeanSquaredError(),
            input_spec=_spec(),
            freeze="hidden",
        )


class _ShiftedNormal(tf.keras.initializers.RandomNormal):
    """A subclass that overrides what it draws: not regenerable as its parent."""

    def __call__(self, shape, dtype=None, **kwargs):
        return tf.fill(shape, 3.0)


@pytest.mark.parametrize(
    "parent", [_ShiftedNormal, type("Glorot", (tf.keras.initializers.GlorotUniform,), {})]
)
def test_subclass_of_a_supported_initializer_is_rejected(parent):
    model = tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=(4,)),
            tf.keras.layers.Dense(8, name="hidden", kernel_initializer=parent()),
            tf.keras.layers.Dense(3, name="out"),
        ]
    )
    with pytest.raises(
        ValueError, match=f"initializer .*{parent.__name__}, which tff_fedpt cannot"
    ):
        tff_fedpt.from_keras_model(
            model, loss=tf.keras.losses.MeanSquaredError(), input_spec=_spec(), freeze="hidden"
        )


def _records(model, layer_names):
    return [
        frozen.frozen_initializer_for(model.get_layer(name), v)
        for name in layer_names
        for v in model.get_layer(name).weights
    ]


def test_same_seed_bit_identical_eager_graph_and_tff():
    records = _records(cnn(), ["conv1", "conv2", "dense_wide"])
    eager = [t.numpy() for t in frozen.generate_frozen_weights(records, 7)]
    graph = [
        t.numpy()
        for t in tf.function(lambda s: frozen.generate_frozen_weights(records, s))(
            tf.constant(7, tf.int64)
        )
    ]

    @tff.tensorflow.computation(np.int64)
    def in_tff(seed):
        return frozen.generate_frozen_weights(records, seed)

    @tff.federated_computation(tff.FederatedType(np.int64, tff.CLIENTS))
    def on_clients(seeds):
        return tff.federated_map(in_tff, seeds)

    server = in_tff(np.int64(7))
    clients = on_clients([np.int64(7), np.int64(7)])
    for i, value in enumerate(eager):
        np.testing.assert_array_equal(value, graph[i])
        np.testing.assert_array_equal(value, server[i])
        for client in clients:
            np.testing.assert_array_equal(value, client[i])
    other = [t.numpy() for t in frozen.generate_frozen_weights(records, 8)]
    assert not np.array_equal(eager[0], other[0])
    assert not np.array_equal(eager[4], other[4])
    # Biases use Zeros: identical for every seed.
    np.testing.assert_array_equal(eager[1], np.zeros(4))


def test_generated_values_follow_the_layer_initializers():
    glorot = tf.keras.layers.Dense(
        500,
        kernel_initializer="glorot_uniform",
        bias_initializer=tf.keras.initializers.Constant(0.5),
    )
    he = tf.keras.layers.Dense(500, kernel_initializer="he_normal")
    normal = tf.keras.layers.Dense(
        500, kernel_initializer=tf.keras.initializers.RandomNormal(mean=1.0, stddev=0.2)
    )
    model = tf.keras.Sequential(
        [tf.keras.layers.InputLayer(input_shape=(400,)), glorot, he, normal]
    )
    records = _records(model, [glorot.name, he.name, normal.name])
    values = [t.numpy() for t in frozen.generate_frozen_weights(records, 1)]
    limit = np.sqrt(6.0 / (400 + 500))  # Glorot uniform: sqrt(6 / (fan_in + fan_out))
    assert np.abs(values[0]).max() <= limit
    assert np.abs(values[0]).max() > 0.99 * limit
    np.testing.assert_allclose(values[0].std(), limit / np.sqrt(3), rtol=0.01)
    np.testing.assert_array_equal(values[1], np.full(500, 0.5, np.float32))
    # He normal: truncated normal with std sqrt(2 / fan_in) after truncation.
    np.testing.assert_allclose(values[2].std(), np.sqrt(2.0 / 500), rtol=0.01)
    assert np.abs(values[2]).max() <= 2 * np.sqrt(2.0 / 500) / 0.87962566103423978
    np.testing.assert_allclose(values[4].mean(), 1.0, atol=0.002)
    np.testing.assert_allclose(values[4].std(), 0.2, rtol=0.01)


def test_lstm_and_embedding_initializers():
    model = tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=(5,)),
            tf.keras.layers.Embedding(50, 6, name="embedding"),
            tf.keras.layers.LSTM(7, name="lstm"),
            tf.keras.layers.Dense(3, name="out"),
        ]
    )
    records = _records(model, ["embedding", "lstm"])
    assert [r.class_name for r in records] == [
        "RandomUniform",  # Embedding default: uniform(-0.05, 0.05)
        "VarianceScaling",  # LSTM kernel: glorot_uniform
        "Orthogonal",  # LSTM recurrent kernel
        "Zeros",  # LSTM bias, with the forget-gate slice set to ones
    ]
    emb, kernel, recurrent, bias = (t.numpy() for t in frozen.generate_frozen_weights(records, 3))
    assert np.abs(emb).max() <= 0.05
    # recurrent kernel is 7 x 28: its rows are orthonormal.
    np.testing.assert_allclose(recurrent @ recurrent.T, np.eye(7), atol=1e-5)
    np.testing.assert_array_equal(bias, np.concatenate([np.zeros(7), np.ones(7), np.zeros(14)]))
    assert kernel.shape == (6, 28)


def test_every_frozen_source_implements_the_declared_interface():
    """Seeded by Philox, seeded portable and pretrained: the process, the device export
    and the run record ask each the same questions, never its kind."""
    from tff_fedpt import frozen
    from tff_fedpt.tasks import digits

    held = frozen.PretrainedWeights.from_keras_model(digits.cnn(7, 16))
    spec = (tf.TensorSpec([None, 8, 8, 1]), tf.TensorSpec([None], tf.int32))
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    sources = {}
    for kind, freeze in (
        ("philox", tff_fedpt.FreezeSpec(layers=("dense",))),
        ("portable", tff_fedpt.FreezeSpec(layers=("dense",), generator="portable")),
        ("pretrained", tff_fedpt.FreezeSpec(layers=("dense",), pretrained=held)),
    ):
        model = tff_fedpt.from_keras_model(
            digits.cnn(0, 16), loss=loss, input_spec=spec, freeze=freeze
        )
        sources[kind] = model.frozen_initializers
    for kind, records in sources.items():
        for record in records:
            assert isinstance(record, frozen.FrozenSource), (kind, record)
            assert record.for_device() is not None
    kernel, bias = sources["philox"]
    assert (kernel.builtins_only, kernel.constant_fill, kernel.pretrained_value) == (
        False,
        None,
        None,
    )
    assert (bias.builtins_only, bias.constant_fill) == (True, 0.0)  # zeros: filled at run time
    assert all(r.builtins_only for r in sources["portable"])
    kernel, bias = sources["pretrained"]
    np.testing.assert_array_equal(kernel.pretrained_value, held["dense"]["kernel"])
    assert kernel.builtins_only and kernel.constant_fill is None
    assert kernel.for_device().path is None  # embedded in the file, no worker store


def test_the_frozen_prefix_is_the_deterministic_run_of_first_layers():
    """EMNIST's CNN with its convolutions frozen: conv1, conv2 and the pooling, up to the
    dropout (training-time draws); split, the two halves compute the model exactly. A
    model whose first layer trains has none; a mask or a skip connection ends it."""
    from tff_fedpt.tasks import emnist, shakespeare

    model = emnist.cnn(0, 10)
    split = frozen.frozen_prefix(model, frozen.FreezeSpec(layer_types=("Conv2D",)))
    assert split.layers == ("conv1", "conv2", "pool")
    assert split.feature_shape == (12, 12, 64) and split.feature_dtype == "float32"
    assert (split.input_bytes_per_example, split.bytes_per_example) == (3136, 36864)
    # (the dropout layer is unnamed: Keras numbers it by what this process built before)
    assert re.fullmatch(
        r"layer 'dropout(_\d+)?' \(Dropout\) draws at training time", split.stopped_at
    )
    assert "11.76x the input's 3,136" in split.format_table()
    prefix, remainder = frozen.split_model(model, split)
    x = np.random.default_rng(0).random((5, 28, 28, 1), np.float32)
    assert np.array_equal(remainder(prefix(x)).numpy(), model(x).numpy())
    assert frozen.frozen_prefix(model, "dense128") is None  # conv1 trains
    # Shakespeare's embedding masks the padding for the LSTMs: features would lose it.
    chars = shakespeare.char_lstm(0)
    assert frozen.frozen_prefix(chars, "embedding") is None
    assert frozen.prefix_end(chars, "embedding") == (
        "layer 'embedding' (Embedding) passes a Keras mask on"
    )

    inputs = tf.keras.Input((4,))
    a = tf.keras.layers.Dense(4, name="a")(inputs)
    b = tf.keras.layers.Dense(4, name="b")(a)
    out = tf.keras.layers.Dense(2, name="out")(tf.keras.layers.Add(name="add")([a, b]))
    skip = frozen.frozen_prefix(tf.keras.Model(inputs, out), ("a", "b"))
    assert skip is None  # a's output is read twice: no layer can be computed apart

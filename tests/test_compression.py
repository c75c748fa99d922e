"""Compression stacked on FedPT: quantized uploads (TFF's EncodedSumFactory) and broadcast."""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import tff_fedpt
from tff_fedpt import compression, remote, training
from tff_fedpt.tasks import emnist, load_task

from . import models

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _sgd(lr):
    return tff.learning.optimizers.build_sgdm(learning_rate=lr)


def _packed_upload_bytes(sizes, bits):
    """TFF's uniform quantization: values bit-packed 28 bits per int32, plus min and max
    (float32) per tensor (tensorflow_model_optimization's BitpackingEncodingStage)."""
    return sum(math.ceil(n * bits / 28) * 4 + 8 for n in sizes)


# The tiny model trains only its output layer: kernel 8x3 and bias 3 (27 float32).
TINY = [24, 3]


@pytest.mark.parametrize(
    "broadcast_bits,upload_bits,down,up",
    [
        (None, None, 27 * 4 + 8, 27 * 4 + 4),  # float32 weights + int64 seed; delta + weight
        (8, None, (24 + 8) + (3 + 8) + 8, 27 * 4 + 4),  # uint8 values + min/max per tensor
        (16, 8, (48 + 8) + (6 + 8) + 8, _packed_upload_bytes(TINY, 8) + 4),
        (None, 4, 27 * 4 + 8, _packed_upload_bytes(TINY, 4) + 4),
    ],
)
def test_encoded_bytes_match_hand_computed_values(broadcast_bits, upload_bits, down, up):
    aggregator = compression.quantized_mean(upload_bits) if upload_bits else None
    process = tff_fedpt.build_fedpt_process(
        models.fedpt_model_fn(),
        _sgd(0.1),
        broadcast_bits=broadcast_bits,
        model_aggregator=aggregator,
    )
    cost = tff_fedpt.communication_cost(process)
    assert (cost.broadcast_bytes_per_client, cost.upload_bytes_per_client) == (down, up)
    metrics = process.next(process.initialize(), models.client_data(num_clients=3)).metrics
    comm = metrics["communication"]
    assert comm["broadcast_bytes_per_client"] == down
    assert comm["upload_bytes_per_client"] == up
    assert comm["round_broadcast_bytes"] == 3 * down and comm["round_upload_bytes"] == 3 * up


def test_emnist_cnn_with_8_bit_both_ways_is_over_150x_cheaper_than_fedavg():
    spec = (tf.TensorSpec([None, 28, 28, 1]), tf.TensorSpec([None], tf.int32))

    def fedpt_fn():
        return tff_fedpt.from_keras_model(
            emnist.cnn(0, 62), loss=LOSS, input_spec=spec, freeze="dense128"
        )

    fedavg = tff_fedpt.fedavg_communication_cost(
        lambda: tff.learning.models.from_keras_model(emnist.cnn(0, 62), loss=LOSS, input_spec=spec)
    )
    process = tff_fedpt.build_fedpt_process(
        fedpt_fn, _sgd(0.1), broadcast_bits=8, model_aggregator=compression.quantized_mean(8)
    )
    cost = tff_fedpt.communication_cost(process)
    trainable = [3 * 3 * 32, 32, 3 * 3 * 32 * 64, 64, 128 * 62, 62]  # convs + output layer
    assert cost.broadcast_bytes_per_client == sum(trainable) + 8 * len(trainable) + 8
    assert cost.upload_bytes_per_client == _packed_upload_bytes(trainable, 8) + 4
    assert (cost.broadcast_bytes_per_client, cost.upload_bytes_per_client) == (26_870, 30_712)
    assert cost.reduction_versus(fedavg) >= 150  # 167.6x


def _to_one_client(distributor, value_type):
    @tff.federated_computation(
        tff.FederatedType(value_type, tff.SERVER), tff.FederatedType(np.int32, tff.CLIENTS)
    )
    def broadcast(value, client_marker):
        del client_marker  # a one-element list: the computation runs for one client
        return distributor.next(distributor.initialize(), value)

    return broadcast


def test_quantized_broadcast_round_trip_error_and_untouched_seed():
    value_type = tff.StructWithPythonType(
        [
            ("trainable", [tff.TensorType(np.float32, [50, 4]), tff.TensorType(np.float32, [4])]),
            ("frozen_seed", tff.TensorType(np.int64)),
        ],
        dict,
    )
    for bits in (8, 16):
        broadcast_to_one_client = _to_one_client(
            compression.build_quantized_broadcast_process(value_type, bits), value_type
        )
        rng = np.random.default_rng(bits)
        kernel = rng.normal(size=(50, 4)).astype(np.float32)
        bias = np.array([0.5, -1.0, 2.0, 0.25], np.float32)
        seed = np.int64(2**62 + 3)
        out = broadcast_to_one_client(dict(trainable=[kernel, bias], frozen_seed=seed), [0])
        [received] = out.result
        assert received["frozen_seed"] == seed
        step = (kernel.max() - kernel.min()) / (2**bits - 1)
        error = np.abs(received["trainable"][0] - kernel).max()
        assert 0 < error <= step / 2 * 1.001
        np.testing.assert_allclose(received["trainable"][1], bias, atol=3 / (2**bits - 1))
        assert out.measurements["bits"] == bits
        np.testing.assert_allclose(
            out.measurements["max_abs_error"],
            max(error, np.abs(received["trainable"][1] - bias).max()),
            rtol=1e-5,
        )


def test_training_with_compression_tracks_uncompressed_fedpt():
    data = models.client_data(num_clients=4)

    def run(**kwargs):
        process = tff_fedpt.build_fedpt_process(
            models.fedpt_model_fn(), _sgd(0.1), _sgd(0.5), frozen_seed=5, **kwargs
        )
        state = process.initialize()
        initial = process.get_model_weights(state)
        for _ in range(3):
            state = process.next(state, data).state
        return initial, process.get_model_weights(state)

    initial, plain = run()
    _, both16 = run(broadcast_bits=16, model_aggregator=compression.quantized_mean(16))
    _, both8 = run(broadcast_bits=8, model_aggregator=compression.quantized_mean(8))
    moved = max(np.abs(a - b).max() for a, b in zip(plain.trainable, initial.trainable))
    err16 = max(np.abs(a - b).max() for a, b in zip(plain.trainable, both16.trainable))
    err8 = max(np.abs(a - b).max() for a, b in zip(plain.trainable, both8.trainable))
    assert moved > 1e-2
    assert err16 < 1e-3 * moved * 10 and err16 < err8 < 0.1 * moved
    for a, b in zip(plain.non_trainable, both8.non_trainable):  # frozen part: bit-identical
        np.testing.assert_array_equal(a, b)


def test_compressed_fedpt_is_mergeable_for_remote_workers():
    process = tff_fedpt.build_fedpt_process(
        models.fedpt_model_fn(),
        _sgd(0.1),
        broadcast_bits=8,
        model_aggregator=compression.quantized_mean(8),
    )
    remote.check_mergeable(process)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            dict(upload_bits=0),
            "--upload_bits must be an integer in 1..16 (TFF's uniform quantization); received 0",
        ),
        (dict(upload_bits=17), "received 17"),
        (dict(broadcast_bits=4), "--broadcast_bits must be one of [8, 16]"),
        (
            dict(upload_bits=8, algorithm="fedavg", freeze="none"),
            "need --algorithm=fedpt; received --algorithm=fedavg",
        ),
        (
            dict(upload_bits=8, dp=True, noise_multiplier=1.0),
            "--upload_bits cannot be combined with DP: quantizing a clipped update",
        ),
    ],
)
def test_config_errors_name_the_flag(kwargs, message):
    config = training.ExperimentConfig(**kwargs)
    with pytest.raises(training.ConfigError) as info:
        training.validate(config, load_task("digits", num_clients=20))
    assert message in info.value.flag_message() and "--" not in str(info.value)


def test_library_errors():
    with pytest.raises(ValueError, match="broadcast_bits must be one of"):
        tff_fedpt.build_fedpt_process(models.fedpt_model_fn(), _sgd(0.1), broadcast_bits=12)
    with pytest.raises(ValueError, match="upload_bits must be an integer in 1..16"):
        compression.quantized_mean(32)
    with pytest.raises(ValueError, match="threshold must be an integer >= 0"):
        compression.quantized_mean(8, threshold=-1)


def test_dp_with_quantized_broadcast_trains_and_accounts(tmp_path):
    config = training.ExperimentConfig(
        dp=True,
        noise_multiplier=0.5,
        clip=0.5,
        broadcast_bits=8,
        total_rounds=2,
        clients_per_round=3,
        client_epochs_per_round=1,
        rounds_per_eval=2,
        root_output_dir=str(tmp_path),
    )
    task = load_task("digits", num_clients=20)
    result = training.run_experiment(config, task)
    last = result.rows[-1]
    plain = training.run_experiment(
        dataclasses.replace(config, broadcast_bits=None, experiment_name="plain"), task
    )
    assert float(last["privacy/epsilon"]) == float(plain.rows[-1]["privacy/epsilon"]) > 0
    assert last["broadcast_bytes_per_client"] < plain.rows[-1]["broadcast_bytes_per_client"] / 3
    assert last["upload_bytes_per_client"] == plain.rows[-1]["upload_bytes_per_client"]


def test_binary_flags_and_comparison_script(tmp_path):
    from .test_binaries import DIGITS_FLAGS, _binary

    run = _binary(
        "run_digits.py",
        *DIGITS_FLAGS,
        "--total_rounds=1",
        "--upload_bits=8",
        "--broadcast_bits=8",
        f"--root_output_dir={tmp_path}/run",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "(158.5x less communication)" in run.stdout
    bad = _binary("run_digits.py", "--broadcast_bits=4", f"--root_output_dir={tmp_path}/run")
    assert bad.returncode == 2 and "--broadcast_bits must be one of [8, 16]" in bad.stderr

    # EMNIST's training branch on a directory without its data: one line, then the rest.
    # (Training EMNIST is test_binaries' emnist smoke test; its bytes table needs no data.)
    compare = _binary(
        "compare_compression.py",
        "--total_rounds=1",
        "--clients_per_round=2",
        f"--emnist_cache_dir={tmp_path}/no_emnist",
        f"--output_dir={tmp_path}/compare",
        timeout=600,
    )
    assert compare.returncode == 0, compare.stderr[-3000:]
    assert "| FedPT + 8-bit both ways | 26,870 | 30,712 | 57,582 | 167.6x |" in compare.stdout
    assert "EMNIST not trained: " in compare.stdout and "no_emnist" in compare.stdout
    table = (tmp_path / "compare" / "digits" / "comparison.md").read_text()
    assert table.count("\n| FedPT") == 3 and "| FedAvg |" in table
    assert (tmp_path / "compare" / "digits" / "accuracy_vs_megabytes.png").exists()
    assert not (tmp_path / "compare" / "emnist").exists()

"""Freezing and quantization together: FedAvg, FedPT, FedPT + 8-bit uploads, both ways.

Trains the four on digits (same rounds, clients, data order and hyperparameters) and
writes a table and a plot of test accuracy against cumulative megabytes
(output/compression/). Also prints the bytes per client per round of the same four on
TFF's EMNIST-62 CNN with the dense-128 layer frozen, read from the processes' TFF types
(no data needed), and trains on EMNIST too when --emnist_cache_dir holds its data.
"""

from fedpt_cli import comparison_runner, entry

import os

import tensorflow as tf
import tensorflow_federated as tff
from absl import flags

import tff_fedpt
from tff_fedpt import compression, reporting
from tff_fedpt.tasks import DatasetNotFoundError, emnist, load_task

flags.DEFINE_string("output_dir", "output/compression", "Where results, table and plot go.")
flags.DEFINE_integer("total_rounds", 80, "Training rounds for each run.")
flags.DEFINE_integer("clients_per_round", 10, "Clients per round.")
flags.DEFINE_integer("bits", 8, "Quantization bits (uploads 1..16, broadcast 8 or 16).")
flags.DEFINE_string("emnist_cache_dir", None, "Train on EMNIST too if its data is cached here.")
flags.DEFINE_integer("emnist_rounds", 200, "Rounds of the EMNIST runs.")
flags.DEFINE_bool("resume", False, "Reuse earlier runs in output_dir instead of starting over.")
FLAGS = flags.FLAGS


def _runs(freeze, bits):
    return {
        "FedAvg": dict(algorithm="fedavg", freeze="none"),
        "FedPT": dict(algorithm="fedpt", freeze=freeze),
        f"FedPT + {bits}-bit uploads": dict(algorithm="fedpt", freeze=freeze, upload_bits=bits),
        f"FedPT + {bits}-bit both ways": dict(
            algorithm="fedpt", freeze=freeze, upload_bits=bits, broadcast_bits=bits
        ),
    }


def emnist_bytes_table(bits):
    """Bytes per client per round on TFF's EMNIST-62 CNN (dense-128 frozen), from types."""
    spec = (tf.TensorSpec([None, 28, 28, 1]), tf.TensorSpec([None], tf.int32))
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    sgd = tff.learning.optimizers.build_sgdm(0.1)

    def fedpt_fn():
        return tff_fedpt.from_keras_model(
            emnist.cnn(0, 62), loss=loss, input_spec=spec, freeze="dense128"
        )

    fedavg = tff_fedpt.fedavg_communication_cost(
        lambda: tff.learning.models.from_keras_model(emnist.cnn(0, 62), loss=loss, input_spec=spec)
    )
    costs = {"FedAvg": fedavg}
    for label, kwargs in [
        ("FedPT", {}),
        (f"FedPT + {bits}-bit uploads", dict(model_aggregator=compression.quantized_mean(bits))),
        (
            f"FedPT + {bits}-bit both ways",
            dict(model_aggregator=compression.quantized_mean(bits), broadcast_bits=bits),
        ),
    ]:
        costs[label] = tff_fedpt.communication_cost(
            tff_fedpt.build_fedpt_process(fedpt_fn, sgd, **kwargs)
        )
    return reporting.table(
        [
            {
                "run": label,
                "bytes down": cost.broadcast_bytes_per_client,
                "bytes up": cost.upload_bytes_per_client,
                "bytes/client/round": cost.bytes_per_client,
                "reduction vs FedAvg": f"{cost.reduction_versus(fedavg):.1f}x",
            }
            for label, cost in costs.items()
        ]
    )


def _train(task, name, runs, rounds):
    _, table, plot = comparison_runner.run_and_report(
        task,
        runs,
        total_rounds=rounds,
        clients_per_round=FLAGS.clients_per_round,
        output_dir=os.path.join(FLAGS.output_dir, name),
        resume=FLAGS.resume,
        title=f"{name}: freezing + {FLAGS.bits}-bit quantization ({rounds} rounds)",
    )
    print(f"\n{name}, {rounds} rounds x {FLAGS.clients_per_round} clients:\n\n{table}")
    print(f"\nPlot: {os.path.abspath(plot)}")


def main():
    try:
        compression.check_broadcast_bits(FLAGS.bits, "--bits")
    except ValueError as e:
        raise entry.ScriptError(str(e)) from None
    table = emnist_bytes_table(FLAGS.bits)
    print(f"\nEMNIST-62 CNN, dense-128 frozen, per client per round (from TFF types):\n\n{table}")
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    with open(os.path.join(FLAGS.output_dir, "emnist_bytes.md"), "w") as f:
        f.write(table + "\n")

    _train(load_task("digits"), "digits", _runs("dense", FLAGS.bits), FLAGS.total_rounds)
    if FLAGS.emnist_cache_dir:
        try:
            task = load_task(
                "emnist", cache_dir=os.path.expanduser(FLAGS.emnist_cache_dir), only_digits=False
            )
        except DatasetNotFoundError as e:
            print(f"\nEMNIST not trained: {e}")
        else:
            runs = {
                label: dict(
                    task="emnist", client_epochs_per_round=1, client_batch_size=20, **overrides
                )
                for label, overrides in _runs("dense128", FLAGS.bits).items()
            }
            _train(task, "emnist", runs, FLAGS.emnist_rounds)


if __name__ == "__main__":
    entry.run(main)

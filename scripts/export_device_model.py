"""Exports a task's FedPT client as one TensorFlow Lite file a device app runs each round,
and prints its size against the fully trainable model's (the FedAvg client).

  .venv/bin/python scripts/export_device_model.py --task=emnist --model=cnn \\
      --freeze=dense128 --client_optimizer=sgdm --client_learning_rate=0.05 \\
      --output=output/emnist_cnn_fedpt.tflite
"""

import entry

import tensorflow as tf
import tensorflow_federated as tff
from absl import flags

import tff_fedpt
from tff_fedpt import device
from tff_fedpt.tasks import catalog

flags.DEFINE_enum("task", "emnist", sorted({k.split("/")[0] for k in catalog.MODELS}), "Task.")
flags.DEFINE_string("model", "cnn", "Model of the task.")
flags.DEFINE_string("freeze", "dense128", "Freeze preset, 'none', or layer patterns.")
flags.DEFINE_integer(
    "frozen_seed",
    0,
    "Unused by the file (the seed arrives each round); kept "
    "so the command mirrors the training binaries'.",
)
flags.DEFINE_enum("client_optimizer", "sgd", ["sgd", "sgdm"], "Client optimizer.")
flags.DEFINE_float("client_learning_rate", 0.1, "Client learning rate.")
flags.DEFINE_float("client_momentum", 0.9, "Client momentum (sgdm).")
flags.DEFINE_integer("batch_size", None, "Fix the batch size (default: any).")
flags.DEFINE_string("output", "output/client.tflite", "Where the .tflite file goes.")
FLAGS = flags.FLAGS


def _export(spec, freeze, optimizer):
    def model_fn():
        return tff_fedpt.from_keras_model(
            spec.build(0),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            input_spec=spec.input_spec,
            freeze=freeze,
        )

    with tf.Graph().as_default():
        model = model_fn()
        trainable = sum(v.shape.num_elements() for v in model.trainable_variables)
        frozen = sum(v.shape.num_elements() for v in model.non_trainable_variables)
    return device.export_tflite(model_fn, optimizer, batch_size=FLAGS.batch_size), trainable, frozen


def main():
    import os

    try:
        spec = catalog.model_spec(FLAGS.task, FLAGS.model)
        freeze = catalog.freeze_spec(spec, FLAGS.freeze)
    except ValueError as e:
        raise entry.ScriptError(str(e)) from None
    if not FLAGS.client_learning_rate > 0:
        raise entry.ScriptError(
            f"--client_learning_rate must be > 0; received {FLAGS.client_learning_rate}."
        )
    momentum = FLAGS.client_momentum if FLAGS.client_optimizer == "sgdm" else None
    optimizer = tff.learning.optimizers.build_sgdm(FLAGS.client_learning_rate, momentum)
    try:
        fedpt, trainable, frozen = _export(spec, freeze, optimizer)
    except ValueError as e:
        raise entry.ScriptError(f"--freeze: {e}") from None
    full, _, _ = _export(spec, catalog.freeze_spec(spec, "none"), optimizer)
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    with open(FLAGS.output, "wb") as f:
        f.write(fedpt)
    graph = len(fedpt) - 4 * trainable
    print(
        f"{FLAGS.task}/{FLAGS.model}, --freeze={FLAGS.freeze}: {trainable:,} trainable and "
        f"{frozen:,} frozen parameters.\n"
        f"FedPT client:      {len(fedpt):>12,} bytes = 4 x {trainable:,} trainable + "
        f"{graph:,} graph and state (no frozen value)\n"
        f"fully trainable:   {len(full):>12,} bytes (the FedAvg client)\n"
        f"ratio:             {len(full) / len(fedpt):>12.1f}x smaller\n"
        f"ops through Flex:  {', '.join(device.flex_ops(fedpt))}\n"
        f"written to {os.path.abspath(FLAGS.output)}"
    )


if __name__ == "__main__":
    entry.run(main, local_runtime=False)

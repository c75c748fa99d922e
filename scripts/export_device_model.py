"""Exports a task's FedPT client as one TensorFlow Lite file a device app runs each round,
and prints its size against the fully trainable model's (the FedAvg client).

  .venv/bin/python scripts/export_device_model.py --task=emnist --model=cnn \\
      --freeze=dense128 --client_optimizer=sgdm --client_learning_rate=0.05 \\
      --output=output/emnist_cnn_fedpt.tflite
"""

from fedpt_cli import entry

import dataclasses
import os
import tempfile

import tensorflow as tf
import tensorflow_federated as tff
from absl import flags

import tff_fedpt
from fedpt_device import protocol
from tff_fedpt import device
from tff_fedpt.tasks import catalog
from tff_fedpt.training import outputs

flags.DEFINE_enum("task", "emnist", sorted({k.split("/")[0] for k in catalog.MODELS}), "Task.")
flags.DEFINE_string("model", "cnn", "Model of the task.")
flags.DEFINE_string("freeze", "dense128", "Freeze preset, 'none', or layer patterns.")
flags.DEFINE_enum("client_optimizer", "sgd", ["sgd", "sgdm"], "Client optimizer.")
flags.DEFINE_float("client_learning_rate", 0.1, "Client learning rate.")
flags.DEFINE_float("client_momentum", 0.9, "Client momentum (sgdm).")
flags.DEFINE_integer("batch_size", None, "Fix the batch size (default: any).")
flags.DEFINE_string("output", "output/client.tflite", "Where the .tflite file goes.")
flags.DEFINE_bool(
    "builtins_only",
    False,
    "TensorFlow Lite builtins only (no Flex op; for the slim runtime): needs --batch_size "
    "and the portable generator (docs/portable_generator.md).",
)
flags.DEFINE_enum(
    "frozen_generator",
    None,
    list(tff_fedpt.frozen.GENERATORS),
    "How the frozen part is drawn (default: portable with --builtins_only, else philox).",
)
flags.DEFINE_bool(
    "train_on_features",
    False,
    "Train the layers after the model's frozen prefix on its output: a `features` "
    "signature the app runs once per example (docs/features.md).",
)
FLAGS = flags.FLAGS


def _export(spec, freeze, optimizer, builtins_only):
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
    content = device.export_tflite(
        model_fn,
        optimizer,
        batch_size=FLAGS.batch_size,
        builtins_only=builtins_only,
        train_on_features=FLAGS.train_on_features,
    )
    return content, trainable, frozen


def _check_output(path: str) -> str:
    """The absolute --output path, checked writable before the (long) conversion."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise entry.ScriptError(f"--output={FLAGS.output} is a directory; name a file in it.")
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".write_test"):
            pass
    except OSError as e:
        reason = outputs.os_error_reason(e, "a parent is a regular file, not a directory")
        raise entry.ScriptError(
            f"--output={FLAGS.output}: cannot write in {parent} ({reason})."
        ) from None
    return path


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main():
    try:
        spec = catalog.model_spec(FLAGS.task, FLAGS.model)
    except ValueError as e:
        raise entry.ScriptError(f"--task/--model: {e}") from None
    try:
        freeze = tff_fedpt.frozen.parse_freeze(FLAGS.freeze, spec.presets)
        tff_fedpt.resolve_freeze(spec.build(0), freeze)
    except ValueError as e:
        raise entry.ScriptError(f"--freeze={FLAGS.freeze!r} is not usable here: {e}") from None
    if FLAGS.batch_size is not None and FLAGS.batch_size < 1:
        raise entry.ScriptError(
            f"--batch_size must be >= 1 (or unset: any batch size); received {FLAGS.batch_size}."
        )
    generator = FLAGS.frozen_generator or ("portable" if FLAGS.builtins_only else "philox")
    if FLAGS.builtins_only and (FLAGS.batch_size is None or generator != "portable"):
        raise entry.ScriptError(
            "--builtins_only needs --batch_size and --frozen_generator=portable (the default "
            f"with it); received --batch_size={FLAGS.batch_size}, "
            f"--frozen_generator={generator}."
        )
    freeze = dataclasses.replace(freeze, generator=generator)
    if not FLAGS.client_learning_rate > 0:
        raise entry.ScriptError(
            f"--client_learning_rate must be > 0; received {FLAGS.client_learning_rate}."
        )
    output = _check_output(FLAGS.output)
    momentum = FLAGS.client_momentum if FLAGS.client_optimizer == "sgdm" else None
    optimizer = tff.learning.optimizers.build_sgdm(FLAGS.client_learning_rate, momentum)
    try:
        fedpt, trainable, frozen = _export(spec, freeze, optimizer, FLAGS.builtins_only)
    except protocol.DeviceError as e:
        raise entry.ScriptError(str(e)) from None
    full, _, _ = _export(spec, tff_fedpt.FreezeSpec(), optimizer, False)
    _write_atomic(output, fedpt)
    graph = len(fedpt) - 4 * trainable
    print(
        f"{FLAGS.task}/{FLAGS.model}, --freeze={FLAGS.freeze}: {trainable:,} trainable and "
        f"{frozen:,} frozen parameters.\n"
        f"FedPT client:      {len(fedpt):>12,} bytes = 4 x {trainable:,} trainable + "
        f"{graph:,} graph and state (no frozen value)\n"
        f"fully trainable:   {len(full):>12,} bytes (the FedAvg client, Flex)\n"
        f"ratio:             {len(full) / len(fedpt):>12.1f}x smaller\n"
        f"ops through Flex:  {', '.join(device.flex_ops(fedpt)) or 'none (builtins only)'}\n"
        f"written to {output}"
    )


if __name__ == "__main__":
    entry.run(main, local_runtime=False)

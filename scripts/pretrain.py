"""Pretrains a task's model centrally on the server's public data and saves it, with its
fingerprint, for `--pretrained_weights` (FedPT keeps the frozen layers at these values
and sends only their fingerprint).

Fashion-MNIST: the public data is a held-out `--public_fraction` of the training set,
restricted to `--public_classes`; train the federated run with the same
`--public_fraction` (and seed) so the clients hold the rest.

  .venv/bin/python scripts/pretrain.py --task=fashion_mnist --public_fraction=0.2 \\
      --public_classes=0,1,2,3,4 --output=output/pretrained/fashion_cnn.npz
"""

from fedpt_cli import entry

import json
import os

import numpy as np
import tensorflow as tf
from absl import flags

from tff_fedpt import pretrained
from tff_fedpt.tasks import fashion_mnist

flags.DEFINE_enum("task", "fashion_mnist", ["fashion_mnist"], "Task with public data.")
flags.DEFINE_string("data_dir", None, "The task's data (default: its usual places).")
flags.DEFINE_enum("model", "cnn", sorted(fashion_mnist.PRESETS), "Model of the task.")
flags.DEFINE_integer("dense_units", 128, "Width of the CNN's dense layer.")
flags.DEFINE_float("public_fraction", 0.2, "Held-out fraction of the training set.")
flags.DEFINE_list("public_classes", ["0", "1", "2", "3", "4"], "Classes of the public data.")
flags.DEFINE_integer("seed", 0, "Seed of the split (the training binary's --seed) and model.")
flags.DEFINE_integer("epochs", 5, "Epochs of central training.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_string("output", "output/pretrained/fashion_cnn.npz", "Where the weights go.")
FLAGS = flags.FLAGS


def _accuracy(model, x, y) -> float:
    if len(y) == 0:
        return float("nan")
    logits = model.predict(x, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, axis=1) == y))


def main():
    for name in ("epochs", "batch_size"):
        if FLAGS[name].value < 1:
            raise entry.ScriptError(f"--{name} must be >= 1; received {FLAGS[name].value}.")
    if not FLAGS.learning_rate > 0:
        raise entry.ScriptError(f"--learning_rate must be > 0; received {FLAGS.learning_rate}.")
    try:
        classes = [int(c) for c in FLAGS.public_classes]
        data = fashion_mnist.public_data(
            FLAGS.data_dir,
            public_fraction=FLAGS.public_fraction,
            classes=classes,
            seed=FLAGS.seed,
        )
    except ValueError as e:
        raise entry.ScriptError(f"--public_fraction / --public_classes: {e}") from None
    if len(data["y"]) == 0:
        raise entry.ScriptError("the public split holds no example of --public_classes.")
    output = os.path.abspath(FLAGS.output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    tf.keras.utils.set_random_seed(FLAGS.seed)
    builder = fashion_mnist.cnn if FLAGS.model == "cnn" else fashion_mnist.mlp
    model = builder(FLAGS.seed, FLAGS.dense_units) if FLAGS.model == "cnn" else builder(FLAGS.seed)
    model.compile(
        optimizer=tf.keras.optimizers.Adam(FLAGS.learning_rate),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    print(
        f"Pretraining {FLAGS.task}/{FLAGS.model} on {len(data['y']):,} public examples "
        f"(classes {classes}) for {FLAGS.epochs} epochs...",
        flush=True,
    )
    model.fit(data["x"], data["y"], epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, verbose=2)
    seen = np.isin(data["test_y"], classes)
    summary = {
        "task": FLAGS.task,
        "model": FLAGS.model,
        "dense_units": FLAGS.dense_units,
        "public_fraction": FLAGS.public_fraction,
        "public_classes": classes,
        "seed": FLAGS.seed,
        "public_examples": int(len(data["y"])),
        "epochs": FLAGS.epochs,
        "test_accuracy_public_classes": _accuracy(
            model, data["test_x"][seen], data["test_y"][seen]
        ),
        "test_accuracy_all_classes": _accuracy(model, data["test_x"], data["test_y"]),
    }
    summary["sha256"] = pretrained.PretrainedWeights.from_keras_model(model).save(output)
    with open(output + ".json", "w") as f:
        json.dump(summary, f, indent=1)
    print(
        f"test accuracy: {summary['test_accuracy_public_classes']:.4f} on classes {classes}, "
        f"{summary['test_accuracy_all_classes']:.4f} on all 10\n"
        f"saved {output} (sha256 {summary['sha256']}) and {output}.json"
    )


if __name__ == "__main__":
    entry.run(main, local_runtime=False)

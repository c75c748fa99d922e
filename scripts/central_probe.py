"""How far training can go on Fashion-MNIST's client data pooled in one place, without
federation or noise, from a pretrained model: the output layer alone (`--train=head`,
what FedPT head-only trains over the frozen public features) or every weight
(`--train=all`, what fine-tuning trains). The gap between the two is the frozen
features' reach on the classes the public data lacked; a DP comparison's result owes
the rest to federation and noise.

  .venv/bin/python scripts/central_probe.py --train=head \\
      --pretrained_weights=output/pretrained/fashion_cnn.npz --public_fraction=0.2 --seed=0 \\
      --output=output/probe_head.json

The clients' examples are those of the training binaries' split (`--public_fraction`,
`--seed`: the same held-out fraction); Adam, `--epochs` passes, the test set after each.
"""

from fedpt_cli import entry

import json
import os

import numpy as np
import tensorflow as tf
from absl import flags

from tff_fedpt import frozen
from tff_fedpt.tasks import fashion_mnist

flags.DEFINE_string("pretrained_weights", None, "The pretrained model (scripts/pretrain.py).")
flags.DEFINE_enum("train", "head", ["head", "all"], "Train the output layer only, or every weight.")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST's IDX files (default: the usual places).")
flags.DEFINE_float(
    "public_fraction",
    0.2,
    "The server's held-out fraction of the training set (the rest is pooled here).",
)
flags.DEFINE_integer("seed", 0, "Seed of the split (the training binary's --seed) and shuffling.")
flags.DEFINE_integer("dense_units", 128, "Width of the CNN's dense layer (the pretrained one's).")
flags.DEFINE_integer("epochs", 5, "Passes over the clients' examples.")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_string("output", None, "Where the JSON goes (also printed).")
FLAGS = flags.FLAGS


def _clients_examples():
    try:
        data = fashion_mnist.client_examples(
            FLAGS.data_dir, public_fraction=FLAGS.public_fraction, seed=FLAGS.seed
        )
    except ValueError as e:
        raise entry.ScriptError(f"--public_fraction: {e}") from None
    return data["x"], data["y"], data["test_x"], data["test_y"]


def main():
    if not FLAGS.pretrained_weights:
        raise entry.ScriptError("--pretrained_weights is required (scripts/pretrain.py).")
    entry.check_training_flags(FLAGS, ("epochs", "batch_size", "dense_units"))
    try:
        held = frozen.PretrainedWeights.load(FLAGS.pretrained_weights)
    except (OSError, ValueError) as e:
        raise entry.ScriptError(f"--pretrained_weights={FLAGS.pretrained_weights}: {e}") from None
    tf.keras.utils.set_random_seed(FLAGS.seed)
    model = fashion_mnist.cnn(FLAGS.seed, FLAGS.dense_units)
    try:
        assigned = held.assign_to(model)
    except ValueError as e:  # a held value of another shape
        raise entry.ScriptError(f"--pretrained_weights / --dense_units: {e}") from None
    if assigned != len(model.weights):
        raise entry.ScriptError(
            f"--pretrained_weights={FLAGS.pretrained_weights} does not hold every weight of "
            f"the CNN with --dense_units={FLAGS.dense_units}."
        )
    if FLAGS.train == "head":
        for layer in model.layers[:-1]:
            layer.trainable = False
    x, y, test_x, test_y = _clients_examples()
    model.compile(
        optimizer=tf.keras.optimizers.Adam(FLAGS.learning_rate),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    def accuracy():
        return float(model.evaluate(test_x, test_y, batch_size=512, verbose=0)[1])

    # What the output layer sees from the pretrained part: DP noise of a fixed size on the
    # head's weights moves its logits in proportion to this.
    below_head = tf.keras.Model(model.inputs, model.layers[-2].output)
    feature_norm = float(
        np.mean(np.linalg.norm(below_head.predict(test_x, batch_size=512, verbose=0), axis=1))
    )

    curve = [accuracy()]
    print(f"before training: test accuracy {curve[0]:.4f}", flush=True)
    for epoch in range(1, FLAGS.epochs + 1):
        model.fit(x, y, epochs=1, batch_size=FLAGS.batch_size, verbose=0)
        curve.append(accuracy())
        print(f"epoch {epoch}/{FLAGS.epochs}: test accuracy {curve[-1]:.4f}", flush=True)
    result = dict(
        train=FLAGS.train,
        pretrained_sha256=held.fingerprint(),
        public_fraction=FLAGS.public_fraction,
        seed=FLAGS.seed,
        examples=int(len(y)),
        trainable_parameters=int(sum(np.prod(v.shape) for v in model.trainable_weights)),
        epochs=FLAGS.epochs,
        learning_rate=FLAGS.learning_rate,
        test_accuracy_by_epoch=curve,
        best=max(curve[1:]),
        test_feature_norm_before_training=feature_norm,
    )
    if FLAGS.output:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
        with open(FLAGS.output, "w") as f:
            json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "test_accuracy_by_epoch"}))


if __name__ == "__main__":
    entry.run(main, local_runtime=False)

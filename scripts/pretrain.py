"""Pretrains a task's model centrally on the server's public data and saves it, with its
fingerprint, for `--pretrained_weights` (FedPT keeps the frozen layers at these values
and sends only their fingerprint).

Fashion-MNIST: the public data is a held-out `--public_fraction` of the training set,
restricted to `--public_classes`; train the federated run with the same
`--public_fraction` (and seed) so the clients hold the rest.
Shakespeare: the public data is the plays of `--public_plays` (`make data` first); the
clients are the roles of the other plays.

  .venv/bin/python scripts/pretrain.py --task=fashion_mnist --public_fraction=0.2 \\
      --public_classes=0,1,2,3,4 --output=output/pretrained/fashion_cnn.npz
  .venv/bin/python scripts/pretrain.py --task=shakespeare --unit=chars \\
      --output=output/pretrained/shakespeare_chars.npz
"""

from fedpt_cli import entry

import json
import os

import numpy as np
import tensorflow as tf
from absl import flags

from tff_fedpt import frozen
from tff_fedpt.tasks import fashion_mnist, load_task, shakespeare

flags.DEFINE_enum(
    "task", "fashion_mnist", ["fashion_mnist", "shakespeare"], "Task with public data."
)
flags.DEFINE_string("data_dir", None, "Fashion-MNIST: its IDX files (default: the usual places).")
flags.DEFINE_enum("model", "cnn", sorted(fashion_mnist.PRESETS), "Fashion-MNIST: the model.")
flags.DEFINE_integer("dense_units", 128, "Fashion-MNIST: width of the CNN's dense layer.")
flags.DEFINE_float("public_fraction", 0.2, "Fashion-MNIST: held-out fraction of the training set.")
flags.DEFINE_list("public_classes", ["0", "1", "2", "3", "4"], "Fashion-MNIST: public classes.")
flags.DEFINE_enum("unit", "chars", list(shakespeare.UNITS), "Shakespeare: the unit (its model).")
flags.DEFINE_list("public_plays", list(shakespeare.PUBLIC_PLAYS), "Shakespeare: public plays.")
flags.DEFINE_integer("vocab_size", shakespeare.DEFAULT_VOCAB_SIZE, "Shakespeare words: vocabulary.")
flags.DEFINE_string("cache_dir", None, "Shakespeare: directory of shakespeare.sqlite.")
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


def _check_flags() -> str:
    """The checks that need no data; returns the output path."""
    entry.check_training_flags(FLAGS, ("epochs", "batch_size", "dense_units"))
    output = os.path.abspath(FLAGS.output)
    if os.path.isdir(output):
        raise entry.ScriptError(f"--output={FLAGS.output} is a directory; name a file (.npz).")
    try:
        os.makedirs(os.path.dirname(output), exist_ok=True)
    except OSError as e:
        raise entry.ScriptError(
            f"--output={FLAGS.output}: cannot create its directory ({e})."
        ) from None
    if not os.access(os.path.dirname(output), os.W_OK):
        raise entry.ScriptError(f"--output={FLAGS.output}: its directory is not writable.")
    return output


def _fashion_mnist():
    """(model, training arrays (x, y), summary fields, evaluate(model) -> fields)."""
    try:
        classes = [int(c) for c in FLAGS.public_classes]
        data = fashion_mnist.public_data(
            FLAGS.data_dir, public_fraction=FLAGS.public_fraction, classes=classes, seed=FLAGS.seed
        )
    except ValueError as e:
        raise entry.ScriptError(f"--public_fraction / --public_classes: {e}") from None
    if len(data["y"]) == 0:
        raise entry.ScriptError("the public split holds no example of --public_classes.")
    if FLAGS.model == "cnn":
        model = fashion_mnist.cnn(FLAGS.seed, FLAGS.dense_units)
    else:
        model = fashion_mnist.mlp(FLAGS.seed)
    seen = np.isin(data["test_y"], classes)

    def evaluate(model):
        return {
            "test_accuracy_public_classes": _accuracy(
                model, data["test_x"][seen], data["test_y"][seen]
            ),
            "test_accuracy_all_classes": _accuracy(model, data["test_x"], data["test_y"]),
        }

    about = dict(
        model=FLAGS.model,
        dense_units=FLAGS.dense_units,
        public_fraction=FLAGS.public_fraction,
        public_classes=classes,
        public_examples=int(len(data["y"])),
    )
    return model, (data["x"], data["y"]), about, evaluate


def _shakespeare():
    plays = tuple(p.strip() for p in FLAGS.public_plays if p.strip())
    try:
        task = load_task(
            "shakespeare",
            unit=FLAGS.unit,
            vocab_size=FLAGS.vocab_size,
            public_plays=plays,
            cache_dir=FLAGS.cache_dir,
        )
        train = shakespeare.public_dataset(task, FLAGS.cache_dir).cache()
    except ValueError as e:
        raise entry.ScriptError(f"--public_plays / --unit / --vocab_size: {e}") from None
    model = task.models[task.default_model](FLAGS.seed)
    metrics = task.metrics_fn()

    def evaluate(model):
        for metric in metrics:
            metric.reset_state()
        for x, y in task.test_batches(256):
            for metric in metrics:
                metric.update_state(y, model(x, training=False))
        return {"test_accuracy_client_roles": float(metrics[0].result())}

    about = dict(
        unit=FLAGS.unit,
        public_plays=list(plays),
        public_pieces=int(train.reduce(0, lambda n, _: n + 1)),
        **({"vocab_size": task.settings["vocab_size"]} if FLAGS.unit == "words" else {}),
    )
    return model, train, about, evaluate


def main():
    output = _check_flags()
    tf.keras.utils.set_random_seed(FLAGS.seed)
    model, train, about, evaluate = (
        _fashion_mnist() if FLAGS.task == "fashion_mnist" else _shakespeare()
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(FLAGS.learning_rate),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    print(f"Pretraining {FLAGS.task} on the public data for {FLAGS.epochs} epochs...", flush=True)
    if isinstance(train, tuple):  # arrays, shuffled by Keras each epoch
        x, y = train
        model.fit(x, y, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, verbose=2)
    else:
        batches = train.shuffle(10_000, seed=FLAGS.seed).batch(FLAGS.batch_size)
        model.fit(batches, epochs=FLAGS.epochs, verbose=2)
    try:
        weights = frozen.PretrainedWeights.from_keras_model(model)
    except ValueError as e:  # non-finite values: training diverged
        raise entry.ScriptError(
            f"training diverged ({e}); nothing was saved. Lower --learning_rate."
        ) from None
    summary = {"task": FLAGS.task, **about, "seed": FLAGS.seed, "epochs": FLAGS.epochs}
    summary.update(evaluate(model))
    try:
        summary["sha256"] = weights.save(output)
        with open(output + ".json", "w") as f:
            json.dump(summary, f, indent=1)
    except OSError as e:
        raise entry.ScriptError(f"--output={FLAGS.output}: cannot write it ({e}).") from None
    accuracies = ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if k.startswith("test_"))
    print(f"{accuracies}\nsaved {output} (sha256 {summary['sha256']}) and {output}.json")


if __name__ == "__main__":
    entry.run(main, local_runtime=False)

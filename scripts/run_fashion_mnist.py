"""Trains FedPT or a baseline on federated Fashion-MNIST (real 28x28 images, offline once
the four IDX files are on disk: `make data`)."""

import training_flags
from absl import flags

flags.DEFINE_string(
    "data_dir", None, "Directory of the four IDX files (default: Debian's, then Keras' cache)."
)
flags.DEFINE_integer("num_clients", 1000, "Number of training clients.")
flags.DEFINE_float("dirichlet_alpha", 0.5, "Label-skew concentration (small = more skew).")
flags.DEFINE_bool("iid", False, "Deal the examples IID instead of with Dirichlet label skew.")
flags.DEFINE_integer("dense_units", 128, "Width of the CNN's dense layer.")
flags.DEFINE_float(
    "public_fraction",
    0.0,
    "Fraction of the training set held out as the server's public data (scripts/pretrain.py "
    "pretrains on it); the clients hold the rest.",
)
FLAGS = flags.FLAGS

if __name__ == "__main__":
    training_flags.main(
        "fashion_mnist",
        lambda: dict(
            data_dir=FLAGS.data_dir,
            num_clients=FLAGS.num_clients,
            alpha=None if FLAGS.iid else FLAGS.dirichlet_alpha,
            dense_units=FLAGS.dense_units,
            public_fraction=FLAGS.public_fraction,
        ),
    )

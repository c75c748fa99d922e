"""Trains FedPT or FedAvg on federated EMNIST (TFF's loader; needs the data cached)."""

import training_flags
from absl import app, flags

flags.DEFINE_bool("only_digits", False, "EMNIST-10 instead of EMNIST-62.")
flags.DEFINE_string("cache_dir", None, "Directory holding emnist_all.sqlite (default ~/.tff).")
FLAGS = flags.FLAGS


def main(argv):
    training_flags.run(
        argv,
        "emnist",
        default_freeze="dense128",
        task_kwargs=dict(only_digits=FLAGS.only_digits, cache_dir=FLAGS.cache_dir),
    )


if __name__ == "__main__":
    app.run(main)

"""Trains FedPT or a baseline on federated EMNIST (TFF's loader; needs the data cached)."""

import training_flags
from absl import flags

flags.DEFINE_bool("only_digits", False, "EMNIST-10 instead of EMNIST-62.")
flags.DEFINE_string("cache_dir", None, "Directory holding emnist_all.sqlite (default ~/.tff).")
FLAGS = flags.FLAGS

if __name__ == "__main__":
    training_flags.main(
        "emnist", lambda: dict(only_digits=FLAGS.only_digits, cache_dir=FLAGS.cache_dir)
    )

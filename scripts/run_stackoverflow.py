"""Trains FedPT or a baseline on StackOverflow next-word prediction (needs the data cached)."""

import training_flags
from absl import flags

flags.DEFINE_integer("vocab_size", 10000, "Vocabulary size (most frequent words).")
flags.DEFINE_integer("max_test_examples", 10000, "Test examples used for evaluation.")
flags.DEFINE_string("cache_dir", None, "Directory holding stackoverflow.sqlite (default ~/.tff).")
FLAGS = flags.FLAGS

if __name__ == "__main__":
    training_flags.main(
        "stackoverflow",
        lambda: dict(
            vocab_size=FLAGS.vocab_size,
            cache_dir=FLAGS.cache_dir,
            max_test_examples=FLAGS.max_test_examples,
        ),
    )

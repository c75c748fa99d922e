"""StackOverflow next-word prediction through TFF's own loader.

Preprocessing follows the standard TFF setting: a vocabulary of the most frequent
words, one out-of-vocabulary bucket, sequences of 20 tokens with beginning- and
end-of-sentence markers, and an accuracy that ignores padding, out-of-vocabulary and
end-of-sentence (and beginning-of-sentence) tokens.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt import frozen
from tff_fedpt.lstm import keras_lstm
from tff_fedpt.options import option
from tff_fedpt.tasks import base

DATABASE = "stackoverflow.sqlite"
WORD_COUNTS = "stackoverflow.word_count"
SEQUENCE_LENGTH = 20
NUM_OOV_BUCKETS = 1


def default_cache_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".tff")


def _word_counts_path(cache_dir: str) -> str | None:
    # tf.keras.utils.get_file (TFF's load_word_counts) extracts under cache_dir/datasets.
    for path in (
        os.path.join(cache_dir, "datasets", WORD_COUNTS),
        os.path.join(cache_dir, WORD_COUNTS),
    ):
        if os.path.exists(path):
            return path
    return None


def load_vocabulary(path: str, vocab_size: int) -> list[str]:
    """The `vocab_size` most frequent words of a word-count file (`word count` lines,
    most frequent first, the format of TFF's `stackoverflow.word_count`)."""
    words = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) != 2:
                continue
            words.append(parts[0])
            if len(words) >= vocab_size:
                break
    return words


def special_ids(vocab_size: int) -> dict[str, int]:
    """Token ids: 0 pad, 1..V words, then OOV buckets, then bos, eos."""
    oov = vocab_size + 1
    return {
        "pad": 0,
        "oov": oov,
        "bos": oov + NUM_OOV_BUCKETS,
        "eos": oov + NUM_OOV_BUCKETS + 1,
    }


def build_to_ids(vocab: list[str], sequence_length: int = SEQUENCE_LENGTH):
    """Returns dataset -> (x, y) next-word examples of `sequence_length` token ids."""
    ids = special_ids(len(vocab))
    table = tf.lookup.StaticVocabularyTable(
        tf.lookup.KeyValueTensorInitializer(vocab, tf.range(len(vocab), dtype=tf.int64)),
        num_oov_buckets=NUM_OOV_BUCKETS,
    )

    def to_ids(example):
        words = tf.strings.split(example["tokens"])[:sequence_length]
        # Table ids are 0..V-1 for words and V.. for OOV buckets; +1 frees 0 for pad.
        tokens = tf.cast(table.lookup(words), tf.int32) + 1
        tokens = tf.concat([[ids["bos"]], tokens, [ids["eos"]]], 0)[: sequence_length + 1]
        tokens = tf.pad(tokens, [[0, sequence_length + 1 - tf.shape(tokens)[0]]])
        tokens = tf.ensure_shape(tokens, [sequence_length + 1])
        return tokens[:-1], tokens[1:]

    return lambda ds: ds.map(to_ids)


class MaskedAccuracy(tf.keras.metrics.Mean):
    """Next-word accuracy over tokens not in `masked_ids` (pad, OOV, bos, eos)."""

    def __init__(self, masked_ids=(), name="accuracy", dtype=tf.float32):
        super().__init__(name=name, dtype=dtype)
        self._masked_ids = [int(i) for i in masked_ids]

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
        predicted = tf.cast(tf.argmax(tf.reshape(y_pred, [-1, tf.shape(y_pred)[-1]]), -1), tf.int32)
        keep = tf.ones_like(y_true, tf.bool)
        for i in self._masked_ids:
            keep = tf.logical_and(keep, tf.not_equal(y_true, i))
        correct = tf.cast(tf.equal(y_true, predicted), self.dtype)
        return super().update_state(correct, sample_weight=tf.cast(keep, self.dtype))

    def get_config(self):
        return {**super().get_config(), "masked_ids": self._masked_ids}


def lstm(seed: int, total_vocab: int, units: int = 670) -> tf.keras.Model:
    """The standard StackOverflow LSTM: embedding 96, LSTM 670, dense 96, output."""
    init = tf.keras.initializers.GlorotUniform
    return tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=(SEQUENCE_LENGTH,), dtype=tf.int32),
            tf.keras.layers.Embedding(
                total_vocab,
                96,
                name="embedding",
                embeddings_initializer=tf.keras.initializers.RandomUniform(-0.05, 0.05, seed),
            ),
            keras_lstm(
                units,
                return_sequences=True,
                name="lstm",
                kernel_initializer=init(seed + 1),
                recurrent_initializer=tf.keras.initializers.Orthogonal(seed=seed + 2),
            ),
            tf.keras.layers.Dense(96, name="projection", kernel_initializer=init(seed + 3)),
            tf.keras.layers.Dense(total_vocab, name="logits", kernel_initializer=init(seed + 4)),
        ]
    )


class PositionEmbedding(tf.keras.layers.Layer):
    """Learned position embeddings, returned with the batch shape of the input."""

    def __init__(self, length, dim, embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        self.length, self.dim = length, dim
        self.embeddings_initializer = tf.keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.length, self.dim),
            initializer=self.embeddings_initializer,
        )

    def call(self, inputs):
        return tf.zeros_like(inputs) + self.embeddings[tf.newaxis, : tf.shape(inputs)[1]]


def transformer(
    seed: int, total_vocab: int, dim: int = 96, heads: int = 4, ffn: int = 256
) -> tf.keras.Model:
    """A small causal transformer: token + position embeddings, one attention block."""
    init = tf.keras.initializers.GlorotUniform
    tokens = tf.keras.Input((SEQUENCE_LENGTH,), dtype=tf.int32)
    x = tf.keras.layers.Embedding(
        total_vocab,
        dim,
        name="embedding",
        embeddings_initializer=tf.keras.initializers.RandomUniform(-0.05, 0.05, seed),
    )(tokens)
    positions = PositionEmbedding(
        SEQUENCE_LENGTH,
        dim,
        name="position_embedding",
        embeddings_initializer=tf.keras.initializers.RandomUniform(-0.05, 0.05, seed + 1),
    )(x)
    x = x + positions
    attention = tf.keras.layers.MultiHeadAttention(
        heads, dim // heads, name="attention", kernel_initializer=init(seed + 2)
    )(x, x, use_causal_mask=True)
    x = tf.keras.layers.LayerNormalization(name="norm1")(x + attention)
    hidden = tf.keras.layers.Dense(
        ffn, activation="relu", name="ffn1", kernel_initializer=init(seed + 3)
    )(x)
    hidden = tf.keras.layers.Dense(dim, name="ffn2", kernel_initializer=init(seed + 4))(hidden)
    x = tf.keras.layers.LayerNormalization(name="norm2")(x + hidden)
    logits = tf.keras.layers.Dense(total_vocab, name="logits", kernel_initializer=init(seed + 5))(x)
    return tf.keras.Model(tokens, logits)


PRESETS = {
    "lstm": {
        "embedding": frozen.FreezeSpec(layers=("embedding",)),
        "recurrent": frozen.FreezeSpec(layer_types=("LSTM",)),
        "all_but_output": frozen.FreezeSpec(all_but_last=1),
    },
    "transformer": {
        "embedding": frozen.FreezeSpec(layers=("embedding", "position_embedding")),
        "attention": frozen.FreezeSpec(layer_types=("MultiHeadAttention",)),
        "all_but_output": frozen.FreezeSpec(all_but_last=1),
    },
}

DEFAULT_VOCAB_SIZE = 10000


def total_vocab(vocab_size: int) -> int:
    """The model's vocabulary: the words plus pad, OOV, bos and eos (`special_ids`)."""
    return special_ids(vocab_size)["eos"] + 1


_SPEC = (
    tf.TensorSpec([None, SEQUENCE_LENGTH], tf.int32),
    tf.TensorSpec([None, SEQUENCE_LENGTH], tf.int32),
)
# The models without the data (tff_fedpt.tasks.catalog), at the default vocabulary.
CATALOG = {
    "lstm": base.ModelSpec(
        lambda seed: lstm(seed, total_vocab(DEFAULT_VOCAB_SIZE)), _SPEC, PRESETS["lstm"]
    ),
    "transformer": base.ModelSpec(
        lambda seed: transformer(seed, total_vocab(DEFAULT_VOCAB_SIZE)),
        _SPEC,
        PRESETS["transformer"],
    ),
}


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """The task's options as the binary's flags (scripts/run_stackoverflow.py)."""

    vocab_size: int = option(DEFAULT_VOCAB_SIZE, "Vocabulary size (most frequent words).")
    max_test_examples: int = option(10000, "Test examples used for evaluation.")
    cache_dir: Optional[str] = option(
        None, "Directory holding stackoverflow.sqlite (default ~/.tff)."
    )

    def load_kwargs(self) -> dict:
        """The arguments of `load` these options ask for."""
        return dataclasses.asdict(self)


def load(
    *,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    cache_dir: str | None = None,
    max_test_examples: int = DataOptions.max_test_examples,
) -> base.Task:
    """The StackOverflow next-word prediction task.

    Raises:
      DatasetNotFoundError: if `<cache_dir>/stackoverflow.sqlite` or the word-count
        file is missing.
      ValueError: for a non-positive vocabulary size.
    """
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1; received {vocab_size}.")
    cache_dir = cache_dir or default_cache_dir()
    database = os.path.join(cache_dir, DATABASE)
    if not os.path.exists(database):
        raise base.DatasetNotFoundError(
            f"StackOverflow data not found: looked for {database}. On a machine with "
            "network, run tff.simulation.datasets.stackoverflow.load_data(cache_dir=...) "
            f"once, or copy {DATABASE} into that directory (or pass cache_dir: --cache_dir "
            "in the binaries)."
        )
    counts = _word_counts_path(cache_dir)
    if counts is None:
        raise base.DatasetNotFoundError(
            "StackOverflow word counts not found: looked for "
            f"{os.path.join(cache_dir, 'datasets', WORD_COUNTS)} and "
            f"{os.path.join(cache_dir, WORD_COUNTS)}. On a machine with network, run "
            "tff.simulation.datasets.stackoverflow.load_word_counts(cache_dir=...) once "
            "(one 'word count' pair per line, most frequent first)."
        )
    base.check_sqlite(database, ("examples", "client_metadata"), ("train", "test"))
    vocab = load_vocabulary(counts, vocab_size)
    train, _, test = tff.simulation.datasets.stackoverflow.load_data(cache_dir=cache_dir)
    ids = special_ids(len(vocab))
    vocabulary = total_vocab(len(vocab))
    masked = (ids["pad"], ids["oov"], ids["bos"], ids["eos"])
    return base.Task(
        name="stackoverflow",
        train_data=train,
        test_data=test.create_tf_dataset_from_all_clients().take(max_test_examples),
        to_model_input=build_to_ids(vocab),
        models={
            "lstm": lambda seed=0: lstm(seed, vocabulary),
            "transformer": lambda seed=0: transformer(seed, vocabulary),
        },
        freeze_presets=PRESETS,
        loss_fn=lambda: tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics_fn=lambda: [MaskedAccuracy(masked)],
        default_model="lstm",
        narrow_models={"lstm": lambda seed, width: lstm(seed, vocabulary, units=width)},
        default_freeze="embedding",
        settings=dict(
            vocab_size=vocab_size,
            database_bytes=os.path.getsize(database),
            max_test_examples=max_test_examples,
        ),
    )

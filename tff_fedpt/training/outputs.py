"""Where a run writes, and the rows it writes: directories, CSV files, the run record.

Layout (google-research/federated's):

    root_output_dir/checkpoints/<experiment_name>/   program_state_N/, experiment.json
    root_output_dir/results/<experiment_name>/       metrics.csv, hparams.csv
    root_output_dir/logdir/<experiment_name>/        TensorBoard summaries

`experiment.json` sits with the checkpoints: it records every setting that defines the
run (the config and the task's own settings), and a resume is checked against it.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from tff_fedpt import communication
from tff_fedpt.training import config as config_lib
from tff_fedpt.training.config import ConfigError, LoopOptions

if TYPE_CHECKING:
    from tff_fedpt.training.config import ExperimentConfig

RECORD = "experiment.json"


def output_dirs(config: ExperimentConfig | LoopOptions) -> dict[str, str]:
    """{"checkpoints", "results", "logdir"} -> this experiment's directory (from its
    root_output_dir and experiment_name)."""
    if not config.experiment_name:
        raise ConfigError(
            "experiment_name is empty; resolve the config with its task first.", ["experiment_name"]
        )
    return {
        name: os.path.join(config.root_output_dir, name, config.experiment_name)
        for name in ("checkpoints", "results", "logdir")
    }


METRICS = "metrics.csv"
HPARAMS = "hparams.csv"


def run_metrics(root_output_dir: str, name: str) -> list[dict[str, str]]:
    """The metrics.csv rows of the run `name` under `root_output_dir` (as strings)."""
    return read_csv(os.path.join(root_output_dir, "results", name, METRICS))


def run_hparams(root_output_dir: str, name: str) -> dict[str, str]:
    """The settings of the run `name` (its hparams.csv: flag name -> value, as strings)."""
    rows = read_csv(os.path.join(root_output_dir, "results", name, HPARAMS))
    return {r["name"]: r["value"] for r in rows}


def fork_run(root_output_dir: str, source: str, name: str) -> bool:
    """Copies the run `source` (checkpoints, results, summaries) under the experiment name
    `name`, once, so that `name` continues it for more rounds (`--total_rounds`) on the
    very same trajectory while `source` stays as it was.

    The copy's record (the settings a resume must match) names `name`; everything else
    in it is the source's. The checkpoints are staged and renamed into place, so a copy
    exists whole or not at all.

    Returns:
      Whether a copy was made (False: `name` already exists and is left alone).

    Raises:
      ConfigError: when `source` has no checkpoints, or no record.
    """
    dirs = {k: os.path.join(root_output_dir, k) for k in ("checkpoints", "results", "logdir")}
    source_checkpoints = os.path.join(dirs["checkpoints"], source)
    destination = os.path.join(dirs["checkpoints"], name)
    if os.path.exists(destination):
        return False
    if not os.path.exists(os.path.join(source_checkpoints, RECORD)):
        raise ConfigError(f"fork_run: {source_checkpoints} holds no run to continue (no {RECORD}).")
    for kind in ("results", "logdir"):
        src = os.path.join(dirs[kind], source)
        if os.path.exists(src):
            shutil.rmtree(os.path.join(dirs[kind], name), ignore_errors=True)
            shutil.copytree(src, os.path.join(dirs[kind], name))
    staging = destination + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source_checkpoints, staging)
    record_path = os.path.join(staging, RECORD)
    with open(record_path) as f:
        record = json.load(f)
    record["--experiment_name"] = name
    with open(record_path, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    os.rename(staging, destination)
    return True


def os_error_reason(error: OSError, exists: str = "a parent is a regular file") -> str:
    """A short reason for a failed create or write (`exists`: what EEXIST means there)."""
    return {
        errno.ENOTDIR: "a parent is a regular file, not a directory",
        errno.EEXIST: exists,
        errno.EROFS: "the filesystem is read-only",
        errno.EACCES: "permission denied",
    }.get(error.errno, error.strerror)


def make_dirs(dirs: Mapping[str, str]) -> None:
    """Creates the output directories; a path that cannot be one is a ConfigError."""
    for path in dirs.values():
        try:
            os.makedirs(path, exist_ok=True)
            probe = os.path.join(path, ".write_test")
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as e:
            reason = os_error_reason(e, "a regular file of that name exists")
            raise ConfigError(
                f"root_output_dir: cannot create or write {path} ({reason}). Choose a "
                "writable directory.",
                ["root_output_dir"],
            ) from None


class RunInProgressError(ConfigError):
    """Another process holds the experiment's lock (its run is in progress)."""


class RunLock:
    """One run per experiment: an exclusive `flock` on <results>/.lock.

    The kernel drops the lock when its process dies, so a killed run never blocks its
    own resume.
    """

    def __init__(self, results_dir: str):
        self.path = os.path.join(results_dir, ".lock")
        self._file = None

    def acquire(self) -> None:
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunInProgressError(
                f"experiment {os.path.basename(os.path.dirname(self.path))!r} is already "
                f"running ({holder}, lock {self.path}). Wait for it to finish, or use "
                "another experiment_name or root_output_dir.",
                ["experiment_name", "root_output_dir"],
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the flock
            self._file = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


# ---------------------------------------------------------------------------
# CSV files.


def read_csv(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv_atomic(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Writes `rows` (columns: union of keys, in first-seen order) via rename."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def metrics_rows_up_to(path: str, version: int) -> list[dict[str, Any]]:
    """The metrics rows of rounds 1..version, checked; the rest are cut on resume.

    Raises:
      ConfigError: if the file is unreadable, lacks a `round` column, has a row that is
        not a round number, or does not hold exactly rounds 1..version.
    """
    try:
        rows = read_csv(path)
    except (OSError, csv.Error, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} cannot be read ({e}); move it away to resume.") from None
    if rows and "round" not in rows[0]:
        raise ConfigError(
            f"{path} has no 'round' column (columns: {list(rows[0])[:5]}...); it was edited "
            "or is not this experiment's. Move it away to resume (a new one is started)."
        )
    kept = []
    for line, row in enumerate(rows, start=2):
        try:
            round_num = int(row["round"])
        except (TypeError, ValueError):
            raise ConfigError(
                f"{path} line {line}: round {row['round']!r} is not a round number; the file "
                "was edited. Fix or remove that line to resume."
            ) from None
        if round_num <= version:
            kept.append(row)
    if version and [int(r["round"]) for r in kept] != list(range(1, version + 1)):
        raise ConfigError(
            f"{path} does not hold rounds 1..{version} once each (the checkpoint is at "
            f"round {version}); the results directory was changed by hand. Use another "
            "experiment_name, or move the file away to start its metrics anew.",
            ["experiment_name"],
        )
    return kept


# ---------------------------------------------------------------------------
# The run record: every setting that defines the run, kept with the checkpoints.


# Fields added after runs were recorded: at their default they stay out of the record, so
# those runs still resume.
ADDED_FIELDS = {"frozen_generator": "philox"}


def run_record(
    config: ExperimentConfig,
    task,
    noise_multiplier: Optional[float] = None,
    *,
    pretrained_fingerprint: Optional[str] = None,
) -> dict[str, str]:
    """What defines a run: the config (less resumable fields), the task's settings, a
    fingerprint of its clients (their number and a hash of their ids), under DP the
    noise multiplier in force (calibrated to --target_epsilon over --total_rounds, so a
    resume with other total rounds would change the noise mid-run), and the SHA-256 of
    --pretrained_weights (a resume on other pretrained values is refused)."""
    record = {
        f"--{k}": v
        for k, v in config.hparams().items()
        if k not in config_lib.RESUMABLE_FIELDS and ADDED_FIELDS.get(k, object()) != v
    }
    if noise_multiplier is not None:
        record["privacy:noise_multiplier"] = repr(float(noise_multiplier))
    if pretrained_fingerprint is not None:
        record["pretrained:sha256"] = pretrained_fingerprint
    record.update({f"task:{k}": str(v) for k, v in task.settings.items()})
    ids = list(task.train_data.client_ids)
    record["data:clients"] = str(len(ids))
    record["data:client_ids_sha256"] = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    return record


def check_and_write_record(
    checkpoint_dir: str, record: Mapping[str, str], has_checkpoints: bool, *, write: bool = True
) -> None:
    """Compares `record` with the saved one, then (`write`) saves it.

    Raises:
      ConfigError: naming every setting that differs, or when checkpoints exist without
        a record (it was deleted: nothing can be checked).
    """
    path = os.path.join(checkpoint_dir, RECORD)
    if os.path.exists(path):
        try:
            with open(path) as f:
                saved = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError(
                f"{path} is unreadable ({e}); it records the settings the checkpoints were "
                "made with. Restore it, or use another experiment_name.",
                ["experiment_name"],
            ) from None
        changed = sorted(k for k in set(saved) | set(record) if saved.get(k) != record.get(k))
        if changed:
            details = ", ".join(
                f"{k}: saved {saved.get(k)!r}, now {record.get(k)!r}" for k in changed
            )
            raise ConfigError(
                f"{checkpoint_dir} holds a run with other settings ({details}); its "
                "checkpoints cannot be resumed with these. Use the saved settings, or "
                "another experiment_name or root_output_dir.",
                ["experiment_name", "root_output_dir"],
            )
    elif has_checkpoints:
        raise ConfigError(
            f"{checkpoint_dir} has checkpoints but no {RECORD} (the record of the settings "
            "they were made with), so a resume cannot be checked. Use another "
            "experiment_name, or remove that directory to start over.",
            ["experiment_name"],
        )
    if not write:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dict(record), f, indent=1, sort_keys=True)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------
# Rows.


def flatten_metrics(metrics: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested metrics -> {"a/b/c": scalar}; empty groups and non-scalars are dropped."""
    flat = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, name + "/"))
        elif isinstance(value, (tuple, list)) and not value:
            continue
        else:
            array = np.asarray(value)
            if array.ndim == 0:
                flat[name] = array.item()
    return flat


_COMMUNICATION = (
    "broadcast_bytes_per_client",
    "upload_bytes_per_client",
    "round_broadcast_bytes",
    "round_upload_bytes",
    "cumulative_broadcast_bytes",
    "cumulative_upload_bytes",
)


def round_row(
    round_num: int,
    metrics: Mapping,
    cost,
    previous_row: Optional[Mapping[str, Any]],
    round_seconds: float,
    clients: int,
) -> dict[str, Any]:
    """One metrics.csv row from a round's metrics.

    Communication comes from the process's own `communication` metrics where it has
    them (FedPT, PVT), else from `cost` per client (TFF's FedAvg), accumulated on the
    previous row by the same `communication.account_round` the processes run.
    """
    row: dict[str, Any] = {"round": round_num}
    for key, value in flatten_metrics(metrics).items():
        if key.startswith("client_work/train/"):
            row["train/" + key[len("client_work/train/") :]] = value
        elif not key.startswith("communication/"):
            row[key] = value
    comm = metrics.get("communication") if isinstance(metrics, Mapping) else None
    if not comm:
        previous = previous_row or {}
        _, comm = communication.account_round(
            {
                "broadcast_bytes": np.int64(previous.get("cumulative_broadcast_bytes", 0)),
                "upload_bytes": np.int64(previous.get("cumulative_upload_bytes", 0)),
            },
            np.int64(clients),
            cost.broadcast_bytes_per_client,
            cost.upload_bytes_per_client,
        )
    row["clients"] = int(comm["clients"])
    row.update({k: int(comm[k]) for k in _COMMUNICATION})
    row["cumulative_megabytes"] = (
        row["cumulative_broadcast_bytes"] + row["cumulative_upload_bytes"]
    ) / 1e6
    row["round_seconds"] = round_seconds
    return row

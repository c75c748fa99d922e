"""Checkpoints: TFF's FileProgramStateManager, with recovery from partial or corrupt saves."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
from typing import Any

import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt.training.config import ConfigError

PREFIX = "program_state_"
_PARTIAL = re.compile(rf"^{PREFIX}\d+_temp")  # left by a save that was killed
_SAVED = re.compile(rf"^{PREFIX}(\d+)$")


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A checkpoint that could not be loaded and was moved aside."""

    version: int
    reason: str
    moved_to: str


def run_async(coroutine):
    # Not asyncio.run: it clears the thread's event loop, which breaks later callers of
    # asyncio.get_event_loop() such as tff.simulation.run_training_process.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


class CheckpointStore:
    """The checkpoints of one experiment (the last `keep` are kept)."""

    def __init__(self, directory: str, keep: int = 3):
        self.directory = directory
        self._manager = tff.program.FileProgramStateManager(
            directory, keep_total=keep, keep_first=False
        )

    def versions(self) -> list[int]:
        """The saved versions, oldest first. Read synchronously (the names TFF's
        `FileProgramStateManager.get_versions` reads), not through an event loop: it is
        also called from a SIGINT handler, which can run while TFF's own loop is running."""
        if not tf.io.gfile.isdir(self.directory):
            return []
        names = (name.rstrip("/") for name in tf.io.gfile.listdir(self.directory))
        return sorted(int(m.group(1)) for m in map(_SAVED.match, names) if m)

    def remove_partial_saves(self) -> list[str]:
        """Deletes the temporary directories of saves that were interrupted."""
        removed = []
        if os.path.isdir(self.directory):
            for entry in sorted(os.listdir(self.directory)):
                if _PARTIAL.match(entry):
                    shutil.rmtree(os.path.join(self.directory, entry), ignore_errors=True)
                    removed.append(entry)
        return removed

    def load_latest(self, structure: Any) -> tuple[Any, int, list[Skipped]]:
        """The newest checkpoint that loads: (state, version, skipped newer ones).

        A newer checkpoint that fails to load is moved aside to
        `program_state_N.corrupt` (kept for inspection) once an older one loads, so the
        run resumes from the newest intact state and can save round N again.

        Returns:
          (structure, 0, []) when there is no checkpoint.

        Raises:
          ConfigError: when checkpoints exist but none loads, naming each and why.
        """
        failures: list[tuple[int, str]] = []
        for version in sorted(self.versions(), reverse=True):
            try:
                state = run_async(self._manager.load(version, structure))
            except Exception as e:  # noqa: BLE001 - any failure means unusable
                failures.append((version, f"{type(e).__name__}: {_first_line(e)}"))
                continue
            skipped = []
            for bad, reason in failures:
                source = os.path.join(self.directory, f"{PREFIX}{bad}")
                target = source + ".corrupt"
                shutil.rmtree(target, ignore_errors=True)
                os.replace(source, target)
                skipped.append(Skipped(bad, reason, target))
            return state, version, skipped
        if failures:
            details = "; ".join(f"round {v}: {r}" for v, r in failures)
            raise ConfigError(
                f"No checkpoint in {self.directory} can be loaded ({details}). Remove that "
                "directory to start over, or use another experiment_name.",
                ["experiment_name"],
            )
        return structure, 0, []

    def save(self, state: Any, version: int) -> None:
        run_async(self._manager.save(state, version))


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else repr(error)

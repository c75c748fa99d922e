"""Reading and writing the device's .npz files (round files, updates, stored features):
errors are one `DeviceError` naming the file, and a written file is whole or absent."""

from __future__ import annotations

import os
import zipfile

import numpy as np

from fedpt_device.protocol import DeviceError


def read(path: str | os.PathLike, named: str | None = None, context: str = "") -> dict:
    """Every array of `path`; the error names it as `named` (a flag, say; default the
    path) after `context` (the caller)."""
    try:
        with np.load(path) as f:
            return dict(f)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DeviceError(
            f"{context}cannot read {named or path}: {type(e).__name__}: {e}"
        ) from None


def write(path: str | os.PathLike, arrays: dict) -> None:
    """Writes exactly `path` (np.savez would add .npz to another name), whole or not."""
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)

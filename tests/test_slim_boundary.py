"""The slim device client at its boundary (issue: no silently wrong result): labels out of
range, a Flex file, corrupted files, the round file's keys and the path of the updates."""

import os
import subprocess

import numpy as np
import pytest
import tensorflow_federated as tff

from tff_fedpt import device

from .test_portable import ROOT, SLIM_PYTHON, _portable_fn


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("slim")
    optimizer = tff.learning.optimizers.build_sgdm(0.1)
    model_fn = _portable_fn()
    builtin = device.export_tflite(model_fn, optimizer, batch_size=4, builtins_only=True)
    (tmp / "builtin.tflite").write_bytes(builtin)
    (tmp / "flex.tflite").write_bytes(device.export_tflite(model_fn, optimizer))
    rng = np.random.default_rng(0)
    arrays = {
        f"trainable_{i:03d}": rng.normal(size=shape).astype(np.float32) * 0.1
        for i, shape in enumerate([(3, 3, 1, 16), (16,), (3, 3, 16, 32), (32,), (64, 10), (10,)])
    }
    arrays.update(
        frozen_seed=np.int64(3),
        batch_size=np.int64(4),
        x_000=rng.random((8, 8, 8, 1)).astype(np.float32),
        y_000=rng.integers(0, 10, 8).astype(np.int32),
    )
    return tmp, arrays


def _device(tmp, model, arrays, updates="updates.npz", *flags):
    np.savez(tmp / "round.npz", **arrays)
    assert os.path.exists(SLIM_PYTHON), "no .venv-slim: run `make slim` (make test does)"
    return subprocess.run(
        [SLIM_PYTHON, "-m", "fedpt_device", f"--model={tmp / model}", f"--round={tmp}/round.npz",
         f"--updates={tmp / updates}", "--check_no_tensorflow", *flags],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": ROOT},
    )  # fmt: skip


def _one_line(result, *needles):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, (result.returncode, result.stderr[-2000:])
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_updates_go_to_exactly_the_path_given_and_labels_are_checked(files):
    tmp, arrays = files
    result = _device(tmp, "builtin.tflite", arrays, updates="x.bin")
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.path.exists(tmp / "x.bin") and not os.path.exists(tmp / "x.bin.npz")
    with np.load(tmp / "x.bin") as f:
        assert float(f["weight_000"]) == 8.0
    _one_line(_device(tmp, "builtin.tflite", arrays, updates=""), "--updates=", "directory")
    _one_line(
        _device(tmp, "builtin.tflite", arrays, "u.npz", "--features_batch_size=-1"),
        "--features_batch_size must be >= 0; received -1",
    )
    for bad in (99, -1):
        labels = arrays["y_000"].copy()
        labels[3] = bad
        _one_line(
            _device(tmp, "builtin.tflite", {**arrays, "y_000": labels}),
            "train: argument 'y' holds labels from",
            "labels must be in [0, 9]",
        )


def test_round_file_missing_keys_or_truncated_is_one_line(files):
    tmp, arrays = files
    partial = {k: v for k, v in arrays.items() if k not in ("frozen_seed", "y_000")}
    _one_line(_device(tmp, "builtin.tflite", partial), "lacks frozen_seed, y_000")
    np.savez(tmp / "whole.npz", **arrays)
    (tmp / "cut.npz").write_bytes((tmp / "whole.npz").read_bytes()[:200])
    result = subprocess.run(
        [SLIM_PYTHON, "-m", "fedpt_device", f"--model={tmp}/builtin.tflite",
         f"--round={tmp}/cut.npz", f"--updates={tmp}/u.npz"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": ROOT},
    )  # fmt: skip
    _one_line(result, "cannot read --round=")


def test_a_flex_file_and_corrupted_files_are_refused_when_loaded(files):
    tmp, arrays = files
    _one_line(
        _device(tmp, "flex.tflite", arrays),
        "needs the Flex delegate (FlexSparseSoftmaxCrossEntropyWithLogits)",
        "builtins_only=True",
    )
    data = (tmp / "builtin.tflite").read_bytes()
    # Byte windows that crashed the runtime (signal 11) before the file was probed in a
    # child; each must now be an exit 0 (the damage only hit weights) or one line.
    for fraction in (5 / 12, 6 / 12, 11 / 12):
        start = int(len(data) * fraction)
        broken = data[:start] + b"\xff" * 64 + data[start + 64 :]
        (tmp / "broken.tflite").write_bytes(broken)
        result = _device(tmp, "broken.tflite", arrays)
        assert result.returncode in (0, 2), (fraction, result.returncode, result.stderr[-1000:])
        if result.returncode == 2:
            _one_line(result, "broken.tflite")

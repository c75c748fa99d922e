"""The device half of FedPT without TensorFlow: a client that runs an exported `.tflite`
file, and the few names and checks both runtimes share (NumPy only).

`Client` holds the logic (the broadcast in, local training, the update out, every value
checked at the boundary); `SlimDeviceClient` runs it on the slim runtime (`tflite_runtime`
or `ai_edge_litert`) with the builtin op resolver, so a file from
`tff_fedpt.device.export_tflite(..., builtins_only=True)` trains where TensorFlow is not
installed. `tff_fedpt.device.DeviceClient` is the same client on TensorFlow's interpreter.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional

import numpy as np

from fedpt_device import npz
from fedpt_device.protocol import (
    FEATURES_SIGNATURE,
    FINGERPRINT_SIGNATURE,
    SEED,
    SIGNATURES,
    DeviceError,
    DeviceUpdate,
    check_frozen_seed,
    delta_name,
    fingerprint_hex,
    mismatch_message,
    read_file_header,
    trainable_name,
)


def _described(identity: dict) -> str:
    fingerprint = identity["frozen_fingerprint"] or "none"
    return f"frozen seed {identity[SEED]}, pretrained fingerprint {fingerprint}"


class Client:
    """One device running a FedPT client file in a TensorFlow Lite interpreter (any with
    `get_signature_runner`): what crosses the boundary is checked here, in NumPy.
    `tff_fedpt.device.DeviceClient` (TensorFlow's interpreter) and `SlimDeviceClient`
    (the slim runtime) build on it."""

    def __init__(self, interpreter):
        self._interpreter = interpreter
        found = self._interpreter.get_signature_list()
        names = [*SIGNATURES, *((FEATURES_SIGNATURE,) if FEATURES_SIGNATURE in found else ())]
        self._runners = {s: self._interpreter.get_signature_runner(s) for s in names}
        self._inputs = {s: self._runners[s].get_input_details() for s in names}
        # A file that trains on the frozen prefix's output (its `features` signature).
        self.trains_on_features = FEATURES_SIGNATURE in found
        self.fingerprint = None
        if FINGERPRINT_SIGNATURE in self._interpreter.get_signature_list():
            words = self._interpreter.get_signature_runner(FINGERPRINT_SIGNATURE)()["fingerprint"]
            self.fingerprint = fingerprint_hex(words)
        self._trained = False
        self._started = False
        predictions = self._runners["evaluate"].get_output_details().get("predictions")
        classes = int(predictions["shape_signature"][-1]) if predictions is not None else -1
        self.num_classes = classes if classes > 0 else None

    @property
    def num_trainable(self) -> int:
        return len(self._inputs["start_round"]) - 1

    def _check(self, signature: str, name: str, value) -> np.ndarray:
        detail = self._inputs[signature][name]
        array = np.asarray(value)
        if array.dtype != detail["dtype"]:
            raise DeviceError(
                f"{signature}: argument {name!r} has dtype {array.dtype}; expected "
                f"{np.dtype(detail['dtype']).name}."
            )
        expected = detail["shape_signature"]
        if array.ndim != len(expected) or any(
            e != -1 and e != d for e, d in zip(expected, array.shape)
        ):
            shape = tuple(None if e == -1 else int(e) for e in expected)
            raise DeviceError(
                f"{signature}: argument {name!r} has shape {array.shape}; expected {shape}."
            )
        if (
            name == "y"
            and self.num_classes
            and array.size
            and np.issubdtype(array.dtype, np.integer)
        ):
            low, high = int(array.min()), int(array.max())
            if low < 0 or high >= self.num_classes:
                raise DeviceError(
                    f"{signature}: argument 'y' holds labels from {low} to {high}; the model "
                    f"has {self.num_classes} classes, so labels must be in [0, "
                    f"{self.num_classes - 1}]."
                )
        return array

    def _check_fingerprint(self, frozen_fingerprint) -> None:
        if frozen_fingerprint is None and self.fingerprint is None:
            return
        if frozen_fingerprint is None:
            raise DeviceError(
                f"start_round: this file holds pretrained frozen values (fingerprint "
                f"{self.fingerprint}); pass the broadcast's 'frozen_fingerprint'."
            )
        received = (
            frozen_fingerprint
            if isinstance(frozen_fingerprint, str)
            else fingerprint_hex(frozen_fingerprint)
        )
        if self.fingerprint is None:
            raise DeviceError(
                f"start_round: the broadcast carries pretrained fingerprint {received}, but "
                "this file holds no pretrained frozen value; export the process's client."
            )
        if received != self.fingerprint:
            raise DeviceError(
                "start_round: " + mismatch_message("this device's file", received, self.fingerprint)
            )

    def start_round(
        self, trainable: Sequence[np.ndarray], frozen_seed, frozen_fingerprint=None
    ) -> None:
        """Receives the broadcast: the trainable weights, the frozen seed and, for a
        process with pretrained frozen values, their fingerprint (checked against the
        values this file holds before anything is trained)."""
        self._check_fingerprint(frozen_fingerprint)
        if len(trainable) != self.num_trainable:
            raise DeviceError(
                f"start_round: {len(trainable)} trainable tensors received; the model has "
                f"{self.num_trainable}."
            )
        try:
            seed = check_frozen_seed(frozen_seed, f"argument {SEED!r}")
        except (TypeError, ValueError) as e:
            raise DeviceError(f"start_round: {e}") from None
        kwargs = {
            trainable_name(i): self._check("start_round", trainable_name(i), t)
            for i, t in enumerate(trainable)
        }
        kwargs[SEED] = self._check("start_round", SEED, np.asarray(seed))
        self._runners["start_round"](**kwargs)
        self._started, self._trained, self._seed = True, False, int(seed)

    def train_step(self, x, y) -> float:
        """One optimizer step on one batch; returns the loss."""
        if not self._started:
            raise DeviceError("train: called before start_round (no broadcast received).")
        out = self._runners["train"](x=self._check("train", "x", x), y=self._check("train", "y", y))
        self._trained = True
        return float(out["loss"])

    def features(self, x, batch_size: Optional[int] = None) -> np.ndarray:
        """The frozen prefix's output for examples `x`, which `train` and `evaluate` take
        (`x_is_features=True`) in place of `x` in this round and the next ones: the
        prefix is frozen, so an app computes them once per example and keeps them.

        `batch_size`: examples per call of the features signature. By default the file's
        batch (a fixed batch dimension, the last call padded) or all of `x` at once. The
        prefix's activations are held for one call's examples, so smaller calls lower the
        peak memory (docs/features.md: per example, 58 MiB instead of 74 for TFF's EMNIST
        CNN's backbone, batch 20) and give the same features.
        """
        if not self.trains_on_features:
            raise DeviceError(
                "features: this file has no features signature (it trains on inputs; "
                "export it with train_on_features=True)."
            )
        if not self._started:
            raise DeviceError("features: called before start_round (the frozen values).")
        x = np.asarray(x)
        fixed = int(self._inputs[FEATURES_SIGNATURE]["x"]["shape_signature"][0])
        if batch_size is None:
            step, pad = (fixed, True) if fixed > 0 else (max(len(x), 1), False)
        elif (
            isinstance(batch_size, (bool, np.bool_))
            or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1
        ):
            raise DeviceError(
                f"features: batch_size must be an integer >= 1 (or None: the file's batch); "
                f"received {type(batch_size).__name__} {batch_size!r}."
            )
        else:
            step, pad = int(batch_size), False
        parts = []
        for start in range(0, len(x), step):
            batch = x[start : start + step]
            short = step - len(batch) if pad else 0
            if short:  # a fixed batch dimension: pad the last batch, keep its own rows
                batch = np.concatenate([batch, np.zeros((short, *batch.shape[1:]), batch.dtype)])
            parts.append(self._features_of(batch)[: len(batch) - short])
        return np.concatenate(parts) if parts else np.zeros((0,), np.float32)

    def _features_of(self, batch: np.ndarray) -> np.ndarray:
        """One call of the features signature, at `batch`'s own size (the runtime resizes
        a fixed batch dimension); an output that is not one row of the features' shape
        per example (a prefix whose ops fixed the batch at export) is refused."""
        detail = self._inputs[FEATURES_SIGNATURE]["x"]
        expected = tuple(int(d) for d in detail["shape_signature"][1:])
        if batch.dtype != detail["dtype"] or tuple(batch.shape[1:]) != expected:
            self._check(FEATURES_SIGNATURE, "x", batch)  # names the dtype or the shape
        rows = tuple(int(d) for d in self._inputs["train"]["x"]["shape_signature"][1:])
        try:
            out = np.asarray(self._runners[FEATURES_SIGNATURE](x=batch)["features"])
        except (RuntimeError, ValueError):  # the runtime's own words: a resize it refused
            out = np.zeros((0,))
        if out.shape != (len(batch), *rows):
            raise DeviceError(
                f"features: a call with {len(batch)} examples gave no features of shape "
                f"{(len(batch), *rows)}: this file's prefix fixes its batch "
                f"at {int(detail['shape_signature'][0])}; pass that batch_size (or None)."
            )
        return out

    def save_features(
        self, path: str | os.PathLike, x, batch_size: Optional[int] = None
    ) -> np.ndarray:
        """Computes `features(x, batch_size)`, writes them to `path` (an .npz, whole or not
        at all) with what identifies the frozen prefix that made them, and returns them.
        `load_features` refuses the file on a client whose prefix computes otherwise."""
        values = self.features(x, batch_size)
        npz.write(path, dict(features=values, probe=self._probe(), **self._identity()))
        return values

    def load_features(self, path: str | os.PathLike) -> np.ndarray:
        """Features kept by `save_features`, for `train(..., x_is_features=True)`.

        Raises:
          DeviceError: for a file that cannot be read or lacks a key, or features made by
            another frozen prefix (other layers, seed or pretrained values: its output on
            a fixed probe input differs from this file's), or of another shape.
        """
        if not self.trains_on_features:
            raise DeviceError("load_features: this file trains on inputs (no features signature).")
        if not self._started:
            raise DeviceError("load_features: called before start_round (the frozen values).")
        stored = npz.read(path, context="load_features: ")
        missing = [k for k in ("features", "probe", *self._identity()) if k not in stored]
        if missing:
            raise DeviceError(
                f"load_features: {path} lacks {missing}; write it with save_features."
            )
        probe = self._probe()
        made_by = {k: stored[k].item() for k in self._identity()}
        if stored["probe"].shape != probe.shape or not np.allclose(
            stored["probe"], probe, rtol=1e-4, atol=1e-5
        ):
            raise DeviceError(
                f"load_features: {path} holds features of another frozen prefix "
                f"({_described(made_by)}); this client's file and broadcast give "
                f"{_described(self._identity())}, and the two compute different features. "
                "Compute them again with save_features."
            )
        values, detail = stored["features"], self._inputs["train"]["x"]
        wanted = tuple(int(d) for d in detail["shape_signature"][1:])
        if values.dtype != detail["dtype"] or values.shape[1:] != wanted:
            raise DeviceError(
                f"load_features: {path} holds {values.dtype} features of shape "
                f"{values.shape[1:]} per example; this file trains on "
                f"{np.dtype(detail['dtype']).name} of shape {wanted}."
            )
        return values

    def _identity(self) -> dict:
        return {SEED: self._seed, "frozen_fingerprint": self.fingerprint or ""}

    def _probe(self) -> np.ndarray:
        """The frozen prefix's output on a fixed input: its layers and frozen values at
        work, which a stored seed or fingerprint alone would not show."""
        detail = self._inputs[FEATURES_SIGNATURE]["x"]
        shape = [int(d) if d > 0 else 1 for d in detail["shape_signature"]]
        dtype, rng = np.dtype(detail["dtype"]), np.random.default_rng(0)
        x = rng.uniform(0, 1, shape) if dtype.kind == "f" else rng.integers(0, 2, shape)
        out = self._runners[FEATURES_SIGNATURE](x=x.astype(dtype))["features"]
        return np.asarray(out[:1], np.float64).ravel()[:256]

    def evaluate(self, x, y) -> dict[str, np.ndarray]:
        if not self._started:
            raise DeviceError("evaluate: called before start_round (no broadcast received).")
        return self._runners["evaluate"](
            x=self._check("evaluate", "x", x), y=self._check("evaluate", "y", y)
        )

    def frozen_weights(self) -> list[np.ndarray]:
        """The frozen tensors the device regenerated from the seed."""
        if not self._started:
            raise DeviceError("frozen_weights: called before start_round.")
        out = self._runners["frozen_weights"]()
        return [out[k] for k in sorted(out)]

    def get_update(self) -> DeviceUpdate:
        """What the device uploads after training."""
        if not self._trained:
            raise DeviceError(
                "get_update: read before any training in this round (call start_round, "
                "then train)."
            )
        out = self._runners["get_update"]()
        delta = [out[delta_name(i)] for i in range(self.num_trainable)]
        return DeviceUpdate(delta, float(out["weight"]), int(out["num_examples"]))

    def train(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        batch_size: int,
        epochs: int = 1,
        shuffle_seed: Optional[int] = None,
        x_is_features: bool = False,
        features_batch_size: Optional[int] = None,
    ) -> DeviceUpdate:
        """A client's local training from numpy arrays, as a device does it.

        Batches of `batch_size` in order (or shuffled per epoch with `shuffle_seed`), the
        last batch of an epoch possibly smaller; returns the update to upload. A file that
        trains on features (`trains_on_features`) maps `x` through its frozen prefix once
        first (`features(x, features_batch_size)`), unless `x_is_features` (`x` is what
        `features` returned, kept by the app).
        """
        if self.trains_on_features and not x_is_features:
            x = self.features(x, features_batch_size)
        elif x_is_features and not self.trains_on_features:
            raise DeviceError(
                "train: x_is_features=True, but this file trains on inputs (no features "
                "signature)."
            )
        if len(x) != len(y) or len(x) == 0:
            raise DeviceError(
                f"train: x and y need the same, non-zero length; got {len(x)}, {len(y)}."
            )
        for name, value in (("batch_size", batch_size), ("epochs", epochs)):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise DeviceError(
                    f"train: {name} must be an integer >= 1; received "
                    f"{type(value).__name__} {value!r}."
                )
            if value < 1:
                raise DeviceError(f"train: {name} must be >= 1; received {value}.")
        rng = np.random.default_rng(shuffle_seed)
        for _ in range(epochs):
            order = rng.permutation(len(x)) if shuffle_seed is not None else np.arange(len(x))
            for start in range(0, len(x), batch_size):
                idx = order[start : start + batch_size]
                self.train_step(x[idx], y[idx])
        return self.get_update()


def slim_interpreter(content: bytes):
    """The slim runtime's interpreter with builtin ops only (no delegate, no Flex)."""
    try:
        from tflite_runtime import interpreter as runtime
    except ImportError:
        try:
            from ai_edge_litert import interpreter as runtime
        except ImportError:
            raise DeviceError(
                "SlimDeviceClient needs the slim TensorFlow Lite runtime: pip install "
                "tflite-runtime==2.14.0 'numpy<2' (or ai-edge-litert); `make slim` builds "
                ".venv-slim with it."
            ) from None
    return runtime.Interpreter(
        model_content=content,
        experimental_op_resolver_type=runtime.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )


def allocate_signatures(interpreter) -> None:
    """Allocates every signature's subgraph now (an op the runtime cannot register fails
    here, when the file is loaded)."""
    for key in interpreter.get_signature_list():
        runner = interpreter.get_signature_runner(key)
        wrapper = getattr(runner, "_interpreter_wrapper", None)  # tflite_runtime, ai_edge_litert
        if wrapper is None:
            continue
        wrapper.AllocateTensors(runner._subgraph_index)


# The runtime reads the flatbuffer without verifying it: a corrupted file can crash the
# process. Each file is therefore first loaded and run once (`dry_round`) in a child.
_PROBE = """
import sys
from fedpt_device.client import slim_interpreter, dry_round
dry_round(slim_interpreter(sys.stdin.buffer.read()))
"""


def dry_round(interpreter) -> None:
    """Calls every signature once on zeros, in the order of a round: the runtime prepares
    some ops (Flex ops among them) only when they first run."""
    signatures = interpreter.get_signature_list()
    for key in (*SIGNATURES, *(k for k in signatures if k not in SIGNATURES)):
        if key not in signatures:
            continue
        runner = interpreter.get_signature_runner(key)
        runner(
            **{
                name: np.zeros(
                    np.where(d["shape_signature"] < 0, 2, d["shape_signature"]), d["dtype"]
                )
                for name, d in runner.get_input_details().items()
            }
        )


_PROBED: set[str] = set()  # sha256 of the files that loaded in a child


def _runtime_message(text: str) -> str:
    import re

    flex = re.search(r"\((Flex\w+)\)", text)
    if flex or "Select TensorFlow op" in text:
        op = f" ({flex.group(1)})" if flex else ""
        return (
            f"it needs the Flex delegate{op}, which the slim runtime lacks; export it with "
            "export_tflite(..., builtins_only=True)"
        )
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def probe_file(content: bytes, where: str) -> None:
    """Loads `content` in a child process first (once per file and process).

    Raises:
      DeviceError: when the runtime cannot load it or crashes on it (a corrupted file).
    """
    import hashlib
    import subprocess
    import sys

    digest = hashlib.sha256(content).hexdigest()
    if digest in _PROBED:
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], input=content, capture_output=True, timeout=300, env=env
    )
    if done.returncode < 0:
        raise DeviceError(
            f"{where}: the slim runtime crashed loading it (signal {-done.returncode}); the "
            "file is corrupted or truncated. Export it again."
        )
    if done.returncode != 0:
        message = _runtime_message(done.stderr.decode(errors="replace"))
        raise DeviceError(f"{where}: the slim runtime cannot load it: {message}.")
    _PROBED.add(digest)


class SlimDeviceClient(Client):
    """A device on the slim runtime (`tflite_runtime`, else `ai_edge_litert`), with the
    builtin op resolver only: it runs files from `export_tflite(..., builtins_only=True)`
    in a process that never imports TensorFlow. The file is first loaded in a child
    process (a corrupted file can crash the runtime), and every signature is prepared when
    it is loaded, so a file that needs Flex is refused then, naming the op.

    Args:
      tflite_model: The file's bytes or path.

    Raises:
      DeviceError: for a missing or empty file, one that is not TensorFlow Lite (no
        `TFL3` identifier), one the runtime cannot load, or one without the FedPT
        signatures.
    """

    def __init__(self, tflite_model: bytes | str | os.PathLike):
        content, where = read_file_header(tflite_model)
        probe_file(content, where)
        try:
            interpreter = slim_interpreter(content)
            allocate_signatures(interpreter)
        except DeviceError:
            raise
        except Exception as e:  # the runtime's own errors (RuntimeError, ValueError)
            message = _runtime_message(str(e)) if str(e).strip() else type(e).__name__
            raise DeviceError(f"{where}: the slim runtime cannot load it: {message}") from None
        missing = set(SIGNATURES) - set(interpreter.get_signature_list())
        if missing:
            raise DeviceError(f"{where} lacks the FedPT signatures {sorted(missing)}.")
        super().__init__(interpreter)

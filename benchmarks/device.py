"""Benchmarks of the device clients: the TFLite client's file size, peak memory and
train-step time (FedPT against the fully trainable model), and the builtin-only FedPT
client on the slim runtime without TensorFlow against the Flex clients."""

from __future__ import annotations

import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile

import tensorflow_federated as tff

import tff_fedpt
from benchmarks.common import BenchmarkError, fedpt_model_fn
from tff_fedpt.tasks import catalog

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLIM_PYTHON = os.path.join(ROOT, ".venv-slim", "bin", "python")


def _measure_client(content, runtime, steps, shape, classes, repeats=3, features_batch=0):
    """`python -m fedpt_device.measure` in fresh processes (medians): peak MiB of local
    training above the process's baseline, MiB after start_round, median step ms
    (`features_batch`: examples per call of a features signature; 0: the whole batch)."""
    python = SLIM_PYTHON if runtime == "slim" else sys.executable
    if not os.path.exists(python):
        raise BenchmarkError(f"{python} does not exist: run `make slim` first.")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        path, out = os.path.join(tmp, "client.tflite"), os.path.join(tmp, "out.json")
        with open(path, "wb") as f:
            f.write(content)
        for _ in range(repeats):
            subprocess.run(
                [python, "-m", "fedpt_device.measure", f"--model={path}", f"--runtime={runtime}",
                 f"--steps={steps}", f"--shape={','.join(map(str, shape))}",
                 f"--classes={classes}", "--batch=20", f"--features_batch={features_batch}",
                 f"--out={out}"],
                check=True,
                env={**os.environ, "PYTHONPATH": ROOT},
            )  # fmt: skip
            with open(out) as f:
                runs.append(json.load(f))
    if runtime == "slim" and any(r["tensorflow_imported"] for r in runs):
        raise AssertionError("the slim measurement imported TensorFlow")
    return dict(
        bytes=len(content),
        peak_mib=statistics.median(r["peak_kib"] for r in runs) / 1024,
        loaded_mib=statistics.median(r["loaded_kib"] for r in runs) / 1024,
        step_ms=statistics.median(r["step_s"] for r in runs) * 1000,
        features_ms=(
            None
            if runs[0].get("features_s") is None
            else statistics.median(r["features_s"] for r in runs) * 1000
        ),
    )


def device_client(params, log):
    """The TFLite device client: file size, peak memory of local training in the
    interpreter (a fresh process per measurement, its baseline RSS subtracted) and median
    train-step time, FedPT's client against the fully trainable model's (FedAvg)."""
    from tff_fedpt import device

    sgd = tff.learning.optimizers.build_sgdm(0.1)
    rows = []
    for key, freeze, shape in (
        ("emnist/cnn", "dense128", (28, 28, 1)),
        ("digits/cnn", "dense", (8, 8, 1)),
    ):
        spec = catalog.MODELS[key]
        classes = spec.build(0).output_shape[-1]
        measured = {}
        for client, preset in (("fedpt", freeze), ("fedavg", "none")):
            model_fn = fedpt_model_fn(
                lambda spec=spec: spec.build(0),
                spec.input_spec,
                tff_fedpt.frozen.parse_freeze(preset, spec.presets),
            )
            content = device.export_tflite(model_fn, sgd, batch_size=20)
            measured[client] = _measure_client(
                content, "tensorflow", params.device_steps, shape, classes
            )
            log(f"  {key} {client}: {measured[client]}")
        fedpt, fedavg = measured["fedpt"], measured["fedavg"]
        rows.append(
            collections.OrderedDict(
                model=f"{key} ({freeze} frozen), batch 20, SGD",
                fedpt_file_bytes=fedpt["bytes"],
                fedavg_file_bytes=fedavg["bytes"],
                file_ratio=fedavg["bytes"] / fedpt["bytes"],
                fedpt_peak_mib=fedpt["peak_mib"],
                fedavg_peak_mib=fedavg["peak_mib"],
                peak_ratio=fedpt["peak_mib"] / fedavg["peak_mib"],
                fedpt_after_start_round_mib=fedpt["loaded_mib"],
                fedavg_after_start_round_mib=fedavg["loaded_mib"],
                training_increment_ratio=(fedpt["peak_mib"] - fedpt["loaded_mib"])
                / (fedavg["peak_mib"] - fedavg["loaded_mib"]),
                fedpt_step_ms=fedpt["step_ms"],
                fedavg_step_ms=fedavg["step_ms"],
                step_ratio=fedpt["step_ms"] / fedavg["step_ms"],
            )
        )
    return rows


def _shared_library_mib(python, package):
    """MiB of the shared libraries (*.so*) in `package` as `python` imports it."""
    code = f"import os, {package} as p; print(os.path.dirname(p.__file__))"
    where = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    total = 0
    for directory, _, files in os.walk(where):
        total += sum(os.path.getsize(os.path.join(directory, f)) for f in files if ".so" in f)
    return total / 2**20


def device_slim(params, log):
    """FedPT on the stock TensorFlow Lite runtime: the builtin-only FedPT client (portable
    generator) on the slim runtime in a process without TensorFlow, against today's Flex
    FedAvg and Flex FedPT clients in TensorFlow's interpreter; TFF's EMNIST-62 CNN with
    dense-128 frozen, and with the whole backbone (convs + dense-128) frozen and the output
    layer trained."""
    from tff_fedpt import device

    sgd = tff.learning.optimizers.build_sgdm(0.1)
    spec = catalog.MODELS["emnist/cnn"]
    runtimes = {
        "slim": _shared_library_mib(SLIM_PYTHON, "tflite_runtime"),
        "tensorflow": _shared_library_mib(sys.executable, "tensorflow"),
    }
    rows = []
    for label, layers in (
        ("EMNIST-62 CNN, dense-128 frozen", ("dense128",)),
        ("EMNIST-62 CNN, backbone frozen, output layer trained", ("conv1", "conv2", "dense128")),
    ):
        measured = {}
        portable = tff_fedpt.FreezeSpec(layers=layers, generator="portable")
        # (client, freeze, builtins only, runtime); the builtin file also in TensorFlow's
        # interpreter, which separates what the file costs from what the runtime costs
        clients = [
            ("flex_fedavg", None, False, "tensorflow"),
            ("flex_fedpt", tff_fedpt.FreezeSpec(layers=layers), False, "tensorflow"),
            ("builtin_fedpt_slim", portable, True, "slim"),
            ("builtin_fedpt_in_tf_interpreter", portable, True, "tensorflow"),
        ]
        if layers[0] == "conv1":  # a frozen prefix: the features file too, its features
            # computed for the whole batch at once and one example at a time
            clients.append(("builtin_fedpt_slim_on_features", portable, True, "slim"))
            clients.append(("builtin_fedpt_slim_on_features_per_example", portable, True, "slim"))
        for client, freeze, builtins_only, where in clients:
            model_fn = fedpt_model_fn(lambda: spec.build(0), spec.input_spec, freeze)
            content = device.export_tflite(
                model_fn,
                sgd,
                batch_size=20,
                builtins_only=builtins_only,
                train_on_features="_on_features" in client,
            )
            measured[client] = _measure_client(
                content,
                where,
                params.device_steps,
                (28, 28, 1),
                62,
                features_batch=1 if client.endswith("_per_example") else 0,
            )
            measured[client].update(
                flex_ops=len(device.flex_ops(content)), runtime_mib=runtimes[where]
            )
            log(f"  {label} {client}: {measured[client]}")
        base = measured["flex_fedavg"]
        for client, m in measured.items():
            rows.append(
                collections.OrderedDict(
                    model=label,
                    client=client,
                    flex_ops=m["flex_ops"],
                    file_bytes=m["bytes"],
                    runtime_shared_libraries_mib=round(m["runtime_mib"], 1),
                    peak_mib=m["peak_mib"],
                    peak_vs_flex_fedavg=m["peak_mib"] / base["peak_mib"],
                    after_start_round_mib=m["loaded_mib"],
                    step_ms=m["step_ms"],
                    step_vs_flex_fedavg=m["step_ms"] / base["step_ms"],
                    features_once_ms=m["features_ms"],
                )
            )
    return rows

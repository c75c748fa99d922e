"""What the benchmarks share: model functions, synthetic clients, timed rounds, and the
peak memory of a training run in a child process."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

import tff_fedpt
from tff_fedpt import runtime

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class BenchmarkError(ValueError):
    """A benchmark parameter or prerequisite that is wrong, said in one line."""


def image_spec(shape, dtype=tf.float32):
    return (tf.TensorSpec([None, *shape], dtype), tf.TensorSpec([None], tf.int32))


def fedpt_model_fn(build, input_spec, freeze=None):
    """A model function of FedPT's model (`freeze` None: nothing frozen)."""
    return lambda: tff_fedpt.from_keras_model(
        build(), loss=LOSS, input_spec=input_spec, freeze=freeze
    )


def tff_model_fn(build, input_spec, keras_frozen=()):
    """A model function of TFF's own Keras model, with Keras' `trainable = False` on the
    layers named in `keras_frozen` (frozen the Keras way: still broadcast)."""

    def model_fn():
        model = build()
        for name in keras_frozen:
            model.get_layer(name).trainable = False
        return tff.learning.models.from_keras_model(model, loss=LOSS, input_spec=input_spec)

    return model_fn


def synthetic_clients(num_clients, examples, shape=(28, 28, 1), classes=62, batch=20, seed=0):
    rng = np.random.default_rng(seed)
    return [
        tf.data.Dataset.from_tensor_slices(
            (
                rng.random((examples, *shape), dtype=np.float32),
                rng.integers(0, classes, examples).astype(np.int32),
            )
        ).batch(batch)
        for _ in range(num_clients)
    ]


def median_round_seconds(process, data, repeats):
    """Median seconds of `repeats` rounds after one untimed warm-up round (tracing)."""
    state = process.initialize()
    state = process.next(state, data).state
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state = process.next(state, data).state
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# The configurations the memory measurements compare, by name: FedAvg, and FedPT with the
# model's dense layer frozen (digits, Fashion-MNIST).
CONFIGS = {
    "fedavg": {"algorithm": "fedavg", "freeze": "none"},
    "fedpt": {"algorithm": "fedpt", "freeze": "dense"},
}


def peak_memory(name, rounds, out, task="digits", task_kwargs=None, config=None):
    """Peak RSS (KiB) of a training run's Python plus its TFF worker, sampled from outside
    (`python -m benchmarks.memory_probe`), and its per-round samples. `config`:
    its `ExperimentConfig` fields (default: `CONFIGS[name]`)."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    config = CONFIGS[name] if config is None else config
    args = [name, str(rounds), out, task, json.dumps(task_kwargs or {}), json.dumps(config)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.memory_probe", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak = 0
    while proc.poll() is None:
        peak = max(peak, runtime.rss_kib([proc.pid, *child_pids(proc.pid)]))
        time.sleep(0.05)
    if proc.returncode != 0:
        raise RuntimeError(f"memory run {name} x {rounds} failed ({proc.returncode})")
    with open(os.path.join(out, name + "_rss.json")) as f:
        samples = json.load(f)
    return peak, {int(k): v for k, v in samples.items()}


def child_pids(pid):
    """Children of every thread of `pid` (TFF starts its worker from a helper thread)."""
    children = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(p) for p in f.read().split()]
    except FileNotFoundError:
        pass
    return children

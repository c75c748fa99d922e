"""Benchmarks: communication, client speed, overhead, memory, scaling, remote workers.

Each comparison runs both sides in this invocation, repeats, and reports medians and
ratios. Prints tables and writes output/benchmark/benchmark.json. Absolute seconds
depend on the machine; quote ratios.

  .venv/bin/python scripts/benchmark.py                      # everything (~15 min, 2 cores)
  .venv/bin/python scripts/benchmark.py --sections=communication,overhead --repeats=3
"""

import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_federated as tff  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import tff_fedpt  # noqa: E402
from tff_fedpt import freezing, remote, runtime  # noqa: E402
from tff_fedpt.tasks import digits, emnist, stackoverflow  # noqa: E402

SECTIONS = ("communication", "speed", "overhead", "memory", "scaling", "workers")
flags.DEFINE_list("sections", list(SECTIONS), f"Which benchmarks to run: {SECTIONS}.")
flags.DEFINE_integer("repeats", 5, "Timed repeats per measurement (medians are reported).")
flags.DEFINE_integer("memory_rounds", 300, "Rounds of the memory-stability run.")
flags.DEFINE_string("output_dir", "output/benchmark", "Where benchmark.json goes.")
FLAGS = flags.FLAGS

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _spec(shape, dtype=tf.float32):
    return (tf.TensorSpec([None, *shape], dtype), tf.TensorSpec([None], tf.int32))


def _models():
    """(name, keras builder, input spec, preset name -> FreezeSpec) for every task model."""
    so_vocab = 10000 + 4  # vocabulary 10,000 + pad, OOV, bos, eos
    seq = (stackoverflow.SEQUENCE_LENGTH,)
    so_spec = (tf.TensorSpec([None, *seq], tf.int32), tf.TensorSpec([None, *seq], tf.int32))
    return [
        ("digits cnn", lambda: digits.cnn(0), _spec((8, 8, 1)), digits.PRESETS),
        ("emnist-62 cnn", lambda: emnist.cnn(0, 62), _spec((28, 28, 1)), emnist.PRESETS["cnn"]),
        ("emnist-62 mlp", lambda: emnist.mlp(0, 62), _spec((28, 28, 1)), emnist.PRESETS["mlp"]),
        (
            "stackoverflow lstm",
            lambda: stackoverflow.lstm(0, so_vocab),
            so_spec,
            stackoverflow.PRESETS["lstm"],
        ),
        (
            "stackoverflow transformer",
            lambda: stackoverflow.transformer(0, so_vocab),
            so_spec,
            stackoverflow.PRESETS["transformer"],
        ),
    ]


def communication():
    rows = []
    sgd = tff.learning.optimizers.build_sgdm(0.1)
    for name, build, spec, presets in _models():

        def fedavg_fn(build=build, spec=spec):
            return tff.learning.models.from_keras_model(build(), loss=LOSS, input_spec=spec)

        fedavg = tff_fedpt.communication_cost(
            tff.learning.algorithms.build_weighted_fed_avg(fedavg_fn, sgd)
        )
        for preset, freeze in presets.items():

            def fedpt_fn(build=build, spec=spec, freeze=freeze):
                return tff_fedpt.from_keras_model(
                    build(), loss=LOSS, input_spec=spec, freeze=freeze
                )

            cost = tff_fedpt.communication_cost(tff_fedpt.build_fedpt_process(fedpt_fn, sgd))
            rows.append(
                collections.OrderedDict(
                    model=name,
                    preset=preset,
                    fedpt_down=cost.broadcast_bytes_per_client,
                    fedpt_up=cost.upload_bytes_per_client,
                    fedavg_down=fedavg.broadcast_bytes_per_client,
                    fedavg_up=fedavg.upload_bytes_per_client,
                    reduction=round(cost.reduction_versus(fedavg), 2),
                )
            )
    return rows


def _synthetic(num_clients, examples, shape=(28, 28, 1), classes=62, batch=20, seed=0):
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


def _emnist_fns(frozen):
    spec = _spec((28, 28, 1))

    def fedpt_fn():
        return tff_fedpt.from_keras_model(
            emnist.cnn(0, 62), loss=LOSS, input_spec=spec, freeze="dense128" if frozen else None
        )

    def fedavg_frozen_fn():
        model = emnist.cnn(0, 62)
        if frozen:
            model.get_layer("dense128").trainable = False
        return tff.learning.models.from_keras_model(model, loss=LOSS, input_spec=spec)

    return fedpt_fn, fedavg_frozen_fn


def _median_round_seconds(process, data, repeats):
    state = process.initialize()
    state = process.next(state, data).state  # warm-up (tracing)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state = process.next(state, data).state
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed(repeats):
    """Client speed: one client, 200 examples (10 steps of 20), FedPT vs FedAvg."""
    data = _synthetic(1, 200)
    sgd = tff.learning.optimizers.build_sgdm(0.01)
    fedpt_fn, _ = _emnist_fns(frozen=True)
    full_fn, _ = _emnist_fns(frozen=False)
    fedpt = _median_round_seconds(tff_fedpt.build_fedpt_process(fedpt_fn, sgd), data, repeats)
    fedavg = _median_round_seconds(
        tff.learning.algorithms.build_weighted_fed_avg(
            lambda: tff.learning.models.from_keras_model(
                emnist.cnn(0, 62), loss=LOSS, input_spec=_spec((28, 28, 1))
            ),
            sgd,
        ),
        data,
        repeats,
    )
    steps = 10
    return collections.OrderedDict(
        workload="EMNIST-62 CNN, 1 client x 200 examples, batch 20 (10 steps)",
        fedpt_round_s=fedpt,
        fedavg_round_s=fedavg,
        fedpt_step_s=fedpt / steps,
        fedavg_step_s=fedavg / steps,
        ratio=fedpt / fedavg,
    )


def _plain_tf_round(data, frozen_seed=0):
    """The same FedPT round without TFF: clients one after another in one process."""
    model = emnist.cnn(0, 62)
    model.get_layer("dense128").trainable = False
    records = [
        freezing.frozen_initializer_for(model.get_layer("dense128"), v)
        for v in model.get_layer("dense128").weights
    ]
    for v, value in zip(
        model.get_layer("dense128").weights, freezing.generate_frozen_weights(records, frozen_seed)
    ):
        v.assign(value)
    global_weights = [tf.Variable(v) for v in model.trainable_weights]

    @tf.function
    def client(dataset):
        for v, g in zip(model.trainable_weights, global_weights):
            v.assign(g)
        count = tf.constant(0.0)
        for x, y in dataset:
            with tf.GradientTape() as tape:
                loss = LOSS(y, model(x, training=True))
            grads = tape.gradient(loss, model.trainable_weights)
            for v, g in zip(model.trainable_weights, grads):
                v.assign_sub(0.01 * g)
            count += tf.cast(tf.shape(y)[0], tf.float32)
        return [g - v for g, v in zip(global_weights, model.trainable_weights)], count

    def round_fn():
        total = [tf.zeros_like(g) for g in global_weights]
        weight = 0.0
        for ds in data:
            delta, n = client(ds)
            total = [t + n * d for t, d in zip(total, delta)]
            weight += float(n)
        for g, t in zip(global_weights, total):
            g.assign_sub(t / weight)

    return round_fn


def overhead(repeats):
    """FedPT round time vs a plain TF loop and vs TFF FedAvg with the same frozen layer."""
    data = _synthetic(10, 200)
    sgd = tff.learning.optimizers.build_sgdm(0.01)
    fedpt_fn, fedavg_frozen_fn = _emnist_fns(frozen=True)
    fedpt = _median_round_seconds(tff_fedpt.build_fedpt_process(fedpt_fn, sgd), data, repeats)
    fedavg = _median_round_seconds(
        tff.learning.algorithms.build_weighted_fed_avg(fedavg_frozen_fn, sgd), data, repeats
    )
    plain_round = _plain_tf_round(data)
    plain_round()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        plain_round()
        times.append(time.perf_counter() - start)
    plain = statistics.median(times)
    return collections.OrderedDict(
        workload="EMNIST-62 CNN (dense128 frozen), 10 clients x 200 examples, batch 20",
        fedpt_round_s=fedpt,
        plain_tf_round_s=plain,
        tff_fedavg_same_frozen_round_s=fedavg,
        fedpt_vs_plain_tf=fedpt / plain,
        fedpt_vs_tff_fedavg=fedpt / fedavg,
    )


_MEMORY_CHILD = r"""
import os, sys, json, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from tff_fedpt import runtime, training
from tff_fedpt.tasks import load_task
runtime.use_local_runtime()
algorithm, rounds, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def rss_kib():
    pids = [os.getpid()] + [p.pid for p in runtime._children if p.poll() is None]
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))
    return total

samples = {}
def on_round_end(r, row):
    samples[r] = rss_kib()
config = training.ExperimentConfig(
    algorithm=algorithm, freeze="dense" if algorithm == "fedpt" else "none",
    total_rounds=rounds, clients_per_round=10, client_epochs_per_round=1,
    client_batch_size=20, rounds_per_eval=rounds, rounds_per_checkpoint=rounds,
    root_output_dir=out, experiment_name=algorithm)
training.run_experiment(config, load_task("digits"), on_round_end=on_round_end)
with open(os.path.join(out, algorithm + "_rss.json"), "w") as f:
    json.dump(samples, f)
runtime.shutdown()
"""


def _peak_memory(algorithm, rounds, out):
    """Peak RSS (KiB) of Python plus its TFF worker, sampled from outside."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    proc = subprocess.Popen(
        [sys.executable, "-c", _MEMORY_CHILD, algorithm, str(rounds), out],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak = 0
    while proc.poll() is None:
        total = 0
        for pid in [proc.pid, *_child_pids(proc.pid)]:
            try:
                with open(f"/proc/{pid}/status") as f:
                    total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
            except (FileNotFoundError, StopIteration):
                pass
        peak = max(peak, total)
        time.sleep(0.05)
    if proc.returncode != 0:
        raise RuntimeError(f"memory run {algorithm} x {rounds} failed ({proc.returncode})")
    with open(os.path.join(out, algorithm + "_rss.json")) as f:
        samples = json.load(f)
    return peak, {int(k): v for k, v in samples.items()}


def _child_pids(pid):
    """Children of every thread of `pid` (TFF starts its worker from a helper thread)."""
    children = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(p) for p in f.read().split()]
    except FileNotFoundError:
        pass
    return children


def memory(memory_rounds, out):
    fedpt_peak, _ = _peak_memory("fedpt", 20, os.path.join(out, "mem"))
    fedavg_peak, _ = _peak_memory("fedavg", 20, os.path.join(out, "mem"))
    # Ten rounds past the sampled one, so that round's RSS holds no one-time cost of
    # the final round (first evaluation, final checkpoint).
    _, samples = _peak_memory("fedpt", memory_rounds + 10, os.path.join(out, "mem_long"))
    return collections.OrderedDict(
        workload="digits CNN, 10 clients per round; RSS of Python + TFF worker",
        fedpt_peak_mib=fedpt_peak / 1024,
        fedavg_peak_mib=fedavg_peak / 1024,
        peak_ratio=fedpt_peak / fedavg_peak,
        fedpt_rss_round_20_mib=samples[20] / 1024,
        fedpt_rss_last_round_mib=samples[memory_rounds] / 1024,
        last_round=memory_rounds,
        growth=samples[memory_rounds] / samples[20] - 1,
    )


def scaling(repeats):
    sgd = tff.learning.optimizers.build_sgdm(0.01)
    fedpt_fn, _ = _emnist_fns(frozen=True)
    process = tff_fedpt.build_fedpt_process(fedpt_fn, sgd)
    rows = []
    for clients in (10, 20, 50, 100):
        data = _synthetic(clients, 100, seed=clients)
        seconds = _median_round_seconds(process, data, repeats)
        rows.append(
            collections.OrderedDict(
                clients_per_round=clients,
                round_s=seconds,
                s_per_client=seconds / clients,
            )
        )
    return rows


def workers(repeats):
    """Round time on 1, 2 and 4 TFF workers (this machine, loopback) vs local execution."""
    sgd = tff.learning.optimizers.build_sgdm(0.01)
    fedpt_fn, _ = _emnist_fns(frozen=True)
    rows = []
    for clients in (50, 100):
        data = _synthetic(clients, 100, seed=clients)
        local = None
        for count in (0, 1, 2, 4):
            started = [
                remote.start_worker(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for _ in range(count)
            ]
            try:
                if started:
                    remote.use_remote_workers([w.target for w in started])
                else:
                    runtime.use_local_runtime()
                process = tff_fedpt.build_fedpt_process(fedpt_fn, sgd)
                seconds = _median_round_seconds(process, data, repeats)
            finally:
                runtime.shutdown()
                for worker in started:
                    worker.stop()
            local = local or seconds
            rows.append(
                collections.OrderedDict(
                    clients_per_round=clients,
                    workers=count or "local",
                    round_s=seconds,
                    speedup_vs_local=local / seconds,
                )
            )
            print(f"  {clients} clients, {count or 'local'} workers: {seconds:.2f} s", flush=True)
    return rows


def _table(rows):
    if isinstance(rows, dict):
        rows = [rows]
    keys = list(rows[0])

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
    unknown = set(FLAGS.sections) - set(SECTIONS)
    if unknown:
        raise app.UsageError(f"--sections: unknown {sorted(unknown)}; valid: {SECTIONS}")
    logging.set_verbosity(logging.WARNING)
    runtime.use_local_runtime()
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    results = collections.OrderedDict(
        machine=f"{os.cpu_count()} CPU cores, {os.uname().machine}, TF {tf.__version__}",
        repeats=FLAGS.repeats,
    )
    steps = {
        "communication": communication,
        "speed": lambda: speed(FLAGS.repeats),
        "overhead": lambda: overhead(FLAGS.repeats),
        "memory": lambda: memory(FLAGS.memory_rounds, FLAGS.output_dir),
        "scaling": lambda: scaling(FLAGS.repeats),
        "workers": lambda: workers(min(FLAGS.repeats, 3)),
    }
    for section in SECTIONS:
        if section not in FLAGS.sections:
            continue
        print(f"\n## {section}", flush=True)
        results[section] = steps[section]()
        print(_table(results[section]), flush=True)
        with open(os.path.join(FLAGS.output_dir, "benchmark.json"), "w") as f:
            json.dump(results, f, indent=2)
    print(f"\nJSON: {os.path.abspath(os.path.join(FLAGS.output_dir, 'benchmark.json'))}")
    runtime.shutdown()


if __name__ == "__main__":
    app.run(main)

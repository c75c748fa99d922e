"""Benchmarks: communication, client speed, overhead, memory, scaling, remote workers,
the TFLite device client and the Fashion-MNIST workload (real data: `make data`).

Each comparison runs both sides in this invocation, repeats, and reports medians and
ratios. Prints tables and writes output/benchmark/benchmark.json. Absolute seconds
depend on the machine; quote ratios.

  .venv/bin/python scripts/benchmark.py                      # everything (~15 min, 2 cores)
  .venv/bin/python scripts/benchmark.py --sections=communication,overhead --repeats=3
"""

from fedpt_cli import entry

import collections
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
from absl import flags

import tff_fedpt
from tff_fedpt import freezing, remote, reporting, runtime
from tff_fedpt.tasks import catalog, emnist, fashion_mnist, load_task
from tff_fedpt.training import memory_probe

SECTIONS = (
    "communication",
    "speed",
    "overhead",
    "memory",
    "scaling",
    "workers",
    "device",
    "device_slim",
    "fashion",
)
flags.DEFINE_list("sections", list(SECTIONS), f"Which benchmarks to run: {SECTIONS}.")
flags.DEFINE_integer("repeats", 5, "Timed repeats per measurement (medians are reported).")
flags.DEFINE_integer("memory_rounds", 300, "Rounds of the memory-stability run.")
flags.DEFINE_string("output_dir", "output/benchmark", "Where benchmark.json goes.")
flags.DEFINE_integer("device_steps", 40, "Train steps per device-client measurement.")
flags.DEFINE_string("fashion_data_dir", None, "Fashion-MNIST IDX files (default: Debian's).")
flags.DEFINE_integer("fashion_rounds", 20, "Rounds of each Fashion-MNIST peak-memory run.")
flags.DEFINE_integer("fashion_num_clients", 1000, "Clients of the Fashion-MNIST split.")
FLAGS = flags.FLAGS

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _spec(shape, dtype=tf.float32):
    return (tf.TensorSpec([None, *shape], dtype), tf.TensorSpec([None], tf.int32))


def _models():
    """(name, keras builder, input spec, preset name -> FreezeSpec) for every task model."""
    names = {
        "digits/cnn": "digits cnn",
        "emnist/cnn": "emnist-62 cnn",
        "emnist/mlp": "emnist-62 mlp",
        "stackoverflow/lstm": "stackoverflow lstm",
        "stackoverflow/transformer": "stackoverflow transformer",
    }
    return [
        (label, lambda spec=catalog.MODELS[key]: spec.build(0), *_spec_and_presets(key))
        for key, label in names.items()
    ]


def _spec_and_presets(key):
    spec = catalog.MODELS[key]
    return spec.input_spec, spec.presets


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


def _peak_memory(algorithm, rounds, out, task="digits", task_kwargs=None):
    """Peak RSS (KiB) of Python plus its TFF worker, sampled from outside."""
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    args = [algorithm, str(rounds), out, task, json.dumps(task_kwargs or {})]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tff_fedpt.training.memory_probe", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    peak = 0
    while proc.poll() is None:
        peak = max(peak, memory_probe.rss_kib([proc.pid, *_child_pids(proc.pid)]))
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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SLIM_PYTHON = os.path.join(ROOT, ".venv-slim", "bin", "python")


def _measure_client(content, runtime, steps, shape, classes, repeats=3):
    """`python -m fedpt_device.measure` in fresh processes (medians): peak MiB of local
    training above the process's baseline, MiB after start_round, median step ms."""
    import tempfile

    python = SLIM_PYTHON if runtime == "slim" else sys.executable
    if not os.path.exists(python):
        raise entry.ScriptError(f"{python} does not exist: run `make slim` first.")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        path, out = os.path.join(tmp, "client.tflite"), os.path.join(tmp, "out.json")
        with open(path, "wb") as f:
            f.write(content)
        for _ in range(repeats):
            subprocess.run(
                [python, "-m", "fedpt_device.measure", f"--model={path}", f"--runtime={runtime}",
                 f"--steps={steps}", f"--shape={','.join(map(str, shape))}",
                 f"--classes={classes}", "--batch=20", f"--out={out}"],
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
    )


def device_client(steps):
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

            def model_fn(spec=spec, preset=preset):
                return tff_fedpt.from_keras_model(
                    spec.build(0),
                    loss=LOSS,
                    input_spec=spec.input_spec,
                    freeze=catalog.freeze_spec(spec, preset),
                )

            content = device.export_tflite(model_fn, sgd, batch_size=20)
            measured[client] = _measure_client(content, "tensorflow", steps, shape, classes)
            print(f"  {key} {client}: {measured[client]}", flush=True)
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


def device_slim(steps):
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
        for client, freeze, builtins_only, where in (
            ("flex_fedavg", None, False, "tensorflow"),
            ("flex_fedpt", tff_fedpt.FreezeSpec(layers=layers), False, "tensorflow"),
            ("builtin_fedpt_slim", portable, True, "slim"),
            ("builtin_fedpt_in_tf_interpreter", portable, True, "tensorflow"),
        ):

            def model_fn(freeze=freeze):
                return tff_fedpt.from_keras_model(
                    spec.build(0), loss=LOSS, input_spec=spec.input_spec, freeze=freeze
                )

            content = device.export_tflite(
                model_fn, sgd, batch_size=20, builtins_only=builtins_only
            )
            measured[client] = _measure_client(content, where, steps, (28, 28, 1), 62)
            measured[client].update(
                flex_ops=len(device.flex_ops(content)), runtime_mib=runtimes[where]
            )
            print(f"  {label} {client}: {measured[client]}", flush=True)
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
                )
            )
    return rows


def fashion(repeats, rounds, out):
    """The Fashion-MNIST workload of docs/fashion_mnist.md: round time of 10 real clients
    (the first 10 of the 1,000-client Dirichlet(0.5) split, batch 20, one epoch) for FedPT
    (dense frozen at 128 and 2048) against TFF's own FedAvg, and the peak RSS of a whole
    training run (Python + TFF worker, 10 clients per round) for FedPT against FedAvg."""
    data_kwargs = {"num_clients": FLAGS.fashion_num_clients}
    if FLAGS.fashion_data_dir:
        data_kwargs["data_dir"] = FLAGS.fashion_data_dir
    sgd = tff.learning.optimizers.build_sgdm(0.2)
    # The data does not depend on the dense width (only the model does): loaded once.
    task = load_task("fashion_mnist", **data_kwargs)
    if len(task.train_data.client_ids) < 10:
        raise entry.ScriptError(
            f"--fashion_num_clients: the workload takes 10 clients; received "
            f"{len(task.train_data.client_ids)}."
        )
    ids = task.train_data.client_ids[:10]
    data = [
        task.to_model_input(task.train_data.create_tf_dataset_for_client(c)).batch(20) for c in ids
    ]
    examples = sum(len(task.train_data.create_tf_dataset_for_client(c)) for c in ids)
    spec = data[0].element_spec
    rows = []
    fedavg_s = None
    for label, width, frozen in (
        ("FedAvg (TFF), dense 128", 128, False),
        ("FedPT, dense 128 frozen", 128, True),
        ("FedPT, dense 2048 frozen", 2048, True),
    ):

        def model_fn(width=width, frozen=frozen):
            keras_model = fashion_mnist.cnn(0, width)
            if not frozen:
                return tff.learning.models.from_keras_model(keras_model, loss=LOSS, input_spec=spec)
            return tff_fedpt.from_keras_model(
                keras_model,
                loss=LOSS,
                input_spec=spec,
                freeze=fashion_mnist.PRESETS["cnn"]["dense"],
            )

        if frozen:
            process = tff_fedpt.build_fedpt_process(model_fn, sgd)
        else:
            process = tff.learning.algorithms.build_weighted_fed_avg(model_fn, sgd)
        seconds = _median_round_seconds(process, data, repeats)
        fedavg_s = fedavg_s or seconds
        rows.append(
            collections.OrderedDict(
                measure=f"round time, 10 clients ({examples} examples): {label}",
                value=round(seconds, 3),
                unit="s",
                vs_fedavg=round(seconds / fedavg_s, 3),
            )
        )
        print(f"  {label}: {seconds:.2f} s per round", flush=True)
    peaks = {}
    for algorithm in ("fedavg", "fedpt"):
        peak, _ = _peak_memory(
            algorithm, rounds, os.path.join(out, "mem_fashion"), "fashion_mnist", data_kwargs
        )
        peaks[algorithm] = peak / 1024
        print(f"  {algorithm}: peak {peaks[algorithm]:.0f} MiB", flush=True)
    for algorithm, label in (("fedavg", "FedAvg, dense 128"), ("fedpt", "FedPT, dense 128 frozen")):
        rows.append(
            collections.OrderedDict(
                measure=f"peak RSS of a {rounds}-round run (Python + TFF worker): {label}",
                value=round(peaks[algorithm]),
                unit="MiB",
                vs_fedavg=round(peaks[algorithm] / peaks["fedavg"], 3),
            )
        )
    return rows


def main():
    unknown = set(FLAGS.sections) - set(SECTIONS)
    if unknown:
        raise entry.ScriptError(f"--sections: unknown {sorted(unknown)}; valid: {SECTIONS}")
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
        "device": lambda: device_client(FLAGS.device_steps),
        "device_slim": lambda: device_slim(FLAGS.device_steps),
        "fashion": lambda: fashion(FLAGS.repeats, FLAGS.fashion_rounds, FLAGS.output_dir),
    }
    for section in SECTIONS:
        if section not in FLAGS.sections:
            continue
        print(f"\n## {section}", flush=True)
        results[section] = steps[section]()
        print(reporting.table(results[section]), flush=True)
        with open(os.path.join(FLAGS.output_dir, "benchmark.json"), "w") as f:
            json.dump(results, f, indent=2)
    print(f"\nJSON: {os.path.abspath(os.path.join(FLAGS.output_dir, 'benchmark.json'))}")


if __name__ == "__main__":
    entry.run(main)

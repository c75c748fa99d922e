"""Benchmarks of federated training: communication per task model and preset, client
speed, FedPT's overhead against a plain TensorFlow loop, peak memory and its stability,
round time against clients per round and TFF workers, and the Fashion-MNIST workload."""

from __future__ import annotations

import collections
import os
import subprocess

import tensorflow as tf
import tensorflow_federated as tff

import tff_fedpt
from benchmarks.common import (
    LOSS,
    BenchmarkError,
    fedpt_model_fn,
    image_spec,
    median_round_seconds,
    peak_memory,
    synthetic_clients,
    tff_model_fn,
)
from tff_fedpt import adapters, remote, runtime
from tff_fedpt import frozen as frozen_lib
from tff_fedpt.tasks import catalog, emnist, fashion_mnist, load_task, shakespeare

# catalog key -> the label of its rows
MODELS = {
    "digits/cnn": "digits cnn",
    "emnist/cnn": "emnist-62 cnn",
    "emnist/mlp": "emnist-62 mlp",
    "stackoverflow/lstm": "stackoverflow lstm",
    "stackoverflow/transformer": "stackoverflow transformer",
    "shakespeare/chars": "shakespeare chars lstm",
    "shakespeare/words": "shakespeare words lstm",
}


def communication(params, log):
    """Bytes per client and round, FedPT with each preset against FedAvg, per model."""
    rows = []
    sgd = tff.learning.optimizers.build_sgdm(0.1)
    for key in params.communication_models:
        spec = catalog.MODELS[key]

        def build(spec=spec):
            return spec.build(0)

        fedavg = tff_fedpt.communication_cost(
            tff.learning.algorithms.build_weighted_fed_avg(
                tff_model_fn(build, spec.input_spec), sgd
            )
        )
        for preset, freeze in spec.presets.items():
            process = tff_fedpt.build_fedpt_process(
                fedpt_model_fn(build, spec.input_spec, freeze), sgd
            )
            cost = tff_fedpt.communication_cost(process)
            rows.append(
                collections.OrderedDict(
                    model=MODELS[key],
                    preset=preset,
                    fedpt_down=cost.broadcast_bytes_per_client,
                    fedpt_up=cost.upload_bytes_per_client,
                    fedavg_down=fedavg.broadcast_bytes_per_client,
                    fedavg_up=fedavg.upload_bytes_per_client,
                    reduction=round(cost.reduction_versus(fedavg), 2),
                )
            )
    return rows


def _emnist():
    return emnist.cnn(0, 62)


def _emnist_fns(frozen):
    """FedPT's EMNIST-62 CNN (dense128 frozen or not) and TFF's with dense128 frozen the
    Keras way (or not)."""
    spec = image_spec((28, 28, 1))
    return (
        fedpt_model_fn(_emnist, spec, "dense128" if frozen else None),
        tff_model_fn(_emnist, spec, ("dense128",) if frozen else ()),
    )


def speed(params, log):
    """Client speed: one client, 200 examples (10 steps of 20), FedPT vs FedAvg."""
    data = synthetic_clients(1, 200)
    sgd = tff.learning.optimizers.build_sgdm(0.01)
    fedpt_fn, _ = _emnist_fns(frozen=True)
    _, fedavg_fn = _emnist_fns(frozen=False)
    fedpt = median_round_seconds(tff_fedpt.build_fedpt_process(fedpt_fn, sgd), data, params.repeats)
    fedavg = median_round_seconds(
        tff.learning.algorithms.build_weighted_fed_avg(fedavg_fn, sgd), data, params.repeats
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
    model = _emnist()
    model.get_layer("dense128").trainable = False
    records = [
        frozen_lib.frozen_initializer_for(model.get_layer("dense128"), v)
        for v in model.get_layer("dense128").weights
    ]
    for v, value in zip(
        model.get_layer("dense128").weights,
        frozen_lib.generate_frozen_weights(records, frozen_seed),
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


def overhead(params, log):
    """FedPT round time vs a plain TF loop and vs TFF FedAvg with the same frozen layer."""
    import statistics
    import time

    data = synthetic_clients(10, 200)
    sgd = tff.learning.optimizers.build_sgdm(0.01)
    fedpt_fn, fedavg_frozen_fn = _emnist_fns(frozen=True)
    repeats = params.repeats
    fedpt = median_round_seconds(tff_fedpt.build_fedpt_process(fedpt_fn, sgd), data, repeats)
    fedavg = median_round_seconds(
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


def memory(params, log):
    """Peak RSS of 20 digits rounds, FedPT against FedAvg, and FedPT's RSS growth from
    round 20 to round `memory_rounds`."""
    out, last = params.output_dir, params.memory_rounds
    fedpt_peak, _ = peak_memory("fedpt", 20, os.path.join(out, "mem"))
    fedavg_peak, _ = peak_memory("fedavg", 20, os.path.join(out, "mem"))
    # Ten rounds past the sampled one, so that round's RSS holds no one-time cost of
    # the final round (first evaluation, final checkpoint).
    _, samples = peak_memory("fedpt", last + 10, os.path.join(out, "mem_long"))
    return collections.OrderedDict(
        workload="digits CNN, 10 clients per round; RSS of Python + TFF worker",
        fedpt_peak_mib=fedpt_peak / 1024,
        fedavg_peak_mib=fedavg_peak / 1024,
        peak_ratio=fedpt_peak / fedavg_peak,
        fedpt_rss_round_20_mib=samples[20] / 1024,
        fedpt_rss_last_round_mib=samples[last] / 1024,
        last_round=last,
        growth=samples[last] / samples[20] - 1,
    )


def scaling(params, log):
    """FedPT's round time at 10 to 100 clients per round."""
    sgd = tff.learning.optimizers.build_sgdm(0.01)
    fedpt_fn, _ = _emnist_fns(frozen=True)
    process = tff_fedpt.build_fedpt_process(fedpt_fn, sgd)
    rows = []
    for clients in (10, 20, 50, 100):
        data = synthetic_clients(clients, 100, seed=clients)
        seconds = median_round_seconds(process, data, params.repeats)
        rows.append(
            collections.OrderedDict(
                clients_per_round=clients,
                round_s=seconds,
                s_per_client=seconds / clients,
            )
        )
    return rows


def workers(params, log):
    """Round time on 1, 2 and 4 TFF workers (this machine, loopback) vs local execution."""
    sgd = tff.learning.optimizers.build_sgdm(0.01)
    fedpt_fn, _ = _emnist_fns(frozen=True)
    repeats = min(params.repeats, 3)
    rows = []
    for clients in (50, 100):
        data = synthetic_clients(clients, 100, seed=clients)
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
                seconds = median_round_seconds(process, data, repeats)
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
            log(f"  {clients} clients, {count or 'local'} workers: {seconds:.2f} s")
    return rows


def _round_time_row(process, data, params, what, label, fedavg_s, log):
    """The row of one process's median round time (against FedAvg's `fedavg_s`, or
    itself when it is FedAvg); returns (row, seconds)."""
    seconds = median_round_seconds(process, data, params.repeats)
    log(f"  {label}: {seconds:.2f} s per round")
    row = collections.OrderedDict(
        measure=f"round time, {what}: {label}",
        value=round(seconds, 3),
        unit="s",
        vs_fedavg=round(seconds / (fedavg_s or seconds), 3),
    )
    return row, seconds


def fashion(params, log):
    """The Fashion-MNIST workload of docs/fashion_mnist.md: round time of 10 real clients
    (the first 10 of the 1,000-client Dirichlet(0.5) split, batch 20, one epoch) for FedPT
    (dense frozen at 128 and 2048) against TFF's own FedAvg, and the peak RSS of a whole
    training run (Python + TFF worker, 10 clients per round) for FedPT against FedAvg."""
    data_kwargs = {"num_clients": params.fashion_num_clients}
    if params.fashion_data_dir:
        data_kwargs["data_dir"] = params.fashion_data_dir
    sgd = tff.learning.optimizers.build_sgdm(0.2)
    # The data does not depend on the dense width (only the model does): loaded once.
    task = load_task("fashion_mnist", **data_kwargs)
    if len(task.train_data.client_ids) < 10:
        raise BenchmarkError(
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

        def build(width=width):
            return fashion_mnist.cnn(0, width)

        if frozen:
            freeze = fashion_mnist.PRESETS["cnn"]["dense"]
            process = tff_fedpt.build_fedpt_process(fedpt_model_fn(build, spec, freeze), sgd)
        else:
            process = tff.learning.algorithms.build_weighted_fed_avg(tff_model_fn(build, spec), sgd)
        what = f"10 clients ({examples} examples)"
        row, seconds = _round_time_row(process, data, params, what, label, fedavg_s, log)
        rows.append(row)
        fedavg_s = fedavg_s or seconds
    peaks = {}
    rounds, out = params.fashion_rounds, os.path.join(params.output_dir, "mem_fashion")
    for algorithm in ("fedavg", "fedpt"):
        peak, _ = peak_memory(algorithm, rounds, out, "fashion_mnist", data_kwargs)
        peaks[algorithm] = peak / 1024
        log(f"  {algorithm}: peak {peaks[algorithm]:.0f} MiB")
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


def shakespeare_rounds(params, log):
    """Round time of TFF's Shakespeare setup (`make data`'s file): the first 10 client
    roles, batch 4, one epoch, the character model, for TFF's own FedAvg against FedPT with
    both LSTMs frozen and with LoRA r8 on both frozen LSTMs (each process built and timed
    in turn, in one invocation: medians of `repeats` rounds after a warm-up)."""
    task = load_task(
        "shakespeare",
        cache_dir=params.shakespeare_cache_dir,
        public_plays=params.shakespeare_public_plays,
    )
    ids = task.train_data.client_ids[:10]
    data = [
        task.to_model_input(task.train_data.create_tf_dataset_for_client(c)).batch(4) for c in ids
    ]
    pieces = sum(int(d.unbatch().reduce(0, lambda n, _: n + 1)) for d in data)
    spec = data[0].element_spec
    sgd = tff.learning.optimizers.build_sgdm(1.0)

    def lora_lstms():
        return adapters.add_adapters(shakespeare.char_lstm(0), ["lstm1", "lstm2"], rank=8)

    rows, fedavg_s = [], None
    for label, build, freeze in (
        ("FedAvg (TFF)", shakespeare.char_lstm, None),
        (
            "FedPT, both LSTMs frozen",
            shakespeare.char_lstm,
            shakespeare.PRESETS["chars"]["recurrent"],
        ),
        ("FedPT, both LSTMs frozen + LoRA r8 on each", lora_lstms, frozen_lib.FreezeSpec()),
    ):
        if freeze is None:
            process = tff.learning.algorithms.build_weighted_fed_avg(tff_model_fn(build, spec), sgd)
        else:
            process = tff_fedpt.build_fedpt_process(fedpt_model_fn(build, spec, freeze), sgd)
        what = f"10 roles ({pieces} pieces of 80 characters)"
        row, seconds = _round_time_row(process, data, params, what, label, fedavg_s, log)
        rows.append(row)
        fedavg_s = fedavg_s or seconds
    data_kwargs = {
        "cache_dir": params.shakespeare_cache_dir,
        "public_plays": list(params.shakespeare_public_plays),
    }
    common = {
        "client_batch_size": 4,
        "client_learning_rate": 1.0,
        "clients_per_round": min(10, len(task.train_data.client_ids)),
    }
    peaks = {}
    for name, label, config in (
        ("fedavg", "FedAvg", {"algorithm": "fedavg", "freeze": "none"}),
        ("fedpt", "FedPT, both LSTMs frozen", {"algorithm": "fedpt", "freeze": "recurrent"}),
    ):
        out = os.path.join(params.output_dir, "mem_shakespeare")
        rounds = params.shakespeare_rounds
        peak, _ = peak_memory(name, rounds, out, "shakespeare", data_kwargs, {**common, **config})
        peaks[name] = peak / 1024
        log(f"  {label}: peak {peaks[name]:.0f} MiB")
        rows.append(
            collections.OrderedDict(
                measure=f"peak RSS of a {rounds}-round run (Python + TFF worker): {label}",
                value=round(peaks[name]),
                unit="MiB",
                vs_fedavg=round(peaks[name] / peaks["fedavg"], 3),
            )
        )
    return rows

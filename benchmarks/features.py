"""Benchmark section `features`: what training on the frozen prefix's output saves."""

from __future__ import annotations

import collections
import dataclasses
import time

import tensorflow_federated as tff

import tff_fedpt
from benchmarks.common import BenchmarkError, fedpt_model_fn, median_round_seconds, tff_model_fn
from tff_fedpt import adapters, features, frozen
from tff_fedpt.tasks import fashion_mnist, load_task

CONVS = ("conv1", "conv2")


def _adapted(rank, mode):
    def build():
        return adapters.add_adapters(fashion_mnist.cnn(0, 128), "dense128", rank=rank, mode=mode)

    return build


# name: (label, Keras model builder, FedPT freeze preset, layers TFF's FedAvg freezes)
SETTINGS = {
    "head": ("head only (convs + dense frozen)", lambda: fashion_mnist.cnn(0, 128),
             "all_but_output", (*CONVS, "dense128")),
    "lora4": ("LoRA r4 on dense, convs frozen", _adapted(4, "lora"), "convs", CONVS),
    "ffa16": ("FFA-LoRA r16 on dense, convs frozen", _adapted(16, "ffa"), "convs", CONVS),
}  # fmt: skip


def features_rounds(params, log):
    """Fashion-MNIST's pretrained-backbone settings (docs/fashion_pretrained.md) on 10
    real clients (the first 10 of the Dirichlet(0.5) split, batch 20, one epoch): the
    median round time of FedPT on features, FedPT on inputs, and TFF's own FedAvg with the
    same layers `trainable=False`, in one run (features kept in memory, and in files:
    TFF serializes an in-memory dataset into every round's computation, a file-backed
    one by its path), the same with one batch a client (the runtime's own cost of a
    round of 10 clients, which no model change removes); and the one-time cost of the
    features.
    The frozen values (`features_frozen`) are pretrained, as in the runs: constants of a
    second model of the same shapes (the values do not change the compute, their form
    does), or seeded: drawn again in every client's computation, which costs a round
    time."""
    unknown = sorted(set(params.features_settings) - set(SETTINGS))
    if unknown:
        raise BenchmarkError(f"--features_settings: unknown {unknown}; valid: {list(SETTINGS)}.")
    kinds = ("pretrained", "seeded")
    if not params.features_frozen or set(params.features_frozen) - set(kinds):
        raise BenchmarkError(
            f"--features_frozen: expected one or both of {list(kinds)}; received "
            f"{list(params.features_frozen)}."
        )
    data_kwargs = {"num_clients": params.fashion_num_clients}
    if params.fashion_data_dir:
        data_kwargs["data_dir"] = params.fashion_data_dir
    task = load_task("fashion_mnist", **data_kwargs)
    ids = task.train_data.client_ids[:10]
    if len(ids) < 10:
        raise BenchmarkError(f"--fashion_num_clients: the section takes 10; received {len(ids)}.")
    mapped = [task.to_model_input(task.train_data.create_tf_dataset_for_client(c)) for c in ids]
    inputs = [m.batch(20) for m in mapped]
    examples = sum(int(m.reduce(0, lambda n, _: n + 1)) for m in mapped)
    spec = inputs[0].element_spec
    sgd = tff.learning.optimizers.build_sgdm(0.2)
    what = f"10 clients ({examples} examples)"
    rows = []
    pretrained = frozen.PretrainedWeights.from_keras_model(fashion_mnist.cnn(1, 128))
    settings = [
        (f"{label}, {kind}" if kind == "seeded" else label, build, preset, keras_frozen, kind)
        for label, build, preset, keras_frozen in (SETTINGS[s] for s in params.features_settings)
        for kind in params.features_frozen
    ]
    for label, build, preset, keras_frozen, kind in settings:
        freeze = fashion_mnist.PRESETS["cnn"][preset]
        if kind == "pretrained":
            freeze = dataclasses.replace(freeze, pretrained=pretrained)
        model_fn = fedpt_model_fn(build, spec, freeze)
        start = time.perf_counter()
        feature_map = features.FeatureMap(model_fn, 0)
        on_features = [feature_map(m).batch(20) for m in mapped]
        feature_s = time.perf_counter() - start
        in_files = features.FeatureMap(model_fn, 0, memory_bytes=0)
        on_files = [in_files(m).batch(20) for m in mapped]
        log(f"  {label}: features of {examples} examples in {feature_s:.2f} s")
        fedavg = tff.learning.algorithms.build_weighted_fed_avg(
            tff_model_fn(build, spec, keras_frozen), sgd
        )
        fedpt = tff_fedpt.build_fedpt_process(model_fn, sgd)
        fedpt_features = tff_fedpt.build_fedpt_process(model_fn, sgd, train_on_features=True)
        runs = (
            ("TFF FedAvg, same layers trainable=False", fedavg, inputs),
            ("FedPT on inputs", fedpt, inputs),
            ("FedPT on features", fedpt_features, on_features),
            ("FedPT on features in files", fedpt_features, on_files),
            # The same clients with one batch each: what a round costs the runtime
            # whatever the work (the floor under the rows above).
            ("floor: FedPT on features in files, 1 batch a client", fedpt_features,
             [d.take(1) for d in on_files]),
        )  # fmt: skip
        reference = None
        for name, process, data in runs:
            seconds = median_round_seconds(process, data, params.repeats)
            reference = reference or seconds
            log(f"  {label}, {name}: {seconds:.2f} s per round")
            rows.append(_row(f"round time, {what}, {label}: {name}", seconds, reference))
        shape = feature_map.split.feature_shape
        rows.append(_row(f"features once, {what}, {label} ({shape})", feature_s, reference))
    return rows


def _row(measure: str, seconds: float, fedavg_seconds: float) -> collections.OrderedDict:
    return collections.OrderedDict(
        measure=measure,
        value=round(seconds, 3),
        unit="s",
        vs_fedavg=round(seconds / fedavg_seconds, 3),
    )

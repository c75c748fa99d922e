"""Binaries end to end: smoke runs and flag errors in this process (tests/scripts.py); resume
after SIGKILL, Ctrl-C and a start from scratch as processes."""

import csv
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tff_fedpt import training
from tff_fedpt.tasks import load_task

from . import fake_data, processes, scripts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}

DIGITS_FLAGS = [
    "--num_clients=20",
    "--clients_per_round=3",
    "--client_epochs_per_round=1",
    "--rounds_per_eval=2",
    "--rounds_per_checkpoint=2",
    "--noprogress",
]


def _binary(name, *args, timeout=300, process=False):
    """The script run in this process (tests/scripts.py), or with `process` as a process
    of its own, started from scratch (its imports and all it writes included)."""
    return scripts.run(
        [sys.executable, os.path.join(ROOT, "scripts", name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
        cwd=ROOT,
        process=process,
    )


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _final_weights(root, name, total_rounds):
    config = training.ExperimentConfig(
        task="digits",
        freeze="dense",
        total_rounds=total_rounds,
        clients_per_round=3,
        client_batch_size=10,
        client_epochs_per_round=1,
        root_output_dir=root,
        experiment_name=name,
    )
    process, state, version = training.load_latest_state(
        config, load_task("digits", num_clients=20)
    )
    assert version == total_rounds
    return process.get_model_weights(state)


def test_digits_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    rounds = 6
    args = [*DIGITS_FLAGS, f"--total_rounds={rounds}", "--experiment_name=run"]
    straight = _binary("run_digits.py", *args, f"--root_output_dir={tmp_path}/a")
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert "Trainable / frozen parameters" in straight.stdout
    assert "42.5x less communication" in straight.stdout

    # Start the same run elsewhere and SIGKILL it once round 3 is in the CSV (its run lock
    # stays on disk: the rerun below must not take it for a running experiment).
    metrics = tmp_path / "b" / "results" / "run" / "metrics.csv"
    proc = scripts.start(
        [sys.executable, "scripts/run_digits.py", *args, f"--root_output_dir={tmp_path}/b"],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline:
        if metrics.exists() and len(_rows(metrics)) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_rows = len(_rows(metrics))
    assert 3 <= killed_rows < rounds, "the run must be killed mid-training"
    resumed = _binary("run_digits.py", *args, f"--root_output_dir={tmp_path}/b")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    rows_a = _rows(tmp_path / "a" / "results" / "run" / "metrics.csv")
    rows_b = _rows(metrics)
    assert [int(r["round"]) for r in rows_b] == list(range(1, rounds + 1))
    for ra, rb in zip(rows_a, rows_b):
        np.testing.assert_allclose(float(ra["train/loss"]), float(rb["train/loss"]), rtol=1e-5)
        assert ra["cumulative_broadcast_bytes"] == rb["cumulative_broadcast_bytes"]
    wa = _final_weights(str(tmp_path / "a"), "run", rounds)
    wb = _final_weights(str(tmp_path / "b"), "run", rounds)
    for x, y in zip(wa.trainable + wa.non_trainable, wb.trainable + wb.non_trainable):
        np.testing.assert_allclose(x, y, atol=1e-5)

    # Same directory, other settings: refused in one line naming the flag.
    clash = _binary("run_digits.py", *args, f"--root_output_dir={tmp_path}/b", "--frozen_seed=7")
    assert clash.returncode == 2
    lines = clash.stderr.strip().splitlines()
    assert len(lines) == 1 and "--frozen_seed: saved '0', now '7'" in lines[0], clash.stderr


@pytest.mark.parametrize(
    "flag,message",
    [
        ("--model=resnet", "--model: unknown model 'resnet'"),
        ("--freeze=nothing_like_this", "--freeze='nothing_like_this' is neither a preset"),
        ("--freeze=,", "--freeze=',' is neither a preset .* has an empty layer pattern"),
        ("--freeze=dense,,conv1", "has an empty layer pattern"),
        ("--clients_per_round=500", "--clients_per_round=500 is larger than the number"),
        ("--total_rounds=0", "--total_rounds must be > 0; received 0"),
        ("--client_batch_size=-1", "--client_batch_size must be > 0"),
        ("--client_learning_rate=0", "--client_learning_rate must be > 0"),
    ],
)
def test_bad_flags_in_process(flag, message):
    name, value = flag[2:].split("=")
    defaults = training.ExperimentConfig()
    value = type(getattr(defaults, name) or "")(value) if name != "model" else value
    config = training.ExperimentConfig(**{name: value})
    with pytest.raises(training.ConfigError) as raised:
        training.validate(config, load_task("digits"))
    assert re.search(message.replace("(", r"\("), raised.value.flag_message())


def test_bad_flag_is_one_line_usage_error():
    # Started from scratch: nothing TensorFlow logs while importing reaches stderr.
    result = _binary("run_digits.py", "--total_rounds=0", "--noprogress", process=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error: --total_rounds must be > 0" in lines[0], result.stderr


def test_emnist_without_data_is_one_clear_line(tmp_path):
    result = _binary("run_emnist.py", f"--cache_dir={tmp_path}", "--noprogress")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"looked for {tmp_path}/emnist_all.sqlite" in lines[0]


def test_emnist_binary_smoke(tmp_path):
    fake_data.write_emnist(str(tmp_path / "cache"))
    result = _binary(
        "run_emnist.py",
        f"--cache_dir={tmp_path}/cache",
        f"--root_output_dir={tmp_path}/out",
        "--total_rounds=2",
        "--clients_per_round=2",
        "--noprogress",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(tmp_path / "out" / "results" / "emnist_fedpt_dense128" / "metrics.csv")
    assert [r["round"] for r in rows] == ["1", "2"]
    assert int(rows[0]["broadcast_bytes_per_client"]) == 26814 * 4 + 8
    assert rows[-1]["eval/accuracy"] != ""
    assert os.path.exists(tmp_path / "out" / "results" / "emnist_fedpt_dense128" / "hparams.csv")
    assert os.listdir(tmp_path / "out" / "logdir" / "emnist_fedpt_dense128")


@pytest.mark.parametrize("model,freeze", [("lstm", "embedding"), ("transformer", "attention")])
def test_stackoverflow_binary_smoke(tmp_path, model, freeze):
    fake_data.write_stackoverflow(str(tmp_path / "cache"))
    result = _binary(
        "run_stackoverflow.py",
        f"--cache_dir={tmp_path}/cache",
        f"--root_output_dir={tmp_path}/out",
        f"--model={model}",
        f"--freeze={freeze}",
        "--vocab_size=8",
        "--total_rounds=2",
        "--clients_per_round=2",
        "--experiment_name=so",
        "--noprogress",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(tmp_path / "out" / "results" / "so" / "metrics.csv")
    assert [r["round"] for r in rows] == ["1", "2"]
    assert 0.0 <= float(rows[-1]["eval/accuracy"]) <= 1.0


def test_digits_dp_binary_reports_epsilon(tmp_path):
    result = _binary(
        "run_digits.py",
        *DIGITS_FLAGS,
        "--total_rounds=2",
        "--dp",
        "--noise_multiplier=0.3",
        "--clip=0.5",
        "--sampling=poisson",
        "--algorithm=fedavg",
        f"--root_output_dir={tmp_path}",
        "--experiment_name=dp",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epsilon" in result.stdout
    rows = _rows(tmp_path / "results" / "dp" / "metrics.csv")
    assert float(rows[1]["privacy/epsilon"]) > float(rows[0]["privacy/epsilon"]) > 0
    assert float(rows[0]["aggregator/clip"]) == 0.5
    assert 0.0 <= float(rows[0]["aggregator/clip_fraction"]) <= 1.0


def test_compute_epsilon_cli():
    result = _binary(
        "compute_epsilon.py",
        "--noise_multiplier=1.0",
        "--clients_per_round=1",
        "--population=100",
        "--rounds=100",
        "--delta=1e-5",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("epsilon = 1.214")
    result = _binary(
        "compute_epsilon.py",
        "--target_epsilon=1.2141",
        "--clients_per_round=1",
        "--population=100",
        "--rounds=100",
        "--delta=1e-5",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("noise multiplier = 1.000")


def test_demo_smoke(tmp_path):
    result = _binary(  # `make demo`'s command, started from scratch
        "demo.py",
        "--total_rounds=2",
        "--clients_per_round=3",
        f"--output_dir={tmp_path}",
        process=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "42.5x" in result.stdout and "FedAvg" in result.stdout
    assert (tmp_path / "accuracy_vs_megabytes.png").stat().st_size > 10000
    assert (tmp_path / "comparison.md").read_text().startswith("| run |")


def _start(args, stderr=subprocess.DEVNULL, env=None, stdout=subprocess.DEVNULL):
    """A binary started in the background (scripts/run_digits.py with `args`)."""
    return scripts.start(
        [sys.executable, "scripts/run_digits.py", *args],
        cwd=ROOT,
        env={**ENV, **(env or {})},
        stdout=stdout,
        stderr=stderr,
        text=True,
    )


def _wait_for_rows(path, count, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        try:
            if len(_rows(path)) >= count:
                return
        except (OSError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {count} rows")


def test_ctrl_c_is_one_line_saves_the_last_round_and_the_rerun_resumes(tmp_path):
    """While the run trains, a second run of the same experiment stops at start (its lock);
    Ctrl-C stops the first after its round, in one line; the rerun resumes. (A SIGKILLed
    run's lock does not stop the rerun: test_digits_resume_after_sigkill_...)"""
    before = processes.leaked_workers()
    args = [
        *DIGITS_FLAGS,
        "--total_rounds=40",
        "--rounds_per_checkpoint=10",
        "--experiment_name=int",
        f"--root_output_dir={tmp_path}",
    ]
    metrics = tmp_path / "results" / "int" / "metrics.csv"
    proc = _start(args, stderr=subprocess.PIPE)
    try:
        _wait_for_rows(metrics, 1, proc)
        _one_line_error(_binary("run_digits.py", *args), f"already running (pid {proc.pid}")
        _wait_for_rows(metrics, 3, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Interrupted: stopped after round" in lines[0]
    assert "rerun the same command to resume" in lines[0]
    done = len(_rows(metrics))
    assert f"Rounds 1..{done} are saved" in lines[0]  # the last completed round is kept
    assert processes.leaked_workers() <= before  # no worker left behind

    resumed = _binary("run_digits.py", *args[:-3], f"--total_rounds={done + 2}", *args[-2:])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [int(r["round"]) for r in _rows(metrics)] == list(range(1, done + 3))


def _one_line_error(result, *needles):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1, result.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_inputs_are_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = _binary("run_digits.py", "--noprogress", f"--root_output_dir={blocker}/out")
    _one_line_error(result, "--root_output_dir: cannot create or write", "not a directory")
    assert "Per client per round" not in result.stdout  # refused before the build
    _one_line_error(
        _binary("run_digits.py", "--noprogress", "--frozen_seed=99999999999999999999"),
        "--frozen_seed must fit in a signed 64-bit integer",
    )
    _one_line_error(
        _binary(
            "run_digits.py", "--noprogress", "--dp", "--target_epsilon=1e9", "--sampling=poisson"
        ),
        "--target_epsilon=1e+09 cannot be calibrated",
    )
    # A metrics.csv with a garbage row before a resume.
    args = [
        *DIGITS_FLAGS,
        "--total_rounds=2",
        "--experiment_name=g",
        f"--root_output_dir={tmp_path}",
    ]
    assert _binary("run_digits.py", *args).returncode == 0
    metrics = tmp_path / "results" / "g" / "metrics.csv"
    with open(metrics, "a") as f:
        f.write("oops\n")
    _one_line_error(
        _binary("run_digits.py", *args[:-3], "--total_rounds=3", *args[-2:]),
        str(metrics),
        "'oops' is not a round number",
    )
    # Empty and garbage EMNIST files.
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "emnist_all.sqlite").write_bytes(b"")
    _one_line_error(
        _binary("run_emnist.py", f"--cache_dir={tmp_path}/empty", "--noprogress"),
        "emnist_all.sqlite lacks",
    )
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "emnist_all.sqlite").write_bytes(b"\x01" * 4096)
    _one_line_error(
        _binary("run_emnist.py", f"--cache_dir={tmp_path}/garbage", "--noprogress"),
        "is not a readable SQLite data set",
    )


def test_export_device_model_bad_inputs_are_one_line_before_converting(tmp_path):
    """One line on stderr, exit 2, and before the conversion (which writes to stderr)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    common = ["--task=digits", "--model=cnn", "--freeze=dense"]
    for args, needles in (
        ([f"--output={blocker}/x.tflite"], ["cannot write in", "a parent is a regular file"]),
        (["--output=/proc/x.tflite"], ["--output=/proc/x.tflite: cannot write in /proc"]),
        ([f"--output={tmp_path}"], ["is a directory; name a file in it"]),
        (["--batch_size=0"], ["--batch_size must be >= 1", "received 0"]),
        (["--freeze=,"], ["--freeze=',' is not usable here", "empty layer pattern"]),
    ):
        _one_line_error(_binary("export_device_model.py", *common, *args), *needles)
    assert blocker.read_text() == "x"


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--noise_multiplier=1", "--population=0"], "--population must be >= 1; received 0"),
        (["--noise_multiplier=1", "--rounds=0"], "--rounds must be >= 1; received 0"),
        (["--target_epsilon=2", "--rounds=0"], "--rounds must be >= 1; received 0"),
        (["--noise_multiplier=1", "--clients_per_round=200"], "is larger than --population=100"),
    ],
)
def test_compute_epsilon_bad_values_are_one_line(args, needle):
    base = {"--clients_per_round": "1", "--population": "100", "--rounds": "10"}
    for arg in args:
        base.pop(arg.split("=")[0], None)
    flags_ = [f"{k}={v}" for k, v in base.items()] + args
    _one_line_error(_binary("compute_epsilon.py", *flags_), needle)


def test_second_ctrl_c_stops_at_once_with_one_line(tmp_path):
    """...and leaves no temporary file behind, although it skips Python's exit handlers:
    neither the features files (here of the seeded frozen convs: gigabytes in a real run)
    nor TF autograph's generated modules (about 35 a run)."""
    before = processes.leaked_workers()
    temp = tmp_path / "tmp"
    temp.mkdir()
    args = [
        *DIGITS_FLAGS,
        "--total_rounds=40",
        "--client_epochs_per_round=10",  # rounds long enough to be inside one at the 2nd
        "--rounds_per_eval=40",
        "--freeze=convs",
        "--features_memory_mb=0",
        "--experiment_name=i2",
        f"--root_output_dir={tmp_path}",
    ]
    metrics = tmp_path / "results" / "i2" / "metrics.csv"
    env = {"TMPDIR": str(temp)}
    proc = _start(args, stderr=subprocess.PIPE, env=env, stdout=subprocess.PIPE)
    _wait_for_rows(metrics, 3, proc)  # round 2's checkpoint is on disk
    written = [p.name for p in temp.iterdir()]
    for prefix in ("fedpt_features_", "__autograph_generated_file"):
        assert any(name.startswith(prefix) for name in written), (prefix, written)
    proc.send_signal(signal.SIGINT)
    # Two signals sent at once reach Python's handler as one: the second is sent once the
    # first was handled (the binary says so), while its round still runs.
    seen = []
    while not seen or not seen[-1].startswith("Ctrl-C: stopping after this round;"):
        seen.append(proc.stdout.readline())
        assert seen[-1], f"the binary ended before the first Ctrl-C was handled: {seen}"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    lines = stderr.strip().splitlines()
    assert proc.returncode == 130 and len(lines) == 1, stderr
    saved = re.search(r"Interrupted twice: stopped at once\. Rounds 1\.\.(\d+) are saved", lines[0])
    assert saved and int(saved[1]) >= 2, lines[0]
    assert f"rerun the same command to resume from round {int(saved[1]) + 1}." in lines[0]
    assert processes.leaked_workers() <= before
    assert sorted(p.name for p in temp.iterdir()) == []


def test_help_lists_the_binarys_own_flags_grouped_and_exits_0():
    result = _binary("run_digits.py", "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert out.startswith("Trains FedPT or a baseline on the embedded digits task")
    for expected in (
        "Flags of the digits task:",
        "  --num_clients=100",
        "  --total_rounds=80",  # the task's RECOMMENDED default, as the binary runs it
        "(DPOptions):",
        "  --dp=False",
        "  --freeze=",
        "--model=cnn: --freeze presets none, dense, convs, all_but_output",
        "  --progress=True",
    ):
        assert expected in out, expected
    assert "Try --helpfull" not in out and "--logtostderr" not in out  # absl's own: --helpfull


def test_a_resume_is_announced(tmp_path):
    args = [*DIGITS_FLAGS, "--experiment_name=r", f"--root_output_dir={tmp_path}"]
    first = _binary("run_digits.py", *args, "--total_rounds=2")
    assert first.returncode == 0 and "Resuming" not in first.stdout, first.stderr[-2000:]
    again = _binary("run_digits.py", *args, "--total_rounds=4")
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"Resuming from round 3: rounds 1..2 are in {tmp_path}/checkpoints/r." in again.stdout


@pytest.mark.parametrize(
    "script,params",
    [
        ("fashion_experiments.py", "experiments.fashion"),
        ("pretrained_experiments.py", "experiments.pretrained"),
        ("shakespeare_experiments.py", "experiments.shakespeare"),
        ("benchmark.py", "benchmarks.suite"),
    ],
)
def test_help_of_a_driver_lists_every_parameter_flag(script, params):
    """The drivers' flags are defined for them by fedpt_cli from a Params dataclass; absl's
    --help lists only the flags the script's own module defines, so it listed none."""
    import dataclasses
    import importlib

    result = _binary(script, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    names = [f.name for f in dataclasses.fields(importlib.import_module(params).Params)]
    listed = {
        line.split(":")[0].strip().replace("--[no]", "--") for line in result.stdout.splitlines()
    }
    missing = [n for n in ["sections", *names] if f"--{n}" not in listed]
    assert not missing, result.stdout[-2000:]

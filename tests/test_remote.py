"""Remote execution on TFF's own workers (gRPC) through the mergeable execution context."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_federated as tff

import tff_fedpt
from tff_fedpt import remote, runtime
from tff_fedpt._tff_internals import context_stack_impl

from . import models, scripts
from .test_binaries import DIGITS_FLAGS, ENV, ROOT, _binary, _final_weights, _rows


def _sgd(lr):
    return tff.learning.optimizers.build_sgdm(learning_rate=lr)


def _start(**kwargs):
    return remote.start_worker(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)


def _worker_pids():
    out = subprocess.run(["pgrep", "-f", "worker_binary"], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


@pytest.fixture(scope="module")
def two_workers():
    workers = [_start(), _start()]
    yield workers
    runtime.shutdown()  # back to local execution for the other tests
    for worker in workers:
        worker.stop()
    assert not (_worker_pids() & {w.pid for w in workers})


def _three_rounds(process, data):
    state = process.initialize()
    for _ in range(3):
        output = process.next(state, data)
        state = output.state
    return process.get_model_weights(state), output.metrics


def _local_then_remote(build, workers, data):
    runtime.use_local_runtime()
    local = _three_rounds(build(), data)
    context = remote.use_remote_workers([w.target for w in workers], timeout=5)
    try:
        assert not runtime.restart_worker()  # the periodic local restart leaves it alone
        assert context_stack_impl.context_stack.current is context
        on_workers = _three_rounds(build(), data)
    finally:
        runtime.shutdown()
    return local, on_workers


def _assert_same_weights(a, b):
    for x, y in zip(a.trainable + a.non_trainable, b.trainable + b.non_trainable):
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_fedpt_on_two_workers_equals_local_execution(two_workers):
    data = models.client_data(num_clients=5)

    def build():
        return tff_fedpt.build_fedpt_process(
            models.fedpt_model_fn(), _sgd(0.1), _sgd(0.5), frozen_seed=5
        )

    (w_local, m_local), (w_remote, m_remote) = _local_then_remote(build, two_workers, data)
    _assert_same_weights(w_local, w_remote)
    assert m_remote["communication"] == m_local["communication"]
    assert m_remote["client_work"]["train"]["num_examples"] == sum(10 + c for c in range(5))
    np.testing.assert_allclose(
        m_remote["client_work"]["train"]["loss"], m_local["client_work"]["train"]["loss"], 1e-5
    )


def test_tff_fedavg_on_two_workers_equals_local_execution(two_workers):
    data = models.client_data(num_clients=4)

    def build():
        return tff.learning.algorithms.build_weighted_fed_avg(
            lambda: tff.learning.models.from_keras_model(
                models.mlp(), loss=models.loss(), input_spec=models.INPUT_SPEC
            ),
            _sgd(0.1),
            _sgd(0.5),
        )

    (w_local, _), (w_remote, _) = _local_then_remote(build, two_workers, data)
    _assert_same_weights(w_local, w_remote)


def test_non_mergeable_aggregator_is_refused_with_the_reason(two_workers):
    process = tff_fedpt.build_fedpt_process(
        models.fedpt_model_fn(),
        _sgd(0.1),
        model_aggregator=tff.learning.secure_aggregator(),
    )
    with pytest.raises(remote.NotMergeableError, match="federated_secure_sum_bitwidth"):
        remote.check_mergeable(process)
    remote.use_remote_workers([w.target for w in two_workers], timeout=5)
    try:  # the same refusal from the first call, not a hang or a TFF traceback
        with pytest.raises(remote.NotMergeableError, match="local execution"):
            process.next(process.initialize(), models.client_data(num_clients=2))
    finally:
        runtime.shutdown()


def test_unreachable_worker_is_named_at_start(two_workers):
    import portpicker

    dead = f"127.0.0.1:{portpicker.pick_unused_port()}"
    start = time.monotonic()
    with pytest.raises(remote.WorkerUnavailableError) as info:
        remote.use_remote_workers([two_workers[0].target, dead], timeout=1)
    assert time.monotonic() - start < 10
    assert info.value.target == dead
    assert "start_worker.py" in str(info.value)


@pytest.mark.parametrize(
    "spec,message",
    [
        ("", "expected host:port"),
        ("localhost", "'localhost' is not host:port"),
        ("localhost:0", "port in 1..65535"),
        ("a:1,a:1", "listed more than once"),
        ("::1:80", "IPv6 hosts in brackets"),
    ],
)
def test_bad_worker_lists(spec, message):
    with pytest.raises(ValueError, match=message):
        remote.parse_workers(spec)


def test_parse_workers_accepts_lists_and_ipv6():
    assert remote.parse_workers("a:1, [::1]:2") == ("a:1", "[::1]:2")
    assert remote.parse_workers(["h:80"]) == ("h:80",)


def _listening_addresses(port):
    """Local addresses (hex, as in /proc/net/tcp*) of sockets listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                address, hex_port = fields[1].split(":")
                if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
                    found.append(address)
    return found


def test_worker_serves_on_loopback_unless_told_otherwise():
    with _start() as worker:
        # IPv4-mapped 127.0.0.1 on the worker's dual-stack socket: ::ffff:127.0.0.1.
        assert _listening_addresses(worker.port) == ["0000000000000000FFFF00000100007F"]
    with _start(address="0.0.0.0") as worker:
        assert _listening_addresses(worker.port) == ["0" * 32]  # every interface
        assert worker.target == f"127.0.0.1:{worker.port}"
    assert not worker.running()


def test_start_worker_errors():
    with pytest.raises(ValueError, match="port must be an integer in 1..65535; received 0"):
        remote.start_worker(0)
    with _start() as worker:
        with pytest.raises(RuntimeError, match="Address already in use"):
            _start(port=worker.port)
    with pytest.raises(RuntimeError, match="address this machine does not have"):
        _start(address="192.0.2.77")
    with pytest.raises(ValueError, match="'no-such-host.invalid' does not resolve"):
        _start(address="no-such-host.invalid")
    with _start(address="localhost") as worker:  # a host name: resolved, then bound
        remote.check_workers([worker.target], timeout=5)
        [listening] = _listening_addresses(worker.port)
        assert listening in ("0000000000000000FFFF00000100007F", "00000000000000000000000001000000")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_start_worker_script_stops_cleanly(sig):
    import portpicker

    port = portpicker.pick_unused_port()
    server = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "scripts", "start_worker.py"), f"--port={port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    line = server.stdout.readline()
    assert f"serving on 127.0.0.1:{port}" in line, line + server.stderr.read()
    pid = int(line.split("(pid ")[1].split(")")[0])
    remote.check_workers([f"127.0.0.1:{port}"], timeout=5)
    server.send_signal(sig)
    out, _ = server.communicate(timeout=30)
    assert server.returncode == 0
    assert f"({sig.name})" in out
    assert pid not in _worker_pids()


def test_binary_on_workers_stops_naming_a_dead_worker_and_resumes(tmp_path):
    rounds = 6
    args = [
        *DIGITS_FLAGS,
        f"--total_rounds={rounds}",
        "--rounds_per_checkpoint=1",
        "--experiment_name=run",
    ]
    # The oracle: the same run, locally and uninterrupted.
    local = _binary("run_digits.py", *args, f"--root_output_dir={tmp_path}/local")
    assert local.returncode == 0, local.stderr[-3000:]

    metrics = tmp_path / "remote" / "results" / "run" / "metrics.csv"
    with _start() as first, _start() as second:
        workers = f"--workers={first.target},{second.target}"
        proc = scripts.start(
            [
                sys.executable,
                os.path.join(ROOT, "scripts", "run_digits.py"),
                *args,
                workers,
                "--worker_timeout=2",
                f"--root_output_dir={tmp_path}/remote",
            ],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if metrics.exists() and len(_rows(metrics)) >= 2:
                break
            time.sleep(0.05)
        second.kill()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1, err[-3000:]
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert f"TFF worker {second.target} is unreachable" in lines[0]
        assert "checkpoints" in lines[0] and "intact" in lines[0]
        stopped_at = len(_rows(metrics))
        assert 2 <= stopped_at < rounds
        assert f"(last: round {stopped_at})" in lines[0]

        # Resume on the worker that is still up.
        resumed = _binary(
            "run_digits.py",
            *args,
            f"--workers={first.target}",
            f"--root_output_dir={tmp_path}/remote",
            process=True,
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "Running on 1 TFF workers" in resumed.stdout
    assert [int(r["round"]) for r in _rows(metrics)] == list(range(1, rounds + 1))
    _assert_same_weights(
        _final_weights(str(tmp_path / "local"), "run", rounds),
        _final_weights(str(tmp_path / "remote"), "run", rounds),
    )


def test_binary_refuses_unreachable_workers_in_one_line(tmp_path):
    import portpicker

    dead = f"127.0.0.1:{portpicker.pick_unused_port()}"
    result = _binary(
        "run_digits.py",
        *DIGITS_FLAGS,
        f"--workers={dead}",
        "--worker_timeout=1",
        f"--root_output_dir={tmp_path}",
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"TFF worker {dead} is unreachable" in lines[0], result.stderr
    bad = _binary("run_digits.py", "--workers=nohost", f"--root_output_dir={tmp_path}")
    assert bad.returncode == 2 and "--workers: 'nohost' is not host:port" in bad.stderr


def test_pretrained_values_come_from_each_workers_disk_checked(two_workers, tmp_path):
    """FedPT with pretrained frozen values stored for workers: on two TFF workers it equals
    local execution, and a worker whose copy of a tensor differs refuses to train."""
    from tff_fedpt import frozen

    data = models.client_data(num_clients=3)
    base = models.mlp()
    base.get_layer("hidden").kernel.assign(np.full((4, 8), 0.25, np.float32))
    held = frozen.PretrainedWeights.from_keras_model(base).save_for_workers(tmp_path / "store")
    spec = tff_fedpt.FreezeSpec(layers=("hidden",), pretrained=held)

    def build():
        return tff_fedpt.build_fedpt_process(
            lambda: tff_fedpt.from_keras_model(
                models.mlp(), loss=models.loss(), input_spec=models.INPUT_SPEC, freeze=spec
            ),
            _sgd(0.1),
        )

    (w_local, _), (w_remote, _) = _local_then_remote(build, two_workers, data)
    _assert_same_weights(w_local, w_remote)
    np.testing.assert_array_equal(w_remote.non_trainable[0], np.full((4, 8), 0.25))
    process = build()  # the check is built in: change the file after building
    path = tmp_path / "store" / "hidden__kernel.tensor"
    path.write_bytes(tf.io.serialize_tensor(tf.fill([4, 8], 0.5)).numpy())
    remote.use_remote_workers([w.target for w in two_workers], timeout=5)
    try:
        with pytest.raises(
            Exception,
            match="hidden__kernel.tensor: the pretrained values of hidden/kernel:0 on this machine",
        ):
            process.next(process.initialize(), data)
    finally:
        runtime.shutdown()

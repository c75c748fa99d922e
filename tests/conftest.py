"""Test fixtures: the TFF runtime is started leak-proof and stopped after the session."""

import atexit
import importlib
import os
import shutil
import signal
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# A test's process that is killed (SIGKILL, a timeout) runs no exit handler, so what TF
# wrote in the temporary directory stays there (autograph's generated modules: about 33
# a suite run). Everything the run and its processes write there goes under one directory
# of its own instead, removed when the run ends (pytest-xdist's workers each make one
# inside their controller's). pytest's own directories stay where pytest keeps them.
os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", tempfile.gettempdir())
_TEMPORARY = tempfile.mkdtemp(prefix="tff_fedpt_tests_")
os.environ["TMPDIR"] = tempfile.tempdir = _TEMPORARY
atexit.register(shutil.rmtree, _TEMPORARY, ignore_errors=True)

# A process started in the background by a non-interactive shell ignores SIGINT, and an
# ignored signal stays ignored in every process it starts. TFF's own local worker (what
# `tff.backends.native` contexts start; tests build some) would then ignore the SIGINT
# its service manager stops it with, and the manager's unbounded wait (in `__del__`, at
# whatever garbage collection) hangs the run: seen on a clean clone, 20 minutes. A handler,
# unlike SIG_IGN, is reset to the default in a started program.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest  # noqa: E402

import baselines  # noqa: E402
from tff_fedpt import runtime  # noqa: E402

baselines.register()
# tests.scripts notes the flags every script starts from: imported before any script's.
importlib.import_module("tests.scripts")


@pytest.fixture(scope="session", autouse=True)
def tff_runtime():
    runtime.use_local_runtime()
    yield
    runtime.shutdown()


# Seconds each of the slowest tests took (`pytest --durations=45`, `make test`'s workers, this
# project's 2-core VM). With pytest-xdist, `--dist worksteal` first hands each worker one
# contiguous slice of the collection and later steals from the ends of the slices; a
# test of two minutes that happens to sit late in a slice then runs alone at the end.
# The slowest tests are therefore dealt out first, longest first, each to the slice
# with the least of them so far (a stale name here only loses that test its place).
SLOWEST = {
    "test_fashion_mnist.py::test_benchmark_workload_on_tiny_files": 101,
    "test_pretrained_experiments.py::test_grid_report_and_refusal": 90,
    "test_fashion_experiments.py::test_every_section_on_tiny_runs_and_the_report_regenerates": 80,
    "test_remote.py::test_binary_on_workers_stops_naming_a_dead_worker_and_resumes": 72,
    "test_shakespeare.py::test_grid_runs_and_report_regenerate_on_tiny_files": 63,
    "test_compression.py::test_binary_flags_and_comparison_script": 49,
    "test_binaries.py::test_digits_resume_after_sigkill_matches_uninterrupted_run": 49,
    "test_shakespeare.py::test_round_time_benchmark_section_on_tiny_files": 42,
    "test_binaries.py::test_demo_smoke": 32,
    "test_privacy.py::test_resume_keeps_dp_state_and_epsilon": 31,
    "test_readme_example.py::test_readme_library_example_runs_piped_and_exits": 30,
    "test_shakespeare.py::test_pretrain_on_public_plays_then_the_binary_trains_from_it": 30,
    "test_binaries.py::test_ctrl_c_is_one_line_saves_the_last_round_and_the_rerun_resumes": 29,
    "test_fashion_experiments.py::test_experiment_driver_ctrl_c_is_one_line_and_exit_130": 27,
    "test_training.py::test_resume_with_other_rounds_under_a_target_epsilon_is_refused": 26,
    "test_portable.py::test_numpy_tensorflow_and_builtin_interpreter_agree_for_every_family": 26,
    "test_binaries.py::test_second_ctrl_c_stops_at_once_with_one_line": 26,
    "test_remote.py::test_pretrained_values_come_from_each_workers_disk_checked": 25,
    "test_shakespeare.py::test_char_model_device_round_equals_process_next": 25,
    "test_adapters.py::test_lstm_adapters_compute_keras_lstm_merge_exactly_and_train_in_fedpt": 24,
    "test_binaries.py::test_a_resume_is_announced": 22,
    "test_binaries.py::test_stackoverflow_binary_smoke[lstm-embedding]": 22,
    "test_portable.py::test_builtin_only_exports_of_the_issue_models": 21,
    "test_training.py::test_resume_after_a_corrupt_newest_checkpoint_keeps_every_round_once": 21,
    "test_privacy.py::test_calibration_reaches_target_within_one_percent[poisson-pld]": 21,
    "test_shakespeare.py::test_words_binary_trains_fedpt_with_adapters_on_its_dense_layers": 19,
    "test_fashion_mnist.py::test_public_split_pretraining_and_a_pretrained_fedpt_run": 19,
    "test_adapters.py::test_ffa_with_a_pretrained_base_a_device_round_equals_process_next": 19,
    "test_binaries.py::test_stackoverflow_binary_smoke[transformer-attention]": 19,
    "test_remote.py::test_fedpt_on_two_workers_equals_local_execution": 19,
    "test_features.py::test_a_run_on_features_gives_the_rows_of_a_run_on_inputs": 18,
    "test_baselines.py::test_baselines_run_through_the_training_loop[small_model]": 18,
    "test_readme_example.py::test_program_context_worker_dies_with_python": 18,
    "test_pretrained.py::test_pretrained_fedpt_composes_with_dp_and_compression": 18,
    "test_baselines.py::test_baselines_run_through_the_training_loop[pvt]": 16,
    "test_compression.py::test_dp_with_quantized_broadcast_trains_and_accounts": 16,
    "test_portable.py::test_builtin_only_clients_on_the_slim_runtime_equal_process_next": 16,
    "test_slim_boundary.py::test_updates_go_to_exactly_the_path_given_and_labels_are_checked": 16,
    "test_docs.py::test_every_python_block_runs[docs/remote_workers.md]": 15,
}


def pytest_collection_modifyitems(config, items):
    workers = getattr(config, "workerinput", {}).get("workercount", 0)
    if workers < 2:
        return
    # The slices worksteal hands out first: sizes len // n, then the rest // (n - 1)...
    sizes, left = [], len(items)
    for i in range(workers):
        sizes.append(left // (workers - i))
        left -= sizes[-1]

    def seconds(item):
        return SLOWEST.get(item.nodeid.split("tests/", 1)[-1], 0)

    slow = sorted((item for item in items if seconds(item)), key=seconds, reverse=True)
    slices, loads = [[] for _ in sizes], [0] * workers
    for item in slow:
        room = [i for i in range(workers) if len(slices[i]) < sizes[i]]
        i = min(room, key=lambda i: loads[i])
        slices[i].append(item)
        loads[i] += seconds(item)
    rest = iter(item for item in items if not seconds(item))
    for i, size in enumerate(sizes):
        slices[i].extend(next(rest) for _ in range(size - len(slices[i])))
    items[:] = [item for piece in slices for item in piece]

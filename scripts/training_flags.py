"""Flags and the thin main shared by the training binaries (run_*.py)."""

from __future__ import annotations

import dataclasses
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags, logging  # noqa: E402

from tff_fedpt import communication, remote, runtime, training  # noqa: E402
from tff_fedpt.tasks import DatasetNotFoundError, load_task  # noqa: E402

_DEFAULTS = training.ExperimentConfig()

flags.DEFINE_enum("algorithm", "fedpt", list(training.ALGORITHMS), "Training algorithm.")
flags.DEFINE_string("model", None, "Model name (default: the task's default model).")
flags.DEFINE_string("freeze", None, "Freeze preset name, 'none', or comma-separated layer regexes.")
flags.DEFINE_integer("frozen_seed", 0, "Seed of the frozen weights.")
flags.DEFINE_integer("total_rounds", _DEFAULTS.total_rounds, "Number of training rounds.")
flags.DEFINE_integer("clients_per_round", _DEFAULTS.clients_per_round, "Clients per round.")
flags.DEFINE_integer("client_epochs_per_round", 1, "Local epochs per round.")
flags.DEFINE_integer("client_batch_size", 20, "Client batch size.")
flags.DEFINE_integer("max_elements_per_client", None, "Keep at most this many examples.")
flags.DEFINE_string("client_optimizer", "sgd", "sgd, sgdm or adam.")
flags.DEFINE_float("client_learning_rate", 0.1, "Client learning rate.")
flags.DEFINE_float("client_momentum", 0.9, "Client momentum (sgdm).")
flags.DEFINE_string("server_optimizer", "sgd", "sgd, sgdm or adam.")
flags.DEFINE_float("server_learning_rate", 1.0, "Server learning rate.")
flags.DEFINE_float("server_momentum", 0.9, "Server momentum (sgdm).")
flags.DEFINE_float("server_adam_beta1", 0.9, "Server Adam beta1.")
flags.DEFINE_float("server_adam_beta2", 0.999, "Server Adam beta2.")
flags.DEFINE_float("server_adam_epsilon", 1e-7, "Server Adam epsilon.")
flags.DEFINE_integer("rounds_per_eval", 10, "Evaluate every this many rounds.")
flags.DEFINE_integer("rounds_per_checkpoint", 10, "Checkpoint every this many rounds.")
flags.DEFINE_string("root_output_dir", "/tmp/tff_fedpt", "Root of checkpoints/results/logdir.")
flags.DEFINE_string("experiment_name", None, "Experiment name (default: task_algorithm_freeze).")
flags.DEFINE_integer("seed", 0, "Seed of client sampling, shuffling and model init.")
flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")
flags.DEFINE_enum(
    "client_weighting",
    None,
    list(training.CLIENT_WEIGHTINGS),
    "Default: num_examples (uniform with --dp).",
)
flags.DEFINE_float(
    "pvt_trainable_fraction", 0.5, "--algorithm=pvt: fraction of variables trained per round."
)
flags.DEFINE_integer(
    "worker_restart_rounds", 50, "Restart the TFF worker every this many rounds (0: never)."
)
flags.DEFINE_string(
    "workers",
    None,
    "Run on TFF workers host:port,host:port (see scripts/start_worker.py); default: local.",
)
flags.DEFINE_float(
    "worker_timeout", remote.DEFAULT_TIMEOUT_S, "Seconds a worker may not answer before failing."
)
flags.DEFINE_integer(
    "upload_bits", None, "FedPT: quantize client uploads to this many bits (1..16)."
)
flags.DEFINE_integer(
    "broadcast_bits", None, "FedPT: broadcast the trainable weights in 8 or 16 bits."
)
flags.DEFINE_enum("sampling", "uniform", ["uniform", "poisson"], "Client sampling per round.")
# Differential privacy.
flags.DEFINE_bool("dp", False, "Train with user-level DP (DP-FedAvg aggregation).")
flags.DEFINE_float("noise_multiplier", None, "DP noise multiplier (or --target_epsilon).")
flags.DEFINE_float("target_epsilon", None, "Calibrate the noise multiplier to this epsilon.")
flags.DEFINE_float("clip", 1.0, "L2 clipping norm (initial value with --adaptive_clip).")
flags.DEFINE_bool("adaptive_clip", False, "Adapt the clip to --target_quantile of update norms.")
flags.DEFINE_float("target_quantile", 0.5, "Target quantile for --adaptive_clip.")
flags.DEFINE_float("target_delta", None, "Target delta (default 1/number of training clients).")
flags.DEFINE_enum("accountant", "rdp", ["rdp", "pld"], "Privacy accountant.")

FLAGS = flags.FLAGS


def _fail(message: str, code: int = 2) -> None:
    print(f"{sys.argv[0]}: error: {message}", file=sys.stderr)
    sys.exit(code)


def _use_runtime() -> None:
    """Local execution, or the remote workers of --workers (checked reachable)."""
    if not FLAGS.workers:
        runtime.use_local_runtime()
        return
    if not FLAGS.worker_timeout > 0:
        _fail(f"--worker_timeout must be > 0 seconds; received {FLAGS.worker_timeout}.")
    try:
        workers = remote.parse_workers(FLAGS.workers)
        remote.use_remote_workers(workers, timeout=FLAGS.worker_timeout)
    except ValueError as e:
        _fail(f"--{e}")
    except remote.WorkerUnavailableError as e:
        _fail(str(e))
    print(f"Running on {len(workers)} TFF workers: {', '.join(workers)}", flush=True)


def _progress(config):
    if not FLAGS.progress:
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=config.total_rounds, unit="round", file=sys.stderr)

    def on_start(first_round):
        bar.update(first_round - 1 - bar.n)

    def on_round_end(round_num, row):
        postfix = {
            "loss": f"{row.get('train/loss', float('nan')):.4f}",
            "MB": f"{row['cumulative_megabytes']:.1f}",
        }
        if "eval/accuracy" in row:
            postfix["test_acc"] = f"{row['eval/accuracy']:.4f}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(round_num - bar.n)
        if round_num == config.total_rounds:
            bar.close()

    return on_start, on_round_end


def _print_cost(config, cost, fedavg):
    print(
        f"Per client per round: {config.algorithm} sends "
        f"{cost.broadcast_bytes_per_client / 1e6:.3f} MB down + "
        f"{cost.upload_bytes_per_client / 1e6:.3f} MB up; FedAvg on the same model "
        f"{fedavg.broadcast_bytes_per_client / 1e6:.3f} MB + "
        f"{fedavg.upload_bytes_per_client / 1e6:.3f} MB "
        f"({cost.reduction_versus(fedavg):.1f}x less communication).",
        flush=True,
    )


def run(argv, task_name: str, default_freeze: str, task_kwargs: dict) -> None:
    """Builds the config from flags, loads the task and trains. Errors: one line."""
    if len(argv) > 1:
        _fail(f"unexpected positional arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)  # TFF logs every model construction at INFO
    freeze = FLAGS.freeze or default_freeze
    name = FLAGS.experiment_name or f"{task_name}_{FLAGS.algorithm}_{freeze}"
    fields = {f.name for f in dataclasses.fields(training.ExperimentConfig)}
    values = {k: FLAGS[k].value for k in fields if k in FLAGS}
    values.update(task=task_name, freeze=freeze, experiment_name=name)
    config = training.ExperimentConfig(**values)
    try:
        task = load_task(task_name, **task_kwargs)
    except (DatasetNotFoundError, ValueError) as e:
        _fail(str(e))
    _use_runtime()
    try:
        training.validate(config, task)
        model_fn, fedavg_model_fn = training.model_fns(config, task)
        process, process_model_fn = training.build_process(config, task)
        if FLAGS.workers:
            remote.check_mergeable(process)
    except (training.ConfigError, remote.NotMergeableError) as e:
        _fail(str(e))
    report = getattr(model_fn(), "freeze_report", None)
    if report is not None:
        print(f"Trainable / frozen parameters:\n{report.format_table()}")
    fedavg = communication.fedavg_communication_cost(fedavg_model_fn)
    if config.algorithm == "pvt":
        print(
            "Per client per round: pvt sends all weights down "
            f"({fedavg.broadcast_bytes_per_client / 1e6:.3f} MB) and the round's selected "
            "variables up (see upload_bytes_per_client in the metrics).",
            flush=True,
        )
    else:
        _print_cost(config, communication.communication_cost(process), fedavg)
    on_start, on_round_end = _progress(config)
    try:
        result = training.run_experiment(
            config,
            task,
            on_start=on_start,
            on_round_end=on_round_end,
            built=(process, process_model_fn),
        )
    except training.ConfigError as e:
        _fail(str(e))
    except remote.WorkerError as e:
        last = training.latest_checkpoint_round(config)
        _fail(
            f"{e}. Training stopped; the checkpoints in "
            f"{training.output_dirs(config)['checkpoints']} are intact (last: round {last}). "
            "Rerun the same command with --workers listing the workers that are up to resume "
            f"from round {last + 1}.",
            code=1,
        )
    final = result.final_eval
    epsilon = result.rows[-1].get("privacy/epsilon") if result.rows else None
    privacy_note = (
        f", epsilon {float(epsilon):.3f} at delta {result.rows[-1]['privacy/delta']}"
        if epsilon not in (None, "")
        else ""
    )
    print(
        f"Done: {config.total_rounds} rounds, test accuracy "
        f"{final.get('eval/accuracy', 'n/a')}{privacy_note}, results in {result.results_dir}"
    )
    runtime.shutdown()

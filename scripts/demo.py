"""`make demo`: FedPT against FedAvg on the embedded digits task, offline.

Trains both for the same rounds with the same clients, data order and trainable
initialization, then prints a comparison table and writes a PNG of test accuracy
against cumulative megabytes communicated.
"""

import json
import os
import shutil
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app, flags, logging  # noqa: E402

from tff_fedpt import reporting, runtime, training  # noqa: E402
from tff_fedpt.tasks import load_task  # noqa: E402

flags.DEFINE_string("output_dir", "output/demo", "Where results, table and plot go.")
flags.DEFINE_integer("total_rounds", 80, "Training rounds for each algorithm.")
flags.DEFINE_integer("clients_per_round", 10, "Clients per round.")
flags.DEFINE_bool("resume", False, "Reuse earlier runs in output_dir instead of starting over.")
FLAGS = flags.FLAGS

# Hyperparameters chosen on the digits task for both algorithms alike.
DIGITS = dict(
    task="digits",
    client_epochs_per_round=5,
    client_batch_size=10,
    client_learning_rate=0.1,
    rounds_per_eval=5,
)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected positional arguments: {argv[1:]}")
    logging.set_verbosity(logging.WARNING)
    if not FLAGS.resume:
        for sub in ("checkpoints", "results", "logdir"):
            shutil.rmtree(os.path.join(FLAGS.output_dir, sub), ignore_errors=True)
    runtime.use_local_runtime()
    task = load_task("digits")
    runs = {
        "FedPT (dense frozen)": dict(algorithm="fedpt", freeze="dense"),
        "FedAvg": dict(algorithm="fedavg", freeze="none"),
    }
    from tqdm import tqdm

    results = {}
    for label, overrides in runs.items():
        config = training.ExperimentConfig(
            **DIGITS,
            **overrides,
            total_rounds=FLAGS.total_rounds,
            clients_per_round=FLAGS.clients_per_round,
            rounds_per_checkpoint=FLAGS.total_rounds,
            root_output_dir=FLAGS.output_dir,
            experiment_name=overrides["algorithm"],
        )
        bar = tqdm(total=config.total_rounds, desc=label, unit="round", file=sys.stderr)

        def on_round_end(round_num, row, bar=bar):
            bar.set_postfix(
                loss=f"{row['train/loss']:.3f}", MB=f"{row['cumulative_megabytes']:.0f}"
            )
            bar.update(round_num - bar.n)

        results[label] = training.run_experiment(config, task, on_round_end=on_round_end)
        bar.close()
    summaries = [reporting.summarize(label, r.rows) for label, r in results.items()]
    table = reporting.comparison_table(summaries, baseline="FedAvg")
    fedpt = results["FedPT (dense frozen)"]
    print()
    print(f"Digits task, {FLAGS.total_rounds} rounds x {FLAGS.clients_per_round} clients:")
    print(fedpt.freeze_report.format_table())
    print()
    print(table)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    plot = reporting.plot_accuracy_vs_megabytes(
        {label: r.rows for label, r in results.items()},
        os.path.join(FLAGS.output_dir, "accuracy_vs_megabytes.png"),
        title=f"Digits: test accuracy vs communication ({FLAGS.total_rounds} rounds)",
    )
    with open(os.path.join(FLAGS.output_dir, "comparison.json"), "w") as f:
        json.dump(summaries, f, indent=2)
    with open(os.path.join(FLAGS.output_dir, "comparison.md"), "w") as f:
        f.write(reporting.markdown_table(summaries, baseline="FedAvg") + "\n")
    print(f"\nPlot: {os.path.abspath(plot)}")
    print(f"Table (JSON, Markdown): {os.path.abspath(FLAGS.output_dir)}/comparison.{{json,md}}")
    runtime.shutdown()


if __name__ == "__main__":
    app.run(main)

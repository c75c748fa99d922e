"""`make demo`: FedPT against FedAvg on the embedded digits task, offline.

Trains both for the same rounds with the same clients, data order and trainable
initialization, then prints a comparison table and writes a PNG of test accuracy
against cumulative megabytes communicated.
"""

from fedpt_cli import comparison_runner, entry

import os

from absl import flags

from tff_fedpt.tasks import digits, load_task

flags.DEFINE_string("output_dir", "output/demo", "Where results, table and plot go.")
flags.DEFINE_integer(
    "total_rounds", digits.RECOMMENDED["total_rounds"], "Training rounds for each algorithm."
)
flags.DEFINE_integer("clients_per_round", 10, "Clients per round.")
flags.DEFINE_bool("resume", False, "Reuse earlier runs in output_dir instead of starting over.")
FLAGS = flags.FLAGS


def main():
    results, table, plot = comparison_runner.run_and_report(
        load_task("digits"),
        {
            "FedPT (dense frozen)": dict(algorithm="fedpt", freeze="dense"),
            "FedAvg": dict(algorithm="fedavg", freeze="none"),
        },
        total_rounds=FLAGS.total_rounds,
        clients_per_round=FLAGS.clients_per_round,
        output_dir=FLAGS.output_dir,
        resume=FLAGS.resume,
        title=f"Digits: test accuracy vs communication ({FLAGS.total_rounds} rounds)",
    )
    print(f"\nDigits task, {FLAGS.total_rounds} rounds x {FLAGS.clients_per_round} clients:")
    print(results["FedPT (dense frozen)"].freeze_report.format_table())
    print()
    print(table)
    print(f"\nPlot: {os.path.abspath(plot)}")
    print(f"Table (JSON, Markdown): {os.path.abspath(FLAGS.output_dir)}/comparison.{{json,md}}")


if __name__ == "__main__":
    entry.run(main)

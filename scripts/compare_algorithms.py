"""FedPT (every preset) against FedAvg, the small-model baseline and PVT on digits.

Same rounds, clients, data order and hyperparameters for all; one table and one PNG of
test accuracy against cumulative megabytes communicated (output/compare/).
"""

from fedpt_cli import comparison_runner, entry

import os

from absl import flags

from tff_fedpt.tasks import digits, load_task

flags.DEFINE_string("output_dir", "output/compare", "Where results, table and plot go.")
flags.DEFINE_integer(
    "total_rounds", digits.RECOMMENDED["total_rounds"], "Training rounds for each run."
)
flags.DEFINE_integer("clients_per_round", 10, "Clients per round.")
flags.DEFINE_float("pvt_trainable_fraction", 0.5, "Fraction of variables PVT trains per round.")
flags.DEFINE_bool("resume", False, "Reuse earlier runs in output_dir instead of starting over.")
FLAGS = flags.FLAGS


def main():
    runs = {f"FedPT ({p} frozen)": dict(algorithm="fedpt", freeze=p) for p in digits.PRESETS}
    runs["FedAvg"] = dict(algorithm="fedavg", freeze="none")
    runs["small model (FedAvg)"] = dict(algorithm="small_model", freeze="dense")
    runs["PVT"] = dict(
        algorithm="pvt", freeze="none", pvt_trainable_fraction=FLAGS.pvt_trainable_fraction
    )
    _, table, plot = comparison_runner.run_and_report(
        load_task("digits"),
        runs,
        total_rounds=FLAGS.total_rounds,
        clients_per_round=FLAGS.clients_per_round,
        output_dir=FLAGS.output_dir,
        resume=FLAGS.resume,
        title=f"Digits: accuracy vs communication ({FLAGS.total_rounds} rounds)",
    )
    print(f"\nDigits task, {FLAGS.total_rounds} rounds x {FLAGS.clients_per_round} clients:\n")
    print(table)
    print(f"\nPlot: {os.path.abspath(plot)}")


if __name__ == "__main__":
    entry.run(main)

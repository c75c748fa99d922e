"""Trains FedPT or FedAvg on the embedded digits task (offline)."""

import training_flags
from absl import app, flags

flags.DEFINE_integer("num_clients", 100, "Number of simulated clients.")
flags.DEFINE_float("dirichlet_alpha", 0.5, "Label-skew concentration (small = more skew).")
FLAGS = flags.FLAGS
# Defaults tuned on this task (make demo uses the same).
FLAGS.set_default("total_rounds", 80)
FLAGS.set_default("client_epochs_per_round", 5)
FLAGS.set_default("client_batch_size", 10)
FLAGS.set_default("rounds_per_eval", 5)


def main(argv):
    training_flags.run(
        argv,
        "digits",
        default_freeze="dense",
        task_kwargs=dict(num_clients=FLAGS.num_clients, alpha=FLAGS.dirichlet_alpha),
    )


if __name__ == "__main__":
    app.run(main)

"""Trains FedPT or a baseline on the embedded digits task (offline)."""

import training_flags
from absl import flags

from tff_fedpt.tasks import digits

flags.DEFINE_integer("num_clients", 100, "Number of simulated clients.")
flags.DEFINE_float("dirichlet_alpha", 0.5, "Label-skew concentration (small = more skew).")
FLAGS = flags.FLAGS
for _name, _value in digits.RECOMMENDED.items():  # the task's tuned defaults
    FLAGS.set_default(_name, _value)

if __name__ == "__main__":
    training_flags.main(
        "digits", lambda: dict(num_clients=FLAGS.num_clients, alpha=FLAGS.dirichlet_alpha)
    )

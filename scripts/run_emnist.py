"""Trains FedPT or a baseline on federated EMNIST (TFF's loader; needs the data cached).
Task flags: `emnist.DataOptions`."""

from fedpt_cli import training_flags

if __name__ == "__main__":
    training_flags.main("emnist", __doc__)

"""Trains FedPT or a baseline on StackOverflow next-word prediction (needs the data cached).
Task flags: `stackoverflow.DataOptions`."""

from fedpt_cli import training_flags

if __name__ == "__main__":
    training_flags.main("stackoverflow", __doc__)

"""Trains FedPT or a baseline on the embedded digits task (offline). Task flags:
`digits.DataOptions`; training defaults: `digits.RECOMMENDED` (the task's tuned settings)."""

from fedpt_cli import training_flags

if __name__ == "__main__":
    training_flags.main("digits", __doc__)

"""Trains FedPT or a baseline on federated Shakespeare, one client per speaking role
(`make data` builds the data offline once). Task flags: `shakespeare.DataOptions`
(`--unit=chars` TFF's character model, `--unit=words` the StackOverflow word model);
training defaults: `shakespeare.RECOMMENDED` (TFF's Shakespeare baseline)."""

from fedpt_cli import training_flags

if __name__ == "__main__":
    training_flags.main("shakespeare", __doc__)

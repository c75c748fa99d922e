"""Baselines to compare FedPT against: the training algorithms `fedavg`, `small_model` and
`pvt`. Importing this package registers them (and PVT's options group) with
`tff_fedpt.training.algorithms`; the binaries import it, the library never does."""

from baselines import fedavg, pvt, small_model  # noqa: F401  (registers the algorithms)

"""Baselines to compare FedPT against; importing this package registers them as
training algorithms (fedavg, small_model, pvt) in `tff_fedpt.training.algorithms`."""

from baselines import fedavg, pvt, small_model  # noqa: F401  (registration)

"""Baselines to compare FedPT against: the training algorithms `fedavg`, `small_model` and
`pvt`. `tff_fedpt.training.algorithms.get(name)` imports a baseline's module (which
registers it) on first use; `options.py` declares their options for `ExperimentConfig`."""

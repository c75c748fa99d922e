"""Baselines to compare FedPT against: the training algorithms `fedavg`, `small_model` and
`pvt`. `register()` adds them (and PVT's options group) to
`tff_fedpt.training.algorithms`; the binaries call it, the library never does."""

from baselines.fedavg import FedAvg
from baselines.pvt import PVT
from baselines.small_model import SmallModel
from tff_fedpt.training import algorithms


def register() -> tuple[str, ...]:
    """Registers the baselines' algorithms (again: no effect) and returns their names.

    Call it before the first `ExperimentConfig` is composed (PVT adds an options group)."""
    return tuple(algorithms.register(a).name for a in (FedAvg(), PVT(), SmallModel()))

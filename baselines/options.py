"""The baselines' options: a group of `ExperimentConfig`, registered with PVT
(`pvt.PVT.options`)."""

from __future__ import annotations

import dataclasses

from tff_fedpt.options import option


@dataclasses.dataclass(frozen=True)
class PVTOptions:
    """Partial variable training (`--algorithm=pvt`, `baselines/pvt.py`)."""

    pvt_trainable_fraction: float = option(
        0.5, "--algorithm=pvt: fraction of variables trained per round."
    )

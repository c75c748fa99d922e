"""User-level differential privacy: DP aggregators on TF Privacy queries, accounting.

The aggregators are TFF's `DifferentiallyPrivateFactory` (TF Privacy's
`GaussianSumQuery` / `QuantileAdaptiveClipSumQuery` inside a `NormalizedQuery`),
wrapped to report the clipping norm in force, the fraction of clients whose update
was clipped and the standard deviation of the noise on the averaged update. They are
unweighted: DP-FedAvg averages clients uniformly. Clipping and noise apply to
whatever value they aggregate; in FedPT that is the trainable delta only.

Epsilon comes from `dp_accounting` (RDP or PLD accountant) for the sampling that was
actually used: Poisson sampling (each client independently with probability q) or
fixed-size uniform sampling without replacement.

    aggregation.py  DP aggregators and the options and checks of a DP run
    accounting.py   epsilon with dp_accounting, noise calibration, client sampling
"""

from tff_fedpt.privacy.accounting import (
    ACCOUNTANTS,
    SAMPLINGS,
    PrivacyAccountant,
    PrivacySetting,
    RoundAccounting,
    calibrate_noise_multiplier,
    compute_epsilon,
    sample_clients,
)
from tff_fedpt.privacy.aggregation import (
    DPOptions,
    build_dp_aggregator,
    check_adaptive_noise,
    check_dp_options,
)

__all__ = [
    "ACCOUNTANTS",
    "DPOptions",
    "PrivacyAccountant",
    "PrivacySetting",
    "RoundAccounting",
    "SAMPLINGS",
    "build_dp_aggregator",
    "calibrate_noise_multiplier",
    "check_adaptive_noise",
    "check_dp_options",
    "compute_epsilon",
    "sample_clients",
]

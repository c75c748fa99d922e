"""DP aggregators on TF Privacy queries: TFF's `DifferentiallyPrivateFactory` (TF
Privacy's `GaussianSumQuery` / `QuantileAdaptiveClipSumQuery` inside a `NormalizedQuery`),
wrapped to report the clipping norm in force, the fraction of clients whose update was
clipped and the standard deviation of the noise on the averaged update; and the options
and checks of a DP run."""

from __future__ import annotations

import collections
import dataclasses
from typing import Optional

import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt.options import option
from tff_fedpt.privacy.accounting import ACCOUNTANTS, SAMPLINGS, check_positive_float


@dataclasses.dataclass(frozen=True)
class DPOptions:
    """User-level DP options of a training run (DP-FedAvg / DP-FedPT); the binaries'
    flags of the same names."""

    dp: bool = option(False, "Train with user-level DP (DP-FedAvg aggregation).")
    noise_multiplier: Optional[float] = option(None, "DP noise multiplier (or --target_epsilon).")
    target_epsilon: Optional[float] = option(
        None, "Calibrate the noise multiplier to this epsilon."
    )
    clip: float = option(1.0, "L2 clipping norm (initial value with --adaptive_clip).")
    adaptive_clip: bool = option(False, "Adapt the clip to --target_quantile of update norms.")
    target_quantile: float = option(0.5, "Target quantile for --adaptive_clip.")
    target_delta: Optional[float] = option(
        None, "Target delta (default 1/number of training clients)."
    )
    accountant: str = option("rdp", "Privacy accountant.", choices=ACCOUNTANTS)

    def check(self, *, sampling: str, weighted: bool, clients_per_round: int) -> None:
        """Checks these options (messages name the options as fields: `noise_multiplier`).

        Raises:
          ValueError: naming the option, the value received and what is valid.
        """
        if not self.dp:
            if self.noise_multiplier is not None or self.target_epsilon is not None:
                raise ValueError("noise_multiplier / target_epsilon need dp.")
            return
        check_dp_options(
            noise_multiplier=self.noise_multiplier,
            target_epsilon=self.target_epsilon,
            clip=self.clip,
            adaptive_clip=self.adaptive_clip,
            target_quantile=self.target_quantile,
            target_delta=self.target_delta,
            accountant=self.accountant,
            sampling=sampling,
            weighted=weighted,
        )
        if self.adaptive_clip and self.noise_multiplier is not None:
            check_adaptive_noise(self.noise_multiplier, clients_per_round)


def _check_quantile(value, name):
    if not 0 < value < 1:
        raise ValueError(f"{name} must be in (0, 1); received {value}.")


def check_adaptive_noise(noise_multiplier: float, clients_per_round: int):
    """Raises ValueError if TFF's adaptive clipping cannot run with this noise."""
    if noise_multiplier >= 0.1 * clients_per_round:
        raise ValueError(
            f"noise_multiplier={noise_multiplier:g} is too large for "
            f"adaptive_clip with clients_per_round={clients_per_round}: "
            "TFF's adaptive clipping spends part of the privacy budget on the clipped-count "
            "estimate and needs noise_multiplier < 0.1 * clients_per_round "
            f"= {0.1 * clients_per_round:g}. Use more clients per round or a fixed clip."
        )


def check_dp_options(
    *,
    noise_multiplier: float | None,
    target_epsilon: float | None,
    clip: float,
    adaptive_clip: bool,
    target_quantile: float,
    target_delta: float | None,
    accountant: str,
    sampling: str,
    weighted: bool,
) -> None:
    """Checks a DP training setting before anything is built.

    Raises:
      ValueError: naming the option, the value received and what is valid.
    """
    if weighted:
        raise ValueError(
            "client_weighting=num_examples cannot be used with dp: "
            "DP-FedAvg averages clients uniformly (a weighted aggregate would leak the "
            "example counts and break the sensitivity bound). Use "
            "client_weighting=uniform or leave it unset."
        )
    if (noise_multiplier is None) == (target_epsilon is None):
        raise ValueError("dp needs exactly one of noise_multiplier and " "target_epsilon.")
    if noise_multiplier is not None:
        check_positive_float(noise_multiplier, "noise_multiplier", allow_zero=True)
    if target_epsilon is not None:
        check_positive_float(target_epsilon, "target_epsilon")
    check_positive_float(clip, "clip")
    if adaptive_clip:
        _check_quantile(target_quantile, "target_quantile")
    if target_delta is not None and not 0 < target_delta < 1:
        raise ValueError(f"target_delta must be in (0, 1); received {target_delta}.")
    if accountant not in ACCOUNTANTS:
        raise ValueError(
            f"accountant: unknown accountant {accountant!r}; valid: {list(ACCOUNTANTS)}."
        )
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling: unknown sampling {sampling!r}; valid: {list(SAMPLINGS)}.")
    if accountant == "pld" and sampling == "uniform":
        raise ValueError(
            "accountant=pld does not support sampling=uniform (fixed-size "
            "sampling); use accountant=rdp or sampling=poisson."
        )


class _DiagnosedDPFactory(tff.aggregators.UnweightedAggregationFactory):
    """A DifferentiallyPrivateFactory whose measurements add clip diagnostics.

    `clip_fraction` is a simulation diagnostic computed in the clear from the
    clients' update norms; it is not part of the private release.
    """

    def __init__(self, inner, adaptive: bool, clients_per_round: int):
        self._inner = inner
        self._adaptive = adaptive
        self._clients_per_round = clients_per_round

    def create(self, value_type):
        inner = self._inner.create(value_type)
        adaptive = self._adaptive
        state_type = inner.initialize.type_signature.result.member

        @tff.tensorflow.computation(state_type)
        def clip_and_stddev(state):
            # TF Privacy's NormalizedQuery state over a GaussianSumQuery (fixed clip) or a
            # QuantileAdaptiveClipSumQuery (adaptive clip, whose sum_state is Gaussian's).
            query_state = state.query_state
            numerator = query_state.numerator_state
            sum_state = numerator.sum_state if adaptive else numerator
            denominator = tf.cast(query_state.denominator, tf.float32)
            clip = tf.cast(sum_state.l2_norm_clip, tf.float32)
            return clip, tf.cast(sum_state.stddev, tf.float32) / denominator

        @tff.tensorflow.computation(value_type, tf.float32)
        def is_clipped(value, clip):
            norm = tf.linalg.global_norm(tf.nest.flatten(value))
            return tf.cast(norm > clip, tf.float32)

        @tff.federated_computation(
            inner.initialize.type_signature.result, tff.FederatedType(value_type, tff.CLIENTS)
        )
        def next_fn(state, value):
            clip, stddev = tff.federated_map(clip_and_stddev, state)
            clipped = tff.federated_map(is_clipped, (value, tff.federated_broadcast(clip)))
            output = inner.next(state, value)
            measurements = tff.federated_zip(
                collections.OrderedDict(
                    dp=output.measurements,
                    clip=clip,
                    clip_fraction=tff.federated_mean(clipped),
                    noise_stddev=stddev,
                )
            )
            return tff.templates.MeasuredProcessOutput(output.state, output.result, measurements)

        return tff.templates.AggregationProcess(inner.initialize, next_fn)


def build_dp_aggregator(
    *,
    noise_multiplier: float,
    clients_per_round: int,
    clip: float,
    adaptive_clip: bool = False,
    target_quantile: float = 0.5,
    clip_learning_rate: float = 0.2,
) -> tff.aggregators.UnweightedAggregationFactory:
    """A DP-FedAvg aggregator: clip each client's update, sum, add Gaussian noise, average.

    The noise standard deviation on the average is
    `noise_multiplier * clip / clients_per_round`.

    Args:
      noise_multiplier: Ratio of the noise standard deviation to the clip (>= 0).
      clients_per_round: Expected clients per round (the average's denominator).
      clip: The L2 clipping norm (> 0); with `adaptive_clip`, its initial value.
      adaptive_clip: Adapt the clip to the `target_quantile` of update norms
        (Andrew et al. 2021), privately, through TF Privacy's quantile estimator.
      target_quantile: Target quantile of update norms for adaptive clipping.
      clip_learning_rate: Learning rate of the geometric clip update.

    Returns:
      A `tff.aggregators.UnweightedAggregationFactory` whose measurements hold `clip`
      (in force this round), `clip_fraction`, `noise_stddev` and TFF's `dp` entries.

    Raises:
      ValueError: for a non-positive clip or clients_per_round, a negative noise
        multiplier, or (adaptive) a noise multiplier of 0.1 * clients_per_round or
        more, which TFF's adaptive clipping cannot support.
    """
    check_positive_float(noise_multiplier, "noise_multiplier", allow_zero=True)
    check_positive_float(clip, "clip")
    if isinstance(clients_per_round, bool) or not isinstance(clients_per_round, int):
        raise TypeError(f"clients_per_round must be an int; received {clients_per_round!r}.")
    if clients_per_round < 1:
        raise ValueError(f"clients_per_round must be >= 1; received {clients_per_round}.")
    if adaptive_clip:
        _check_quantile(target_quantile, "target_quantile")
        check_adaptive_noise(noise_multiplier, clients_per_round)
        inner = tff.aggregators.DifferentiallyPrivateFactory.gaussian_adaptive(
            noise_multiplier=float(noise_multiplier),
            clients_per_round=float(clients_per_round),
            initial_l2_norm_clip=float(clip),
            target_unclipped_quantile=float(target_quantile),
            learning_rate=float(clip_learning_rate),
        )
    else:
        inner = tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed(
            noise_multiplier=float(noise_multiplier),
            clients_per_round=float(clients_per_round),
            clip=float(clip),
        )
    return _DiagnosedDPFactory(inner, adaptive_clip, clients_per_round)


# ---------------------------------------------------------------------------
# Accounting.

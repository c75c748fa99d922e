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
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from typing import Optional

import dp_accounting
import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_fedpt.options import option

SAMPLINGS = ("uniform", "poisson")
ACCOUNTANTS = ("rdp", "pld")


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


def _check_positive_float(value, name, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(f"{name} must be a number; received {value!r}.")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}; received {value!r}.")


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
        _check_positive_float(noise_multiplier, "noise_multiplier", allow_zero=True)
    if target_epsilon is not None:
        _check_positive_float(target_epsilon, "target_epsilon")
    _check_positive_float(clip, "clip")
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
    _check_positive_float(noise_multiplier, "noise_multiplier", allow_zero=True)
    _check_positive_float(clip, "clip")
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


@dataclasses.dataclass(frozen=True)
class PrivacySetting:
    """The sampled Gaussian mechanism one DP round applies.

    Attributes:
      noise_multiplier: Noise standard deviation / clip.
      clients_per_round: Fixed sample size (uniform) or expected size (poisson).
      population: Number of clients that could be sampled.
      sampling: "uniform" (fixed size, without replacement) or "poisson": the sampling
        the rounds really used, with no default (the two differ: z 0.5, 4 of 8 clients,
        3 rounds at delta 1/8 give epsilon 10.7 for fixed-size rounds and 6.7 for Poisson ones).
    """

    noise_multiplier: float
    clients_per_round: int
    population: int
    sampling: str

    def __post_init__(self):
        _check_positive_float(self.noise_multiplier, "noise_multiplier", allow_zero=True)
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}; received {self.sampling!r}.")
        if not 1 <= self.clients_per_round <= self.population:
            raise ValueError(
                f"clients_per_round must be in [1, population={self.population}]; "
                f"received {self.clients_per_round}."
            )

    @property
    def sampling_probability(self) -> float:
        return self.clients_per_round / self.population

    def round_event(self) -> dp_accounting.DpEvent:
        gaussian = dp_accounting.GaussianDpEvent(self.noise_multiplier)
        if self.sampling == "poisson":
            return dp_accounting.PoissonSampledDpEvent(self.sampling_probability, gaussian)
        return dp_accounting.SampledWithoutReplacementDpEvent(
            self.population, self.clients_per_round, gaussian
        )

    def event(self, rounds: int) -> dp_accounting.DpEvent:
        return dp_accounting.SelfComposedDpEvent(self.round_event(), rounds)


def _accountant(name: str, sampling: str):
    if name == "rdp":
        # Fixed-size sampling is analysed for replace-one neighbouring datasets.
        relation = (
            dp_accounting.NeighboringRelation.REPLACE_ONE
            if sampling == "uniform"
            else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
        )
        return dp_accounting.rdp.RdpAccountant(neighboring_relation=relation)
    if name == "pld":
        if sampling == "uniform":
            raise ValueError(
                "The PLD accountant does not support fixed-size (uniform) sampling; use "
                "accountant='rdp' or sampling='poisson'."
            )
        return dp_accounting.pld.PLDAccountant()
    raise ValueError(f"accountant must be one of {ACCOUNTANTS}; received {name!r}.")


def compute_epsilon(
    setting: PrivacySetting, rounds: int, target_delta: float, accountant: str = "rdp"
) -> float:
    """Epsilon after `rounds` rounds at `target_delta` (inf with no noise)."""
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0; received {rounds}.")
    if not 0 < target_delta < 1:
        raise ValueError(f"target_delta must be in (0, 1); received {target_delta}.")
    if rounds == 0:
        return 0.0
    if setting.noise_multiplier == 0:
        return math.inf
    acc = _accountant(accountant, setting.sampling)
    acc.compose(setting.event(rounds))
    return float(acc.get_epsilon(target_delta))


class PrivacyAccountant:
    """Epsilon as rounds go, for a library user's own loop: `step()` after each DP round.

        accountant = privacy.PrivacyAccountant(setting, target_delta=1e-5)
        for round_num in range(rounds):
            state = process.next(state, sampled_client_data).state
            epsilon = accountant.step()

    Args:
      setting: The mechanism each round applies (`PrivacySetting`; its sampling must be
        the one the rounds use).
      target_delta: Delta of the reported epsilon, in (0, 1).
      accountant: "rdp" or "pld" (dp_accounting's RdpAccountant / PLDAccountant).

    Raises:
      ValueError: for a delta outside (0, 1) or an accountant the sampling does not allow.
    """

    def __init__(self, setting: PrivacySetting, target_delta: float, accountant: str = "rdp"):
        if not 0 < target_delta < 1:
            raise ValueError(f"target_delta must be in (0, 1); received {target_delta}.")
        _accountant(accountant, setting.sampling)  # validates the combination
        self.setting, self.target_delta, self.accountant = setting, target_delta, accountant
        self.rounds = 0

    def step(self, rounds: int = 1) -> float:
        """Accounts for `rounds` more rounds; returns epsilon after all of them."""
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
            raise ValueError(f"rounds must be an integer >= 0; received {rounds!r}.")
        self.rounds += rounds
        return self.epsilon

    @property
    def epsilon(self) -> float:
        """Epsilon after the rounds accounted so far."""
        return compute_epsilon(self.setting, self.rounds, self.target_delta, self.accountant)


@dataclasses.dataclass(frozen=True)
class RoundAccounting:
    """The privacy metrics of a round's row: noise multiplier, epsilon spent after
    `round_num` rounds at `target_delta`, and delta (a hook of the training loop)."""

    setting: PrivacySetting
    target_delta: float
    accountant: str = "rdp"

    def __call__(self, round_num: int) -> dict:
        return {
            "privacy/noise_multiplier": self.setting.noise_multiplier,
            "privacy/epsilon": compute_epsilon(
                self.setting, round_num, self.target_delta, self.accountant
            ),
            "privacy/delta": self.target_delta,
        }


@functools.lru_cache(maxsize=256)  # a pure function of its arguments; grids repeat them
def calibrate_noise_multiplier(
    *,
    target_epsilon: float,
    target_delta: float,
    rounds: int,
    clients_per_round: int,
    population: int,
    sampling: str = "poisson",
    accountant: str = "rdp",
) -> float:
    """The smallest noise multiplier whose epsilon after `rounds` is <= target_epsilon.

    Uses `dp_accounting.calibrate_dp_mechanism` (Brent's method on the accountant).
    Results are cached per process: the runs of a grid that differ only in clip or learning
    rate calibrate once.
    """
    _check_positive_float(target_epsilon, "target_epsilon")
    if not 0 < target_delta < 1:
        raise ValueError(f"target_delta must be in (0, 1); received {target_delta}.")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1; received {rounds}.")
    PrivacySetting(1.0, clients_per_round, population, sampling)  # validates
    _accountant(accountant, sampling)  # validates the combination

    def calibrate(name, bracket):
        try:
            return float(
                dp_accounting.calibrate_dp_mechanism(
                    lambda: _accountant(name, sampling),
                    lambda z: PrivacySetting(z, clients_per_round, population, sampling).event(
                        rounds
                    ),
                    target_epsilon,
                    target_delta,
                    bracket,
                    tol=1e-4,
                )
            )
        except Exception as e:  # noqa: BLE001 - dp_accounting raises several kinds
            raise ValueError(
                f"target_epsilon={target_epsilon:g} cannot be calibrated for {rounds} rounds "
                f"of {clients_per_round} of {population} clients ({sampling} sampling, "
                f"delta {target_delta:g}): the {name} accountant found no noise multiplier "
                f"in its search range ({type(e).__name__}: {e}). A target this large needs "
                "almost no noise: pass noise_multiplier directly (0 disables noise), or "
                "choose a smaller target_epsilon."
            ) from None

    lowest = 1e-3  # the least noise searched
    floor = compute_epsilon(
        PrivacySetting(lowest, clients_per_round, population, sampling), rounds, target_delta
    )
    if floor <= target_epsilon:  # reached with less noise than searched: say so now
        raise ValueError(
            f"target_epsilon={target_epsilon:g} cannot be calibrated for {rounds} rounds "
            f"of {clients_per_round} of {population} clients ({sampling} sampling, delta "
            f"{target_delta:g}): even noise multiplier {lowest:g} spends only epsilon "
            f"{floor:.4g}. A target this large needs almost no noise: pass "
            "noise_multiplier directly (0 disables noise), or choose a smaller target_epsilon."
        )
    z_rdp = calibrate("rdp", dp_accounting.LowerEndpointAndGuess(lowest, 1.0))
    if accountant == "rdp":
        return z_rdp
    # PLD is tighter than RDP (its noise is at most z_rdp) but very costly at tiny
    # noise levels, so it is searched only between z_rdp / 4 and z_rdp.
    return calibrate("pld", dp_accounting.ExplicitBracketInterval(z_rdp / 4, z_rdp * 1.001))


def sample_clients(
    num_clients: int, clients_per_round: int, sampling: str, seed: int, round_num: int
) -> np.ndarray:
    """Indices of the clients of a round, a deterministic function of (seed, round).

    "uniform": exactly `clients_per_round` distinct clients; "poisson": each client
    independently with probability clients_per_round / num_clients (may be empty).
    """
    rng = np.random.default_rng([seed, round_num])
    if sampling == "uniform":
        return np.sort(rng.choice(num_clients, size=clients_per_round, replace=False))
    if sampling == "poisson":
        return np.flatnonzero(rng.random(num_clients) < clients_per_round / num_clients)
    raise ValueError(f"sampling must be one of {SAMPLINGS}; received {sampling!r}.")

"""Privacy accounting: epsilon from `dp_accounting` (RDP or PLD accountant) for the
sampling really used (Poisson, or fixed-size uniform without replacement), the noise
multiplier that reaches a target epsilon, and the clients a round samples."""

from __future__ import annotations

import dataclasses
import functools
import math

import dp_accounting
import numpy as np

SAMPLINGS = ("uniform", "poisson")
ACCOUNTANTS = ("rdp", "pld")


def check_positive_float(value, name, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(f"{name} must be a number; received {value!r}.")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}; received {value!r}.")


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
        check_positive_float(self.noise_multiplier, "noise_multiplier", allow_zero=True)
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
    if accountant == "rdp":
        orders, rdp = _round_rdp(setting)
        return float(dp_accounting.rdp.compute_epsilon(orders, rounds * rdp, target_delta)[0])
    acc = _accountant(accountant, setting.sampling)
    acc.compose(setting.event(rounds))
    return float(acc.get_epsilon(target_delta))


@functools.lru_cache(maxsize=64)
def _round_rdp(setting: PrivacySetting) -> tuple[np.ndarray, np.ndarray]:
    """The RDP curve of one round, computed once per setting: a training loop asks for
    epsilon after every round, and a Poisson round's curve (fractional orders) takes about
    half a second, while `rounds` rounds are `rounds` times it (what dp_accounting's
    RdpAccountant does for a SelfComposedDpEvent; tests/test_privacy.py holds the two equal)."""
    acc = _accountant("rdp", setting.sampling)
    acc.compose(setting.round_event())
    # The curve is only held in the accountant's attributes (dp_accounting is pinned).
    return np.array(acc._orders), np.array(acc._rdp)


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
    check_positive_float(target_epsilon, "target_epsilon")
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

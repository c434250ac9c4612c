"""Anytime-valid tests of the failure hazard ratio theta = lambda_exposed / lambda_control.

**Exposed vs control (the sequential logrank e-process).** Take the failures of one stratum in
time order (ties scored together, see :class:`RiskStep`). Just before each failure, ``n_e``
exposed and ``n_c`` control devices are at risk. If both arms fail at rates in the ratio theta,
the failure is in the exposed arm with probability ``theta n_e / (theta n_e + n_c)``.
Multiplying, over the failures so far, that probability's ratio to its value under theta = 1
gives a likelihood ratio ``LR_theta`` (Cox's partial likelihood); under theta <= 1 it is a
non-negative supermartingale in the order of failures, so by Ville's inequality
``P(sup LR_theta >= 1/alpha) <= alpha`` however often it is looked at. A mixture over a grid of
thetas (weights summing to 1) keeps that property and is powerful against faults of any size:
``E = sum_j w_j LR_theta_j``. Halt when ``E >= 1/alpha``.

**Against a known baseline rate (for strata whose control group is too small).** With ``k``
failures in ``T`` device-hours of exposure and a historical rate ``lambda0``, the Poisson
likelihood ratio ``theta^k exp(-(theta - 1) lambda0 T)`` is a martingale under theta = 1 (and a
supermartingale under theta < 1); mixed over the same grid it is an e-process too.

**Upper confidence bounds, for promotion.** Testing ``H0: theta >= theta0`` against smaller
ratios (the same constructions, with the roles turned round) gives e-values ``E_down(theta0)``;
the upper bound is the smallest theta0 on a grid whose ``E_down`` reaches ``1/alpha``. A wave
may be promoted when this bound is below the plan's limit.

**Several strata, one rollout.** Each stratum's e-process is valid on its own, but a rollout
halted whenever any of K strata crosses ``1/alpha`` would stop up to K times too often. Two
combinations keep the whole rollout at ``alpha``: the **pooled** e-process (one common hazard
ratio; the strata's partial likelihoods multiplied, then mixed over theta), strongest when a
fault hits everywhere, and the **mean** of the per-stratum e-processes (strata without exposure
count as 1), which still finds a fault confined to one stratum. A weighted average of e-processes
is one (see :func:`log_average`).

**Silence against placebo (the sign test).** An exposed device that never confirms health within
the trial timeout is compared with a *placebo* device of the same stratum: a control device
asked, at the same point of the wave, to come back within the same timeout. Pairs in which
exactly one of the two stayed silent are, when the version is harmless, equally likely either
way round, so each such pair is a fair coin under the null; the likelihood ratio for odds theta,
``(2 theta / (1 + theta))^a (2 / (1 + theta))^b`` (a: only the exposed one silent, b: only the
placebo), mixed over theta, is an e-process (:func:`sign_log_e`).

Everything works in logarithms, so thousands of failures neither overflow nor underflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Mixture:
    """Alternatives and their prior weights (normalised)."""

    thetas: tuple[float, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.thetas) != len(self.weights) or not self.thetas:
            raise ValueError("a mixture needs one weight per theta")
        if any(t <= 0 for t in self.thetas) or any(w <= 0 for w in self.weights):
            raise ValueError("thetas and weights must be positive")

    @property
    def log_weights(self) -> tuple[float, ...]:
        total = sum(self.weights)
        return tuple(math.log(w / total) for w in self.weights)


# Faults worth stopping range from "one and a half times the crash rate" to "every device dies";
# most weight sits where evidence is hardest to get (x2-x5), some on the catastrophic end so one
# or two failures suffice there.
DEFAULT_MIXTURE = Mixture(thetas=(1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 100.0, 1000.0),
                          weights=(0.10, 0.15, 0.15, 0.20, 0.15, 0.10, 0.08, 0.07))
# Alternatives below the null, as factors of theta0, for the upper confidence bound.
DOWN_FACTORS: tuple[float, ...] = (0.8, 0.6, 0.4, 0.2, 0.05)
BOUND_GRID: tuple[float, ...] = tuple(round(10 ** (i / 20), 4) for i in range(0, 61))  # 1 .. 1000


@dataclass(frozen=True, slots=True)
class RiskStep:
    """The failures at one moment, by arm, and who was at risk just before (the failed devices
    included). Failures at the same moment are one step (ties, as when an outage silences many
    devices at once); they are scored with the risk sets of that moment (Breslow), which keeps
    the likelihood ratio a supermartingale under the null."""

    exposed_failures: int
    control_failures: int
    at_risk_exposed: int
    at_risk_control: int


def _log_lr(steps: Sequence[RiskStep], theta: float, null: float = 1.0) -> float:
    """log of the partial-likelihood ratio of ``theta`` against ``null``."""
    total = 0.0
    for step in steps:
        n_e, n_c = step.at_risk_exposed, step.at_risk_control
        if n_e <= 0 or n_c <= 0:
            continue  # failures with one arm empty say nothing about the arms' ratio
        d = step.exposed_failures + step.control_failures
        total += d * (math.log(null * n_e + n_c) - math.log(theta * n_e + n_c))
        total += step.exposed_failures * math.log(theta / null)
    return total


def _log_mix(log_terms: Sequence[float], log_weights: Sequence[float]) -> float:
    top = max(t + w for t, w in zip(log_terms, log_weights, strict=True))
    return top + math.log(sum(math.exp(t + w - top) for t, w in zip(log_terms, log_weights, strict=True)))


def log_lrs(steps: Sequence[RiskStep], mixture: Mixture = DEFAULT_MIXTURE) -> list[float]:
    """log partial-likelihood ratio for each theta of the mixture (the pooled test adds these
    over strata)."""
    return [_log_lr(steps, theta) for theta in mixture.thetas]


def mix(log_lrs_by_theta: Sequence[float], mixture: Mixture = DEFAULT_MIXTURE) -> float:
    """log E of a mixture, given each alternative's log likelihood ratio."""
    return _log_mix(log_lrs_by_theta, mixture.log_weights)


def sign_log_e(exposed_only: int, placebo_only: int, mixture: Mixture = DEFAULT_MIXTURE) -> float:
    """log E of the placebo sign test: ``exposed_only`` discordant pairs in which only the exposed
    device stayed silent, ``placebo_only`` in which only the placebo did."""
    return _log_mix([exposed_only * math.log(2 * t / (1 + t)) + placebo_only * math.log(2 / (1 + t))
                     for t in mixture.thetas], mixture.log_weights)


def log_average(parts: Sequence[tuple[float, float]]) -> float:
    """log of ``sum(weight * exp(log_e))`` over ``(weight, log_e)`` parts whose weights sum to at
    most 1: an average of e-processes is an e-process."""
    live = [(w, e) for w, e in parts if w > 0]
    if not live:
        return 0.0
    return _log_mix([e for _, e in live], [math.log(w) for w, _ in live])


def logrank_log_e(steps: Sequence[RiskStep], mixture: Mixture = DEFAULT_MIXTURE) -> float:
    """log E of the mixture logrank e-process against theta <= 1."""
    process = LogrankEProcess(mixture)
    for step in steps:
        process.update(step)
    return process.log_e


class LogrankEProcess:
    """The same e-process, kept up to date one step at a time (constant work per failure), for
    callers that see failures as they happen."""

    def __init__(self, mixture: Mixture = DEFAULT_MIXTURE) -> None:
        self.mixture = mixture
        self._log_weights = mixture.log_weights
        self._logs = [0.0] * len(mixture.thetas)

    def update(self, step: RiskStep) -> float:
        for i, theta in enumerate(self.mixture.thetas):
            self._logs[i] += _log_lr((step,), theta)
        return self.log_e

    @property
    def log_e(self) -> float:
        return _log_mix(self._logs, self._log_weights)

    @property
    def log_lrs(self) -> list[float]:
        """Each alternative's log likelihood ratio so far (the pooled test adds these)."""
        return list(self._logs)


def logrank_upper_bound(steps: Sequence[RiskStep], alpha: float) -> float:
    """The smallest theta0 on :data:`BOUND_GRID` that the data reject as too large at level
    ``alpha`` (``inf`` when none is: not enough evidence to bound the ratio)."""
    log_weights = tuple(math.log(1 / len(DOWN_FACTORS)) for _ in DOWN_FACTORS)
    return _smallest_rejected(
        lambda theta0: _log_mix([_log_lr(steps, theta0 * f, null=theta0) for f in DOWN_FACTORS], log_weights),
        math.log(1 / alpha))


def _log_poisson_lr(failures: int, expected: float, theta: float, null: float = 1.0) -> float:
    """log of ``(theta/null)^k exp(-(theta - null) * expected)``; ``expected`` = lambda0 * T."""
    return failures * math.log(theta / null) - (theta - null) * expected


def baseline_log_e(failures: int, exposure_hours: float, baseline_rate: float,
                   mixture: Mixture = DEFAULT_MIXTURE) -> float:
    """log E of the mixture Poisson e-process: exposed failures against a known hourly rate."""
    expected = baseline_rate * exposure_hours
    return _log_mix([_log_poisson_lr(failures, expected, t) for t in mixture.thetas], mixture.log_weights)


def baseline_upper_bound(failures: int, exposure_hours: float, baseline_rate: float, alpha: float) -> float:
    """The smallest theta0 on :data:`BOUND_GRID` rejected as too large against the baseline rate."""
    expected = baseline_rate * exposure_hours
    log_weights = tuple(math.log(1 / len(DOWN_FACTORS)) for _ in DOWN_FACTORS)
    return _smallest_rejected(
        lambda theta0: _log_mix([_log_poisson_lr(failures, expected, theta0 * f, null=theta0)
                                 for f in DOWN_FACTORS], log_weights),
        math.log(1 / alpha))


def _smallest_rejected(log_e: Callable[[float], float], threshold: float) -> float:
    """Binary search of :data:`BOUND_GRID`: the evidence against ``theta >= theta0`` only grows
    with theta0 (the alternatives are fixed fractions of it), so the rejected set is an upper
    interval of the grid."""
    if log_e(BOUND_GRID[-1]) < threshold:
        return math.inf
    low, high = 0, len(BOUND_GRID) - 1  # invariant: BOUND_GRID[high] is rejected
    while low < high:
        mid = (low + high) // 2
        if log_e(BOUND_GRID[mid]) >= threshold:
            high = mid
        else:
            low = mid + 1
    return BOUND_GRID[high]

"""Judges: one small interface, each turning one stratum's data into a :class:`Verdict`, and
one judge for the whole rollout.

* :class:`RolloutJudge` — decides the halt. One e-process for the rollout: the weighted average
  of the pooled stratified logrank (a fault everywhere), the mean of the strata's own
  e-processes (a fault in one stratum) and the placebo sign test on silence after activation
  (the 2024 signature). It fails at ``E >= 1/alpha``, so the whole rollout, not each stratum,
  has a false-halt rate of at most alpha however often it is looked at.
* :class:`HazardRatioJudge` — exposed vs control in one stratum, the anytime-valid logrank
  e-process, tested at the stratum's share of alpha (so a failure here is a failure of the
  rollout judge too); passes when the upper confidence bound on the hazard ratio is below the
  limit (what promotion waits for).
* :class:`BaselineJudge` — exposed failures against the stratum's historical hourly rate, for
  strata whose control group is too small to compare with.
* :class:`FailureBudgetJudge` — an absolute cap on failed devices (the blast radius in devices).
* :class:`SilenceJudge` — missing data is a verdict: exposed devices that never confirmed health.

:func:`judge_all` runs them and returns the verdicts; :func:`overall` reduces them to one
(any failed -> failed; any inconclusive or running -> that; else passed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ringfence.analysis.hazard import (
    DEFAULT_MIXTURE,
    Mixture,
    baseline_log_e,
    baseline_upper_bound,
    log_average,
    log_lrs,
    logrank_log_e,
    logrank_upper_bound,
    mix,
    sign_log_e,
)
from ringfence.analysis.tallies import Pairs, StratumData
from ringfence.analysis.verdicts import Verdict, VerdictPhase


class Judge(Protocol):
    @property
    def name(self) -> str: ...

    def judge(self, data: StratumData) -> Verdict: ...


def _e_text(log_e: float) -> str:
    value = math.exp(min(log_e, 700.0))
    return f"{value:.3g}"


@dataclass(frozen=True, slots=True)
class HazardRatioJudge:
    alpha: float = 0.01
    limit: float | None = 2.0  # promotion needs the upper bound below this (None: no such gate)
    min_control: int = 20  # fewer control devices than this: the comparison is left to the baseline judge
    mixture: Mixture = DEFAULT_MIXTURE
    name: str = "hazard-ratio"

    def judge(self, data: StratumData) -> Verdict:
        e, c = data.exposed, data.control
        numbers: dict[str, object] = {"exposed": e.as_dict(), "control": c.as_dict(), "alpha": self.alpha,
                                      "limit": self.limit}
        if c.devices < self.min_control:
            # Not missing data about the release but the shape of the fleet: no comparison can be
            # made here, so the verdict stays running (it never passes) and the stratum is gated by
            # its confirmations and budgets, or by the baseline judge where a rate is known.
            return Verdict(self.name, data.stratum, VerdictPhase.RUNNING,
                           f"{data.stratum}: {c.devices} control devices, fewer than {self.min_control}: no "
                           f"comparison with a control group (the baseline rate decides where one is known)",
                           numbers)
        log_e = logrank_log_e(data.steps, self.mixture)
        bound = logrank_upper_bound(data.steps, self.alpha)
        numbers.update({"e_value": float(math.exp(min(log_e, 700.0))), "log_e": log_e, "threshold": 1 / self.alpha,
                        "upper_bound": bound if math.isfinite(bound) else None})
        counts = (f"{e.failures} of {e.devices} exposed failed ({e.device_hours:.1f} device-hours) vs "
                  f"{c.failures} of {c.devices} control ({c.device_hours:.1f} device-hours)")
        if log_e >= math.log(1 / self.alpha):
            return Verdict(self.name, data.stratum, VerdictPhase.FAILED,
                           f"{data.stratum}: {counts}; e-value {_e_text(log_e)} >= {1 / self.alpha:g}", numbers)
        if self.limit is not None and bound < self.limit:
            return Verdict(self.name, data.stratum, VerdictPhase.PASSED,
                           f"{data.stratum}: {counts}; hazard ratio below {bound:g} (limit {self.limit:g})", numbers)
        if self.limit is None:
            return Verdict(self.name, data.stratum, VerdictPhase.PASSED,
                           f"{data.stratum}: {counts}; e-value {_e_text(log_e)} < {1 / self.alpha:g}", numbers)
        shown = "unbounded" if not math.isfinite(bound) else f"below {bound:g}"
        return Verdict(self.name, data.stratum, VerdictPhase.RUNNING,
                       f"{data.stratum}: {counts}; e-value {_e_text(log_e)}; hazard ratio {shown}, not yet below "
                       f"{self.limit:g}", numbers)


@dataclass(frozen=True, slots=True)
class BaselineJudge:
    baseline_rate: float  # failures per device-hour, from the stratum's history
    alpha: float = 0.01
    limit: float | None = 2.0
    mixture: Mixture = DEFAULT_MIXTURE
    name: str = "baseline"

    def judge(self, data: StratumData) -> Verdict:
        e = data.exposed
        log_e = baseline_log_e(e.failures, e.device_hours, self.baseline_rate, self.mixture)
        bound = baseline_upper_bound(e.failures, e.device_hours, self.baseline_rate, self.alpha)
        expected = self.baseline_rate * e.device_hours
        numbers: dict[str, object] = {"exposed": e.as_dict(), "baseline_rate": self.baseline_rate,
                                      "expected_failures": expected, "e_value": float(math.exp(min(log_e, 700.0))),
                                      "log_e": log_e, "threshold": 1 / self.alpha,
                                      "upper_bound": bound if math.isfinite(bound) else None, "limit": self.limit}
        counts = (f"{e.failures} of {e.devices} exposed failed in {e.device_hours:.1f} device-hours, "
                  f"{expected:.2f} expected at the baseline rate")
        if log_e >= math.log(1 / self.alpha):
            return Verdict(self.name, data.stratum, VerdictPhase.FAILED,
                           f"{data.stratum}: {counts}; e-value {_e_text(log_e)} >= {1 / self.alpha:g}", numbers)
        if self.limit is None or bound < self.limit:
            return Verdict(self.name, data.stratum, VerdictPhase.PASSED, f"{data.stratum}: {counts}", numbers)
        return Verdict(self.name, data.stratum, VerdictPhase.RUNNING,
                       f"{data.stratum}: {counts}; not yet enough exposure to bound the ratio below "
                       f"{self.limit:g}", numbers)


@dataclass(frozen=True, slots=True)
class FailureBudgetJudge:
    budget: int  # distinct failed exposed devices the stratum may have; one more fails
    name: str = "failure-budget"

    def judge(self, data: StratumData) -> Verdict:
        e = data.exposed
        failed = e.failures + e.unconfirmed  # silent since activation counts as failed
        numbers = {"failed": failed, "silent_since_activation": e.unconfirmed, "budget": self.budget,
                   "exposed": e.devices}
        silent = f" ({e.unconfirmed} of them silent since activation)" if e.unconfirmed else ""
        if failed > self.budget:
            return Verdict(self.name, data.stratum, VerdictPhase.FAILED,
                           f"{data.stratum}: {failed} of {e.devices} exposed devices failed{silent} > budget "
                           f"{self.budget}", numbers)
        return Verdict(self.name, data.stratum, VerdictPhase.PASSED,
                       f"{data.stratum}: {failed} failed{silent}, within the budget of {self.budget}", numbers)


@dataclass(frozen=True, slots=True)
class SilenceJudge:
    """Missing data. Exposed devices silent since their activation are tested against placebo
    devices by :class:`RolloutJudge`; this judge says it in words, never passes a stratum nobody
    has confirmed, and fails one in which *every* exposed device (at least ``min_silent``) has
    gone quiet while the control devices of the same stratum are still heard from (at least half
    of them since the first trial deadline passed), or there are none. An outage that silences
    the whole stratum, control devices included, is not a verdict on the version."""

    min_silent: int = 3
    name: str = "silence"

    def judge(self, data: StratumData) -> Verdict:
        e, c = data.exposed, data.control
        quiet = e.unconfirmed + e.silent
        numbers = {"exposed": e.devices, "unconfirmed": e.unconfirmed, "silent": e.silent, "healthy": e.healthy,
                   "control": c.devices, "control_heard_since": c.heard_since, "placebo": data.pairs.as_dict()}
        if e.devices >= self.min_silent and quiet >= e.devices and e.unconfirmed:
            if c.devices == 0 or 2 * c.heard_since >= c.devices:
                control = (f"while {c.heard_since} of {c.devices} control devices were heard from" if c.devices
                           else "and there is no control group")
                return Verdict(self.name, data.stratum, VerdictPhase.FAILED,
                               f"{data.stratum}: no health confirmation or heartbeat from any of the {e.devices} "
                               f"exposed devices {control}", numbers)
            return Verdict(self.name, data.stratum, VerdictPhase.INCONCLUSIVE,
                           f"{data.stratum}: none of the {e.devices} exposed devices is heard from, and only "
                           f"{c.heard_since} of {c.devices} control devices: an outage?", numbers)
        if quiet:
            return Verdict(self.name, data.stratum, VerdictPhase.RUNNING,
                           f"{data.stratum}: no heartbeats from {quiet} of {e.devices} exposed devices "
                           f"({e.unconfirmed} silent since activation)", numbers)
        if e.devices and e.healthy == 0:
            return Verdict(self.name, data.stratum, VerdictPhase.INCONCLUSIVE,
                           f"{data.stratum}: none of the {e.devices} exposed devices has confirmed health yet", numbers)
        return Verdict(self.name, data.stratum, VerdictPhase.PASSED,
                       f"{data.stratum}: {e.healthy} of {e.devices} exposed devices confirmed health", numbers)


@dataclass(frozen=True, slots=True)
class Weights:
    """How the rollout judge's e-value is shared between its parts (they sum to 1). Chosen with
    ``benchmarks/detection.py``: the pooled test finds fleet-wide faults fastest, the strata's
    mean keeps one bad stratum from hiding in a large fleet, the placebo test catches silence.
    The placebo test needs the least: its first pairs decide together at the trial deadline, and
    a silent boot loop makes all of them discordant at once (one pair more for half the weight),
    so the parts that count failures, which gather evidence one failure at a time, get the rest."""

    pooled: float = 0.32
    strata: float = 0.63
    silence: float = 0.05

    def __post_init__(self) -> None:
        if min(self.pooled, self.strata, self.silence) < 0 or abs(self.pooled + self.strata + self.silence - 1) > 1e-9:
            raise ValueError("the rollout judge's weights must be non-negative and sum to 1")


DEFAULT_WEIGHTS = Weights()


def stratum_log_e(data: StratumData, min_control: int, baseline_rate: float | None,
                  mixture: Mixture = DEFAULT_MIXTURE) -> float:
    """The stratum's own e-process: the logrank against its control group, or — when that group
    is too small — the Poisson test against the baseline rate (none known: no evidence, E = 1)."""
    if data.control.devices >= min_control:
        return logrank_log_e(data.steps, mixture)
    if baseline_rate is not None:
        return baseline_log_e(data.exposed.failures, data.exposed.device_hours, baseline_rate, mixture)
    return 0.0


@dataclass(frozen=True, slots=True)
class Evidence:
    """The e-processes' state kept by a caller that sees failures one at a time (the simulator,
    with :class:`~ringfence.analysis.hazard.LogrankEProcess`), instead of the strata's steps."""

    own: Mapping[str, float]  # stratum -> log E of its own test
    pooled_lrs: Sequence[float]  # per alternative: the log likelihood ratio summed over strata


@dataclass(frozen=True, slots=True)
class RolloutJudge:
    alpha: float = 0.01
    strata: int = 1  # strata the rollout can reach; those without exposure count with E = 1
    min_control: int = 20
    baseline_rate: float | None = None
    weights: Weights = DEFAULT_WEIGHTS
    mixture: Mixture = DEFAULT_MIXTURE
    name: str = "rollout"

    def evidence(self, strata: Sequence[StratumData]) -> Evidence:
        own = {d.stratum: stratum_log_e(d, self.min_control, self.baseline_rate, self.mixture) for d in strata}
        pooled_lrs = [0.0] * len(self.mixture.thetas)
        for d in strata:
            if d.control.devices >= self.min_control:
                pooled_lrs = [a + b for a, b in zip(pooled_lrs, log_lrs(d.steps, self.mixture), strict=True)]
        return Evidence(own, pooled_lrs)

    def stratum_alpha(self) -> float:
        """The level at which one stratum alone halts the rollout: its e-value, weighted into
        the strata's mean, reaches 1/alpha on its own."""
        return self.alpha * self.weights.strata / max(self.strata, 1)

    def judge(self, strata: Sequence[StratumData], evidence: Evidence | None = None) -> Verdict:
        """``evidence``: the e-processes kept incrementally; without it they are computed from
        the strata's steps."""
        k = max(self.strata, len(strata), 1)
        pairs = Pairs()
        for d in strata:
            pairs.add(d.pairs)
        if evidence is None:
            evidence = self.evidence(strata)
        own = {d.stratum: evidence.own.get(d.stratum, 0.0) for d in strata}
        pooled_lrs = evidence.pooled_lrs
        pooled = mix(pooled_lrs, self.mixture)
        mean = log_average([(1 / k, e) for e in own.values()] + [((k - len(own)) / k, 0.0)])
        silence = sign_log_e(pairs.exposed_only, pairs.placebo_only, self.mixture)
        w = self.weights
        log_e = log_average([(w.pooled, pooled), (w.strata, mean), (w.silence, silence)])
        parts = {"pooled": w.pooled * _e(pooled), "strata": w.strata * _e(mean), "silence": w.silence * _e(silence)}
        numbers: dict[str, object] = {
            "e_value": _e(log_e), "log_e": log_e, "threshold": 1 / self.alpha, "alpha": self.alpha,
            "parts": parts, "strata": k, "placebo": pairs.as_dict(),
            "strata_e_values": {s: _e(v) for s, v in sorted(own.items())}}
        worst = max(strata, key=lambda d: (own[d.stratum], d.exposed.failures + d.exposed.unconfirmed),
                    default=None)
        where = ""
        if worst is not None:
            e, c = worst.exposed, worst.control
            where = (f"{worst.stratum}: {e.failures} of {e.devices} exposed failed ({e.device_hours:.1f} "
                     f"device-hours) vs {c.failures} of {c.devices} control ({c.device_hours:.1f} device-hours)")
            if e.unconfirmed:
                where += f", {e.unconfirmed} exposed silent since activation"
            numbers["worst_stratum"] = worst.stratum
        if pairs.exposed_only or pairs.placebo_only:
            where += (f"; silent after activation: {pairs.exposed_only} exposed vs {pairs.placebo_only} placebo "
                      f"devices in discordant pairs")
        if log_e >= math.log(1 / self.alpha):
            lead = max(parts, key=lambda name: parts[name])
            return Verdict(self.name, "*", VerdictPhase.FAILED,
                           f"{where}; rollout e-value {_e_text(log_e)} >= {1 / self.alpha:g} "
                           f"(mostly the {_PART_NAMES[lead]})", numbers)
        return Verdict(self.name, "*", VerdictPhase.PASSED,
                       f"no evidence of harm yet: rollout e-value {_e_text(log_e)} < {1 / self.alpha:g}"
                       + (f"; strongest {where}" if where else ""), numbers)


_PART_NAMES = {"pooled": "pooled hazard ratio over all strata", "strata": "per-stratum hazard ratios",
               "silence": "silence against placebo devices"}


def _e(log_e: float) -> float:
    return float(math.exp(min(log_e, 700.0)))


def judge_all(strata: Iterable[StratumData], judges: Sequence[Judge],
              baseline: BaselineJudge | None = None, rollout: RolloutJudge | None = None,
              evidence: Evidence | None = None) -> list[Verdict]:
    """Every judge on every stratum with exposure (where the hazard-ratio judge finds the control
    group too small, the baseline judge, if a rate is known, decides instead), then the rollout
    judge over all of them."""
    data = list(strata)
    verdicts: list[Verdict] = []
    for d in data:
        if d.exposed.devices == 0:
            continue
        for judge in judges:
            try:
                verdict = judge.judge(d)
                if (isinstance(judge, HazardRatioJudge) and d.control.devices < judge.min_control
                        and baseline is not None):
                    verdict = baseline.judge(d)
            except (ArithmeticError, ValueError) as exc:
                verdict = Verdict(judge.name, d.stratum, VerdictPhase.ERROR,
                                  f"{d.stratum}: {judge.name} could not run: {exc}")
            verdicts.append(verdict)
    if rollout is not None and any(d.exposed.devices for d in data):
        try:
            verdicts.insert(0, rollout.judge(data, evidence))
        except (ArithmeticError, ValueError) as exc:
            verdicts.insert(0, Verdict(rollout.name, "*", VerdictPhase.ERROR,
                                       f"the rollout judge could not run: {exc}"))
    return verdicts


_ORDER = (VerdictPhase.FAILED, VerdictPhase.ERROR, VerdictPhase.INCONCLUSIVE, VerdictPhase.RUNNING,
          VerdictPhase.PASSED)


def overall(verdicts: Sequence[Verdict]) -> VerdictPhase:
    """The phase the engine acts on: the worst of the verdicts (passed when there are none)."""
    phases = {v.phase for v in verdicts}
    return next((p for p in _ORDER if p in phases), VerdictPhase.PASSED)

"""Judges: one small interface, each turning one stratum's data into a :class:`Verdict`.

* :class:`HazardRatioJudge` — exposed vs control, the anytime-valid logrank e-process; fails at
  ``E >= 1/alpha``, passes when the upper confidence bound on the hazard ratio is below the limit.
* :class:`BaselineJudge` — exposed failures against the stratum's historical hourly rate, for
  strata whose control group is too small to compare with.
* :class:`FailureBudgetJudge` — an absolute cap on failed devices (the blast radius in devices).
* :class:`SilenceJudge` — missing data is a verdict: exposed devices that never confirmed health.

:func:`judge_all` runs every judge over every stratum with exposure and returns the verdicts;
:func:`overall` reduces them to the one the engine acts on (any failed -> failed; any
inconclusive or running -> that; else passed).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ringfence.analysis.hazard import (
    DEFAULT_MIXTURE,
    Mixture,
    baseline_log_e,
    baseline_upper_bound,
    logrank_log_e,
    logrank_upper_bound,
)
from ringfence.analysis.tallies import StratumData
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
            return Verdict(self.name, data.stratum, VerdictPhase.INCONCLUSIVE,
                           f"{data.stratum}: {c.devices} control devices, fewer than {self.min_control}: "
                           f"compared against the baseline rate instead", numbers)
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
        failed = data.exposed.failures
        numbers = {"failed": failed, "budget": self.budget, "exposed": data.exposed.devices}
        if failed > self.budget:
            return Verdict(self.name, data.stratum, VerdictPhase.FAILED,
                           f"{data.stratum}: {failed} of {data.exposed.devices} exposed devices failed > budget "
                           f"{self.budget}", numbers)
        return Verdict(self.name, data.stratum, VerdictPhase.PASSED,
                       f"{data.stratum}: {failed} failed, within the budget of {self.budget}", numbers)


@dataclass(frozen=True, slots=True)
class SilenceJudge:
    """Missing data: exposed devices that neither confirmed health nor failed loudly. Their
    silence already counts as failure in the hazard test; this judge says it in words, and
    refuses to pass a stratum nobody has confirmed."""

    name: str = "silence"

    def judge(self, data: StratumData) -> Verdict:
        e = data.exposed
        numbers = {"exposed": e.devices, "silent": e.silent, "healthy": e.healthy}
        if e.devices and e.silent == e.devices:
            return Verdict(self.name, data.stratum, VerdictPhase.FAILED,
                           f"{data.stratum}: no health confirmation or heartbeat from any of the {e.devices} "
                           f"exposed devices", numbers)
        if e.silent:
            return Verdict(self.name, data.stratum, VerdictPhase.RUNNING,
                           f"{data.stratum}: no heartbeats from {e.silent} of {e.devices} exposed devices", numbers)
        if e.devices and e.healthy == 0:
            return Verdict(self.name, data.stratum, VerdictPhase.INCONCLUSIVE,
                           f"{data.stratum}: none of the {e.devices} exposed devices has confirmed health yet", numbers)
        return Verdict(self.name, data.stratum, VerdictPhase.PASSED,
                       f"{data.stratum}: {e.healthy} of {e.devices} exposed devices confirmed health", numbers)


def judge_all(strata: Iterable[StratumData], judges: Sequence[Judge],
              baseline: BaselineJudge | None = None) -> list[Verdict]:
    """Every judge on every stratum with exposure. Where the hazard-ratio judge finds the
    control group too small, the baseline judge (if a rate is known) decides instead."""
    verdicts: list[Verdict] = []
    for data in strata:
        if data.exposed.devices == 0:
            continue
        for judge in judges:
            try:
                verdict = judge.judge(data)
            except (ArithmeticError, ValueError) as exc:
                verdict = Verdict(judge.name, data.stratum, VerdictPhase.ERROR,
                                  f"{data.stratum}: {judge.name} could not run: {exc}")
            if (isinstance(judge, HazardRatioJudge) and verdict.phase is VerdictPhase.INCONCLUSIVE
                    and baseline is not None):
                verdict = baseline.judge(data)
            verdicts.append(verdict)
    return verdicts


_ORDER = (VerdictPhase.FAILED, VerdictPhase.ERROR, VerdictPhase.INCONCLUSIVE, VerdictPhase.RUNNING,
          VerdictPhase.PASSED)


def overall(verdicts: Sequence[Verdict]) -> VerdictPhase:
    """The phase the engine acts on: the worst of the verdicts (passed when there are none)."""
    phases = {v.phase for v in verdicts}
    return next((p for p in _ORDER if p in phases), VerdictPhase.PASSED)

"""The plan's health settings turned into judges, run over the rollout's device timelines.

The same function serves the server (tracks read from the database) and the simulator (tracks
it generates), so both worlds judge alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from ringfence.analysis.judges import (
    BaselineJudge,
    FailureBudgetJudge,
    HazardRatioJudge,
    Judge,
    RolloutJudge,
    SilenceJudge,
    judge_all,
)
from ringfence.analysis.tallies import Silence, Track, tally
from ringfence.analysis.verdicts import Verdict
from ringfence.core.plan import Plan


def judges_for(plan: Plan, wave: int = 0, strata: int = 1) -> tuple[list[Judge], BaselineJudge | None, RolloutJudge]:
    """The plan's gates as judges. ``strata``: how many strata the rollout can reach (the
    rollout judge's mean counts every one of them, exposed or not)."""
    health = plan.health
    rollout = RolloutJudge(alpha=health.alpha, strata=strata, baseline_rate=health.baseline_rate)
    alpha = rollout.stratum_alpha()
    judges: list[Judge] = [HazardRatioJudge(alpha=alpha, limit=health.hazard_ratio_limit), SilenceJudge()]
    per_stratum = plan.waves[wave].gates.failure_budget_per_stratum if wave < len(plan.waves) else None
    if per_stratum is not None:
        judges.append(FailureBudgetJudge(budget=per_stratum))
    baseline = None
    if health.baseline_rate is not None:
        baseline = BaselineJudge(baseline_rate=health.baseline_rate, alpha=alpha, limit=health.hazard_ratio_limit)
    return judges, baseline, rollout


def judge_rollout(tracks: Iterable[Track], plan: Plan, now: datetime, wave: int = 0,
                  strata: int | None = None) -> list[Verdict]:
    """The rollout judge first, then every judge on every stratum that has exposed devices, with
    the current wave's gates. ``strata`` defaults to the strata the tracks cover."""
    silence = Silence(trial_timeout=plan.health.trial_timeout, silence_after=plan.health.silence_after)
    data = tally(tracks, now, silence)
    judges, baseline, rollout = judges_for(plan, wave, max(strata or 0, len(data), 1))
    return judge_all(data.values(), judges, baseline, rollout)

"""One reconciler step for one rollout: look at what was observed, decide what should happen.

:func:`step` is pure: it returns :class:`Action` values (an intent, a reason a person can read,
and the numbers behind it) and changes nothing. The caller passes each action through the rules
in :mod:`ringfence.core.rollout` and records it, so a rule can still refuse. Decisions, in order:

1. ``draft``: prepare once nothing is pending.
2. ``rolling``: halt when a judge's verdict is ``failed`` (the verdict's sentence is the reason),
   or when the rollout has more distinct failed devices than the current wave's failure budget;
   otherwise, once the wave's soak has passed, it has exposed at least its ``min_devices`` and —
   when the plan sets ``hazard_ratio_limit`` — every stratum with exposure has a ``passed``
   verdict (upper bound below the limit), advance (or complete after the last wave).
3. ``rolling_back``: finish once no exposed device still reports the rolled-back version, or
   when the confirmation window ends (saying how many never confirmed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ringfence.analysis.verdicts import Verdict, VerdictPhase
from ringfence.core.plan import Plan, format_duration
from ringfence.core.rollout import Intent, Phase, RolloutState


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """Safety limits of the engine, conservative by default."""

    rollback_confirm_window: timedelta = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Observations:
    """What the control plane knows about one rollout right now.

    ``failed_devices``: distinct devices of the rollout with a failure event (crash, failed
    probe, rollback, automatic revert). ``failed_by_stratum`` breaks it down for the reason.
    ``exposed_devices``: devices of the rollout that announced intent; ``wave_exposed``: those
    admitted in the current wave. ``still_on_version``: exposed devices not yet
    confirmed back on another version since the rollback began (silent devices included).
    ``pending``: requirements that keep a draft from becoming ready. ``failures_since``: when a
    person last resumed the rollout from a halt; failures are counted from then on.
    ``verdicts``: the judges' verdicts per stratum (see :mod:`ringfence.engine.health`).
    """

    failed_devices: int = 0
    failed_by_stratum: Mapping[str, int] = field(default_factory=dict)
    exposed_devices: int = 0
    wave_exposed: int = 0
    failures_since: datetime | None = None
    still_on_version: int = 0
    pending: tuple[str, ...] = ()
    verdicts: tuple[Verdict, ...] = ()


@dataclass(frozen=True, slots=True)
class Action:
    intent: Intent
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)


def step(
    state: RolloutState,
    plan: Plan,
    obs: Observations,
    now: datetime,
    limits: EngineLimits | None = None,
) -> list[Action]:
    limits = limits or EngineLimits()
    if state.phase is Phase.DRAFT:
        return [] if obs.pending else [Action(Intent.PREPARE, "all requirements met")]
    if state.phase is Phase.ROLLING:
        return _rolling(state, plan, obs, now)
    if state.phase is Phase.ROLLING_BACK:
        return _rolling_back(state, obs, now, limits)
    return []


def _rolling(state: RolloutState, plan: Plan, obs: Observations, now: datetime) -> list[Action]:
    wave = plan.waves[state.wave]
    budget = wave.gates.failure_budget
    numbers: dict[str, Any] = {
        "wave": state.wave,
        "wave_name": wave.name,
        "failed_devices": obs.failed_devices,
        "exposed_devices": obs.exposed_devices,
        "wave_exposed": obs.wave_exposed,
        "failure_budget": budget,
    }
    failed = [v for v in obs.verdicts if v.phase is VerdictPhase.FAILED]
    if failed:
        first = failed[0]
        more = f" (and {len(failed) - 1} more failed verdicts)" if len(failed) > 1 else ""
        return [Action(Intent.HALT, f"{first.judge} verdict in wave {wave.name!r}: {first.sentence}{more}",
                       {**numbers, "verdicts": [v.as_dict() for v in failed]})]
    if budget is not None and obs.failed_devices > budget:
        worst = sorted(obs.failed_by_stratum.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        where = ", ".join(f"{n} in {s}" for s, n in worst)
        counted = f" since the resume at {obs.failures_since.isoformat()}" if obs.failures_since else ""
        return [
            Action(
                Intent.HALT,
                f"failure budget exceeded in wave {wave.name!r}: {obs.failed_devices} failed devices{counted} "
                f"of {obs.exposed_devices} exposed > budget {budget}" + (f" ({where})" if where else ""),
                {**numbers, "failed_by_stratum": dict(obs.failed_by_stratum)},
            )
        ]
    started = state.wave_started_at
    if started is None or now - started < wave.soak:
        return []
    if wave.gates.min_devices is not None and obs.wave_exposed < wave.gates.min_devices:
        return []  # soaked, but too few devices to have proved anything: keep waiting
    if plan.health.hazard_ratio_limit is not None:
        judged = [v for v in obs.verdicts if v.judge in ("hazard-ratio", "baseline")]
        if any(v.phase is not VerdictPhase.PASSED for v in judged):
            return []  # soaked, but the evidence does not yet bound the harm below the limit
    soaked = f"soak {format_duration(wave.soak)} passed in wave {wave.name!r}"
    tally = f"{obs.failed_devices} failed of {obs.exposed_devices} exposed"
    if budget is not None:
        tally += f", budget {budget}"
    if state.wave + 1 >= len(plan.waves):
        return [Action(Intent.COMPLETE, f"{soaked}; last wave done; {tally}", numbers)]
    nxt = plan.waves[state.wave + 1]
    return [Action(Intent.ADVANCE, f"{soaked}; {tally}; advancing to {nxt.name!r}", numbers)]


def _rolling_back(
    state: RolloutState, obs: Observations, now: datetime, limits: EngineLimits
) -> list[Action]:
    numbers = {"still_on_version": obs.still_on_version, "exposed_devices": obs.exposed_devices}
    if obs.still_on_version == 0:
        return [
            Action(
                Intent.FINISH_ROLLBACK,
                f"all {obs.exposed_devices} exposed devices checked in since the rollback and report the baseline",
                numbers,
            )
        ]
    since = state.phase_changed_at
    if since is not None and now - since >= limits.rollback_confirm_window:
        return [
            Action(
                Intent.FINISH_ROLLBACK,
                f"confirmation window {format_duration(limits.rollback_confirm_window)} ended; "
                f"{obs.still_on_version} of {obs.exposed_devices} exposed devices never confirmed the "
                "baseline (offline or unable to report)",
                numbers,
            )
        ]
    return []

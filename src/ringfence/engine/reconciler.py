"""One reconciler step for one rollout: look at what was observed, decide what should happen.

:func:`step` is pure: it returns :class:`Action` values (an intent, a reason a person can read,
and the numbers behind it) and changes nothing. The caller passes each action through the rules
in :mod:`ringfence.core.rollout` and records it, so a rule can still refuse. Decisions, in order:

1. ``draft``: prepare once nothing is pending.
2. ``rolling``: halt when a judge's verdict is ``failed`` (the verdict's sentence is the reason),
   or when the rollout has more distinct failed devices than the current wave's failure budget.
   Pause for a person when a judge has been in ``error`` for the plan's ``error_pause_after``.
   Otherwise advance (or complete after the last wave) on **evidence, never on elapsed time**:
   only when :func:`waiting` finds nothing left to wait for — the soak has passed; the wave
   exposed somebody (or had nobody new to reach); every stratum exposed so far has
   ``min_healthy`` confirmed-healthy trials (all of them, where it has fewer) and at most
   ``max_undecided`` of its exposed devices still in trial; no verdict is ``error``, none is ``inconclusive``;
   at least ``min_devices`` are exposed; and, when the plan sets ``hazard_ratio_limit``, every
   stratum's hazard-ratio (or baseline) verdict is ``passed``.
3. ``rolling_back``: finish once no exposed device still reports the rolled-back version, or
   when the confirmation window ends (saying how many never confirmed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ringfence.analysis.verdicts import Verdict, VerdictPhase
from ringfence.core.durations import format_duration
from ringfence.core.plan import Plan
from ringfence.core.rollout import Intent, Phase, RolloutState


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """Safety limits of the engine, conservative by default."""

    rollback_confirm_window: timedelta = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class StratumProgress:
    """One stratum of the rollout up to its current wave (waves are cumulative): admitted
    devices that announced intent (``exposed``), those whose trial ended in ``healthy``, and
    those whose trial is neither healthy nor failed yet (``undecided``; silent devices stay
    undecided)."""

    exposed: int = 0
    healthy: int = 0
    undecided: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"exposed": self.exposed, "healthy": self.healthy, "undecided": self.undecided}


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
    ``progress``: exposure and trials per stratum (only devices the rollout admitted count).
    ``wave_reach``: how many devices not yet admitted the current wave could still take; 0
    means nobody new is left for it (the evidence of the earlier waves stands), None that it is
    unknown (treated as somebody). ``error_since``: since when a judge verdict has been
    ``error`` without interruption (see :func:`error_since`).
    """

    failed_devices: int = 0
    failed_by_stratum: Mapping[str, int] = field(default_factory=dict)
    exposed_devices: int = 0
    wave_exposed: int = 0
    failures_since: datetime | None = None
    still_on_version: int = 0
    pending: tuple[str, ...] = ()
    verdicts: tuple[Verdict, ...] = ()
    progress: Mapping[str, StratumProgress] = field(default_factory=dict)
    wave_reach: int | None = None
    error_since: datetime | None = None


def error_since(previous: datetime | None, verdicts: tuple[Verdict, ...], now: datetime) -> datetime | None:
    """When the standing run of ``error`` verdicts began: kept while any verdict is an error,
    cleared as soon as none is. Both worlds keep it with this function."""
    if not any(v.phase is VerdictPhase.ERROR for v in verdicts):
        return None
    return previous if previous is not None else now


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
    errors = [v for v in obs.verdicts if v.phase is VerdictPhase.ERROR]
    pause_after = plan.health.error_pause_after
    if errors and obs.error_since is not None and now - obs.error_since >= pause_after:
        first = errors[0]
        return [Action(Intent.PAUSE,
                       f"judges could not run for {format_duration(now - obs.error_since)} in wave {wave.name!r} "
                       f"(limit {format_duration(pause_after)}): {first.judge}: {first.sentence}; paused for a person",
                       {**numbers, "verdicts": [v.as_dict() for v in errors]})]
    if waiting(state, plan, obs, now):
        return []
    soaked = f"soak {format_duration(wave.soak)} passed in wave {wave.name!r}"
    healthy = sum(p.healthy for p in obs.progress.values())
    tally = f"{healthy} confirmed healthy, {obs.failed_devices} failed of {obs.exposed_devices} exposed"
    if budget is not None:
        tally += f", budget {budget}"
    numbers["progress"] = {k: p.as_dict() for k, p in sorted(obs.progress.items())}
    if state.wave + 1 >= len(plan.waves):
        return [Action(Intent.COMPLETE, f"{soaked}; last wave done; {tally}", numbers)]
    nxt = plan.waves[state.wave + 1]
    return [Action(Intent.ADVANCE, f"{soaked}; {tally}; advancing to {nxt.name!r}", numbers)]


def waiting(state: RolloutState, plan: Plan, obs: Observations, now: datetime) -> list[str]:
    """What the current wave of a rolling rollout still waits for before it may be promoted, in
    words a person can act on (``rollout status`` shows them under ``waiting``). Empty: it may
    be promoted now. Absence of bad news is never enough: each line names missing evidence."""
    if state.phase is not Phase.ROLLING:
        return []
    wave = plan.waves[state.wave]
    gates = wave.gates
    out: list[str] = []
    started = state.wave_started_at
    if started is None:
        out.append("the wave's start time")
    elif now - started < wave.soak:
        out.append(f"soak: {format_duration(wave.soak - (now - started))} of {format_duration(wave.soak)} left")
    if not any(p.exposed for p in obs.progress.values()):
        out.append("no device has announced intent yet: a rollout that exposed nobody has proven nothing")
    elif obs.wave_exposed == 0 and obs.wave_reach != 0:
        out.append(f"no device of wave {wave.name!r} has announced intent yet: nothing new is proven")
    for stratum, p in sorted(obs.progress.items()):
        if p.exposed == 0:
            continue
        need = min(gates.min_healthy, p.exposed)
        lacks: list[str] = []
        if p.healthy < need:
            lacks.append(f"{p.healthy} of {need} healthy confirmations")
        allowed = int(gates.max_undecided * p.exposed)
        if p.undecided > allowed:
            lacks.append(f"{p.undecided} trials undecided (at most {allowed} of {p.exposed} may be)")
        if lacks:
            out.append(f"{stratum}: " + "; ".join(lacks))
    if gates.min_devices is not None and obs.wave_exposed < gates.min_devices:
        out.append(f"{obs.wave_exposed} of {gates.min_devices} devices of the wave exposed (min_devices)")
    for v in obs.verdicts:
        if v.phase is VerdictPhase.ERROR:
            out.append(f"{v.judge} could not run: {v.sentence}")
        elif v.phase is VerdictPhase.INCONCLUSIVE:
            out.append(f"{v.judge} is inconclusive: {v.sentence}")
    if plan.health.hazard_ratio_limit is not None:
        out.extend(f"{v.judge}: {v.sentence}" for v in obs.verdicts
                   if v.judge in ("hazard-ratio", "baseline") and v.phase is VerdictPhase.RUNNING)
    return out


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

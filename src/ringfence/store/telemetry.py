"""What devices did: admissions to waves, reported events, and the tallies the engine and the
status page read from them."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select, text, update
from sqlalchemy.orm import Session, aliased

from ringfence.analysis.judges import overall
from ringfence.analysis.verdicts import Verdict
from ringfence.core.clock import utc
from ringfence.core.cohorts import TrialLimits
from ringfence.core.models import FAILURE_KINDS, REVERT_KINDS, EventKind
from ringfence.core.plan import Plan
from ringfence.core.rollout import Intent, Phase
from ringfence.engine.reconciler import Observations, StratumProgress
from ringfence.engine.reconciler import waiting as engine_waiting
from ringfence.store import change
from ringfence.store.access import upsert
from ringfence.store.health import rollout_verdicts
from ringfence.store.policies import held_by_policy
from ringfence.store.releases import get_content_type, get_release, history, release_plan, rollout_state
from ringfence.store.schema import (
    AdmissionRow,
    DeviceRow,
    DeviceVersion,
    EventRow,
    HistoryRow,
    PlaceboRow,
    ReleaseRow,
    WatchedRow,
)
from ringfence.store.validations import validation_json

_FAILURES = [k.value for k in FAILURE_KINDS]
_REVERTS = [k.value for k in REVERT_KINDS]


@dataclass(frozen=True, slots=True)
class Admission:
    """A device joining a wave. ``stratum_cap`` and ``total_cap`` are the wave's caps as the
    admitting node computed them, and ``limits`` the stratum's in-flight window and canary
    (:func:`ringfence.core.cohorts.trial_limits`); all are checked again in the database when
    several nodes admit."""

    release_id: str
    device_id: str
    wave: int
    stratum: str
    at: datetime
    stratum_cap: int | None = None
    total_cap: int | None = None
    limits: TrialLimits | None = None


def record_admissions(s: Session, admissions: Sequence[Admission], *, shared: bool = False) -> list[Admission]:
    """Store admissions; returns those refused because their rollout is no longer rolling or
    their wave is full.

    The rollout's phase is read in the same transaction (on PostgreSQL with a share lock on its
    row, so a halt waits for the admissions already being written): once a halt is committed, no
    device is admitted, even by a node whose memory has not caught up yet.
    One process (SQLite) keeps the authoritative counters in memory and checks no caps here.
    With ``shared`` (several nodes on PostgreSQL) each node knows only its own admissions, so
    capped ones are checked against the database under a per-rollout transaction lock: however
    many nodes admit at once, a wave never exceeds its cap.
    """
    if not admissions:
        return []
    ids = sorted({a.release_id for a in admissions})
    rolling = set(s.scalars(select(ReleaseRow.id).where(ReleaseRow.id.in_(ids), ReleaseRow.phase == Phase.ROLLING.value)
                            .with_for_update(read=True)))
    refused = [a for a in admissions if a.release_id not in rolling]
    capped = [a for a in admissions if a.release_id in rolling and (
        a.stratum_cap is not None or a.total_cap is not None or a.limits is not None)]
    if shared and capped:
        refused += _over_cap(s, capped)
    accepted = [a for a in admissions if a not in refused]
    upsert(s, AdmissionRow, [
        {"release_id": a.release_id, "device_id": a.device_id, "wave": a.wave, "stratum": a.stratum, "at": a.at}
        for a in accepted
    ], keys=("release_id", "device_id"))
    return refused


def _over_cap(s: Session, capped: Sequence[Admission]) -> list[Admission]:
    refused: list[Admission] = []
    for release_id in sorted({a.release_id for a in capped}):  # sorted: no lock-order deadlock
        mine = [a for a in capped if a.release_id == release_id]
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(release_id)})
        waves = sorted({a.wave for a in mine})
        rows = s.execute(select(AdmissionRow.wave, AdmissionRow.stratum, func.count())
                         .where(AdmissionRow.release_id == release_id, AdmissionRow.wave.in_(waves))
                         .group_by(AdmissionRow.wave, AdmissionRow.stratum)).all()
        known = set(s.scalars(select(AdmissionRow.device_id).where(
            AdmissionRow.release_id == release_id, AdmissionRow.device_id.in_([a.device_id for a in mine]))))
        by_stratum: Counter[tuple[int, str]] = Counter({(w, st): n for w, st, n in rows})
        by_wave: Counter[int] = Counter()
        for (w, _), n in by_stratum.items():
            by_wave[w] += n
        trials = _trials_by_stratum(s, release_id, sorted({a.stratum for a in mine if a.limits is not None}))
        for a in mine:
            if a.device_id in known:
                continue  # a retry: already counted
            full = (a.stratum_cap is not None and by_stratum[(a.wave, a.stratum)] >= a.stratum_cap) or (
                a.total_cap is not None and by_wave[a.wave] >= a.total_cap)
            admitted, in_trial, healthy = trials.get(a.stratum, (0, 0, 0))
            if a.limits is not None and not full:
                full = (a.limits.window is not None and in_trial >= a.limits.window) or (
                    healthy < a.limits.canary_healthy and admitted >= a.limits.canary_size)
            if full:
                refused.append(a)
                continue
            known.add(a.device_id)
            by_stratum[(a.wave, a.stratum)] += 1
            by_wave[a.wave] += 1
            trials[a.stratum] = (admitted + 1, in_trial + 1, healthy)
    return refused


def _trials_by_stratum(s: Session, release_id: str, strata: list[str]) -> dict[str, tuple[int, int, int]]:
    """stratum -> (admitted, still in trial, confirmed healthy) over every node's admissions."""
    if not strata:
        return {}
    healthy = _reported(release_id, [EventKind.HEALTHY.value])
    decided = _reported(release_id, _DECIDED)
    rows = s.execute(select(AdmissionRow.stratum, func.count(), func.sum(case((~decided, 1), else_=0)),
                            func.sum(case((healthy, 1), else_=0)))
                     .where(AdmissionRow.release_id == release_id, AdmissionRow.stratum.in_(strata))
                     .group_by(AdmissionRow.stratum)).all()
    return {st: (int(n), int(u or 0), int(h or 0)) for st, n, u, h in rows}


def _lock_key(release_id: str) -> int:
    """A stable signed 64-bit advisory-lock key per rollout."""
    return int.from_bytes(hashlib.blake2b(f"admissions:{release_id}".encode(), digest_size=8).digest(), "big",
                          signed=True)


def load_admissions(s: Session, release_id: str) -> dict[str, tuple[int, str]]:
    """device id -> (wave, stratum) for every device admitted to the rollout."""
    rows = s.execute(select(AdmissionRow.device_id, AdmissionRow.wave, AdmissionRow.stratum)
                     .where(AdmissionRow.release_id == release_id))
    return {d: (w, st) for d, w, st in rows}


@dataclass(frozen=True, slots=True)
class PlaceboAsked:
    """A control device asked to come back within the trial timeout (see :class:`PlaceboRow`)."""

    release_id: str
    device_id: str
    wave: int
    stratum: str
    at: datetime


@dataclass(frozen=True, slots=True)
class PlaceboSeen:
    """A placebo device came back (its first check-in after the placebo's wait)."""

    release_id: str
    device_id: str
    at: datetime


def record_placebos(s: Session, asked: Sequence[PlaceboAsked], seen: Sequence[PlaceboSeen]) -> None:
    upsert(s, PlaceboRow, [{"release_id": p.release_id, "device_id": p.device_id, "wave": p.wave,
                            "stratum": p.stratum, "asked_at": p.at} for p in asked], keys=("release_id", "device_id"))
    for p in seen:
        s.execute(update(PlaceboRow).where(PlaceboRow.release_id == p.release_id, PlaceboRow.device_id == p.device_id,
                                           PlaceboRow.seen_at.is_(None)).values(seen_at=p.at))


def load_placebos(s: Session, release_id: str) -> dict[str, tuple[int, str, datetime, bool]]:
    """device id -> (wave, stratum, asked at, seen yet) for the rollout's placebo devices."""
    rows = s.execute(select(PlaceboRow.device_id, PlaceboRow.wave, PlaceboRow.stratum, PlaceboRow.asked_at,
                            PlaceboRow.seen_at).where(PlaceboRow.release_id == release_id))
    return {d: (w, st, utc(at), seen is not None) for d, w, st, at, seen in rows}


def load_watched(s: Session, release_id: str) -> set[str]:
    """The devices the rollout has heard from since it started."""
    return set(s.scalars(select(WatchedRow.device_id).where(WatchedRow.release_id == release_id)))


@dataclass(frozen=True, slots=True)
class Event:
    device_id: str
    event_id: str
    release_id: str | None
    content_type: str
    version: str
    kind: EventKind
    stratum: str
    at: datetime
    received_at: datetime
    details: Mapping[str, Any]


def record_events(s: Session, events: Iterable[Event]) -> None:
    """Store events; a retried event (same device and event id) is stored once."""
    upsert(s, EventRow, [
        {"device_id": e.device_id, "event_id": e.event_id, "release_id": e.release_id,
         "content_type": e.content_type, "version": e.version, "kind": e.kind.value, "stratum": e.stratum,
         "at": e.at, "received_at": e.received_at, "details": dict(e.details)}
        for e in events
    ], keys=("device_id", "event_id"))


def observe(s: Session, row: ReleaseRow, now: datetime | None = None) -> Observations:
    """The engine's view of one rollout, read from admissions, events and reported versions;
    with ``now``, also the judges' verdicts on its strata (while it is rolling).

    Only devices the rollout admitted speak for it: an event about the release from any other
    device (another tenant's, a broken or hostile one) is left out of exposure, budgets,
    confirmations and the judges."""
    admitted = (select(AdmissionRow.device_id).where(AdmissionRow.release_id == row.id,
                                                     AdmissionRow.device_id == EventRow.device_id).exists())
    progress = trial_progress(s, row.id)
    exposed = sum(p.exposed for p in progress.values())
    # A person who resumed a halted rollout has answered for the failures before that moment;
    # the budget counts the ones after it.
    since = _resumed_from_halt_at(s, row.id)
    # Only exposed devices (those that announced intent) count against the budget: a device whose
    # disk filled up during the download failed, but the version never ran there.
    intent = aliased(EventRow)
    exposed_device = (select(intent.id).where(intent.release_id == row.id, intent.device_id == EventRow.device_id,
                                              intent.kind == EventKind.INTENT.value).exists())
    failures = [EventRow.release_id == row.id, EventRow.kind.in_(_FAILURES), exposed_device, admitted]
    if since is not None:
        failures.append(EventRow.received_at > since)
    by_stratum: dict[str, int] = dict(s.execute(
        select(EventRow.stratum, func.count(func.distinct(EventRow.device_id)))
        .where(*failures).group_by(EventRow.stratum)).all())
    failed = s.scalar(select(func.count(func.distinct(EventRow.device_id))).where(*failures)) or 0
    # Walk the wave's admissions (bounded by its cap) and look each device's intent up by the
    # (device_id, event_id) index, rather than joining every intent of the rollout.
    wave_exposed = s.scalar(select(func.count()).select_from(AdmissionRow).where(
        AdmissionRow.release_id == row.id, AdmissionRow.wave == row.wave, _reported(row.id, [EventKind.INTENT.value])
    )) or 0
    still = 0
    if row.phase == Phase.ROLLING_BACK.value:
        still = max(exposed - _confirmed_back(s, row), 0)
    verdicts: tuple[Verdict, ...] = ()
    if row.phase == Phase.ROLLING.value and now is not None:
        resumed = utc(since) if since is not None else None
        verdicts = tuple(rollout_verdicts(s, row, release_plan(row), now, resumed))
    return Observations(failed_devices=failed, failed_by_stratum=by_stratum, exposed_devices=exposed,
                        wave_exposed=wave_exposed, still_on_version=still,
                        failures_since=utc(since) if since is not None else None, verdicts=verdicts,
                        progress=progress)


_DECIDED = [EventKind.HEALTHY.value, *_FAILURES, *_REVERTS]


def _reported(release_id: str, kinds: list[str]) -> Any:
    """The admitted device (``AdmissionRow``) sent one of ``kinds`` about the release."""
    return (select(EventRow.id).where(EventRow.device_id == AdmissionRow.device_id, EventRow.release_id == release_id,
                                      EventRow.kind.in_(kinds)).exists())


def trial_progress(s: Session, release_id: str) -> dict[str, StratumProgress]:
    """Per stratum of admission: admitted devices that announced intent, confirmed health, and
    are still in trial (exposed, neither healthy nor failed nor reverted). One pass over the
    release's lifecycle events, grouped by device, joined to the admissions."""
    def flag(kinds: list[str]) -> Any:
        return func.max(case((EventRow.kind.in_(kinds), 1), else_=0))

    per_device = (select(EventRow.device_id, flag([EventKind.INTENT.value]).label("intent"),
                         flag([EventKind.HEALTHY.value]).label("healthy"), flag(_DECIDED).label("decided"))
                  .where(EventRow.release_id == release_id, EventRow.kind.in_([EventKind.INTENT.value, *_DECIDED]))
                  .group_by(EventRow.device_id).subquery())
    exposed = per_device.c.intent == 1
    rows = s.execute(select(AdmissionRow.stratum,
                            func.sum(per_device.c.intent),
                            func.sum(case((and_(exposed, per_device.c.healthy == 1), 1), else_=0)),
                            func.sum(case((and_(exposed, per_device.c.decided == 0), 1), else_=0)))
                     .join(per_device, per_device.c.device_id == AdmissionRow.device_id)
                     .where(AdmissionRow.release_id == release_id).group_by(AdmissionRow.stratum)).all()
    return {stratum: StratumProgress(int(e or 0), int(h or 0), int(u or 0)) for stratum, e, h, u in rows}


def load_trials(s: Session, release_id: str) -> dict[str, bool]:
    """Admitted devices whose trial is decided -> whether it ended healthy (the snapshot's
    in-flight window starts from these after a restart)."""
    out: dict[str, bool] = {}
    for device_id, kind in s.execute(
            select(EventRow.device_id, EventRow.kind).join(AdmissionRow, and_(
                AdmissionRow.release_id == EventRow.release_id, AdmissionRow.device_id == EventRow.device_id))
            .where(EventRow.release_id == release_id, EventRow.kind.in_(_DECIDED)).order_by(EventRow.at)):
        out.setdefault(device_id, kind == EventKind.HEALTHY.value)
    return out


def _resumed_from_halt_at(s: Session, release_id: str) -> datetime | None:
    """When a person last resumed the rollout from a halt: they answered for the failures before."""
    at: datetime | None = s.scalar(select(func.max(HistoryRow.at)).where(
        HistoryRow.release_id == release_id, HistoryRow.intent == Intent.RESUME.value,
        HistoryRow.from_phase == Phase.HALTED.value))
    return at


def _confirmed_back(s: Session, row: ReleaseRow) -> int:
    """Exposed devices (intent sent) that have checked in since the rollback began and no longer
    report the rolled-back version. A device that crashed before it could report, or has not
    been heard from since, is not confirmed: silence never counts as back."""
    since = row.phase_changed_at
    admitted = (select(AdmissionRow.device_id).where(AdmissionRow.release_id == row.id,
                                                     AdmissionRow.device_id == EventRow.device_id).exists())
    exposed_ids = (select(EventRow.device_id)
                   .where(EventRow.release_id == row.id, EventRow.kind == EventKind.INTENT.value, admitted)
                   .distinct().subquery())
    query = (select(func.count()).select_from(exposed_ids)
             .join(DeviceRow, DeviceRow.id == exposed_ids.c.device_id)
             .outerjoin(DeviceVersion, and_(DeviceVersion.device_id == DeviceRow.id,
                                            DeviceVersion.content_type == row.content_type))
             .where(or_(DeviceVersion.version.is_(None), DeviceVersion.version != row.version)))
    if since is not None:
        query = query.where(DeviceRow.last_seen_at >= since)
    return s.scalar(query) or 0


def _verdicts_json(s: Session, row: ReleaseRow, plan: Plan, now: datetime,
                   verdicts: Sequence[Verdict] | None = None) -> dict[str, Any]:
    if Phase(row.phase) not in (Phase.ROLLING, Phase.PAUSED, Phase.HALTED):
        return {}
    if verdicts is None:
        since = _resumed_from_halt_at(s, row.id)
        verdicts = rollout_verdicts(s, row, plan, now, utc(since) if since is not None else None)
    wave: dict[str, Any] = {"overall": overall(verdicts).value,
                            "strata": [v.as_dict() for v in verdicts if v.stratum != "*"]}
    rollout = next((v for v in verdicts if v.stratum == "*"), None)
    if rollout is not None:
        wave["rollout"] = rollout.as_dict()
    return {str(row.wave): wave}


def _per_wave(s: Session, release_id: str, kinds: list[str]) -> dict[int, int]:
    return dict(s.execute(
        select(AdmissionRow.wave, func.count(func.distinct(EventRow.device_id)))
        .join(EventRow, and_(EventRow.release_id == AdmissionRow.release_id,
                             EventRow.device_id == AdmissionRow.device_id))
        .where(AdmissionRow.release_id == release_id, EventRow.kind.in_(kinds))
        .group_by(AdmissionRow.wave)).all())


def _wave_state(phase: Phase, index: int, current: int) -> str:
    if phase is Phase.COMPLETED or index < current:
        return "done"
    if index > current or phase in (Phase.DRAFT, Phase.READY):
        return "pending"
    return {Phase.ROLLING: "active", Phase.PAUSED: "paused", Phase.HALTED: "halted"}.get(phase, phase.value)


def rollout_status(s: Session, release_id: str, now: datetime | None = None,
                   reach: Callable[[str, datetime], int | None] | None = None) -> dict[str, Any]:
    """The rollout as the CLI and dashboard show it (``ringfence rollout status --json``). With
    ``now``, ``verdicts`` holds the judges' current verdicts for the current wave, per stratum
    (the verdicts that decided earlier waves are in the history's details), and ``waiting``
    what a rolling wave still waits for before it may be promoted (empty: nothing), with the
    confirmations per stratum in ``progress``. ``reach``: how many devices the current wave could
    still take (the snapshot knows), asked only when the wave exposed nobody yet."""
    row = get_release(s, release_id)
    plan = release_plan(row)
    phase = Phase(row.phase)
    obs = observe(s, row, now) if now is not None and phase is Phase.ROLLING else None
    waiting: list[str] = []
    if obs is not None and now is not None:
        if obs.wave_exposed == 0 and reach is not None:
            obs = replace(obs, wave_reach=reach(row.id, now))
        waiting = engine_waiting(rollout_state(row), plan, obs, now)
    admitted = dict(s.execute(select(AdmissionRow.wave, func.count()).where(AdmissionRow.release_id == row.id)
                              .group_by(AdmissionRow.wave)).all())
    exposed = _per_wave(s, row.id, [EventKind.INTENT.value])
    failed = _per_wave(s, row.id, _FAILURES)
    healthy = _per_wave(s, row.id, [EventKind.HEALTHY.value])
    activated = _per_wave(s, row.id, [EventKind.ACTIVATED.value])
    reverted = _per_wave(s, row.id, _REVERTS)
    waves = []
    for i, wave in enumerate(plan.waves):
        waves.append({
            "index": i, "name": wave.name, "state": _wave_state(phase, i, row.wave),
            "admitted": admitted.get(i, 0), "exposed": exposed.get(i, 0), "failed": failed.get(i, 0),
            "healthy": healthy.get(i, 0), "activated": activated.get(i, 0), "reverted": reverted.get(i, 0),
            "share": wave.share,
            "max_devices": {"total": wave.cap.total, "per_stratum": wave.cap.per_stratum},
            "soak_s": wave.soak.total_seconds(), "failure_budget": wave.gates.failure_budget,
            "min_devices": wave.gates.min_devices, "min_healthy": wave.gates.min_healthy,
            "max_undecided": wave.gates.max_undecided, "max_in_trial": wave.gates.max_in_trial,
        })
    validation = validation_json(s, row.id, row.content_type)
    return {
        "release": row.id, "content_type": row.content_type, "version": row.version, "plan": row.plan_name,
        "phase": phase.value, "wave": row.wave, "wave_name": plan.waves[row.wave].name,
        "wave_started_at": utc(row.wave_started_at).isoformat() if row.wave_started_at else None,
        "revision": row.revision, "created_at": utc(row.created_at).isoformat(), "created_by": row.created_by,
        "totals": {k: sum(w[k] for w in waves)
                   for k in ("admitted", "exposed", "activated", "healthy", "failed", "reverted")},
        "waves": waves,
        # enrolled devices their channel policy keeps out of this content type's rollouts, by reason
        "held_by_policy": held_by_policy(s, row.content_type, now),
        "health": plan.health.as_dict(),  # the judges' settings (the category's defaults where the plan is silent)
        "verdicts": _verdicts_json(s, row, plan, now, obs.verdicts if obs is not None else None)
        if now is not None else {},
        "waiting": waiting,
        "progress": {k: p.as_dict() for k, p in sorted(obs.progress.items())} if obs is not None else {},
        "history": [{
            "at": utc(h.at).isoformat(), "intent": h.intent, "from": h.from_phase, "to": h.to_phase,
            "from_wave": h.from_wave, "to_wave": h.to_wave, "actor": h.actor, "reason": h.reason,
            "details": h.details,
        } for h in history(s, row.id)],
        **({"validation": validation} if validation is not None else {}),
        "approvals": change.standing_json(change.standing(s, row, row.approvals_required)),
        "emergency": _emergency_json(s, row.id),
        "freezes": [change.freeze_json(f) for f in change.active_freezes(
            s, get_content_type(s, row.content_type).team, now)] if now is not None else [],
    }


def _emergency_json(s: Session, release_id: str) -> dict[str, Any] | None:
    """The emergency start of the rollout, if it took the emergency path: what it overrode,
    who approved, who started and why (shown wherever the rollout is)."""
    start = s.scalars(select(HistoryRow).where(HistoryRow.release_id == release_id, HistoryRow.intent == "start")
                      .order_by(HistoryRow.id.desc()).limit(1)).first()
    if start is None or not start.details.get("emergency"):
        return None
    d = start.details
    return {"at": utc(start.at).isoformat(), "started_by": start.actor, "reason": d.get("reason"),
            "approved_by": d.get("approved_by"), "approval_reason": d.get("approval_reason"),
            "overrode": [*d.get("checks", []), *d.get("freezes", []), *d.get("approvals", [])]}

"""What the dashboard reads in one go: the recent rollouts with their progress per wave and the
reason of their last transition, the fleet in counts, and a rollout's failure curves per stratum.

Each function is a handful of grouped queries, whatever the number of devices (the curves read
the judges' device timelines, as a status with verdicts does). Functions take a session (the
caller owns the transaction) and return JSON-ready values.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from ringfence.analysis.curves import failure_curves
from ringfence.analysis.tallies import Silence
from ringfence.core.clock import utc
from ringfence.core.models import EventKind
from ringfence.core.rollout import ACTIVE_PHASES, Intent, Phase
from ringfence.store.health import rollout_tracks
from ringfence.store.releases import get_release, release_plan
from ringfence.store.schema import AdmissionRow, DeviceRow, DeviceVersion, EventRow, HistoryRow, ReleaseRow

CURVE_COLUMNS = ("at_s", "exposed", "exposed_failed", "control", "control_failed")


def rollouts(s: Session, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``limit`` releases, each with its waves' admitted and exposed devices and its
    last transition (the reason a person reads first: why it halted, who paused it)."""
    rows = list(s.scalars(select(ReleaseRow).order_by(ReleaseRow.created_at.desc(), ReleaseRow.id).limit(limit)))
    ids = [r.id for r in rows]
    if not ids:
        return []
    admitted = _by_wave(s, select(AdmissionRow.release_id, AdmissionRow.wave, func.count())
                        .where(AdmissionRow.release_id.in_(ids)))
    announced = func.count(func.distinct(EventRow.device_id))
    exposed = _by_wave(s, select(AdmissionRow.release_id, AdmissionRow.wave, announced)
                       .join(EventRow, and_(EventRow.release_id == AdmissionRow.release_id,
                                            EventRow.device_id == AdmissionRow.device_id))
                       .where(AdmissionRow.release_id.in_(ids), EventRow.kind == EventKind.INTENT.value))
    last: dict[str, HistoryRow] = {}
    for h in s.scalars(select(HistoryRow).where(HistoryRow.release_id.in_(ids)).order_by(HistoryRow.id)):
        last[h.release_id] = h
    out = []
    for row in rows:
        names = [w.name for w in release_plan(row).waves]
        out.append({
            "release": row.id, "content_type": row.content_type, "version": row.version, "plan": row.plan_name,
            "phase": row.phase, "wave": row.wave, "created_at": utc(row.created_at).isoformat(),
            "created_by": row.created_by,
            "changed_at": utc(row.phase_changed_at).isoformat() if row.phase_changed_at else None,
            "waves": [{"name": name, "admitted": admitted.get((row.id, i), 0), "exposed": exposed.get((row.id, i), 0)}
                      for i, name in enumerate(names)],
            "last": _transition(last[row.id]) if row.id in last else None,
        })
    return out


def _by_wave(s: Session, query: Any) -> dict[tuple[str, int], int]:
    grouped = query.group_by(AdmissionRow.release_id, AdmissionRow.wave)
    return {(release_id, wave): n for release_id, wave, n in s.execute(grouped)}


def _transition(h: HistoryRow) -> dict[str, Any]:
    return {"at": utc(h.at).isoformat(), "intent": h.intent, "from": h.from_phase, "to": h.to_phase,
            "actor": h.actor, "reason": h.reason}


def fleet(s: Session) -> dict[str, Any]:
    """Enrolled devices by platform, by region, and by the version they report per content type
    (``none``: devices that report no version of it)."""
    total = s.scalar(select(func.count()).select_from(DeviceRow)) or 0
    platforms = dict(s.execute(select(DeviceRow.platform, func.count()).group_by(DeviceRow.platform)).all())
    regions = dict(s.execute(select(DeviceRow.region, func.count()).group_by(DeviceRow.region)).all())
    versions: dict[str, dict[str, int]] = defaultdict(dict)
    for content_type, version, n in s.execute(
            select(DeviceVersion.content_type, DeviceVersion.version, func.count())
            .group_by(DeviceVersion.content_type, DeviceVersion.version)):
        versions[content_type][version] = n
    for counts in versions.values():
        reporting = sum(counts.values())
        if reporting < total:
            counts["none"] = total - reporting
    return {"devices": total, "platforms": _sorted(platforms), "regions": _sorted(regions),
            "versions": {ct: _sorted(counts) for ct, counts in sorted(versions.items())}}


def _sorted(counts: dict[str, int]) -> dict[str, int]:
    """Largest first, then by name: the order a person reads a breakdown in."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def curves(s: Session, release_id: str, now: datetime, points: int = 40) -> dict[str, Any]:
    """The rollout's failure curves per stratum (see :mod:`ringfence.analysis.curves`), from its
    start to ``now`` (to its last transition once it completed or rolled back). Each point is a
    list in the order of ``columns``; times are seconds after ``start``."""
    row = get_release(s, release_id)
    plan = release_plan(row)
    started = s.scalar(select(func.min(HistoryRow.at)).where(HistoryRow.release_id == row.id,
                                                              HistoryRow.intent == Intent.START.value))
    if started is None:
        return {"release": row.id, "start": None, "end": None, "columns": list(CURVE_COLUMNS), "strata": []}
    start = utc(started)
    end = now
    if Phase(row.phase) not in ACTIVE_PHASES:
        last = s.scalar(select(func.max(HistoryRow.at)).where(HistoryRow.release_id == row.id))
        end = utc(last) if last is not None else now
    end = max(end, start)
    silence = Silence(trial_timeout=plan.health.trial_timeout, silence_after=plan.health.silence_after)
    found = failure_curves(rollout_tracks(s, row, plan), start, end, silence, points)
    return {"release": row.id, "start": start.isoformat(), "end": end.isoformat(), "columns": list(CURVE_COLUMNS),
            "strata": [{"stratum": c.stratum, "points": [p.as_list() for p in c.points]} for c in found]}

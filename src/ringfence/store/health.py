"""The rollout's device timelines, read from the database for the judges.

Exposed devices are admitted devices that sent the release's ``intent`` (events about the
release from devices it never admitted count for nothing); the control arm is every other
device the plan's waves could select, in the strata that have exposure. A device is watched
(at risk) from the rollout's first sighting of it (its first check-in at or after the start,
see :class:`~ringfence.store.schema.WatchedRow`) or its intent, whichever is earlier: a
machine asleep or offline at the start joins the comparison when it is heard from, as an
exposed one does, so sleeping machines that cannot fail do not swell the control arm. Its
first failure of this content type after that (whatever version it ran) is its reported
failure: one from before, reported when it came back, happened before it was watched. Its last
check-in is when it was last heard from. Placebo devices (control devices asked
to come back within the trial timeout) carry when they were asked and when they came back. Reads
are a handful of grouped queries per look; the work is linear in the devices of the exposed
strata.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ringfence.analysis.tallies import Track
from ringfence.analysis.verdicts import Verdict
from ringfence.core.clock import utc
from ringfence.core.models import FAILURE_KINDS, DeviceAttributes, EventKind, stratum_key
from ringfence.core.plan import Plan
from ringfence.core.rollout import Intent
from ringfence.engine.health import judge_rollout
from ringfence.store.schema import (
    AdmissionRow,
    DeviceRow,
    EventRow,
    HistoryRow,
    PlaceboRow,
    ReleaseRow,
    WatchedRow,
)

_FAILURES = [k.value for k in FAILURE_KINDS]


def rollout_tracks(s: Session, row: ReleaseRow, plan: Plan, after: datetime | None = None) -> list[Track]:
    """``after``: when a person resumed the rollout from a halt. They answered for what happened
    before, so the judges start afresh from then (a new e-process, valid on its own): devices
    that had already failed are left out, time at risk counts from then, and placebo devices
    asked before then are not paired."""
    return _tracks(s, row, plan, after)[0]


def _tracks(s: Session, row: ReleaseRow, plan: Plan, after: datetime | None) -> tuple[list[Track], int]:
    """The tracks, and how many strata the rollout's waves can reach."""
    started = s.scalar(select(func.min(HistoryRow.at)).where(HistoryRow.release_id == row.id,
                                                              HistoryRow.intent == Intent.START.value))
    if started is None:
        return [], 0
    began = utc(started)
    started = began if after is None else max(began, after)
    # A device speaks only for itself, about what it was offered: what the release's events say
    # counts only from devices the rollout admitted.
    admitted = set(s.scalars(select(AdmissionRow.device_id).where(AdmissionRow.release_id == row.id)))
    exposed = {d: at for d, at in _first(s, EventRow.release_id == row.id,
                                         EventRow.kind == EventKind.INTENT.value).items() if d in admitted}
    if not exposed:
        return [], 0
    healthy = {d: at for d, at in _first(s, EventRow.release_id == row.id,
                                         EventRow.kind == EventKind.HEALTHY.value).items() if d in admitted}
    watched = {d: utc(at) for d, at in s.execute(
        select(WatchedRow.device_id, WatchedRow.first_seen_at).where(WatchedRow.release_id == row.id))}
    since: dict[str, datetime] = {}
    for device_id in watched.keys() | exposed.keys():
        first = min(t for t in (watched.get(device_id), exposed.get(device_id)) if t is not None)
        since[device_id] = max(began, first)
    failures: dict[str, tuple[datetime, str]] = {}
    for device_id, kind, at, received, release_id in s.execute(
            select(EventRow.device_id, EventRow.kind, EventRow.at, EventRow.received_at, EventRow.release_id)
            .where(EventRow.content_type == row.content_type, EventRow.kind.in_(_FAILURES),
                   EventRow.received_at >= started)):
        if release_id == row.id and device_id not in admitted:
            continue  # a failure of a version it was never given: not evidence about the release
        when = min(utc(at), utc(received))
        if device_id not in since or when < since[device_id]:
            continue  # it happened before the rollout watched the device
        if device_id not in failures or when < failures[device_id][0]:
            failures[device_id] = (when, kind)
    everyone = any(not w.selector.include and not w.selector.exclude for w in plan.waves)
    rows = s.execute(select(DeviceRow.id, DeviceRow.platform, DeviceRow.os_version, DeviceRow.arch, DeviceRow.region,
                            DeviceRow.tenant, DeviceRow.channel, DeviceRow.tags, DeviceRow.enrolled_at,
                            DeviceRow.last_seen_at)).all()
    attributes = {r[0]: DeviceAttributes(platform=r[1], os_version=r[2], arch=r[3], region=r[4], tenant=r[5],
                                         channel=r[6], tags=frozenset(r[7] or ())) for r in rows}
    strata_of = {d: stratum_key(a, plan.strata) for d, a in attributes.items()}
    exposed_strata = {strata_of[d] for d in exposed if d in strata_of}
    reachable: set[str] = set(exposed_strata)
    placebos = {d: (utc(at), utc(seen) if seen is not None else None) for d, at, seen in s.execute(
        select(PlaceboRow.device_id, PlaceboRow.asked_at, PlaceboRow.seen_at)
        .where(PlaceboRow.release_id == row.id, PlaceboRow.asked_at >= started))}
    tracks: list[Track] = []
    for device_id, *_, enrolled_at, last_seen_at in rows:
        stratum = strata_of[device_id]
        eligible = (device_id in exposed or everyone
                    or any(w.selector.matches(attributes[device_id]) for w in plan.waves))
        if not eligible:
            continue  # no wave could ever select it: not a fair comparison
        reachable.add(stratum)
        if stratum not in exposed_strata or device_id not in since:
            continue  # not heard from since the start: nothing known of it to compare
        failed = failures.get(device_id)
        if after is not None and _answered_for(exposed.get(device_id), healthy.get(device_id), failed, after, plan):
            continue
        tracks.append(Track(
            device_id=device_id, stratum=stratum, since=max(since[device_id], started, utc(enrolled_at)),
            exposed_at=exposed.get(device_id), healthy_at=healthy.get(device_id),
            last_heard=utc(last_seen_at) if last_seen_at is not None else None,
            failed_at=failed[0] if failed else None, failure=failed[1] if failed else "",
            placebo_at=placebos[device_id][0] if device_id in placebos else None,
            placebo_seen_at=placebos[device_id][1] if device_id in placebos else None))
    return tracks, len(reachable)


def _answered_for(exposed_at: datetime | None, healthy_at: datetime | None,
                  failed: tuple[datetime, str] | None, after: datetime, plan: Plan) -> bool:
    """Had this device failed (loudly, or silently after activation) before the resume?"""
    if failed is not None and failed[0] < after:
        return True
    if exposed_at is not None and healthy_at is None:
        return exposed_at + plan.health.trial_timeout < after
    return False


def _first(s: Session, *where: object) -> dict[str, datetime]:
    """device -> the earliest time of the matching events (device time, never after receipt)."""
    rows = s.execute(select(EventRow.device_id, func.min(EventRow.at), func.min(EventRow.received_at))
                     .where(*where).group_by(EventRow.device_id))  # type: ignore[arg-type]
    return {d: min(utc(at), utc(received)) for d, at, received in rows}


def rollout_verdicts(s: Session, row: ReleaseRow, plan: Plan, now: datetime,
                     after: datetime | None = None) -> list[Verdict]:
    tracks, strata = _tracks(s, row, plan, after)
    return judge_rollout(tracks, plan, now, row.wave, strata)

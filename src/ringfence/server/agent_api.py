"""The agent API: enrolment, check-in and the start-up revocation check.

A check-in never reads the database. It authenticates against the snapshot, records what the
device reports (sightings fire-and-forget; events durable), decides the desired version per
content type from the snapshot, and persists any new admission before it answers. The
response acknowledges event ids only once they are stored, so an agent that sends an intent and
gets its id back knows the server counted it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from ringfence.core.assignment import Decision, RolloutView, Target
from ringfence.core.cohorts import TrialLimits, trial_limits
from ringfence.core.errors import InvalidInput, ReplayedCheckIn, Unauthorized
from ringfence.core.models import FAILURE_KINDS, DeviceAttributes
from ringfence.core.plan import Activation
from ringfence.server import auth
from ringfence.server.ingest import AdmissionRefused
from ringfence.server.runtime import Runtime
from ringfence.server.schemas import AttributesIn, CheckInIn, RevocationsIn
from ringfence.server.snapshot import DeviceState, FleetSnapshot, PlaceboStep
from ringfence.store import access
from ringfence.store.access import Sighting
from ringfence.store.telemetry import Admission, Event, PlaceboAsked, PlaceboSeen

router = APIRouter(prefix="/v1/agent")
log = logging.getLogger("ringfence.agent_api")


def _attributes(body: AttributesIn, tenant: str) -> DeviceAttributes:
    return DeviceAttributes(
        platform=body.platform.lower(), os_version=body.os_version, arch=body.arch, region=body.region,
        tenant=tenant, channel=body.channel, tags=frozenset(body.tags), agent_version=body.agent_version,
    )


@router.post("/enroll", status_code=201)
async def enroll(body: AttributesIn, request: Request) -> dict[str, Any]:
    """Trade an enrolment token for a device credential (shown once)."""
    rt = auth.runtime(request)
    secret = auth.bearer(request)

    def _enroll() -> tuple[access.DeviceRecord, str]:
        with rt.db.session() as s:
            token = access.find_enroll_token(s, secret)
            if token is None:
                raise Unauthorized("the enrolment token is unknown or revoked")
            return access.enroll_device(s, _attributes(body, token.tenant), rt.clock.now())

    record, credential = await asyncio.to_thread(_enroll)
    rt.snapshot.add_device(record)
    return {"device_id": record.id, "credential": credential, "tenant": record.attributes.tenant,
            "poll_interval_s": rt.config.poll_interval_s}


async def _authenticate(rt: Runtime, request: Request) -> str:
    """The device a credential belongs to: from the snapshot, or (several nodes on PostgreSQL)
    from the database for a device enrolled through another node."""
    credential = auth.bearer(request)
    device_id = rt.snapshot.authenticate(credential)
    if device_id is None and not rt.db.is_sqlite:
        record = await asyncio.to_thread(auth.enrolled_elsewhere, rt, credential)
        if record is not None:
            if record.id not in rt.snapshot.devices:
                rt.snapshot.add_device(record)  # on the loop thread: the snapshot's only writer
            device_id = record.id
    if device_id is None:
        raise Unauthorized("the device credential is unknown; enroll again")
    return device_id


_CHECKIN_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": CheckInIn.model_json_schema(ref_template="#/components/schemas/{model}")}}}}


@router.post("/checkin", openapi_extra=_CHECKIN_BODY)
async def checkin(request: Request) -> Response:
    """The hot path: the body is validated straight from bytes and the answer is encoded once
    (no dependency solving, no response-model pass); errors keep the one shape."""
    rt = auth.runtime(request)
    device_id = await _authenticate(rt, request)
    raw = await request.body()
    try:
        body = CheckInIn.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    if len(body.events) > rt.config.max_events_per_checkin:
        raise InvalidInput(f"{len(body.events)} events in one check-in; at most {rt.config.max_events_per_checkin}",
                           field="events", value=len(body.events))
    started = time.perf_counter()
    answer = await _checkin(rt, device_id, body)
    rt.metrics.checked_in((e.kind.value for e in body.events), time.perf_counter() - started)
    return Response(json.dumps(answer, separators=(",", ":")), media_type="application/json")


def _target_json(target: Target) -> dict[str, Any]:
    return {"version": target.version, "sha256": target.sha256, "size": target.size,
            "url": f"/v1/artifacts/{target.sha256}", "release": target.release_id}


def _desired_json(decision: Decision, view: RolloutView | None) -> dict[str, Any] | None:
    """What the device is told for one content type. A rollback names the version to leave; the
    device returns to its own last-known-good, falling back to the baseline given here (or to no
    content at all when there is none)."""
    target = decision.target
    if decision.rollback_from is not None:
        answer: dict[str, Any] = _target_json(target) if target is not None else {"version": None}
        answer["rollback_from"] = decision.rollback_from
        return answer
    if target is None:
        return None
    answer = _target_json(target)
    # Only a plan that departs from the agent's default policy spends bytes on every check-in.
    if view is not None and target.release_id == view.release_id and view.plan.activation != _DEFAULT_ACTIVATION:
        answer["activation"] = view.plan.activation.as_dict()
    return answer


_DEFAULT_ACTIVATION = Activation()


def _revoked_json(rt: Runtime, versions: dict[str, str]) -> dict[str, Any]:
    """Of the versions a device reports, those it must leave, with why."""
    out: dict[str, Any] = {}
    for content_type, version in versions.items():
        entry = rt.snapshot.revoked.get(content_type, {}).get(version)
        if entry is not None:
            out[content_type] = {"version": version, "release": entry.release_id, "phase": entry.phase,
                                 "reason": entry.reason}
    return out


@router.post("/revocations")
async def revocations(body: RevocationsIn, request: Request) -> dict[str, Any]:
    """The start-up check: which of these versions must not be loaded. Answered from memory,
    so an agent booting into a crash loop gets its answer within its short timeout."""
    rt = auth.runtime(request)
    await _authenticate(rt, request)
    return {"revoked": _revoked_json(rt, body.versions)}


def _placebo(rt: Runtime, device_id: str, step: PlaceboStep, now: datetime) -> None:
    """Record a placebo being asked or coming back. Not awaited: a lost record loses one pair of
    the silence comparison, never a device's answer."""
    if step.wave is not None and step.stratum is not None:
        rt.batcher.submit(PlaceboAsked(step.release_id, device_id, step.wave, step.stratum, now))
    elif step.seen:
        rt.batcher.submit(PlaceboSeen(step.release_id, device_id, now))


# future, content type, release, stratum, baseline
_Admitted = tuple[asyncio.Future[None], str, str, str, Target | None]


def _decide_all(rt: Runtime, device_id: str, now: datetime) -> tuple[dict[str, Any], list[_Admitted], float]:
    """The answer for every content type, the admissions to persist before it is given, and the
    interval until the next check-in (shortened for a placebo device)."""
    snap = rt.snapshot
    desired: dict[str, Any] = {}
    interval = rt.config.poll_interval_s
    admitted: list[_Admitted] = []
    for content_type in snap.content_types():
        decision, stratum = snap.decide(device_id, content_type, now)
        target = decision.target
        view = snap.views.get(content_type)
        if decision.admit_wave is not None and stratum is not None and target is not None and view is not None:
            cohort = view.table[decision.admit_wave]
            limits = _shared_limits(snap, view, stratum)
            fut = rt.batcher.submit(Admission(target.release_id or "", device_id, decision.admit_wave, stratum, now,
                                              cohort.cap(stratum), cohort.total_cap, limits), durable=True)
            assert fut is not None
            admitted.append((fut, content_type, view.release_id, stratum, view.baseline))
        elif decision.admit_wave is None:
            step = snap.placebo(device_id, content_type, now, rt.config.poll_interval_s)
            if step is not None:
                _placebo(rt, device_id, step, now)
                if step.return_in_s is not None:
                    interval = min(interval, step.return_in_s)
        answer = _desired_json(decision, view)
        if answer is not None:
            desired[content_type] = answer
    return desired, admitted, interval


def _shared_limits(snap: FleetSnapshot, view: RolloutView, stratum: str) -> TrialLimits | None:
    """The in-flight window and canary the database checks again when several nodes admit (this
    node knows only its own admissions and the events it received): while the stratum is not
    canaried here, or once this node alone holds a quarter of the window in trial. Counting
    every node's trials reads the stratum's admissions, so it is not done while it cannot matter."""
    limits = trial_limits(view.plan, view.table, stratum, view.wave)
    entry = snap.admissions.get(view.release_id)
    healthy = entry.healthy.get(stratum, 0) if entry is not None else 0
    in_trial = entry.in_trial.get(stratum, 0) if entry is not None else 0
    if healthy < limits.canary_healthy or (limits.window is not None and 4 * in_trial >= limits.window):
        return limits
    return None


def _check_sequence(device_id: str, state: DeviceState, sequence: int | None) -> None:
    """Refuse a replayed check-in: once a device numbers its check-ins, each must be newer than
    the last one accepted (kept in memory, and in the store with the device's sightings)."""
    if sequence is None:
        if state.checkin_seq:
            raise ReplayedCheckIn(f"check-in of device {device_id} has no sequence number, but the device numbers "
                                  f"its check-ins (last {state.checkin_seq}): refused as a replay",
                                  device=device_id, last=state.checkin_seq)
        return
    if sequence <= state.checkin_seq:
        raise ReplayedCheckIn(f"check-in {sequence} of device {device_id} is not newer than check-in "
                              f"{state.checkin_seq}: refused as a replay", device=device_id, sequence=sequence,
                              last=state.checkin_seq)
    state.checkin_seq = sequence


_LOGGED_UNADMITTED_MAX = 10_000


def _unadmitted(rt: Runtime, device_id: str, release_id: str, kind: str) -> None:
    """A device reported on a live rollout that never admitted it. The event is stored for the
    record, but the judges, budgets and confirmations read admitted devices only (see
    :func:`ringfence.store.telemetry.observe`); it is counted, and logged once per device and
    rollout."""
    rt.metrics.unadmitted_events.inc()
    seen = rt.snapshot.unadmitted_logged
    if (device_id, release_id) in seen or len(seen) >= _LOGGED_UNADMITTED_MAX:
        return
    seen.add((device_id, release_id))
    log.warning("device %s reported %r about release %s, which never admitted it: counted for nothing",
                device_id, kind, release_id)


async def _checkin(rt: Runtime, device_id: str, body: CheckInIn) -> dict[str, Any]:
    snap = rt.snapshot
    now = rt.clock.now()
    state = snap.devices[device_id]
    _check_sequence(device_id, state, body.sequence)
    moved = None
    if body.attributes is not None:
        attrs = _attributes(body.attributes, state.attributes.tenant)
        # Channel is set by policy, not by the device: keep what the server knows.
        attrs = replace(attrs, channel=state.attributes.channel)
        if snap.update_attributes(device_id, attrs):
            moved = attrs
    changed_versions = snap.update_versions(device_id, body.versions)
    first = snap.first_sightings(device_id)
    rt.batcher.submit(Sighting(device_id, now, moved, changed_versions or None, body.sequence,
                               dict.fromkeys(first, now) or None))

    waits: list[asyncio.Future[None]] = []
    for e in body.events:
        release_id = snap.release_for(e.content_type, e.version)
        if not snap.note_event(device_id, release_id, e.kind):
            _unadmitted(rt, device_id, release_id or "", e.kind.value)
        event = Event(
            device_id=device_id, event_id=e.id, release_id=release_id,
            content_type=e.content_type, version=e.version, kind=e.kind,
            stratum=snap.stratum_of(device_id, e.content_type), at=e.at, received_at=now, details=e.details,
        )
        fut = rt.batcher.submit(event, durable=True)
        assert fut is not None
        waits.append(fut)

    desired, admitted, interval = _decide_all(rt, device_id, now)
    results = await asyncio.gather(*waits, *(a[0] for a in admitted), return_exceptions=True)
    failure = next((r for r in results if isinstance(r, BaseException) and not isinstance(r, AdmissionRefused)), None)
    for result, (_, content_type, release_id, stratum, baseline) in zip(results[len(waits):], admitted,
                                                                         strict=True):
        if result is None and failure is None:
            continue
        # Not stored, or refused: the device is not told, so it must not count.
        snap.forget_admission(release_id, device_id, stratum)
        if baseline is None:
            desired.pop(content_type, None)
        else:
            desired[content_type] = _target_json(baseline)
    if failure is not None:
        raise failure
    if any(e.kind in FAILURE_KINDS for e in body.events):
        rt.reconciler.wake()  # failures are stored: judge them now, not at the next interval
    answer = {
        "device_id": device_id,
        "desired": desired,
        "acked": [e.id for e in body.events],
        "poll_interval_s": interval,
    }
    if snap.revoked and body.versions:
        revoked = _revoked_json(rt, body.versions)
        if revoked:
            answer["revoked"] = revoked
    return answer

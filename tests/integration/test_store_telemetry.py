"""``store/telemetry.py`` on SQLite and PostgreSQL: admissions and events stored once however
often they are retried, the engine's observations of a rollout, and the status document."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import select

from ringfence.analysis.tallies import Track
from ringfence.core.cohorts import TrialLimits
from ringfence.core.models import EventKind
from ringfence.core.rollout import Intent
from ringfence.store.access import Sighting, record_sightings
from ringfence.store.db import Database
from ringfence.store.health import rollout_tracks
from ringfence.store.releases import apply_intent, get_release, release_plan
from ringfence.store.schema import AdmissionRow, EventRow
from ringfence.store.telemetry import (
    Admission,
    Event,
    load_admissions,
    load_watched,
    observe,
    record_admissions,
    record_events,
    rollout_status,
)
from tests.integration.store_support import add_content_type, add_device, add_release, at, count, drive, rolling_release

CT = "sensor/ipc-templates"
WIN, LINUX = "windows/eu-west", "linux/eu-west"
_ids = itertools.count()


def event(device_id: str, kind: EventKind, release_id: str | None, *, stratum: str = WIN, version: str = "291",
          event_id: str | None = None, when: datetime | None = None) -> Event:
    return Event(device_id=device_id, event_id=event_id or f"ev-{next(_ids)}", release_id=release_id,
                 content_type=CT, version=version, kind=kind, stratum=stratum, at=when or at(5),
                 received_at=at(6), details={"n": 1})


def admit(db: Database, release_id: str, wave: int, stratum: str, *device_ids: str) -> None:
    with db.session() as s:
        record_admissions(s, [Admission(release_id, d, wave, stratum, at(wave)) for d in device_ids])


def report(db: Database, *events: Event) -> None:
    with db.session() as s:
        record_events(s, events)


def observed(db: Database, release_id: str) -> dict[str, Any]:
    with db.session() as s:
        obs = observe(s, get_release(s, release_id))
    return {"exposed": obs.exposed_devices, "failed": obs.failed_devices, "by_stratum": dict(obs.failed_by_stratum),
            "wave_exposed": obs.wave_exposed, "still": obs.still_on_version}


# --- idempotent writes --------------------------------------------------------------------

def test_admissions_are_stored_once_and_the_first_wave_sticks(db: Database) -> None:
    add_content_type(db, CT)
    release_id = rolling_release(db, CT, "291")
    admit(db, release_id, 0, WIN, "d1", "d2")
    admit(db, release_id, 0, WIN, "d1", "d2")  # a retried batch
    admit(db, release_id, 1, LINUX, "d2", "d3")  # d2 is already in: stays where it was admitted
    with db.session() as s:
        record_admissions(s, [])
        assert count(s, AdmissionRow) == 3
        assert load_admissions(s, release_id) == {"d1": (0, WIN), "d2": (0, WIN), "d3": (1, LINUX)}
        assert load_admissions(s, "rel-other") == {}


def test_retried_events_are_stored_once(db: Database) -> None:
    first = event("d1", EventKind.INTENT, None, event_id="e-1")
    report(db, first, event("d1", EventKind.HEALTHY, None, event_id="e-2"))
    report(db, first, replace(first, kind=EventKind.CRASH, received_at=at(99)))  # a retry, altered in transit
    report(db, replace(first, device_id="d2"), replace(first, device_id="d2"))  # same event id, another device
    with db.session() as s:
        record_events(s, [])
        rows = s.scalars(select(EventRow).order_by(EventRow.device_id, EventRow.event_id)).all()
        assert [(r.device_id, r.event_id, r.kind) for r in rows] == [
            ("d1", "e-1", "intent"), ("d1", "e-2", "healthy"), ("d2", "e-1", "intent")]
        assert rows[0].details == {"n": 1}
        assert (rows[0].content_type, rows[0].version, rows[0].stratum) == (CT, "291", WIN)


# --- observations -------------------------------------------------------------------------

def test_observe_counts_exposure_failures_and_the_current_wave(db: Database) -> None:
    add_content_type(db, CT)
    add_content_type(db, "agent/binary")
    release_id = rolling_release(db, CT, "291")
    other_id = rolling_release(db, "agent/binary", "7.11")
    assert observed(db, release_id) == {"exposed": 0, "failed": 0, "by_stratum": {}, "wave_exposed": 0, "still": 0}

    admit(db, release_id, 0, WIN, "d1", "d2")
    admit(db, release_id, 0, LINUX, "d3")
    report(db,
           event("d1", EventKind.INTENT, release_id), event("d1", EventKind.INTENT, release_id),
           event("d2", EventKind.INTENT, release_id), event("d3", EventKind.INTENT, release_id, stratum=LINUX),
           event("d1", EventKind.CRASH, release_id), event("d1", EventKind.PROBE_FAILED, release_id),
           event("d1", EventKind.AUTO_REVERTED, release_id),
           event("d3", EventKind.ROLLED_BACK, release_id, stratum=LINUX), event("d2", EventKind.HEALTHY, release_id),
           # Not this rollout's: another release, and events no release claimed.
           event("d9", EventKind.INTENT, other_id), event("d9", EventKind.CRASH, other_id),
           event("d8", EventKind.INTENT, None), event("d8", EventKind.CRASH, None))
    assert observed(db, release_id) == {
        "exposed": 3, "failed": 2, "by_stratum": {WIN: 1, LINUX: 1}, "wave_exposed": 3, "still": 0}

    drive(db, release_id, Intent.ADVANCE, now=at(100))
    admit(db, release_id, 1, WIN, "d4", "d5", "d6")
    report(db, event("d4", EventKind.INTENT, release_id), event("d5", EventKind.INTENT, release_id),
           event("d5", EventKind.CRASH, release_id), event("d6", EventKind.HEALTHY, release_id),
           # d7 was admitted but its disk filled up during the download: it failed, yet the
           # version never ran there, so it is no failed device of the rollout.
           event("d7", EventKind.FAILED, release_id))
    assert observed(db, release_id) == {
        "exposed": 5, "failed": 3, "by_stratum": {WIN: 2, LINUX: 1}, "wave_exposed": 2, "still": 0}


def test_observe_counts_devices_not_yet_confirmed_back_while_rolling_back(db: Database) -> None:
    add_content_type(db, CT)
    release_id = rolling_release(db, CT, "291")
    devices = [add_device(db).id for _ in range(5)]
    on_version, rolled_back, never_got_it, elsewhere, outsider = devices
    admit(db, release_id, 0, WIN, on_version, rolled_back, never_got_it, elsewhere)
    report(db, *(event(d, EventKind.INTENT, release_id) for d in (on_version, rolled_back, elsewhere)))

    def versions(when: int, **by_device: Mapping[str, str]) -> None:
        with db.session() as s:
            record_sightings(s, [Sighting(d, at(when), versions=v) for d, v in by_device.items()])

    versions(50, **{on_version: {CT: "291"}, rolled_back: {CT: "291"}, never_got_it: {CT: "290"},
                    elsewhere: {"agent/binary": "291"}, outsider: {CT: "291"}})
    assert observed(db, release_id)["still"] == 0  # only counted while rolling back
    drive(db, release_id, Intent.HALT, Intent.ROLLBACK, now=at(60))
    # Nobody exposed has been heard from since the rollback began: silence is not confirmation.
    assert observed(db, release_id)["still"] == 3
    versions(70, **{rolled_back: {CT: "290"}, on_version: {CT: "291"}})
    assert observed(db, release_id)["still"] == 2  # on_version checked in, still on 291
    versions(71, **{elsewhere: {}})
    assert observed(db, release_id)["still"] == 1  # checked in, never ran 291
    versions(72, **{on_version: {CT: "290"}})
    assert observed(db, release_id)["still"] == 0


# --- status -------------------------------------------------------------------------------

def test_rollout_status_document(db: Database) -> None:
    add_content_type(db, CT)
    release_id = add_release(db, CT, "291")
    status = _status(db, release_id)
    assert (status["phase"], status["wave"], status["wave_name"]) == ("draft", 0, "canary")
    assert [w["state"] for w in status["waves"]] == ["pending", "pending", "pending"]

    drive(db, release_id, Intent.PREPARE, Intent.START, now=at(10))
    admit(db, release_id, 0, WIN, "d1", "d2")
    admit(db, release_id, 0, LINUX, "d3")
    report(db, *(event(d, EventKind.INTENT, release_id) for d in ("d1", "d2", "d3")),
           event("d1", EventKind.CRASH, release_id), event("d1", EventKind.CRASH, release_id),
           event("d2", EventKind.HEALTHY, release_id),
           *(event(d, EventKind.ACTIVATED, release_id) for d in ("d1", "d2")),
           event("d1", EventKind.AUTO_REVERTED, release_id))
    drive(db, release_id, Intent.ADVANCE, now=at(100))
    admit(db, release_id, 1, WIN, "d4")
    report(db, event("d4", EventKind.INTENT, release_id))
    with db.session() as s:
        apply_intent(s, release_id, Intent.HALT, actor="engine", reason="failure budget of 1 spent", now=at(200),
                     details={"failed": 1})

    status = _status(db, release_id)
    assert {k: status[k] for k in ("release", "content_type", "version", "plan", "phase", "wave", "wave_name",
                                   "revision", "created_by")} == {
        "release": release_id, "content_type": CT, "version": "291", "plan": "three-waves", "phase": "halted",
        "wave": 1, "wave_name": "early", "revision": 4, "created_by": "alice"}
    assert status["wave_started_at"] == at(100).isoformat()
    waves = status["waves"]
    assert [(w["index"], w["name"], w["state"]) for w in waves] == [
        (0, "canary", "done"), (1, "early", "halted"), (2, "everyone", "pending")]
    assert [(w["admitted"], w["exposed"], w["activated"], w["failed"], w["healthy"], w["reverted"])
            for w in waves] == [(3, 3, 2, 1, 1, 1), (1, 1, 0, 0, 0, 0), (0, 0, 0, 0, 0, 0)]
    assert {k: waves[0][k] for k in ("share", "max_devices", "soak_s", "failure_budget", "min_devices")} == {
        "share": None, "max_devices": {"total": 2, "per_stratum": None}, "soak_s": 60.0, "failure_budget": 1,
        "min_devices": 1}
    assert waves[1]["share"] == 0.5
    assert status["totals"] == {"admitted": 4, "exposed": 4, "activated": 2, "failed": 1, "healthy": 1,
                                "reverted": 1}
    assert [(h["from"], h["to"], h["actor"], h["intent"]) for h in status["history"]] == [
        (None, "draft", "alice", "create"), ("draft", "ready", "alice", "prepare"),
        ("ready", "rolling", "alice", "start"), ("rolling", "rolling", "alice", "advance"),
        ("rolling", "halted", "engine", "halt")]
    last = status["history"][-1]
    assert last == {"at": at(200).isoformat(), "intent": "halt", "from": "rolling", "to": "halted", "from_wave": 1,
                    "to_wave": 1, "actor": "engine", "reason": "failure budget of 1 spent", "details": {"failed": 1}}

    drive(db, release_id, Intent.ROLLBACK, now=at(300))
    assert [w["state"] for w in _status(db, release_id)["waves"]] == ["done", "rolling_back", "pending"]


def test_rollout_status_of_a_completed_rollout(db: Database) -> None:
    add_content_type(db, CT)
    release_id = rolling_release(db, CT, "291")
    assert [w["state"] for w in _status(db, release_id)["waves"]] == ["active", "pending", "pending"]
    drive(db, release_id, Intent.PAUSE)
    assert [w["state"] for w in _status(db, release_id)["waves"]] == ["paused", "pending", "pending"]
    drive(db, release_id, Intent.RESUME, Intent.ADVANCE, Intent.ADVANCE, Intent.COMPLETE)
    status = _status(db, release_id)
    assert (status["phase"], status["wave"]) == ("completed", 2)
    assert [w["state"] for w in status["waves"]] == ["done", "done", "done"]
    assert status["totals"] == {"admitted": 0, "exposed": 0, "activated": 0, "failed": 0, "healthy": 0,
                                "reverted": 0}


def _status(db: Database, release_id: str) -> dict[str, Any]:
    with db.session() as s:
        return rollout_status(s, release_id)


# --- the in-flight window and canary across nodes ----------------------------------------------

def test_the_database_holds_the_in_flight_window_and_the_canary_for_every_node(db: Database) -> None:
    """Several nodes each know only their own admissions; the store counts everyone's trials
    (on PostgreSQL, under the rollout's lock) before it admits: a window of 2 and a canary of 3."""
    if db.is_sqlite:
        pytest.skip("one process admits on SQLite: its snapshot holds every admission")
    add_content_type(db, CT)
    release_id = rolling_release(db, CT, "291")
    limits = TrialLimits(window=2, canary_size=3, canary_healthy=1)

    def ask(*device_ids: str) -> list[str]:
        with db.session() as s:
            refused = record_admissions(s, [Admission(release_id, d, 0, WIN, at(0), limits=limits)
                                            for d in device_ids], shared=True)
        return [a.device_id for a in refused]

    assert ask("d1", "d2", "d3") == ["d3"]  # two in trial at once
    assert ask("d3") == ["d3"]  # another node asks: still two undecided
    report(db, event("d1", EventKind.INTENT, release_id), event("d1", EventKind.FAILED, release_id))
    assert ask("d3", "d4") == ["d4"]  # d1's trial ended (badly): one slot, and the canary of 3 is full
    report(db, event("d2", EventKind.INTENT, release_id), event("d2", EventKind.HEALTHY, release_id))
    assert ask("d4") == []  # canaried now: a slot is free and the crowd may follow


def test_events_from_devices_the_rollout_never_admitted_count_for_nothing(db: Database) -> None:
    add_content_type(db, CT)
    release_id = rolling_release(db, CT, "291")
    admit(db, release_id, 0, WIN, "in-1", "in-2")
    report(db, event("in-1", EventKind.INTENT, release_id), event("in-1", EventKind.HEALTHY, release_id),
           event("in-2", EventKind.INTENT, release_id),
           event("stranger", EventKind.INTENT, release_id), event("stranger", EventKind.FAILED, release_id))
    assert observed(db, release_id) == {"exposed": 2, "failed": 0, "by_stratum": {}, "wave_exposed": 2, "still": 0}
    with db.session() as s:
        progress = observe(s, get_release(s, release_id)).progress
    assert {k: p.as_dict() for k, p in progress.items()} == {WIN: {"exposed": 2, "healthy": 1, "undecided": 1}}
    report(db, event("in-2", EventKind.CRASH, release_id))
    assert observed(db, release_id)["failed"] == 1


def test_the_judges_watch_a_device_from_its_first_check_in_since_the_start(db: Database) -> None:
    add_content_type(db, CT)
    release_id = rolling_release(db, CT, "291")  # started at at(1)
    exposed, awake, late, asleep = (add_device(db).id for _ in range(4))
    admit(db, release_id, 0, WIN, exposed)
    report(db, replace(event(exposed, EventKind.INTENT, release_id, when=at(10)), received_at=at(10)))
    with db.session() as s:  # two nodes saw ``late``: the later sighting is written first ...
        record_sightings(s, [Sighting(awake, at(20), watched={release_id: at(20)}),
                             Sighting(late, at(4000), watched={release_id: at(4000)})])
    with db.session() as s:  # ... and the earlier one stands
        record_sightings(s, [Sighting(late, at(3000), watched={release_id: at(3000)})])
    # ``late`` crashed while the rollout had not heard from it, and says so when it comes back
    report(db, replace(event(late, EventKind.CRASH, None, version="290", when=at(2000)), received_at=at(3000)))

    def tracks() -> dict[str, Track]:
        with db.session() as s:
            row = get_release(s, release_id)
            return {t.device_id: t for t in rollout_tracks(s, row, release_plan(row))}

    first = tracks()
    assert asleep not in first, "a device not heard from since the start is not compared"
    assert set(first) == {exposed, awake, late}
    assert (first[exposed].since, first[awake].since, first[late].since) == (at(10), at(20), at(3000))
    assert first[late].failed_at is None, "a failure from before the rollout watched the device"
    report(db, replace(event(late, EventKind.CRASH, None, version="290", when=at(5000)), received_at=at(5001)))
    assert tracks()[late].failed_at == at(5000)
    with db.session() as s:
        assert load_watched(s, release_id) == {awake, late}

"""``store/releases.py`` on SQLite and PostgreSQL: content types, immutable artifacts, releases,
and rollout transitions with their history."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from ringfence.core.clock import utc
from ringfence.core.errors import Conflict, InvalidInput, NotFound, PlanError, TransitionRejected
from ringfence.core.models import Category
from ringfence.core.rollout import Intent, Phase
from ringfence.store.db import Database
from ringfence.store.releases import (
    active_releases,
    apply_intent,
    baseline_target,
    create_artifact,
    create_content_type,
    create_release,
    find_artifact,
    get_content_type,
    get_release,
    history,
    list_artifacts,
    list_content_types,
    list_releases,
    release_target,
)
from ringfence.store.schema import ArtifactRow, ContentTypeRow, HistoryRow, ReleaseRow
from tests.integration.store_support import (
    PLAN,
    T0,
    add_content_type,
    add_release,
    at,
    count,
    drive,
    ready_release,
    release_row,
    rolling_release,
    sha,
)

CT = "sensor/ipc-templates"


# --- content types ------------------------------------------------------------------------

def test_content_types_create_get_list(db: Database) -> None:
    with db.session() as s:
        create_content_type(s, "sensor/ipc-templates", Category.RAPID_RESPONSE, actor="alice", now=T0,
                            unvalidated_reason="rollout mechanics only, no validation")
        create_content_type(s, "agent/binary", Category.SOFTWARE, actor="bob", now=at(1),
                            unvalidated_reason="rollout mechanics only, no validation")
    with db.session() as s:
        row = get_content_type(s, "sensor/ipc-templates")
        assert (row.category, row.created_by, utc(row.created_at)) == ("rapid-response", "alice", T0)
        assert [r.name for r in list_content_types(s)] == ["agent/binary", "sensor/ipc-templates"]


def test_duplicate_content_type_is_a_conflict(db: Database) -> None:
    add_content_type(db, CT)
    with db.session() as s:
        with pytest.raises(Conflict) as info:
            create_content_type(s, CT, Category.SOFTWARE, actor="mallory", now=at(1),
                                unvalidated_reason="rollout mechanics only, no validation")
        assert type(info.value) is Conflict
    with db.session() as s:
        assert get_content_type(s, CT).category == "rapid-response"


def test_bad_content_type_name_is_invalid_input(db: Database) -> None:
    with db.session() as s:
        for name in ("Sensor/IPC", "sensor//ipc", "/sensor", "sensor ipc", "", "a" * 129):
            with pytest.raises(InvalidInput) as info:
                create_content_type(s, name, Category.SOFTWARE, actor="alice", now=T0,
                                    unvalidated_reason="rollout mechanics only, no validation")
            assert info.value.details == {"field": "name", "value": name}
        assert count(s, ContentTypeRow) == 0


def test_unknown_content_type_is_not_found(db: Database) -> None:
    with db.session() as s, pytest.raises(NotFound):
        get_content_type(s, "agent/binary")


# --- artifacts ----------------------------------------------------------------------------

def _push(s: Any, version: str, *, content_type: str = CT, digest: str | None = None) -> ArtifactRow:
    return create_artifact(s, content_type=content_type, version=version, sha256=digest or sha(version), size=41_000,
                           actor="alice", now=T0)


def test_artifacts_are_immutable(db: Database) -> None:
    add_content_type(db, CT)
    with db.session() as s:
        _push(s, "291")
    with db.session() as s:
        with pytest.raises(Conflict) as info:
            _push(s, "291", digest=sha("something else"))
        assert type(info.value) is Conflict
        assert "immutable" in info.value.message
    with db.session() as s:
        artifact = find_artifact(s, CT, "291")
        assert artifact is not None
        assert (artifact.sha256, artifact.size) == (sha("291"), 41_000)
        assert count(s, ArtifactRow) == 1


def test_same_version_of_another_content_type_is_a_different_artifact(db: Database) -> None:
    add_content_type(db, CT)
    add_content_type(db, "agent/binary")
    with db.session() as s:
        _push(s, "1.0")
        _push(s, "1.0", content_type="agent/binary")
        _push(s, "1.1")
    with db.session() as s:
        assert [(a.content_type, a.version) for a in list_artifacts(s, CT)] == [(CT, "1.1"), (CT, "1.0")]
        assert len(list_artifacts(s)) == 3


def test_bad_artifact_is_invalid_input(db: Database) -> None:
    add_content_type(db, CT)
    cases = [("sha256", "1.0", "ABC"), ("sha256", "1.0", sha("x").upper()), ("sha256", "1.0", sha("x")[:-1]),
             ("version", "-1.0", sha("x")), ("version", "1.0 beta", sha("x"))]
    with db.session() as s:
        for field, version, digest in cases:
            with pytest.raises(InvalidInput) as info:
                _push(s, version, digest=digest)
            assert info.value.details["field"] == field
        assert count(s, ArtifactRow) == 0


def test_artifact_of_unknown_content_type_is_not_found(db: Database) -> None:
    with db.session() as s:
        with pytest.raises(NotFound):
            _push(s, "1.0", content_type="agent/binary")
        assert count(s, ArtifactRow) == 0


# --- creating releases --------------------------------------------------------------------

def test_create_release_starts_in_draft_with_a_creation_entry(db: Database) -> None:
    add_content_type(db, CT)
    release_id = add_release(db, CT, "291")
    row = release_row(db, release_id)
    assert (row.phase, row.wave, row.revision, row.version, row.plan_name) == ("draft", 0, 0, "291", "three-waves")
    assert row.plan_source == PLAN
    assert len(row.salt) == 32
    with db.session() as s:
        (entry,) = history(s, release_id)
        assert (entry.intent, entry.from_phase, entry.to_phase, entry.actor) == ("create", None, "draft", "alice")
        assert "three-waves" in entry.reason
        assert "3 waves" in entry.reason
        target = release_target(s, get_release(s, release_id))
        assert (target.version, target.sha256, target.size, target.release_id) == ("291", sha("291"), 41_000,
                                                                                  release_id)


def test_release_salts_differ(db: Database) -> None:
    add_content_type(db, CT)
    assert release_row(db, add_release(db, CT, "1")).salt != release_row(db, add_release(db, CT, "2")).salt


def test_release_with_an_invalid_plan_writes_nothing(db: Database) -> None:
    add_content_type(db, CT)
    with db.session() as s:
        _push(s, "291")
    bad_plan = "name: broken\nwaves:\n  - name: canary\n    soak: forever\n"
    with db.session() as s:
        with pytest.raises(PlanError) as info:
            create_release(s, content_type=CT, version="291", plan_source=bad_plan, actor="alice", now=T0)
        assert {p["field"] for p in info.value.details["problems"]} == {"waves[0]", "waves[0].soak"}
        s.flush()
        assert (count(s, ReleaseRow), count(s, HistoryRow)) == (0, 0)
    with db.session() as s:
        assert (count(s, ReleaseRow), count(s, HistoryRow)) == (0, 0)


def test_release_of_an_unknown_artifact_or_content_type_is_not_found(db: Database) -> None:
    add_content_type(db, CT)
    with db.session() as s:
        _push(s, "291")
    with db.session() as s:
        for content_type, version in ((CT, "292"), ("agent/binary", "291")):
            with pytest.raises(NotFound) as info:
                create_release(s, content_type=content_type, version=version, plan_source=PLAN, actor="a", now=T0)
            assert content_type in info.value.message
        s.flush()
        assert (count(s, ReleaseRow), count(s, HistoryRow)) == (0, 0)


def test_list_and_active_releases(db: Database) -> None:
    add_content_type(db, CT)
    draft = add_release(db, CT, "1", now=at(1))
    rolling = add_release(db, CT, "2", now=at(2))
    drive(db, rolling, Intent.PREPARE, Intent.START, now=at(3))
    oldest = add_release(db, CT, "3", now=at(0))
    with db.session() as s:
        assert [r.id for r in list_releases(s)] == [rolling, draft, oldest]
        assert [r.id for r in list_releases(s, phase="rolling")] == [rolling]
        assert list_releases(s, content_type="agent/binary") == []
        assert [r.id for r in active_releases(s)] == [oldest, draft, rolling]
        with pytest.raises(NotFound):
            get_release(s, "rel-nope")


# --- transitions --------------------------------------------------------------------------

def _history(db: Database, release_id: str) -> list[tuple[Any, ...]]:
    with db.session() as s:
        return [(h.intent, h.from_phase, h.to_phase, h.from_wave, h.to_wave, h.actor, h.reason, utc(h.at))
                for h in history(s, release_id)]


def test_full_lifecycle_writes_history_in_order(db: Database) -> None:
    add_content_type(db, CT)
    release_id = add_release(db, CT, "291")
    steps = [
        (Intent.PREPARE, "engine", "validation and approvals done", Phase.READY, 0),
        (Intent.START, "alice", "", Phase.ROLLING, 0),
        (Intent.PAUSE, "bob", "lunch", Phase.PAUSED, 0),
        (Intent.RESUME, "bob", "back", Phase.ROLLING, 0),
        (Intent.ADVANCE, "engine", "canary soaked 1m with 0 failures", Phase.ROLLING, 1),
        (Intent.ADVANCE, "engine", "early soaked", Phase.ROLLING, 2),
        (Intent.COMPLETE, "engine", "everyone soaked", Phase.COMPLETED, 2),
    ]
    for i, (intent, actor, reason, phase, wave) in enumerate(steps, start=1):
        with db.session() as s:
            entry = apply_intent(s, release_id, intent, actor=actor, reason=reason, now=at(60 * i),
                                 details={"step": i})
            assert (entry.to_phase, entry.to_wave) == (phase, wave)
            row = get_release(s, release_id)
            assert (row.phase, row.wave, row.revision) == (phase.value, wave, i)
    row = release_row(db, release_id)
    assert utc(row.phase_changed_at) == at(60 * 7)  # type: ignore[arg-type]
    assert utc(row.wave_started_at) == at(60 * 6)  # type: ignore[arg-type]
    assert _history(db, release_id)[1:] == [
        ("prepare", "draft", "ready", 0, 0, "engine", "validation and approvals done", at(60)),
        ("start", "ready", "rolling", 0, 0, "alice", "start requested by alice (no reason given)", at(120)),
        ("pause", "rolling", "paused", 0, 0, "bob", "lunch", at(180)),
        ("resume", "paused", "rolling", 0, 0, "bob", "back", at(240)),
        ("advance", "rolling", "rolling", 0, 1, "engine", "canary soaked 1m with 0 failures", at(300)),
        ("advance", "rolling", "rolling", 1, 2, "engine", "early soaked", at(360)),
        ("complete", "rolling", "completed", 2, 2, "engine", "everyone soaked", at(420)),
    ]
    with db.session() as s:
        assert [h.details for h in history(s, release_id)] == [{}, *({"step": i} for i in range(1, 8))]


def test_halt_resume_and_roll_back(db: Database) -> None:
    add_content_type(db, CT)
    release_id = rolling_release(db, CT, "291")
    drive(db, release_id, Intent.HALT, now=at(100))
    with db.session() as s:
        apply_intent(s, release_id, Intent.RESUME, actor="alice", reason="false alarm: probe bug", now=at(200))
    drive(db, release_id, Intent.ROLLBACK, Intent.FINISH_ROLLBACK, now=at(300))
    assert [(h[0], h[1], h[2]) for h in _history(db, release_id)] == [
        ("create", None, "draft"), ("prepare", "draft", "ready"), ("start", "ready", "rolling"),
        ("halt", "rolling", "halted"), ("resume", "halted", "rolling"),
        ("rollback", "rolling", "rolling_back"), ("finish_rollback", "rolling_back", "rolled_back"),
    ]
    assert release_row(db, release_id).phase == "rolled_back"


def _assert_rejected(db: Database, release_id: str, intent: Intent, *, reason: str = "because",
                     match: str | None = None) -> TransitionRejected:
    """The transition is refused, and nothing is written even if the caller commits afterwards."""
    before = release_row(db, release_id)
    entries = _history(db, release_id)
    with db.session() as s:
        with pytest.raises(TransitionRejected, match=match) as info:
            apply_intent(s, release_id, intent, actor="mallory", reason=reason, now=at(10_000))
        s.flush()
        assert len(history(s, release_id)) == len(entries)
        assert get_release(s, release_id).revision == before.revision
    after = release_row(db, release_id)
    assert (after.phase, after.wave, after.revision, after.phase_changed_at, after.wave_started_at) == (
        before.phase, before.wave, before.revision, before.phase_changed_at, before.wave_started_at)
    assert _history(db, release_id) == entries
    return info.value


def test_rejected_transitions_write_nothing(db: Database) -> None:
    add_content_type(db, CT)
    release_id = add_release(db, CT, "291")
    _assert_rejected(db, release_id, Intent.START, match="cannot start a rollout that is draft; only from ready")
    with db.session() as s, pytest.raises(TransitionRejected, match="still waiting for: approval by an approver"):
        apply_intent(s, release_id, Intent.PREPARE, actor="engine", reason="", now=at(1),
                     pending=("approval by an approver",))
    assert release_row(db, release_id).revision == 0
    drive(db, release_id, Intent.PREPARE, Intent.START)
    _assert_rejected(db, release_id, Intent.COMPLETE, match="wave 1 of 3 is not the last")
    _assert_rejected(db, release_id, Intent.FINISH_ROLLBACK)
    _assert_rejected(db, release_id, Intent.START)
    drive(db, release_id, Intent.ADVANCE, Intent.ADVANCE)
    _assert_rejected(db, release_id, Intent.ADVANCE, match="is the last; complete instead")
    drive(db, release_id, Intent.HALT)
    _assert_rejected(db, release_id, Intent.RESUME, reason="  ", match="needs a reason")
    _assert_rejected(db, release_id, Intent.PAUSE)
    _assert_rejected(db, release_id, Intent.HALT)
    assert release_row(db, release_id).revision == 5


def test_stale_expected_revision_is_a_conflict_and_writes_nothing(db: Database) -> None:
    add_content_type(db, CT)
    release_id = rolling_release(db, CT, "291")
    revision = release_row(db, release_id).revision
    drive(db, release_id, Intent.PAUSE)
    entries = _history(db, release_id)
    with db.session() as s:
        with pytest.raises(Conflict) as info:
            apply_intent(s, release_id, Intent.HALT, actor="bob", reason="saw crashes", now=at(50),
                         expected_revision=revision)
        assert type(info.value) is Conflict
    assert _history(db, release_id) == entries
    assert release_row(db, release_id).phase == "paused"
    with db.session() as s:
        apply_intent(s, release_id, Intent.HALT, actor="bob", reason="saw crashes", now=at(50),
                     expected_revision=revision + 1)
    assert release_row(db, release_id).phase == "halted"


def test_one_active_release_per_content_type(db: Database) -> None:
    add_content_type(db, CT)
    add_content_type(db, "agent/binary")
    first = rolling_release(db, CT, "291")
    second = ready_release(db, CT, "292")
    other = ready_release(db, "agent/binary", "7.11")
    drive(db, other, Intent.START)  # another content type is independent
    error = _assert_rejected(db, second, Intent.START, match=f"release {first} of the same content type")
    assert error.details == {"phase": "ready", "intent": "start"}
    drive(db, first, Intent.HALT)
    _assert_rejected(db, second, Intent.START, match=first)
    drive(db, first, Intent.ROLLBACK)
    _assert_rejected(db, second, Intent.START, match=first)
    drive(db, first, Intent.FINISH_ROLLBACK)
    drive(db, second, Intent.START)
    assert release_row(db, second).phase == "rolling"


def test_baseline_is_the_last_completed_release(db: Database) -> None:
    add_content_type(db, CT)
    add_content_type(db, "agent/binary")
    with db.session() as s:
        assert baseline_target(s, CT) is None
    first = rolling_release(db, CT, "290")
    with db.session() as s:
        assert baseline_target(s, CT) is None  # rolling is not yet the baseline
    drive(db, first, Intent.ADVANCE, Intent.ADVANCE, Intent.COMPLETE, now=at(100))
    with db.session() as s:
        target = baseline_target(s, CT)
        assert target is not None
        assert (target.content_type, target.version, target.sha256, target.size, target.release_id) == (
            CT, "290", sha("290"), 41_000, first)
        assert baseline_target(s, "agent/binary") is None
    second = rolling_release(db, CT, "291")
    drive(db, second, Intent.ADVANCE, Intent.ADVANCE, Intent.COMPLETE, now=at(200))
    third = rolling_release(db, CT, "292")
    drive(db, third, Intent.HALT, Intent.ROLLBACK, Intent.FINISH_ROLLBACK, now=at(300))
    with db.session() as s:
        target = baseline_target(s, CT)
        assert target is not None
        assert (target.version, target.release_id) == ("291", second)
    drive(db, second, Intent.ROLLBACK, now=at(400))  # a completed release is rolled back: back to the one before
    with db.session() as s:
        target = baseline_target(s, CT)
        assert target is not None
        assert (target.version, target.release_id) == ("290", first)
        assert [r.id for r in s.scalars(select(ReleaseRow).where(ReleaseRow.phase == "rolling_back"))] == [second]


def test_completed_release_cannot_be_rolled_back_while_a_sibling_is_active(db: Database) -> None:
    add_content_type(db, CT)
    first = rolling_release(db, CT, "290")
    drive(db, first, Intent.ADVANCE, Intent.ADVANCE, Intent.COMPLETE)
    second = rolling_release(db, CT, "291")
    _assert_rejected(db, first, Intent.ROLLBACK, match=f"{second} of the same content type is active")

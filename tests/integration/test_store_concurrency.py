"""Races on SQLite and PostgreSQL: of two concurrent changes to one rollout exactly one wins;
one release per content type rolls at a time; duplicates pushed at once are conflicts; retried
reports are stored once.

Each thread uses its own session (its own connection and transaction). SQLite serialises
writers (every transaction begins IMMEDIATE), PostgreSQL runs them at once; the invariants are
the same. Races are lined up with a barrier and repeated; where a race can be forced (a
transaction that holds its write while the other starts), it is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ringfence.core.errors import Conflict, TransitionRejected
from ringfence.core.models import Category, EventKind
from ringfence.core.rollout import Intent, Phase
from ringfence.store.db import Database
from ringfence.store.releases import apply_intent, create_artifact, create_content_type, get_release, history
from ringfence.store.schema import ArtifactRow, ContentTypeRow, EventRow, ReleaseRow
from ringfence.store.telemetry import Event, record_events
from tests.integration.store_support import (
    T0,
    add_content_type,
    at,
    count,
    ready_release,
    release_row,
    rolling_release,
    sha,
)

ROUNDS = 5
HOLD_S = 0.3  # SQLite: how long a transaction keeps its write while the other one starts


def run_together(*work: Callable[[threading.Barrier], None]) -> list[BaseException | None]:
    """Run each function in its own thread (each gets a shared barrier to line up on); returns
    what each raised, or None."""
    barrier = threading.Barrier(len(work), timeout=30)
    outcomes: list[BaseException | None] = [None] * len(work)

    def run(i: int) -> None:
        try:
            work[i](barrier)
        except BaseException as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(work))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a racing transaction never finished"
    for outcome in outcomes:
        if isinstance(outcome, threading.BrokenBarrierError | AssertionError):
            raise outcome
    return outcomes


def while_holding(db: Database, hold: Callable[[Session], None], contend: Callable[[], None],
                  ) -> list[BaseException | None]:
    """Run ``hold`` in a transaction and keep it open while ``contend`` starts in another thread:
    on PostgreSQL until ``contend`` waits on a lock (or finishes), on SQLite (where a waiting
    writer cannot be seen) for a moment. Returns what each raised, or None."""
    held, contended = threading.Event(), threading.Event()

    def holder(barrier: threading.Barrier) -> None:
        barrier.wait()
        with db.session() as s:
            hold(s)
            s.flush()
            held.set()
            _wait_for_a_blocked_transaction(db, contended)

    def contender(barrier: threading.Barrier) -> None:
        barrier.wait()
        assert held.wait(10)
        try:
            contend()
        finally:
            contended.set()

    return run_together(holder, contender)


def _wait_for_a_blocked_transaction(db: Database, finished: threading.Event) -> None:
    if db.is_sqlite:
        time.sleep(HOLD_S)
        return
    deadline = time.monotonic() + 10
    with db.engine.connect() as conn:
        while not finished.is_set():
            waiting = conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )).scalar()
            conn.rollback()  # pg_stat_activity is a snapshot per transaction
            if waiting:
                return
            assert time.monotonic() < deadline, "the contending transaction neither waited nor finished"
            time.sleep(0.01)


def _one_winner(outcomes: list[BaseException | None]) -> int:
    """Index of the only thread that succeeded; the others lost with a conflict."""
    winners = [i for i, o in enumerate(outcomes) if o is None]
    assert len(winners) == 1, outcomes
    for o in outcomes:
        if o is not None and not isinstance(o, Conflict):
            raise o
    return winners[0]


def _apply(db: Database, release_id: str, intent: Intent, expected_revision: int | None = None,
           ) -> Callable[[threading.Barrier], None]:
    def work(barrier: threading.Barrier) -> None:
        barrier.wait()
        with db.session() as s:
            apply_intent(s, release_id, intent, actor=f"{intent.value}-er", reason=f"{intent.value} now",
                         now=at(500), expected_revision=expected_revision)
    return work


def _entries(db: Database, release_id: str) -> list[str]:
    with db.session() as s:
        return [h.intent for h in history(s, release_id)]


@pytest.mark.parametrize("with_expected_revision", [True, False])
def test_two_halts_exactly_one_wins(db: Database, with_expected_revision: bool) -> None:
    add_content_type(db)
    release_id = rolling_release(db, "sensor/ipc-templates", "291")
    for _ in range(ROUNDS):
        before = release_row(db, release_id)
        entries = _entries(db, release_id)
        expected = before.revision if with_expected_revision else None
        _one_winner(run_together(_apply(db, release_id, Intent.HALT, expected),
                                 _apply(db, release_id, Intent.HALT, expected)))
        after = release_row(db, release_id)
        assert (after.phase, after.revision) == ("halted", before.revision + 1)
        assert _entries(db, release_id) == [*entries, "halt"]
        with db.session() as s:
            apply_intent(s, release_id, Intent.RESUME, actor="alice", reason="checked: fine", now=at(600))


def test_pause_and_halt_at_once_one_wins(db: Database) -> None:
    add_content_type(db)
    release_id = rolling_release(db, "sensor/ipc-templates", "291")
    for _ in range(ROUNDS):
        before = release_row(db, release_id)
        entries = _entries(db, release_id)
        intents = (Intent.PAUSE, Intent.HALT)
        winner = intents[_one_winner(run_together(*(_apply(db, release_id, i, before.revision) for i in intents)))]
        after = release_row(db, release_id)
        assert after.phase == {Intent.PAUSE: "paused", Intent.HALT: "halted"}[winner]
        assert after.revision == before.revision + 1
        assert _entries(db, release_id) == [*entries, winner.value]
        with db.session() as s:
            apply_intent(s, release_id, Intent.RESUME, actor="alice", reason="checked: fine", now=at(600))


def test_transition_on_a_stale_read_loses_to_the_one_that_committed(db: Database) -> None:
    """Both transactions read the rollout at the same revision; the compare-and-set on
    ``revision`` lets only the first write through, the other gets a plain Conflict and writes
    no second history entry. (On SQLite the second transaction cannot even read before the
    first commits, so it sees the halt and the rule refuses it.)"""
    add_content_type(db)
    release_id = rolling_release(db, "sensor/ipc-templates", "291")

    def halt(s: Session) -> None:
        apply_intent(s, release_id, Intent.HALT, actor="engine", reason="failure budget", now=at(10))

    def pause() -> None:
        with db.session() as s:
            assert get_release(s, release_id).phase == ("halted" if db.is_sqlite else "rolling")
            apply_intent(s, release_id, Intent.PAUSE, actor="bob", reason="lunch", now=at(11))

    outcomes = while_holding(db, halt, pause)
    assert _one_winner(outcomes) == 0
    assert type(outcomes[1]) is (TransitionRejected if db.is_sqlite else Conflict)
    row = release_row(db, release_id)
    assert (row.phase, row.revision) == ("halted", 3)
    assert _entries(db, release_id) == ["create", "prepare", "start", "halt"]


def _rolling(db: Database, content_type: str) -> list[str]:
    with db.session() as s:
        return list(s.scalars(select(ReleaseRow.id).where(ReleaseRow.content_type == content_type,
                                                          ReleaseRow.phase == Phase.ROLLING.value)))


def test_two_releases_of_one_content_type_started_at_once_one_rolls(db: Database) -> None:
    for round_ in range(ROUNDS):
        content_type = add_content_type(db, f"sensor/round-{round_}")
        ids = [ready_release(db, content_type, "291"), ready_release(db, content_type, "292")]
        winner = _one_winner(run_together(*(_apply(db, r, Intent.START) for r in ids)))
        assert _rolling(db, content_type) == [ids[winner]]
        assert _entries(db, ids[1 - winner]) == ["create", "prepare"]
        assert release_row(db, ids[1 - winner]).phase == "ready"


def test_start_waits_for_a_sibling_start_in_flight(db: Database) -> None:
    """The start of one release holds its content type until it commits; a second start of the
    same content type meanwhile must wait for it and then see it, not race past it."""
    content_type = add_content_type(db)
    first_id = ready_release(db, content_type, "291")
    second_id = ready_release(db, content_type, "292")

    def start_first(s: Session) -> None:
        apply_intent(s, first_id, Intent.START, actor="alice", reason="go", now=at(10))

    def start_second() -> None:
        with db.session() as s:
            apply_intent(s, second_id, Intent.START, actor="bob", reason="go", now=at(11))

    outcomes = while_holding(db, start_first, start_second)
    assert _one_winner(outcomes) == 0
    assert type(outcomes[1]) is TransitionRejected
    assert first_id in str(outcomes[1])
    assert _rolling(db, content_type) == [first_id]


def test_same_content_type_created_at_once_is_a_conflict(db: Database) -> None:
    def create(category: Category, actor: str) -> Callable[[Session], None]:
        def work(s: Session) -> None:
            create_content_type(s, "agent/binary", category, actor=actor, now=T0,
                                    unvalidated_reason="rollout mechanics only, no validation")
        return work

    def create_again() -> None:
        with db.session() as s:
            create(Category.SYSTEM_CRITICAL, "bob")(s)

    outcomes = while_holding(db, create(Category.SOFTWARE, "alice"), create_again)
    assert _one_winner(outcomes) == 0
    assert type(outcomes[1]) is Conflict
    with db.session() as s:
        assert [(c.name, c.category) for c in s.scalars(select(ContentTypeRow))] == [("agent/binary", "software")]


def test_same_artifact_pushed_at_once_is_a_conflict(db: Database) -> None:
    add_content_type(db, "agent/binary")

    def push(s: Session, digest: str) -> None:
        create_artifact(s, content_type="agent/binary", version="7.11", sha256=digest, size=1, actor="a", now=T0)

    def push_again() -> None:
        with db.session() as s:
            push(s, sha("two"))

    outcomes = while_holding(db, lambda s: push(s, sha("one")), push_again)
    assert _one_winner(outcomes) == 0
    assert type(outcomes[1]) is Conflict
    with db.session() as s:
        assert [a.sha256 for a in s.scalars(select(ArtifactRow))] == [sha("one")]


def test_retried_event_reports_at_once_are_stored_once(db: Database) -> None:
    event = Event(device_id="d1", event_id="e1", release_id=None, content_type="agent/binary", version="7.11",
                  kind=EventKind.INTENT, stratum="windows/eu-west", at=T0, received_at=T0, details={})
    others = [replace(event, event_id=f"e{i}") for i in range(2, 6)]

    def report(barrier: threading.Barrier) -> None:
        barrier.wait()
        with db.session() as s:
            record_events(s, [event, *others])

    for _ in range(ROUNDS):
        assert run_together(report, report, report) == [None, None, None]
    with db.session() as s:
        assert count(s, EventRow) == 5

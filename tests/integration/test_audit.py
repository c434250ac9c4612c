"""The audit log on SQLite and PostgreSQL: appends build one contiguous hash chain, also under
concurrency; the database refuses changes to it; and an attacker who bypasses the database's
guards and edits, removes or rewrites entries is caught by ``verify``, which names the entry."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from typing import Any

import pytest
from alembic import command
from sqlalchemy import delete, insert, inspect, select, text, update
from sqlalchemy.exc import DBAPIError

from ringfence.core.errors import InvalidInput
from ringfence.core.rollout import Intent
from ringfence.store import audit
from ringfence.store.audit import GENESIS, AuditRow, Broken, Head
from ringfence.store.db import Database, alembic_config
from tests.integration.store_support import T0, at, count


def write(db: Database, n: int, *, start: int = 0) -> Head:
    """Append ``n`` entries, one transaction each; returns the head."""
    for i in range(start, start + n):
        with db.session() as s:
            audit.append(s, actor=f"user-{i % 3}", role="operator", source="10.0.0.7", action="rollout.halt",
                         target=f"rel-{i % 2}", reason=f"step {i}", details={"i": i}, now=at(i))
    with db.session() as s:
        return audit.head(s)


def bypass_guards(db: Database) -> None:
    """What an attacker with database access does first: switch off the append-only triggers."""
    with db.engine.begin() as conn:
        if db.is_sqlite:
            for name in ("audit_log_no_update", "audit_log_no_delete", "audit_log_extends_chain"):
                conn.execute(text(f"DROP TRIGGER {name}"))
        else:
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))


def tamper(db: Database, statement: Any) -> None:
    with db.engine.begin() as conn:
        conn.execute(statement)


def verdict(db: Database, anchor: Head | None = None) -> Broken | None:
    with db.session() as s:
        return audit.verify(s, anchor=anchor)


def independent_hash(prev_hash: str, row: dict[str, Any]) -> str:
    """The documented formula, written out again: what an outside verifier implements."""
    doc = {k: row[k] for k in ("seq", "actor", "role", "source", "action", "target", "reason", "details")}
    doc["at"] = row["at"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


# --- appending --------------------------------------------------------------------------------

def test_empty_log_is_intact_and_its_head_is_genesis(db: Database) -> None:
    with db.session() as s:
        assert audit.head(s) == Head(0, GENESIS)
        assert audit.verify(s) is None
        assert audit.entries(s) == []


def test_appends_build_a_contiguous_chain_that_verifies(db: Database) -> None:
    write(db, 3)
    with db.session() as s:  # several entries in one transaction chain too
        first = audit.append(s, actor="alice", action="release.create", now=at(10), target="rel-9")
        second = audit.append(s, actor="alice", action="rollout.start", now=at(10), target="rel-9")
        assert (first.seq, second.seq, second.prev_hash) == (4, 5, first.hash)
    with db.session() as s:
        rows = audit.entries(s)
        assert [r.seq for r in rows] == [1, 2, 3, 4, 5]
        assert rows[0].prev_hash == GENESIS
        assert all(b.prev_hash == a.hash for a, b in pairwise(rows))
        assert audit.head(s) == Head(5, rows[-1].hash)
        assert audit.verify(s) is None
    result = audit.verify_chain(db.session, chunk=2)
    assert (result.ok, result.entries, result.head) == (True, 5, Head(5, rows[-1].hash))


def test_hash_is_sha256_of_prev_hash_and_canonical_json(db: Database) -> None:
    """Pins the formula the module docstring documents, so an outside tool can verify an export."""
    with db.session() as s:
        audit.append(s, actor="ålice", role="admin", source="2001:db8::1", action="token.create", target=None,
                      reason="new CI token: \"deploy\"", details={"b": [1, 2.5, None], "a": {"z": True}},
                      now=datetime(2024, 7, 19, 6, 30, 1, 250, tzinfo=timezone(timedelta(hours=2))))
        audit.append(s, actor="bob", action="rollout.halt", now=T0)
    with db.engine.connect() as conn:
        rows = [r._asdict() for r in conn.execute(select(*AuditRow.__table__.columns).order_by(AuditRow.seq))]
    rows[0]["at"] = rows[0]["at"].replace(tzinfo=UTC) if rows[0]["at"].tzinfo is None else rows[0]["at"]
    rows[1]["at"] = rows[1]["at"].replace(tzinfo=UTC) if rows[1]["at"].tzinfo is None else rows[1]["at"]
    assert rows[0]["hash"] == independent_hash(GENESIS, rows[0])
    assert rows[1]["hash"] == independent_hash(rows[0]["hash"], rows[1])
    assert rows[0]["at"] == datetime(2024, 7, 19, 4, 30, 1, 250, tzinfo=UTC)


def test_details_are_stored_as_they_read_back(db: Database) -> None:
    with db.session() as s:
        row = audit.append(s, actor="alice", action="release.create", now=T0,
                           details={"waves": (1, 2), "when": datetime(2024, 7, 19, 6, 0, tzinfo=UTC)})
        assert row.details == {"waves": [1, 2], "when": "2024-07-19T06:00:00+00:00"}
    assert verdict(db) is None


@pytest.mark.parametrize(("fields", "field"), [
    ({"action": "Rollout Halt"}, "action"),
    ({"action": "halt"}, "action"),
    ({"actor": ""}, "actor"),
    ({"actor": "x" * 201}, "actor"),
    ({"target": "t" * 501}, "target"),
    ({"details": {"bad": {1, 2}}}, "details"),
    ({"details": {"bad": float("nan")}}, "details"),
])
def test_append_refuses_what_the_log_cannot_hold_and_writes_nothing(db: Database, fields: dict[str, Any],
                                                                     field: str) -> None:
    values: dict[str, Any] = {"actor": "alice", "action": "rollout.halt", "now": T0, **fields}
    with db.session() as s, pytest.raises(InvalidInput) as caught:
        audit.append(s, **values)
    assert caught.value.details["field"] == field
    with db.session() as s:
        assert count(s, AuditRow) == 0


@pytest.mark.parametrize("action", [*(f"rollout.{intent.value}" for intent in Intent), "content-type.create",
                                    "enroll-token.create", "api-token.revoke", "device.enroll"])
def test_action_names_of_every_change_are_accepted(db: Database, action: str) -> None:
    with db.session() as s:
        assert audit.append(s, actor="alice", action=action, now=T0).action == action


def test_entries_tail_follow_page_back_and_filter(db: Database) -> None:
    write(db, 10)
    with db.session() as s:
        audit.append(s, actor="carol", action="release.create", target="rel-x", now=at(20))

        def seqs(**kw: Any) -> list[int]:
            return [r.seq for r in audit.entries(s, **kw)]

        assert seqs(limit=3) == [9, 10, 11]  # the newest, oldest first
        assert seqs(after_seq=4, limit=3) == [5, 6, 7]  # follow / export
        assert seqs(before_seq=9, limit=3) == [6, 7, 8]  # page back
        assert seqs(actor="user-0") == [1, 4, 7, 10]
        assert seqs(target="rel-1", limit=2) == [8, 10]
        assert seqs(action="release.create") == [11]
        assert seqs(action="rollout.*", after_seq=8) == [9, 10]
        assert seqs(action="rollout_*") == []  # only a trailing ".*" is a pattern
        assert audit.entry_dict(audit.entries(s, limit=1)[0]) == {
            "seq": 11, "at": at(20).isoformat(), "actor": "carol", "role": None, "source": None,
            "action": "release.create", "target": "rel-x", "reason": "", "details": {},
            "prev_hash": audit.entries(s, after_seq=9, limit=1)[0].hash, "hash": audit.head(s).hash}


def test_concurrent_appends_keep_one_contiguous_chain(db: Database) -> None:
    """Several writers at once (on PostgreSQL truly in parallel): every append succeeds, none
    forks the chain or leaves a gap."""
    threads, each = (8, 25) if not db.is_sqlite else (4, 10)
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def writer(n: int) -> None:
        try:
            barrier.wait()
            for i in range(each):
                with db.session() as s:
                    audit.append(s, actor=f"writer-{n}", action="rollout.pause", target=f"rel-{i}", now=at(i))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert errors == []
    with db.session() as s:
        assert [r.seq for r in audit.entries(s, after_seq=0, limit=1000)] == list(range(1, threads * each + 1))
        assert audit.verify(s) is None


# --- the database's guards ----------------------------------------------------------------------

def _refused(db: Database, statement: Any) -> str:
    with pytest.raises(DBAPIError) as caught, db.engine.begin() as conn:
        conn.execute(statement)
    return str(caught.value.orig)


def test_database_refuses_update_and_delete(db: Database) -> None:
    write(db, 3)
    assert "append-only" in _refused(db, update(AuditRow).where(AuditRow.seq == 2).values(reason="nothing happened"))
    assert "append-only" in _refused(db, delete(AuditRow).where(AuditRow.seq == 3))
    assert "append-only" in _refused(db, delete(AuditRow))
    if not db.is_sqlite:
        assert "append-only" in _refused(db, text("TRUNCATE audit_log"))
    assert verdict(db) is None
    with db.session() as s:
        assert count(s, AuditRow) == 3


def test_database_refuses_an_insert_that_does_not_extend_the_chain(db: Database) -> None:
    head = write(db, 2)
    row = {"at": T0, "actor": "mallory", "role": None, "source": None, "action": "rollout.halt", "target": None,
           "reason": "", "details": {}, "hash": "f" * 64}
    assert "append-only" in _refused(db, insert(AuditRow).values(seq=4, prev_hash=head.hash, **row))  # a gap
    assert "append-only" in _refused(db, insert(AuditRow).values(seq=3, prev_hash="e" * 64, **row))  # a fork
    with db.session() as s:
        assert count(s, AuditRow) == 2


# --- tampering, past the guards -------------------------------------------------------------------

@pytest.mark.parametrize(("column", "value"), [
    ("reason", "routine maintenance"),
    ("actor", "somebody-else"),
    ("source", None),
    ("at", datetime(2024, 7, 19, 5, 0, tzinfo=UTC)),
    ("details", {"i": 99}),
    ("action", "rollout.resume"),
])
def test_an_altered_entry_is_named(db: Database, column: str, value: Any) -> None:
    write(db, 6)
    bypass_guards(db)
    tamper(db, update(AuditRow).where(AuditRow.seq == 4).values({column: value}))
    assert verdict(db) == Broken(4, "hash does not match its contents: the row was altered")


def test_an_altered_and_rehashed_entry_breaks_the_link_to_the_next(db: Database) -> None:
    write(db, 5)
    bypass_guards(db)
    with db.session() as s:
        row = s.get(AuditRow, 3)
        assert row is not None
        contents = audit.entry_dict(row) | {"at": row.at, "reason": "routine maintenance"}
    tamper(db, update(AuditRow).where(AuditRow.seq == 3).values(
        reason="routine maintenance", hash=audit.digest(contents["prev_hash"], contents)))
    assert verdict(db) == Broken(4, "prev_hash does not match entry 3's hash")


def test_a_removed_entry_is_named_as_the_gap(db: Database) -> None:
    write(db, 8)
    bypass_guards(db)
    tamper(db, delete(AuditRow).where(AuditRow.seq == 5))
    assert verdict(db) == Broken(5, "entry 5 is missing: the chain skips from 4 to 6")
    tamper(db, delete(AuditRow).where(AuditRow.seq.in_([6, 7])))
    assert verdict(db) == Broken(5, "entries 5 to 7 are missing: the chain skips from 4 to 8")


def test_removed_first_entries_are_named(db: Database) -> None:
    write(db, 4)
    bypass_guards(db)
    tamper(db, delete(AuditRow).where(AuditRow.seq == 1))
    assert verdict(db) == Broken(1, "entry 1 is missing: the chain starts at entry 2")


def test_removed_newest_entries_are_caught_only_with_an_anchor(db: Database) -> None:
    anchor = write(db, 6)
    bypass_guards(db)
    tamper(db, delete(AuditRow).where(AuditRow.seq >= 5))
    assert verdict(db) is None  # an intact, shorter chain: nothing inside the database tells
    assert verdict(db, anchor) == Broken(5, "the last entries were removed: the chain ends at entry 4 but the "
                                            "anchor names entry 6")
    tamper(db, delete(AuditRow))
    assert verdict(db, anchor) == Broken(1, "the last entries were removed: the chain ends at entry 0 but the "
                                            "anchor names entry 6")


def test_a_rewritten_chain_is_caught_by_the_anchor(db: Database) -> None:
    """The attacker rewrites entry 2 and re-hashes everything after it: internally consistent,
    but entry 4 no longer has the hash an earlier verification saw."""
    anchor = write(db, 4)
    write(db, 2, start=4)
    bypass_guards(db)
    with db.session() as s:
        rows = [audit.entry_dict(r) | {"at": r.at} for r in audit.entries(s, after_seq=0)]
    rows[1]["reason"] = "routine maintenance"
    prev = rows[0]["hash"]
    for row in rows[1:]:
        row["prev_hash"], row["hash"] = prev, audit.digest(prev, row)
        prev = row["hash"]
        tamper(db, update(AuditRow).where(AuditRow.seq == row["seq"]).values(
            reason=row["reason"], prev_hash=row["prev_hash"], hash=row["hash"]))
    assert verdict(db) is None
    assert verdict(db, anchor) == Broken(4, "hash differs from the anchor's: the chain was rewritten at or before "
                                            "entry 4")


def test_verify_streams_in_chunks_and_still_finds_the_first_break(db: Database) -> None:
    write(db, 12)
    bypass_guards(db)
    tamper(db, update(AuditRow).where(AuditRow.seq.in_([8, 11])).values(reason="edited"))
    result = audit.verify_chain(db.session, chunk=5)
    assert (result.broken, result.entries, result.head.seq) == (
        Broken(8, "hash does not match its contents: the row was altered"), 7, 7)
    with db.session() as s:
        assert audit.verify(s, chunk=3) == result.broken


def test_anchor_from_outside_is_checked(db: Database) -> None:
    assert audit.parse_head(3, "a" * 64) == Head(3, "a" * 64)
    for seq, hash_ in [(-1, "a" * 64), (3, "A" * 64), (3, "abc"), (0, "a" * 64)]:
        with pytest.raises(InvalidInput):
            audit.parse_head(seq, hash_)


# --- the migration ------------------------------------------------------------------------------

def _guards(db: Database) -> set[str]:
    query = ("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_log'" if db.is_sqlite
             else "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgrelid = 'audit_log'::regclass")
    with db.engine.connect() as conn:
        return set(conn.execute(text(query)).scalars())


def test_migration_0006_downgrades_and_upgrades_with_its_guards(db: Database) -> None:
    expected = ({"audit_log_no_update", "audit_log_no_delete", "audit_log_extends_chain"} if db.is_sqlite
                else {"audit_log_append_only", "audit_log_no_truncate", "audit_log_extends_chain"})
    assert _guards(db) == expected
    write(db, 2)
    command.downgrade(alembic_config(db.engine), "0005")
    assert "audit_log" not in inspect(db.engine).get_table_names()
    if not db.is_sqlite:
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'audit_log_%'")).scalar() == 0
    db.migrate()
    assert _guards(db) == expected
    with db.session() as s:
        assert audit.head(s) == Head(0, GENESIS)

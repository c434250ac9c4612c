"""The audit log: who did what, when, from where and why — append-only and hash-chained.

Every entry carries ``seq`` (1, 2, 3, ... with no gaps), ``prev_hash`` (the hash of entry
``seq - 1``; 64 zeros for entry 1) and ``hash``::

    hash = sha256(prev_hash + canonical JSON of {seq, at, actor, role, source, action, target, reason, details})

Canonical JSON has sorted keys, no whitespace, UTF-8 text, and ``at`` as ISO-8601 UTC with
microseconds (``2024-07-19T04:00:00.000000Z``). Changing, removing or reordering any entry
therefore breaks the chain at that entry, and :func:`verify` names the first break. Removing the
newest entries leaves an intact but shorter chain: only an *anchor* kept elsewhere (a
:class:`Head` from an earlier verification) reveals it, so ``verify`` takes one.

Guarantees:

* :func:`append` never forks the chain. On PostgreSQL it takes a transaction-scoped advisory
  lock before reading the head; on SQLite every transaction of
  :class:`~ringfence.store.db.Database` begins ``IMMEDIATE`` and so already holds the write
  lock. Call it as the last write of a transaction: on PostgreSQL the lock is held until commit.
* The database refuses UPDATE, DELETE (and on PostgreSQL TRUNCATE) of ``audit_log``, and any
  INSERT that does not extend the chain (migration ``0006``). That stops mistakes and casual
  edits; somebody who can drop triggers can still change rows, which the hashes reveal.
* An entry is written in the same transaction as the change it records: both or neither.

Functions take a session (the caller owns the transaction) and return rows or values; the chain
arithmetic (:func:`digest`, :class:`ChainCheck`) is pure.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ringfence.core.clock import utc
from ringfence.core.errors import InvalidInput
from ringfence.store.schema import AuditRow

GENESIS = "0" * 64
"""The ``prev_hash`` of entry 1."""

CHUNK = 5_000
"""Entries read per query when verifying: memory stays flat for any length of log."""

ADVISORY_LOCK_KEY = 0x52464155_44495400  # "RFAUDIT\0": serialises appends on PostgreSQL

_ACTION = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_LIMITS = {"actor": 200, "role": 32, "source": 200, "action": 64, "target": 500}


class Head(NamedTuple):
    """The newest entry's ``seq`` and ``hash`` (``(0, GENESIS)`` for an empty log). Kept outside
    the database, it is the anchor that reveals removed newest entries."""

    seq: int
    hash: str


@dataclass(frozen=True, slots=True)
class Broken:
    """The first entry where the chain does not hold, and what is wrong there."""

    seq: int
    problem: str

    def __str__(self) -> str:
        return f"audit log broken at entry {self.seq}: {self.problem}"


@dataclass(frozen=True, slots=True)
class Verification:
    """The verdict on a whole log: how many entries were checked, the newest one checked
    (``head``), and the first break, if any."""

    entries: int
    head: Head
    broken: Broken | None

    @property
    def ok(self) -> bool:
        return self.broken is None


# --- the chain (pure) --------------------------------------------------------------------------

def canonical(contents: Mapping[str, Any]) -> bytes:
    """The bytes an entry's hash covers (besides ``prev_hash``)."""
    doc = {k: contents[k] for k in ("seq", "actor", "role", "source", "action", "target", "reason", "details")}
    doc["at"] = utc(contents["at"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def digest(prev_hash: str, contents: Mapping[str, Any]) -> str:
    """The hash of an entry whose predecessor's hash is ``prev_hash``."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical(contents)).hexdigest()


class ChainCheck:
    """Walks entries in ``seq`` order and keeps the first break. Feed it every entry (as a
    mapping of the columns), then read :meth:`result`. ``anchor``, an earlier head, must still
    be in the chain with the same hash."""

    def __init__(self, anchor: Head | None = None) -> None:
        self.anchor = anchor
        self.head = Head(0, GENESIS)
        self.entries = 0
        self.broken: Broken | None = None

    def feed(self, entry: Mapping[str, Any]) -> bool:
        """Check one entry; False once the chain is broken (later entries prove nothing)."""
        if self.broken is not None:
            return False
        self.broken = self._problem(entry)
        if self.broken is not None:
            return False
        self.head = Head(entry["seq"], entry["hash"])
        self.entries += 1
        return True

    def _problem(self, entry: Mapping[str, Any]) -> Broken | None:
        seq, last = entry["seq"], self.head.seq
        if seq != last + 1:
            gap = f"the chain skips from {last} to {seq}" if last else f"the chain starts at entry {seq}"
            missing = (f"entry {last + 1} is missing" if seq == last + 2
                       else f"entries {last + 1} to {seq - 1} are missing")
            return Broken(last + 1, f"{missing}: {gap}")
        if entry["prev_hash"] != self.head.hash:
            if not last:
                return Broken(seq, "prev_hash of the first entry is not the genesis value")
            return Broken(seq, f"prev_hash does not match entry {last}'s hash")
        try:
            intact = entry["hash"] == digest(entry["prev_hash"], entry)
        except (TypeError, ValueError):  # contents that cannot be hashed were not written by append()
            intact = False
        if not intact:
            return Broken(seq, "hash does not match its contents: the row was altered")
        if self.anchor is not None and seq == self.anchor.seq and entry["hash"] != self.anchor.hash:
            return Broken(seq, f"hash differs from the anchor's: the chain was rewritten at or before entry {seq}")
        return None

    def result(self) -> Verification:
        broken = self.broken
        if broken is None and self.anchor is not None and self.anchor.seq > self.head.seq:
            broken = Broken(self.head.seq + 1, f"the last entries were removed: the chain ends at entry "
                                               f"{self.head.seq} but the anchor names entry {self.anchor.seq}")
        return Verification(self.entries, self.head, broken)


# --- data access ---------------------------------------------------------------------------------

def append(
    s: Session,
    *,
    actor: str,
    action: str,
    now: datetime,
    role: str | None = None,
    source: str | None = None,
    target: str | None = None,
    reason: str = "",
    details: Mapping[str, Any] | None = None,
) -> AuditRow:
    """Add an entry at the head of the chain, in the caller's transaction (so it commits or
    rolls back with the change it records). ``action`` is a dotted lowercase name such as
    ``rollout.halt``; ``details`` must be JSON (datetimes become ISO-8601 UTC text). Raises
    ``InvalidInput`` for a value the log cannot hold, naming the field."""
    _check(actor=actor, role=role, source=source, action=action, target=target)
    contents: dict[str, Any] = {"at": utc(now), "actor": actor, "role": role, "source": source, "action": action,
                                "target": target, "reason": reason, "details": _json(dict(details or {}))}
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
    last = head(s)
    row = AuditRow(seq=last.seq + 1, prev_hash=last.hash, **contents)
    row.hash = digest(last.hash, {**contents, "seq": row.seq})
    s.add(row)
    s.flush()
    return row


def head(s: Session) -> Head:
    """The newest entry, or ``(0, GENESIS)`` when the log is empty."""
    found = s.execute(select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)).first()
    return Head(0, GENESIS) if found is None else Head(found.seq, found.hash)


def entries(
    s: Session,
    *,
    after_seq: int | None = None,
    before_seq: int | None = None,
    limit: int = 100,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
) -> list[AuditRow]:
    """Entries in ``seq`` order (oldest first, like a log file). With ``after_seq``: the first
    ``limit`` entries after it (to follow or export the log page by page); without: the newest
    ``limit`` entries (before ``before_seq`` when given, to page back). Filters match exactly;
    an ``action`` ending in ``.*`` matches a family (``rollout.*``)."""
    query = select(AuditRow)
    if after_seq is not None:
        query = query.where(AuditRow.seq > after_seq)
    if before_seq is not None:
        query = query.where(AuditRow.seq < before_seq)
    if actor is not None:
        query = query.where(AuditRow.actor == actor)
    if action is not None:
        query = query.where(AuditRow.action.startswith(action[:-1], autoescape=True) if action.endswith(".*")
                            else AuditRow.action == action)
    if target is not None:
        query = query.where(AuditRow.target == target)
    if after_seq is not None:
        return list(s.scalars(query.order_by(AuditRow.seq).limit(limit)))
    return list(reversed(s.scalars(query.order_by(AuditRow.seq.desc()).limit(limit)).all()))


def entry_dict(row: AuditRow) -> dict[str, Any]:
    return {"seq": row.seq, "at": utc(row.at).isoformat(), "actor": row.actor, "role": row.role,
            "source": row.source, "action": row.action, "target": row.target, "reason": row.reason,
            "details": row.details, "prev_hash": row.prev_hash, "hash": row.hash}


def chunk_after(s: Session, after_seq: int, limit: int = CHUNK) -> Sequence[Mapping[str, Any]]:
    """Up to ``limit`` entries after ``after_seq`` in ``seq`` order, as plain column mappings
    (no ORM identity map, so a walk over millions of rows holds one chunk at a time)."""
    columns = AuditRow.__table__.columns
    rows = s.execute(select(*columns).where(columns.seq > after_seq).order_by(columns.seq).limit(limit))
    return [row._asdict() for row in rows]


def verify_chain(
    sessions: Callable[[], AbstractContextManager[Session]], *, anchor: Head | None = None, chunk: int = CHUNK
) -> Verification:
    """Check the whole log, ``chunk`` entries per query, each query in a transaction of its own
    from ``sessions`` (e.g. ``Database.session``: on SQLite no writer waits for the whole walk).
    Entries appended meanwhile are checked too; the chain only grows at its head."""
    check = ChainCheck(anchor)
    while True:
        with sessions() as s:
            rows = chunk_after(s, check.head.seq, chunk)
        if not rows or not all(check.feed(row) for row in rows):
            return check.result()


def verify(s: Session, *, anchor: Head | None = None, chunk: int = CHUNK) -> Broken | None:
    """The first break in the chain (read in the caller's transaction), or None when intact."""
    return verify_chain(lambda: nullcontext(s), anchor=anchor, chunk=chunk).broken


def parse_head(seq: int, hash_: str) -> Head:
    """An anchor from outside (a file, a query string); ``InvalidInput`` when it cannot be one."""
    if seq < 0:
        raise InvalidInput(f"an anchor's seq is 0 or more, not {seq}", field="seq", value=seq)
    if not _HEX64.fullmatch(hash_):
        raise InvalidInput("an anchor's hash is 64 lowercase hex digits", field="hash", value=hash_)
    if seq == 0 and hash_ != GENESIS:
        raise InvalidInput("the anchor of an empty log has the genesis hash (64 zeros)", field="hash", value=hash_)
    return Head(seq, hash_)


def _check(**values: str | None) -> None:
    for field, value in values.items():
        if value is not None and len(value) > _LIMITS[field]:
            raise InvalidInput(f"audit {field} is longer than {_LIMITS[field]} characters", field=field, value=value)
    action = values["action"] or ""
    if not _ACTION.fullmatch(action):
        raise InvalidInput(f"audit action {action!r} is not a dotted lowercase name such as 'rollout.halt'",
                           field="action", value=action)
    if not values["actor"]:
        raise InvalidInput("an audit entry names its actor", field="actor")


def _json(details: Mapping[str, Any]) -> dict[str, Any]:
    """``details`` as it will read back from the database, so its hash can be recomputed."""
    try:
        text_ = json.dumps(details, sort_keys=True, allow_nan=False, default=_jsonable)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"audit details are not JSON: {exc}", field="details") from None
    loaded: dict[str, Any] = json.loads(text_)
    return loaded


def _jsonable(value: object) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.replace(tzinfo=UTC).isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")

"""Who is calling. Admin endpoints take an API token (``Authorization: Bearer rft_...``), looked
up by hash; agent endpoints take a device credential checked against the in-memory snapshot.
A device credential never opens an admin endpoint: the two live in different tables."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from ringfence.core.errors import Forbidden, Unauthorized
from ringfence.server.runtime import Runtime
from ringfence.store.access import DeviceRecord, find_api_token, find_device_record, hash_secret

READ = frozenset({"viewer", "operator", "releaser", "approver", "admin"})
OPERATE = frozenset({"operator", "releaser", "admin"})  # pause, resume, halt, roll back
RELEASE = frozenset({"releaser", "admin"})  # push artifacts, create and start releases
ADMIN = frozenset({"admin"})  # content types, enrolment tokens


@dataclass(frozen=True, slots=True)
class Actor:
    name: str
    role: str
    token_id: str


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("missing credential: send 'Authorization: Bearer <token>'")
    return value.strip()


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def actor(request: Request, allowed: frozenset[str]) -> Actor:
    secret = bearer(request)
    rt = runtime(request)
    with rt.db.session() as s:
        row = find_api_token(s, secret, rt.clock.now())
        if row is None:
            raise Unauthorized("the API token is unknown, revoked or expired")
        who = Actor(name=row.name, role=row.role, token_id=row.id)
    if who.role not in allowed:
        raise Forbidden(f"role {who.role!r} may not do this; needs one of {', '.join(sorted(allowed))}",
                        role=who.role)
    return who


def device(request: Request) -> str | None:
    """The device a credential belongs to, or None: the snapshot first, then (several nodes on
    PostgreSQL) the store. Call from a worker thread; it does not change the snapshot."""
    credential = bearer(request)
    rt = runtime(request)
    found = rt.snapshot.authenticate(credential)
    if found is not None or rt.db.is_sqlite:
        return found
    record = enrolled_elsewhere(rt, credential)
    return record.id if record is not None else None


def enrolled_elsewhere(rt: Runtime, credential: str) -> DeviceRecord | None:
    """A device this node's snapshot does not know: with several nodes on one PostgreSQL it may
    have enrolled through another node. Reads the store (blocking) and checks the credential."""
    device_id, _, _ = credential.partition(".")
    if not 0 < len(device_id) <= 40:
        return None
    with rt.db.session() as s:
        record = find_device_record(s, device_id)
    if record is None or not hmac.compare_digest(record.credential_hash, hash_secret(credential)):
        return None
    return record


def reader(request: Request) -> Actor:
    return actor(request, READ)


def operator(request: Request) -> Actor:
    return actor(request, OPERATE)


def releaser(request: Request) -> Actor:
    return actor(request, RELEASE)


def admin(request: Request) -> Actor:
    return actor(request, ADMIN)

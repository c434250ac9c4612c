"""Who is calling. Admin endpoints take an API token (``Authorization: Bearer rft_...``), looked
up by hash; agent endpoints take a device credential checked against the in-memory snapshot.
A device credential never opens an admin endpoint: the two live in different tables."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session

from ringfence.core.errors import Forbidden, Unauthorized
from ringfence.server.runtime import Runtime
from ringfence.store import audit as audit_log
from ringfence.store.access import DeviceRecord, find_api_token, find_device_record, hash_secret

READ = frozenset({"viewer", "operator", "releaser", "approver", "admin"})
OPERATE = frozenset({"operator", "releaser", "admin"})  # pause, resume, halt, roll back
RELEASE = frozenset({"releaser", "admin"})  # push artifacts, create and start releases
ADMIN = frozenset({"admin"})  # content types, enrolment tokens


@dataclass(frozen=True, slots=True)
class Actor:
    """Who calls, with the scope of their token: ``team`` (the content types they may act on)
    or ``tenant`` (the devices and policies they may see and manage); neither for a global
    token."""

    name: str
    role: str
    token_id: str
    team: str | None = None
    tenant: str | None = None

    def owns(self, team: str | None) -> bool:
        """May act (within its role) on a content type owned by ``team``? A global token on
        every content type, a team token on its team's only, a tenant token on none."""
        if self.tenant is not None:
            return False
        return self.team is None or self.team == team

    def sees_tenant(self, tenant: str) -> bool:
        return self.tenant is None or self.tenant == tenant


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise Unauthorized("missing credential: send 'Authorization: Bearer <token>'")
    return value.strip()


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


APPROVE = frozenset({"approver", "admin"})  # approve releases (never one's own)


def actor(request: Request, allowed: frozenset[str], *, tenant_ok: bool = False) -> Actor:
    """The caller, if their role is ``allowed``. A tenant-scoped token opens only the endpoints
    that limit what they show and change to its tenant (``tenant_ok``)."""
    secret = bearer(request)
    rt = runtime(request)
    with rt.db.session() as s:
        row = find_api_token(s, secret, rt.clock.now())
        if row is None:
            raise Unauthorized("the API token is unknown, revoked or expired")
        who = Actor(name=row.name, role=row.role, token_id=row.id, team=row.team, tenant=row.tenant)
    if who.role not in allowed:
        raise Forbidden(f"role {who.role!r} may not do this; needs one of {', '.join(sorted(allowed))}",
                        role=who.role)
    if who.tenant is not None and not tenant_ok:
        raise Forbidden(f"a token of tenant {who.tenant!r} sees only its tenant's devices, enrolment tokens and "
                        "policies", tenant=who.tenant)
    return who


def require_owner(who: Actor, team: str | None, what: str) -> None:
    """Refuse ``who`` acting on ``what`` (a content type or its release) owned by ``team``."""
    if not who.owns(team):
        owner = f"team {team!r}" if team else "no team (global tokens only)"
        mine = f"team {who.team!r}" if who.team else "no team"
        raise Forbidden(f"{what} is owned by {owner}; the token of {who.name} is for {mine}", owner=team,
                        team=who.team)


def require_tenant(who: Actor, tenant: str) -> None:
    if not who.sees_tenant(tenant):
        raise Forbidden(f"the token of {who.name} is for tenant {who.tenant!r}, not {tenant!r}", tenant=tenant)


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


def approver(request: Request) -> Actor:
    return actor(request, APPROVE)


def tenant_reader(request: Request) -> Actor:
    return actor(request, READ, tenant_ok=True)


def tenant_admin(request: Request) -> Actor:
    return actor(request, ADMIN, tenant_ok=True)


def source(request: Request) -> str | None:
    """Where a call came from, for the audit log: the client's address."""
    return request.client.host if request.client is not None else None


def audit(s: Session, request: Request, who: Actor, action: str, *, target: str | None = None, reason: str = "",
          details: Mapping[str, Any] | None = None) -> None:
    """Append an entry for ``who`` doing ``action`` to the audit log, in the caller's transaction
    (the entry commits with the change, or neither does). Call it as the transaction's last write."""
    rt = runtime(request)
    audit_log.append(s, actor=who.name, role=who.role, source=source(request), action=action, target=target,
                     reason=reason, details={**(details or {}), "token_id": who.token_id}, now=rt.clock.now())

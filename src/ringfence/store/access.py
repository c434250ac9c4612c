"""Credentials and devices: API tokens, enrolment tokens, device enrolment and listing.

Secrets are shown once and stored only as SHA-256 hashes (they are long random strings, so a
fast hash is enough; a slow password hash would buy nothing and cost every request).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ringfence.core.clock import utc
from ringfence.core.errors import Conflict, InvalidInput, NotFound
from ringfence.core.models import DeviceAttributes
from ringfence.store.schema import ApiToken, DeviceRow, DeviceVersion, EnrollToken, TeamRow, WatchedRow

ROLES = ("viewer", "operator", "releaser", "approver", "admin")
TENANT_ROLES = ("viewer", "admin")
_TEAM = re.compile(r"[a-z0-9][a-z0-9-]{0,127}")  # a customer's people: see their tenant, manage its policies


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def create_api_token(s: Session, *, name: str, role: str, now: datetime, team: str | None = None,
                     tenant: str | None = None, created_by: str | None = None,
                     expires_at: datetime | None = None) -> tuple[str, str]:
    """Create an API token for the user or service account ``name``; returns (token id, the
    secret, shown once). A team token acts on its team's content types; a tenant token sees and
    manages one tenant (roles viewer or admin only)."""
    if role not in ROLES:
        raise InvalidInput(f"unknown role {role!r}; expected one of {', '.join(ROLES)}", field="role", value=role)
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("name must be a non-empty name of at most 200 characters", field="name", value=name)
    if team is not None and tenant is not None:
        raise InvalidInput("a token is scoped to a team or to a tenant, not both", field="tenant", value=tenant)
    if team is not None and s.get(TeamRow, team) is None:
        raise InvalidInput(f"no team named {team!r}; create it first", field="team", value=team)
    if tenant is not None and role not in TENANT_ROLES:
        raise InvalidInput(f"a tenant token has role {' or '.join(TENANT_ROLES)}, not {role!r}", field="role",
                           value=role)
    if expires_at is not None and expires_at <= now:
        raise InvalidInput("expires_at is in the past", field="expires_at", value=expires_at.isoformat())
    secret = _new_secret("rft")
    token_id = uuid.uuid4().hex[:16]
    s.add(ApiToken(id=token_id, name=name, token_hash=hash_secret(secret), role=role, created_at=now, team=team,
                   tenant=tenant, created_by=created_by, expires_at=expires_at))
    s.flush()
    return token_id, secret


def find_api_token(s: Session, secret: str, now: datetime) -> ApiToken | None:
    row = s.scalar(select(ApiToken).where(ApiToken.token_hash == hash_secret(secret)))
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and utc(row.expires_at) <= now:
        return None
    return row


def list_api_tokens(s: Session, tenant: str | None = None) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
    if tenant is not None:
        query = query.where(ApiToken.tenant == tenant)
    return list(s.scalars(query))


def revoke_api_token(s: Session, token_id: str, now: datetime) -> ApiToken:
    row = s.get(ApiToken, token_id)
    if row is None:
        raise NotFound(f"no API token with id {token_id!r}", id=token_id)
    if row.revoked_at is None:
        row.revoked_at = now
        s.flush()
    return row


def token_json(row: ApiToken) -> dict[str, Any]:
    """A token as listed: never its secret or hash."""
    return {"id": row.id, "name": row.name, "role": row.role, "team": row.team, "tenant": row.tenant,
            "created_at": utc(row.created_at).isoformat(), "created_by": row.created_by,
            "expires_at": utc(row.expires_at).isoformat() if row.expires_at else None,
            "revoked_at": utc(row.revoked_at).isoformat() if row.revoked_at else None}


def create_team(s: Session, name: str, *, actor: str, now: datetime) -> TeamRow:
    if not _TEAM.fullmatch(name):
        raise InvalidInput(f"team name {name!r} must be lower-case letters, digits and '-' (at most 128)",
                           field="name", value=name)
    if s.get(TeamRow, name) is not None:
        raise Conflict(f"team {name!r} already exists", name=name)
    row = TeamRow(name=name, created_at=now, created_by=actor)
    s.add(row)
    try:
        s.flush()
    except IntegrityError:
        raise Conflict(f"team {name!r} was created concurrently", name=name) from None
    return row


def list_teams(s: Session) -> list[TeamRow]:
    return list(s.scalars(select(TeamRow).order_by(TeamRow.name)))


def create_enroll_token(s: Session, *, tenant: str, actor: str, now: datetime) -> tuple[str, str]:
    tenant = tenant.strip()
    if not tenant or len(tenant) > 200:
        raise InvalidInput("tenant must be a non-empty name of at most 200 characters", field="tenant",
                           value=tenant)
    secret = _new_secret("rfe")
    token_id = uuid.uuid4().hex[:16]
    s.add(EnrollToken(id=token_id, token_hash=hash_secret(secret), tenant=tenant, created_at=now,
                      created_by=actor))
    return token_id, secret


def find_enroll_token(s: Session, secret: str) -> EnrollToken | None:
    row = s.scalar(select(EnrollToken).where(EnrollToken.token_hash == hash_secret(secret)))
    return row if row is not None and row.revoked_at is None else None


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """What the check-in path keeps in memory per device."""

    id: str
    credential_hash: str
    attributes: DeviceAttributes
    checkin_seq: int = 0  # the highest check-in sequence number the device has sent


def enroll_device(
    s: Session, attrs: DeviceAttributes, now: datetime
) -> tuple[DeviceRecord, str]:
    """Register a device; returns its record and its credential (``<device id>.<secret>``)."""
    device_id = uuid.uuid4().hex
    credential = f"{device_id}.{secrets.token_urlsafe(32)}"
    record = DeviceRecord(device_id, hash_secret(credential), attrs)
    s.add(DeviceRow(
        id=device_id, credential_hash=record.credential_hash, tenant=attrs.tenant, platform=attrs.platform,
        os_version=attrs.os_version, arch=attrs.arch, region=attrs.region, channel=attrs.channel,
        tags=sorted(attrs.tags), agent_version=attrs.agent_version, enrolled_at=now, last_seen_at=now,
    ))
    return record, credential


def device_attributes(row: DeviceRow) -> DeviceAttributes:
    return DeviceAttributes(
        platform=row.platform, os_version=row.os_version, arch=row.arch, region=row.region,
        tenant=row.tenant, channel=row.channel, tags=frozenset(row.tags or ()),
        agent_version=row.agent_version,
    )


def find_device_record(s: Session, device_id: str) -> DeviceRecord | None:
    row = s.get(DeviceRow, device_id)
    if row is None:
        return None
    return DeviceRecord(row.id, row.credential_hash, device_attributes(row), row.checkin_seq or 0)


def iter_device_records(s: Session, batch: int = 50_000) -> Iterator[DeviceRecord]:
    """Every device, streamed in primary-key order (for building the in-memory snapshot)."""
    last = ""
    while True:
        rows = s.scalars(select(DeviceRow).where(DeviceRow.id > last).order_by(DeviceRow.id).limit(batch)).all()
        if not rows:
            return
        for row in rows:
            yield DeviceRecord(row.id, row.credential_hash, device_attributes(row), row.checkin_seq or 0)
        last = rows[-1].id


DEVICE_FILTERS = ("tenant", "platform", "os_version", "arch", "region", "channel")


def list_devices(
    s: Session, filters: Mapping[str, str], *, tag: str | None = None, limit: int = 100, offset: int = 0
) -> tuple[int, list[dict[str, Any]]]:
    """Devices matching exact-value ``filters`` (keys from DEVICE_FILTERS), newest first, with
    the versions each last reported. Returns (total matching, page)."""
    query = select(DeviceRow)
    for key, value in filters.items():
        if key not in DEVICE_FILTERS:
            raise InvalidInput(f"cannot filter devices by {key!r}", field=key, value=value)
        query = query.where(getattr(DeviceRow, key) == value)
    rows: Sequence[DeviceRow]
    if tag is not None:  # JSON containment differs per backend; filter in Python, bounded by page
        ordered = query.order_by(DeviceRow.enrolled_at.desc(), DeviceRow.id)
        all_rows = [r for r in s.scalars(ordered).all() if tag in (r.tags or [])]
        total, rows = len(all_rows), all_rows[offset:offset + limit]
    else:
        total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
        rows = s.scalars(query.order_by(DeviceRow.enrolled_at.desc(), DeviceRow.id).limit(limit).offset(offset)).all()
    versions: dict[str, dict[str, str]] = {}
    ids = [r.id for r in rows]
    if ids:
        for v in s.scalars(select(DeviceVersion).where(DeviceVersion.device_id.in_(ids))):
            versions.setdefault(v.device_id, {})[v.content_type] = v.version
    return total, [_device_dict(r, versions.get(r.id, {})) for r in rows]


def _device_dict(row: DeviceRow, versions: Mapping[str, str]) -> dict[str, Any]:
    return {
        "id": row.id, "tenant": row.tenant, "platform": row.platform, "os_version": row.os_version,
        "arch": row.arch, "region": row.region, "channel": row.channel, "tags": list(row.tags or []),
        "agent_version": row.agent_version, "enrolled_at": utc(row.enrolled_at).isoformat(),
        "last_seen_at": utc(row.last_seen_at).isoformat() if row.last_seen_at else None,
        "versions": dict(versions),
    }


@dataclass(frozen=True, slots=True)
class Sighting:
    """One check-in's worth of device state, written in batches. ``attributes`` and
    ``versions`` carry only what changed since the device's previous check-in."""

    device_id: str
    at: datetime
    attributes: DeviceAttributes | None = None
    versions: Mapping[str, str] | None = None
    sequence: int | None = None  # the check-in's sequence number, when the device sends one
    watched: Mapping[str, datetime] | None = None  # release id -> first check-in since its start


def record_sightings(s: Session, sightings: Iterable[Sighting]) -> None:
    """Write last-seen, changed attributes and changed versions for many devices in a few
    bulk statements. Later sightings of the same device win."""
    latest: dict[str, Sighting] = {}
    changed_versions: dict[tuple[str, str], tuple[str, datetime]] = {}
    watched: dict[tuple[str, str], datetime] = {}
    for sighting in sightings:
        for release_id, at in (sighting.watched or {}).items():
            key = (release_id, sighting.device_id)
            watched[key] = min(at, watched.get(key, at))
        previous = latest.get(sighting.device_id)
        if sighting.attributes is None and previous is not None and previous.attributes is not None:
            # Sightings carry only changes: a later plain check-in must not drop an earlier move.
            latest[sighting.device_id] = replace(sighting, attributes=previous.attributes)
        else:
            latest[sighting.device_id] = sighting
        for content_type, version in (sighting.versions or {}).items():
            changed_versions[(sighting.device_id, content_type)] = (version, sighting.at)
    if not latest:
        return
    if watched:
        _record_watched(s, watched)
    seen = [{"id": d, "last_seen_at": x.at} for d, x in latest.items() if x.attributes is None]
    if seen:
        s.execute(update(DeviceRow), seen)
    moved = [
        {"id": d, "last_seen_at": x.at, "platform": a.platform, "os_version": a.os_version, "arch": a.arch,
         "region": a.region, "tags": sorted(a.tags), "agent_version": a.agent_version}
        for d, x in latest.items() if (a := x.attributes) is not None
    ]
    if moved:
        s.execute(update(DeviceRow), moved)
    sequenced = [{"id": d, "checkin_seq": x.sequence} for d, x in latest.items() if x.sequence is not None]
    if sequenced:
        s.execute(update(DeviceRow), sequenced)
    if changed_versions:
        upsert(s, DeviceVersion, [
            {"device_id": d, "content_type": ct, "version": v, "reported_at": at}
            for (d, ct), (v, at) in changed_versions.items()
        ], keys=("device_id", "content_type"), update_columns=("version", "reported_at"))


def _record_watched(s: Session, watched: Mapping[tuple[str, str], datetime]) -> None:
    """First check-ins since rollouts started; of two nodes' sightings the earlier one stands."""
    dialect = s.get_bind().dialect.name
    stmt = (pg_insert if dialect == "postgresql" else sqlite_insert)(WatchedRow)
    earliest = (func.least if dialect == "postgresql" else func.min)(WatchedRow.first_seen_at,
                                                                        stmt.excluded.first_seen_at)
    s.execute(stmt.on_conflict_do_update(index_elements=["release_id", "device_id"],
                                         set_={"first_seen_at": earliest}),
              [{"release_id": r, "device_id": d, "first_seen_at": at} for (r, d), at in watched.items()])


def upsert(
    s: Session, table: type[Any], rows: Sequence[Mapping[str, Any]], *, keys: Sequence[str],
    update_columns: Sequence[str] = (),
) -> None:
    """INSERT ... ON CONFLICT for SQLite and PostgreSQL: update ``update_columns`` or, when
    empty, keep the existing row."""
    if not rows:
        return
    dialect = s.get_bind().dialect.name
    insert_fn = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert_fn(table)
    if update_columns:
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys), set_={c: getattr(stmt.excluded, c) for c in update_columns})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=list(keys))
    s.execute(stmt, list(rows))

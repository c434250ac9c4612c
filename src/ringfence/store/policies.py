"""Channel policies (customer control) in the database, and what the check-in snapshot and the
rollout status read about them. The rules themselves are pure, in :mod:`ringfence.core.policy`.

A policy is keyed by (tenant, device group, category); the whole tenant's policy has the empty
group. Clearing a policy keeps its row with ``cleared_at`` set, and every change bumps the row's
``revision``: the sum of revisions only grows, so :func:`policies_marker` changes with every
change and another node notices it (see :func:`ringfence.server.control.rollouts_marker`).

Functions take a session (the caller owns the transaction) and return rows or values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Container, Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ringfence.core.assignment import Target
from ringfence.core.clock import utc
from ringfence.core.errors import Conflict, InvalidInput, NotFound
from ringfence.core.models import Category, parse_category
from ringfence.core.policy import (
    MAX_DELAY,
    Channel,
    ChannelPolicy,
    GeneralRelease,
    Hold,
    PolicyBook,
    check_group,
    check_tenant,
    hold_of,
    make_policy,
    window_from_json,
)
from ringfence.core.rollout import Phase
from ringfence.store.schema import ArtifactRow, ContentTypeRow, DeviceRow, PolicyRow, ReleaseRow

WHOLE_TENANT = ""
"""The ``device_group`` of a tenant-wide policy."""


def policy_of(row: PolicyRow) -> ChannelPolicy:
    """The stored policy (checked when it was set, so not checked again: a rule tightened since
    must not stop the server from loading what customers chose)."""
    return ChannelPolicy(
        tenant=row.tenant, group=row.device_group or None, category=Category(row.category),
        channel=Channel(row.channel), delay_hours=row.delay_hours, content_type=row.content_type,
        version=row.version,
        windows=tuple(window_from_json(w, f"windows[{i}]") for i, w in enumerate(row.windows or ())),
    )


def policy_json(row: PolicyRow) -> dict[str, Any]:
    return {**policy_of(row).as_dict(), "revision": row.revision, "changed_at": utc(row.changed_at).isoformat(),
            "changed_by": row.changed_by}


def set_policy(
    s: Session, *, tenant: str, category: str, channel: str, actor: str, now: datetime, group: str | None = None,
    delay_hours: int | None = None, content_type: str | None = None, version: str | None = None,
    windows: list[Any] | None = None,
) -> PolicyRow:
    """Create or replace the policy of (tenant, group, category). Raises ``InvalidInput`` naming
    the field for a bad value, a pinned version that is no artifact, or a content type of
    another category. A pin without ``content_type`` takes the one content type of the category
    that has the version."""
    cat = parse_category(category)
    if channel == Channel.PIN.value and version and not content_type:
        content_type = _pinned_type(s, cat, version)
    policy = make_policy(tenant=tenant, group=group, category=cat, channel=channel, delay_hours=delay_hours,
                         content_type=content_type, version=version, windows=windows)
    if policy.channel is Channel.PIN:
        _check_pin(s, policy)
    key = (policy.tenant, policy.group or WHOLE_TENANT, policy.category.value)
    row = s.get(PolicyRow, key, with_for_update=True)
    values: dict[str, Any] = {
        "channel": policy.channel.value, "delay_hours": policy.delay_hours, "content_type": policy.content_type,
        "version": policy.version, "windows": [w.as_dict() for w in policy.windows], "changed_at": now,
        "changed_by": actor, "cleared_at": None,
    }
    if row is None:
        row = PolicyRow(tenant=key[0], device_group=key[1], category=key[2], revision=1, **values)
        s.add(row)
        try:
            s.flush()
        except IntegrityError:
            raise Conflict(f"the policy of {describe_key(*key)} was set concurrently; look again and retry",
                           tenant=key[0], group=key[1] or None, category=key[2]) from None
        return row
    for name, value in values.items():
        setattr(row, name, value)
    row.revision += 1
    s.flush()
    return row


def _pinned_type(s: Session, category: Category, version: str) -> str:
    names = list(s.scalars(
        select(ArtifactRow.content_type).join(ContentTypeRow, ContentTypeRow.name == ArtifactRow.content_type)
        .where(ContentTypeRow.category == category.value, ArtifactRow.version == version)
        .order_by(ArtifactRow.content_type)))
    if len(names) == 1:
        return names[0]
    if not names:
        raise InvalidInput(f"no {category.value} content type has an artifact {version}; push it first, or name "
                           "the content type", field="version", value=version)
    raise InvalidInput(f"{version} is a version of {', '.join(names)}; name the content type to pin",
                       field="content_type", value=None)


def _check_pin(s: Session, policy: ChannelPolicy) -> None:
    assert policy.content_type is not None
    assert policy.version is not None
    row = s.get(ContentTypeRow, policy.content_type)
    if row is None:
        raise InvalidInput(f"no content type named {policy.content_type!r}", field="content_type",
                           value=policy.content_type)
    if row.category != policy.category.value:
        raise InvalidInput(f"content type {row.name} is {row.category} content, not {policy.category.value}",
                           field="content_type", value=row.name)
    found = s.scalar(select(ArtifactRow.id).where(ArtifactRow.content_type == policy.content_type,
                                                  ArtifactRow.version == policy.version))
    if found is None:
        raise InvalidInput(f"no artifact {policy.content_type} {policy.version} to pin; push it first",
                           field="version", value=policy.version)
    released = s.scalar(select(ReleaseRow.id).where(
        ReleaseRow.content_type == policy.content_type, ReleaseRow.version == policy.version,
        ReleaseRow.phase.in_([Phase.ROLLING.value, Phase.PAUSED.value, Phase.COMPLETED.value])).limit(1))
    if released is None:
        raise InvalidInput(f"{policy.content_type} {policy.version} has no release that passed the start gate and "
                           "is rolling or completed; a pin delivers only what validation and approvals let through",
                           field="version", value=policy.version)


def clear_policy(s: Session, *, tenant: str, group: str | None, category: str, actor: str,
                 now: datetime) -> PolicyRow:
    """Drop the policy of (tenant, group, category): its devices fall back to the next policy
    that applies (the tenant's, then the default). ``NotFound`` when there is none."""
    key = (check_tenant(tenant), check_group(group) or WHOLE_TENANT, parse_category(category).value)
    row = s.get(PolicyRow, key, with_for_update=True)
    if row is None or row.cleared_at is not None:
        raise NotFound(f"no policy for {describe_key(*key)}", tenant=key[0], group=key[1] or None, category=key[2])
    row.cleared_at, row.changed_at, row.changed_by = now, now, actor
    row.revision += 1
    s.flush()
    return row


def describe_key(tenant: str, group: str, category: str) -> str:
    who = f"group {group!r} of tenant {tenant!r}" if group else f"tenant {tenant!r}"
    return f"{who}, category {category}"


def list_policies(s: Session, *, tenant: str | None = None, category: str | None = None) -> list[PolicyRow]:
    """Policies in force (not cleared), by tenant, category and group."""
    query = select(PolicyRow).where(PolicyRow.cleared_at.is_(None))
    if tenant is not None:
        query = query.where(PolicyRow.tenant == tenant)
    if category is not None:
        query = query.where(PolicyRow.category == parse_category(category).value)
    return list(s.scalars(query.order_by(PolicyRow.tenant, PolicyRow.category, PolicyRow.device_group)))


def load_book(s: Session) -> PolicyBook:
    return PolicyBook(policy_of(r) for r in list_policies(s))


def policies_marker(s: Session) -> tuple[int, int]:
    """(rows, sum of revisions): changes with every policy set or cleared."""
    count, revisions = s.execute(select(func.count(), func.coalesce(func.sum(PolicyRow.revision), 0))
                                 .select_from(PolicyRow)).one()
    return int(count), int(revisions)


def categories(s: Session) -> dict[str, Category]:
    """Content type -> its category."""
    return {name: Category(cat) for name, cat in s.execute(select(ContentTypeRow.name, ContentTypeRow.category))}


def pinned_targets(s: Session, book: PolicyBook,
                   releases_by_version: Mapping[tuple[str, str], str]) -> dict[tuple[str, str], Target]:
    """(content type, version) -> target, for every pinned version."""
    out: dict[tuple[str, str], Target] = {}
    for content_type, version in sorted(book.pins()):
        artifact = s.scalar(select(ArtifactRow).where(ArtifactRow.content_type == content_type,
                                                      ArtifactRow.version == version))
        if artifact is not None:
            out[(content_type, version)] = Target(content_type, version, artifact.sha256, artifact.size,
                                                  releases_by_version.get((content_type, version)))
    return out


def general_history(s: Session, content_types: Iterable[str],
                    revoked: Mapping[str, Container[str]]) -> dict[str, tuple[GeneralRelease, ...]]:
    """Per content type, completed releases newest first: enough of them for any delay at any
    later time. With M the newest completion, that is those completed after M - 72 h and the
    newest one before that which is not revoked (times only move forward, so "now - delay" is
    never before M - 72 h)."""
    out: dict[str, tuple[GeneralRelease, ...]] = {}
    for content_type in content_types:
        rows = s.execute(
            select(ReleaseRow.id, ReleaseRow.phase_changed_at, ArtifactRow.version, ArtifactRow.sha256,
                   ArtifactRow.size)
            .join(ArtifactRow, ArtifactRow.id == ReleaseRow.artifact_id)
            .where(ReleaseRow.content_type == content_type, ReleaseRow.phase == Phase.COMPLETED.value)
            .order_by(ReleaseRow.phase_changed_at.desc(), ReleaseRow.id.desc()).limit(1000))
        kept: list[GeneralRelease] = []
        gone = revoked.get(content_type, frozenset())
        for release_id, at, version, sha256, size in rows:
            if at is None:
                continue  # every transition stamps it; a row without one is not usable
            since = utc(at)
            entry = GeneralRelease(Target(content_type, version, sha256, size, release_id), since)
            if kept and since <= kept[0].since - MAX_DELAY:
                if version not in gone:
                    kept.append(entry)
                    break
                continue
            kept.append(entry)
        if kept:
            out[content_type] = tuple(kept)
    return out


def held_by_policy(s: Session, content_type: str, now: datetime | None) -> dict[str, int]:
    """How many enrolled devices policies keep out of a rollout of ``content_type`` right now,
    by reason (``pause``, ``pin``, ``delay``, ``window``; without ``now`` windows are not
    judged). Reads devices only of tenants that have a policy for the category, and one row per
    device only for tenants with group policies."""
    counts: Counter[Hold] = Counter()
    row = s.get(ContentTypeRow, content_type)
    if row is not None:
        book = PolicyBook(policy_of(r) for r in list_policies(s, category=row.category))
        category = Category(row.category)
        tenants = {p.tenant for p in book}
        grouped = {p.tenant for p in book if p.group is not None}
        whole = sorted(tenants - grouped)
        if whole:
            for tenant, n in s.execute(select(DeviceRow.tenant, func.count()).where(DeviceRow.tenant.in_(whole))
                                       .group_by(DeviceRow.tenant)):
                _count(counts, book.resolve(tenant, (), category), content_type, now, int(n))
        if grouped:
            for tenant, tags in s.execute(select(DeviceRow.tenant, DeviceRow.tags)
                                          .where(DeviceRow.tenant.in_(sorted(grouped)))):
                _count(counts, book.resolve(tenant, frozenset(tags or ()), category), content_type, now, 1)
    return {h.value: counts[h] for h in Hold}


def _count(counts: Counter[Hold], policy: ChannelPolicy | None, content_type: str, now: datetime | None,
           n: int) -> None:
    hold = hold_of(policy.for_content_type(content_type), now) if policy is not None else None
    if hold is not None:
        counts[hold] += n


def content_types_with_delays(book: PolicyBook, kinds: Mapping[str, Category]) -> Collection[str]:
    """The content types whose category has a delayed policy (they need a release history)."""
    delayed = {p.category for p in book if p.delay_hours}
    return sorted(ct for ct, cat in kinds.items() if cat in delayed)

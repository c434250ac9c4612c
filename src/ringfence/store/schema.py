"""Tables. Times are stored timezone-aware; SQLite hands them back naive and
:func:`ringfence.core.clock.utc` restores the zone. Every change goes through Alembic
(``store/migrations``); a test checks the models and the migrations agree."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Stamp = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(Stamp)
    expires_at: Mapped[datetime | None] = mapped_column(Stamp, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(Stamp, nullable=True)
    team: Mapped[str | None] = mapped_column(String(128), nullable=True)  # scope: this team's content types
    tenant: Mapped[str | None] = mapped_column(String(200), nullable=True)  # scope: this tenant's devices
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class TeamRow(Base):
    """A team owns content types: it releases, approves and rolls back its own, not others'."""

    __tablename__ = "teams"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(Stamp)
    created_by: Mapped[str] = mapped_column(String(200))


class EnrollToken(Base):
    __tablename__ = "enroll_tokens"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    tenant: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(Stamp)
    created_by: Mapped[str] = mapped_column(String(200))
    revoked_at: Mapped[datetime | None] = mapped_column(Stamp, nullable=True)


class DeviceRow(Base):
    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    credential_hash: Mapped[str] = mapped_column(String(64))
    tenant: Mapped[str] = mapped_column(String(200), index=True)
    platform: Mapped[str] = mapped_column(String(64))
    os_version: Mapped[str] = mapped_column(String(64), default="")
    arch: Mapped[str] = mapped_column(String(32), default="")
    region: Mapped[str] = mapped_column(String(64), default="")
    channel: Mapped[str] = mapped_column(String(32), default="ga")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    enrolled_at: Mapped[datetime] = mapped_column(Stamp)
    last_seen_at: Mapped[datetime | None] = mapped_column(Stamp, nullable=True)
    checkin_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")  # highest sequence seen

    __table_args__ = (Index("ix_devices_platform_region", "platform", "region"),)


class DeviceVersion(Base):
    """The version of each content type a device last reported running."""

    __tablename__ = "device_versions"
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True)
    content_type: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[str] = mapped_column(String(128))
    reported_at: Mapped[datetime] = mapped_column(Stamp)

    __table_args__ = (Index("ix_device_versions_type_version", "content_type", "version"),)


class ContentTypeRow(Base):
    """A content type. ``definition`` is the YAML text of its content-type definition (what
    :mod:`ringfence.validation` checks a release against), ``definition_dir`` the directory on the
    server where the definition's consumer commands run; both None for a type without one, which
    then carries ``unvalidated_reason``: why it was registered without validation."""

    __tablename__ = "content_types"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    category: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(Stamp)
    created_by: Mapped[str] = mapped_column(String(200))
    definition: Mapped[str | None] = mapped_column(Text, nullable=True)
    definition_dir: Mapped[str | None] = mapped_column(String(1000), nullable=True)
    unvalidated_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    team: Mapped[str | None] = mapped_column(String(128), nullable=True)  # the owner; None: admins only


class ArtifactRow(Base):
    __tablename__ = "artifacts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    content_type: Mapped[str] = mapped_column(ForeignKey("content_types.name"))
    version: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(Stamp)
    created_by: Mapped[str] = mapped_column(String(200))

    __table_args__ = (UniqueConstraint("content_type", "version", name="uq_artifacts_type_version"),)


class ReleaseRow(Base):
    """A release and the live state of its rollout (one row: a release has one rollout).
    ``revision`` guards every phase change: an update names the revision it read, so of two
    concurrent transitions one wins and the other gets a conflict."""

    __tablename__ = "releases"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    content_type: Mapped[str] = mapped_column(ForeignKey("content_types.name"))
    artifact_id: Mapped[int] = mapped_column(ForeignKey("artifacts.id"))
    version: Mapped[str] = mapped_column(String(128))
    plan_name: Mapped[str] = mapped_column(String(200))
    plan_source: Mapped[str] = mapped_column(Text)
    salt: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Stamp)
    created_by: Mapped[str] = mapped_column(String(200))
    phase: Mapped[str] = mapped_column(String(32))
    wave: Mapped[int] = mapped_column(Integer, default=0)
    wave_started_at: Mapped[datetime | None] = mapped_column(Stamp, nullable=True)
    phase_changed_at: Mapped[datetime | None] = mapped_column(Stamp, nullable=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    approvals_required: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (Index("ix_releases_type_phase", "content_type", "phase"),)


class HistoryRow(Base):
    __tablename__ = "rollout_history"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"), index=True)
    at: Mapped[datetime] = mapped_column(Stamp)
    intent: Mapped[str] = mapped_column(String(32))
    from_phase: Mapped[str | None] = mapped_column(String(32), nullable=True)
    to_phase: Mapped[str] = mapped_column(String(32))
    from_wave: Mapped[int] = mapped_column(Integer)
    to_wave: Mapped[int] = mapped_column(Integer)
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ValidationRow(Base):
    """One result of the validators run on a release's artifact when the release was created;
    the gate of ``rollout start`` reads them."""

    __tablename__ = "validations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"), index=True)
    validator: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(500), nullable=True)
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    at: Mapped[datetime] = mapped_column(Stamp)


class AdmissionRow(Base):
    """A device admitted to a wave of a rollout: written before the device is told the version,
    so caps hold across restarts."""

    __tablename__ = "admissions"
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wave: Mapped[int] = mapped_column(Integer)
    stratum: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(Stamp)

    __table_args__ = (Index("ix_admissions_release_wave_stratum", "release_id", "wave", "stratum"),)


class PlaceboRow(Base):
    """A control device asked to come back within the trial timeout, at the same point of the
    wave as an exposed device of its stratum: the comparison for silence after activation."""

    __tablename__ = "placebos"
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wave: Mapped[int] = mapped_column(Integer)
    stratum: Mapped[str] = mapped_column(String(200))
    asked_at: Mapped[datetime] = mapped_column(Stamp)
    seen_at: Mapped[datetime | None] = mapped_column(Stamp, nullable=True)


class WatchedRow(Base):
    """When a rollout first heard from a device: its first check-in at or after the start. The
    judges count a device at risk from then on (a machine asleep or offline at the start joins
    the comparison when it is heard from, like an exposed one, which is exposed at a check-in)."""

    __tablename__ = "watched"
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(Stamp)


class EventRow(Base):
    """An event a device reported. ``(device_id, event_id)`` is unique, so a retried report is
    stored once."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(40))
    event_id: Mapped[str] = mapped_column(String(64))
    release_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    content_type: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    stratum: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(Stamp)
    received_at: Mapped[datetime] = mapped_column(Stamp)
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        UniqueConstraint("device_id", "event_id", name="uq_events_device_event"),
        Index("ix_events_release_kind", "release_id", "kind"),
        Index("ix_events_release_device_kind", "release_id", "device_id", "kind"),
    )


class ApprovalRow(Base):
    """One person's approval of a release as it was (``fingerprint``: artifact, plan and
    validation results); a change of any of them leaves the approval standing for nothing."""

    __tablename__ = "approvals"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    release_id: Mapped[str] = mapped_column(ForeignKey("releases.id"), index=True)
    approver: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(Stamp)
    reason: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    emergency: Mapped[bool] = mapped_column(Boolean, default=False)


class FreezeRow(Base):
    """A freeze window: no rollout of the team's content types (all, when ``team`` is None)
    starts inside it, except through the emergency path. A paused or halted rollout may still be
    resumed, rolled back or halted: a freeze stops new changes, not their repair."""

    __tablename__ = "freeze_windows"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    team: Mapped[str | None] = mapped_column(String(128), nullable=True)
    starts_at: Mapped[datetime] = mapped_column(Stamp)
    ends_at: Mapped[datetime] = mapped_column(Stamp)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Stamp)
    created_by: Mapped[str] = mapped_column(String(200))


class AuditRow(Base):
    """One entry of the audit log. Rows are only ever inserted, by :func:`append`."""

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                     autoincrement=False)
    at: Mapped[datetime] = mapped_column(Stamp)
    actor: Mapped[str] = mapped_column(String(200), index=True)
    role: Mapped[str | None] = mapped_column(String(32), nullable=True)
    source: Mapped[str | None] = mapped_column(String(200), nullable=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(500), nullable=True, index=True)
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class PolicyRow(Base):
    """A channel policy of a tenant (``device_group`` empty) or of a group of its devices (a
    device tag), for one content category."""

    __tablename__ = "channel_policies"
    tenant: Mapped[str] = mapped_column(String(200), primary_key=True)
    device_group: Mapped[str] = mapped_column(String(128), primary_key=True)
    category: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    delay_hours: Mapped[int | None] = mapped_column(Integer, nullable=True)
    content_type: Mapped[str | None] = mapped_column(String(128), nullable=True)
    version: Mapped[str | None] = mapped_column(String(128), nullable=True)
    windows: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    revision: Mapped[int] = mapped_column(Integer)
    changed_at: Mapped[datetime] = mapped_column(Stamp)
    changed_by: Mapped[str] = mapped_column(String(200))
    cleared_at: Mapped[datetime | None] = mapped_column(Stamp, nullable=True)


class WebhookRow(Base):
    """An alert subscription: where to send (``url``), how (``format``: json or slack), which
    events (``events``), and the secret every delivery is signed with (HMAC-SHA256; kept in clear
    because signing needs it, shown once when created and never listed)."""

    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(String(2000))
    format: Mapped[str] = mapped_column(String(16))
    events: Mapped[list[str]] = mapped_column(JSON)
    secret: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(Stamp)
    created_by: Mapped[str] = mapped_column(String(200))


class WebhookDeliveryRow(Base):
    """One event for one subscription: the durable outbox. Inserted in the transaction of the
    change it announces; ``status`` pending -> delivered | failed. While pending,
    ``next_attempt_at`` is when it is due (or, while a node sends it, when that node's claim
    lapses); ``attempt_log`` keeps every attempt's time, status code and error."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    webhook_id: Mapped[str] = mapped_column(ForeignKey("webhooks.id"), index=True)
    event: Mapped[str] = mapped_column(String(32))
    release_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(Stamp)
    next_attempt_at: Mapped[datetime | None] = mapped_column(Stamp, nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(Stamp, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(Stamp, nullable=True)
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)

    __table_args__ = (Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),)

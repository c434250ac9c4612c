"""Content types, artifacts, releases and rollout transitions.

Functions take a session (the caller owns the transaction) and return rows or values; the
server's routes map ``NotFound`` to 404 and ``Conflict`` to 409. Rollout transitions are the
only way the phase columns change: :func:`apply_intent` runs the rule from
:mod:`ringfence.core.rollout` and writes the new state with a compare-and-set on ``revision``
plus one history row, in the caller's transaction (and the alerts it calls for: a halt, a
rollback, a completion, a release waiting for approvals; see :mod:`ringfence.store.alerts`).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, object_session

from ringfence.core.assignment import Target
from ringfence.core.clock import utc
from ringfence.core.errors import Conflict, InvalidInput, NotFound
from ringfence.core.models import Category, check_content_type_name, check_sha256, check_version
from ringfence.core.plan import Plan, parse_plan
from ringfence.core.rollout import (
    ACTIVE_PHASES,
    Intent,
    Phase,
    RolloutState,
    Transition,
    TransitionContext,
    transition,
)
from ringfence.store import alerts, audit
from ringfence.store.schema import ArtifactRow, ContentTypeRow, HistoryRow, ReleaseRow
from ringfence.store.validations import check_definition, check_unvalidated


def create_content_type(s: Session, name: str, category: Category, *, actor: str, now: datetime,
                        definition: str | None = None, definition_dir: str | None = None,
                        unvalidated_reason: str | None = None, team: str | None = None) -> ContentTypeRow:
    """Create a content type with its content-type definition (checked first: a bad one raises
    ``DefinitionError`` naming field and line; see :mod:`ringfence.store.validations`), or
    without one and with the reason it is registered without validation."""
    check_content_type_name(name)
    if definition is not None:
        if unvalidated_reason is not None:
            raise InvalidInput("a content type with a definition is validated: drop unvalidated_reason",
                               field="unvalidated_reason", value=unvalidated_reason)
        check_definition(name, category, definition, definition_dir)
    elif definition_dir is not None:
        raise InvalidInput("definition_dir without a definition", field="definition_dir", value=definition_dir)
    else:
        unvalidated_reason = check_unvalidated(name, category, unvalidated_reason)
    if s.get(ContentTypeRow, name) is not None:
        raise Conflict(f"content type {name!r} already exists", name=name)
    row = ContentTypeRow(name=name, category=category.value, created_at=now, created_by=actor,
                         definition=definition, definition_dir=definition_dir if definition is not None else None,
                         unvalidated_reason=unvalidated_reason, team=team)
    s.add(row)
    try:
        s.flush()
    except IntegrityError:
        raise Conflict(f"content type {name!r} was created concurrently", name=name) from None
    return row


def define_content_type(s: Session, name: str, *, definition: str, definition_dir: str) -> ContentTypeRow:
    """Give a content type a (new) definition. Releases created before keep the results they
    have; one created without a definition has none and must be validated again
    (:func:`ringfence.store.validations.replace`) before it may start."""
    row = s.execute(select(ContentTypeRow).where(ContentTypeRow.name == name).with_for_update()).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no content type named {name!r}", name=name)
    check_definition(name, Category(row.category), definition, definition_dir)
    row.definition, row.definition_dir, row.unvalidated_reason = definition, definition_dir, None
    s.flush()
    return row


def get_content_type(s: Session, name: str) -> ContentTypeRow:
    row = s.get(ContentTypeRow, name)
    if row is None:
        raise NotFound(f"no content type named {name!r}", name=name)
    return row


def list_content_types(s: Session) -> list[ContentTypeRow]:
    return list(s.scalars(select(ContentTypeRow).order_by(ContentTypeRow.name)))


def create_artifact(
    s: Session, *, content_type: str, version: str, sha256: str, size: int, actor: str, now: datetime
) -> ArtifactRow:
    check_sha256(sha256)
    ensure_new_artifact(s, content_type, version)
    row = ArtifactRow(content_type=content_type, version=version, sha256=sha256, size=size, created_at=now,
                      created_by=actor)
    s.add(row)
    try:
        s.flush()
    except IntegrityError:
        raise Conflict(f"{content_type} {version} was pushed concurrently", content_type=content_type,
                       version=version) from None
    return row


def ensure_new_artifact(s: Session, content_type: str, version: str) -> None:
    """Raise ``NotFound`` for an unknown content type and ``Conflict`` for a version that exists
    (artifacts are immutable)."""
    get_content_type(s, content_type)
    check_version(version)
    existing = find_artifact(s, content_type, version)
    if existing is not None:
        raise Conflict(
            f"{content_type} {version} already exists (sha256 {existing.sha256}); artifacts are immutable, "
            "push a new version", content_type=content_type, version=version)


def find_artifact(s: Session, content_type: str, version: str) -> ArtifactRow | None:
    return s.scalar(select(ArtifactRow).where(ArtifactRow.content_type == content_type,
                                              ArtifactRow.version == version))


def list_artifacts(s: Session, content_type: str | None = None) -> list[ArtifactRow]:
    query = select(ArtifactRow).order_by(ArtifactRow.created_at.desc(), ArtifactRow.id.desc())
    if content_type:
        query = query.where(ArtifactRow.content_type == content_type)
    return list(s.scalars(query))


def artifact_dict(row: ArtifactRow) -> dict[str, Any]:
    return {"content_type": row.content_type, "version": row.version, "sha256": row.sha256, "size": row.size,
            "created_at": utc(row.created_at).isoformat(), "created_by": row.created_by}


def create_release(
    s: Session, *, content_type: str, version: str, plan_source: str, actor: str, now: datetime,
    plan_origin: str = "<plan>", approvals_required: int = 0,
) -> ReleaseRow:
    """Create a release in ``draft`` (its history starts with the creation) that needs
    ``approvals_required`` approvals to start. The caller then runs the engine, which prepares
    it once nothing is pending."""
    plan = parse_plan(plan_source, plan_origin, _category(s, content_type))
    artifact = find_artifact(s, content_type, version)
    if artifact is None:
        get_content_type(s, content_type)
        raise NotFound(f"no artifact {content_type} {version}; push it first", content_type=content_type,
                       version=version)
    release_id = "rel-" + uuid.uuid4().hex[:12]
    row = ReleaseRow(
        id=release_id, content_type=content_type, artifact_id=artifact.id, version=version,
        plan_name=plan.name, plan_source=plan_source, salt=secrets.token_hex(16), created_at=now,
        created_by=actor, phase=Phase.DRAFT.value, wave=0, phase_changed_at=now, revision=0,
        approvals_required=approvals_required,
    )
    s.add(row)
    s.flush()
    s.add(HistoryRow(release_id=release_id, at=now, intent="create", from_phase=None, to_phase=Phase.DRAFT.value,
                     from_wave=0, to_wave=0, actor=actor,
                     reason=f"release of {content_type} {version} with plan {plan.name!r} "
                            f"({len(plan.waves)} waves)", details={}))
    s.flush()
    return row


def get_release(s: Session, release_id: str) -> ReleaseRow:
    row = s.get(ReleaseRow, release_id)
    if row is None:
        raise NotFound(f"no release {release_id!r}", release=release_id)
    return row


def list_releases(s: Session, *, content_type: str | None = None, phase: str | None = None) -> list[ReleaseRow]:
    query = select(ReleaseRow).order_by(ReleaseRow.created_at.desc(), ReleaseRow.id)
    if content_type:
        query = query.where(ReleaseRow.content_type == content_type)
    if phase:
        query = query.where(ReleaseRow.phase == phase)
    return list(s.scalars(query))


def active_releases(s: Session) -> list[ReleaseRow]:
    phases = [p.value for p in ACTIVE_PHASES | {Phase.DRAFT, Phase.READY}]
    return list(s.scalars(select(ReleaseRow).where(ReleaseRow.phase.in_(phases)).order_by(ReleaseRow.created_at)))


def release_plan(row: ReleaseRow) -> Plan:
    """The release's plan, its health defaults those of its content type's category."""
    s = object_session(row)
    category = _category(s, row.content_type) if s is not None else None
    return parse_plan(row.plan_source, f"release {row.id} plan", category)


def _category(s: Session, content_type: str) -> Category | None:
    row = s.get(ContentTypeRow, content_type)  # the identity map answers repeats without a query
    return Category(row.category) if row is not None else None


def rollout_state(row: ReleaseRow) -> RolloutState:
    return RolloutState(
        phase=Phase(row.phase), wave=row.wave, wave_count=len(release_plan(row).waves),
        wave_started_at=utc(row.wave_started_at) if row.wave_started_at else None,
        phase_changed_at=utc(row.phase_changed_at) if row.phase_changed_at else None,
    )


def _active_sibling(s: Session, row: ReleaseRow) -> str | None:
    return s.scalar(select(ReleaseRow.id).where(
        ReleaseRow.content_type == row.content_type, ReleaseRow.id != row.id,
        ReleaseRow.phase.in_([p.value for p in ACTIVE_PHASES])).limit(1))


def apply_intent(
    s: Session, release_id: str, intent: Intent, *, actor: str, reason: str, now: datetime,
    details: Mapping[str, Any] | None = None, pending: tuple[str, ...] = (),
    expected_revision: int | None = None, role: str | None = None, source: str | None = None,
) -> Transition:
    """Run ``intent`` through its rule and persist it. Raises ``TransitionRejected`` when the
    rule refuses and ``Conflict`` when another transition of the same rollout won the race
    (or, with ``expected_revision``, when the rollout changed since the caller looked)."""
    row = get_release(s, release_id)
    revision = row.revision
    if expected_revision is not None and expected_revision != revision:
        raise Conflict(f"release {release_id} changed since revision {expected_revision} (now {revision})",
                       release=release_id)
    if intent in (Intent.START, Intent.RESUME, Intent.ROLLBACK):
        # Serialise starts per content type: lock the content type row (PostgreSQL; SQLite
        # transactions are already serial).
        s.execute(select(ContentTypeRow).where(ContentTypeRow.name == row.content_type).with_for_update())
    ctx = TransitionContext(active_sibling=_active_sibling(s, row), pending=pending)
    new, entry = transition(rollout_state(row), intent, actor=actor, reason=reason, now=now, ctx=ctx,
                            details=details)
    result = s.execute(
        update(ReleaseRow)
        .where(ReleaseRow.id == release_id, ReleaseRow.revision == revision)
        .values(phase=new.phase.value, wave=new.wave, wave_started_at=new.wave_started_at,
                phase_changed_at=new.phase_changed_at, revision=revision + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"release {release_id} was changed concurrently; look again and retry",
                       release=release_id)
    s.add(HistoryRow(
        release_id=release_id, at=now, intent=intent.value, from_phase=entry.from_phase.value,
        to_phase=entry.to_phase.value, from_wave=entry.from_wave, to_wave=entry.to_wave, actor=actor,
        reason=entry.reason, details=dict(entry.details),
    ))
    s.flush()
    alerts.on_transition(s, row, entry, now)  # the alert commits with the change, or neither does
    audit.append(s, actor=actor, role=role, source=source or ("system" if role is None else None),
                 action=f"rollout.{intent.value}", target=release_id, reason=entry.reason,
                 details={"from": entry.from_phase.value, "to": entry.to_phase.value, "from_wave": entry.from_wave,
                          "to_wave": entry.to_wave, **dict(entry.details)}, now=now)
    s.expire(row)
    return entry


def change_plan(s: Session, release_id: str, plan_source: str, *, plan_origin: str, actor: str,
                now: datetime) -> ReleaseRow:
    """Give a release that has not started a new plan (approvals of the old one go stale)."""
    row = get_release(s, release_id)
    if row.phase not in (Phase.DRAFT.value, Phase.READY.value):
        raise Conflict(f"release {release_id} has started (phase {row.phase}); its plan is part of its record",
                       release=release_id, phase=row.phase)
    plan = parse_plan(plan_source, plan_origin, _category(s, row.content_type))
    old = row.plan_name
    bump_unstarted(s, row)
    s.execute(update(ReleaseRow).where(ReleaseRow.id == release_id)
              .values(plan_source=plan_source, plan_name=plan.name).execution_options(synchronize_session=False))
    s.expire(row)
    note(s, release_id, "plan", actor=actor, now=now,
         reason=f"plan changed from {old!r} to {plan.name!r} ({len(plan.waves)} waves); earlier approvals "
                "no longer count")
    return row


def bump_unstarted(s: Session, row: ReleaseRow) -> None:
    """Claim a release that has not started for a change of what it is (plan, validation): its
    revision moves on only if nobody moved it since it was read and it is still unstarted, so a
    start racing the change fails its own revision check instead of starting what nobody approved."""
    result = s.execute(
        update(ReleaseRow)
        .where(ReleaseRow.id == row.id, ReleaseRow.revision == row.revision,
               ReleaseRow.phase.in_([Phase.DRAFT.value, Phase.READY.value]))
        .values(revision=row.revision + 1).execution_options(synchronize_session=False))
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"release {row.id} changed or started meanwhile; look again and retry", release=row.id)


def note(s: Session, release_id: str, what: str, *, actor: str, now: datetime, reason: str,
         details: Mapping[str, Any] | None = None) -> None:
    """A history entry that is not a phase change (``validate``): from and to the current phase."""
    row = get_release(s, release_id)
    s.add(HistoryRow(release_id=release_id, at=now, intent=what, from_phase=row.phase, to_phase=row.phase,
                     from_wave=row.wave, to_wave=row.wave, actor=actor, reason=reason, details=dict(details or {})))
    s.flush()


def history(s: Session, release_id: str) -> list[HistoryRow]:
    return list(s.scalars(select(HistoryRow).where(HistoryRow.release_id == release_id)
                          .order_by(HistoryRow.id)))


def baseline_target(s: Session, content_type: str) -> Target | None:
    """The version every device of ``content_type`` should run outside an active rollout: the
    artifact of the most recently completed release."""
    row = s.execute(
        select(ReleaseRow, ArtifactRow)
        .join(ArtifactRow, ArtifactRow.id == ReleaseRow.artifact_id)
        .where(ReleaseRow.content_type == content_type, ReleaseRow.phase == Phase.COMPLETED.value)
        .order_by(ReleaseRow.phase_changed_at.desc(), ReleaseRow.id.desc()).limit(1)
    ).first()
    if row is None:
        return None
    release, artifact = row
    return Target(content_type, artifact.version, artifact.sha256, artifact.size, release.id)


def release_target(s: Session, row: ReleaseRow) -> Target:
    artifact = s.get(ArtifactRow, row.artifact_id)
    assert artifact is not None  # foreign key
    return Target(row.content_type, artifact.version, artifact.sha256, artifact.size, row.id)


def content_type_names(s: Session) -> list[str]:
    return list(s.scalars(select(ContentTypeRow.name)))


def count_releases(s: Session) -> int:
    return s.scalar(select(func.count()).select_from(ReleaseRow)) or 0

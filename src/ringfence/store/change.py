"""Change management: approvals of releases and freeze windows — the data of the start gate's
second half (:mod:`ringfence.store.validations` is the first).

* A release needs ``required`` approvals (per category, :data:`DEFAULT_APPROVALS`) from people
  other than its author. An approval is of the release *as it was*: its fingerprint covers the
  artifact, the plan and the validation results, so a new plan or a new validation run leaves
  earlier approvals ``stale`` — listed, but counting for nothing.
* A freeze window (global, or one team's) refuses starts and resumes inside it.
* The emergency path (a failed validation overridden, a start inside a freeze) needs a reason and
  an *emergency* approval by somebody who is neither the author nor the person starting.

Functions take a session (the caller owns the transaction) and return rows or values.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ringfence.core.clock import utc
from ringfence.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from ringfence.core.models import Category
from ringfence.core.rollout import Phase
from ringfence.store.schema import (
    ApprovalRow,
    ArtifactRow,
    FreezeRow,
    HistoryRow,
    ReleaseRow,
    TeamRow,
    ValidationRow,
)

#: Approvals a release of each category needs before it starts (people other than its author).
DEFAULT_APPROVALS: Mapping[Category, int] = {
    Category.RAPID_RESPONSE: 1, Category.SYSTEM_CRITICAL: 1, Category.CONFIGURATION: 1, Category.SOFTWARE: 2,
}
_OPEN = (Phase.DRAFT.value, Phase.READY.value)


class SelfApproval(Forbidden):
    """The author of a release approving it."""


def fingerprint(s: Session, release: ReleaseRow) -> str:
    """What an approval approves: the artifact's hash, the plan's text and every validation
    result's outcome."""
    artifact = s.get(ArtifactRow, release.artifact_id)
    results = sorted((r.validator, r.target or "", r.status) for r in
                     s.scalars(select(ValidationRow).where(ValidationRow.release_id == release.id)))
    body = json.dumps([artifact.sha256 if artifact else "", release.plan_source, results], separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def approve(s: Session, release: ReleaseRow, *, approver: str, reason: str, emergency: bool,
            now: datetime) -> ApprovalRow:
    """Record ``approver``'s approval of the release as it is now. Refuses the release's author
    (:class:`SelfApproval`), a release whose rollout has started, and a second approval of the
    same kind by the same person of the same release."""
    if release.phase not in _OPEN:
        raise Conflict(f"release {release.id} has started (phase {release.phase}); approvals are for releases "
                       "that have not", release=release.id, phase=release.phase)
    if approver in authors(s, release):
        raise SelfApproval(f"{approver} wrote release {release.id} (created it, pushed its artifact or changed its "
                           "plan) and may not approve it; another person must", release=release.id, approver=approver)
    if emergency and not reason.strip():
        raise InvalidInput("an emergency approval needs a reason", field="reason", value=reason)
    current = fingerprint(s, release)
    if any(a.approver == approver and a.emergency == emergency and a.fingerprint == current
           for a in approvals(s, release.id)):
        raise Conflict(f"{approver} has already approved release {release.id} as it is", release=release.id,
                       approver=approver)
    row = ApprovalRow(release_id=release.id, approver=approver, at=now, reason=reason.strip(), fingerprint=current,
                      emergency=emergency)
    s.add(row)
    s.flush()
    return row


def authors(s: Session, release: ReleaseRow) -> set[str]:
    """Who wrote what an approval approves: the release's creator, its artifact's pusher and
    everyone who changed its plan. None of them may approve it."""
    artifact = s.get(ArtifactRow, release.artifact_id)
    planners = s.scalars(select(HistoryRow.actor).where(HistoryRow.release_id == release.id,
                                                        HistoryRow.intent == "plan"))
    return {release.created_by, *([artifact.created_by] if artifact is not None else []), *planners}


def approvals(s: Session, release_id: str) -> list[ApprovalRow]:
    return list(s.scalars(select(ApprovalRow).where(ApprovalRow.release_id == release_id).order_by(ApprovalRow.id)))


@dataclass(frozen=True, slots=True)
class Standing:
    """A release's approvals sorted by whether they still stand."""

    required: int
    valid: tuple[ApprovalRow, ...]  # ordinary approvals of the release as it is
    emergency: tuple[ApprovalRow, ...]  # emergency approvals of the release as it is
    stale: tuple[ApprovalRow, ...]  # approvals of the release as it was

    def problems(self) -> list[str]:
        """Why the ordinary path is closed (empty when enough people approved)."""
        people = {a.approver for a in self.valid}
        if len(people) >= self.required:
            return []
        stale = f"; {len(self.stale)} earlier approval(s) are of the release before it changed" if self.stale else ""
        return [f"approvals: {len(people)} of {self.required} required"
                + (f" (by {', '.join(sorted(people))})" if people else "") + stale]

    def emergency_by(self, starter: str) -> ApprovalRow | None:
        """An emergency approval the person starting may use: not their own."""
        return next((a for a in self.emergency if a.approver != starter), None)


def standing(s: Session, release: ReleaseRow, required: int) -> Standing:
    current = fingerprint(s, release)
    rows = approvals(s, release.id)
    fresh = [a for a in rows if a.fingerprint == current]
    return Standing(required, tuple(a for a in fresh if not a.emergency), tuple(a for a in fresh if a.emergency),
                    tuple(a for a in rows if a.fingerprint != current))


def approval_json(a: ApprovalRow) -> dict[str, Any]:
    return {"approver": a.approver, "at": utc(a.at).isoformat(), "reason": a.reason, "emergency": a.emergency}


def standing_json(st: Standing) -> dict[str, Any]:
    return {"required": st.required, "ok": not st.problems(), "valid": [approval_json(a) for a in st.valid],
            "emergency": [approval_json(a) for a in st.emergency], "stale": [approval_json(a) for a in st.stale]}


# -- freeze windows ----------------------------------------------------------------------------
def create_freeze(s: Session, *, team: str | None, starts_at: datetime, ends_at: datetime, reason: str, actor: str,
                  now: datetime) -> FreezeRow:
    if ends_at <= starts_at:
        raise InvalidInput("a freeze window ends after it starts", field="ends_at", value=ends_at.isoformat())
    if ends_at <= now:
        raise InvalidInput("the freeze window is over already", field="ends_at", value=ends_at.isoformat())
    if not reason.strip():
        raise InvalidInput("a freeze window needs a reason", field="reason", value=reason)
    if team is not None and s.get(TeamRow, team) is None:
        raise NotFound(f"no team named {team!r}", team=team)
    row = FreezeRow(id=uuid.uuid4().hex[:16], team=team, starts_at=starts_at, ends_at=ends_at,
                    reason=reason.strip(), created_at=now, created_by=actor)
    s.add(row)
    s.flush()
    return row


def freezes(s: Session, now: datetime, *, include_past: bool = False) -> list[FreezeRow]:
    query = select(FreezeRow).order_by(FreezeRow.starts_at, FreezeRow.id)
    if not include_past:
        query = query.where(FreezeRow.ends_at > now)
    return list(s.scalars(query))


def active_freezes(s: Session, team: str | None, now: datetime) -> list[FreezeRow]:
    """Freeze windows covering ``now`` for a content type owned by ``team``: global ones and
    the team's own."""
    scope = FreezeRow.team.is_(None) if team is None else or_(FreezeRow.team.is_(None), FreezeRow.team == team)
    return list(s.scalars(select(FreezeRow).where(FreezeRow.starts_at <= now, FreezeRow.ends_at > now, scope)
                          .order_by(FreezeRow.starts_at)))


def delete_freeze(s: Session, freeze_id: str) -> FreezeRow:
    row = s.get(FreezeRow, freeze_id)
    if row is None:
        raise NotFound(f"no freeze window with id {freeze_id!r}", id=freeze_id)
    s.delete(row)
    s.flush()
    return row


def freeze_json(f: FreezeRow) -> dict[str, Any]:
    return {"id": f.id, "team": f.team, "starts_at": utc(f.starts_at).isoformat(),
            "ends_at": utc(f.ends_at).isoformat(), "reason": f.reason, "created_by": f.created_by}


def freeze_problem(f: FreezeRow) -> str:
    scope = f"team {f.team}" if f.team else "everyone"
    return (f"freeze: {scope} until {utc(f.ends_at).isoformat()} ({f.reason})")

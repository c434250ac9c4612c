"""The start gate and ownership: who may act on a release, and whether its rollout may start.

A rollout starts only when, at once: its validation passed (:mod:`ringfence.store.validations`),
no freeze window covers its content type's team, and enough people other than its author
approved it as it is (:mod:`ringfence.store.change`). Everything that keeps the gate closed is
named in one 409.

The **emergency path** (``{"emergency": true, "reason": ...}``) opens a closed gate when another
person — neither the release's author nor whoever starts it — gave an emergency approval with a
reason. What it overrode, who approved and why go to the start's history entry.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from ringfence.core.errors import Conflict, Forbidden, InvalidInput
from ringfence.core.models import Category
from ringfence.server import auth
from ringfence.server.auth import Actor
from ringfence.server.runtime import Runtime
from ringfence.store import change, releases, validations
from ringfence.store.schema import ContentTypeRow, ReleaseRow


def owned_content_type(s: Session, who: Actor, name: str) -> ContentTypeRow:
    row = releases.get_content_type(s, name)
    auth.require_owner(who, row.team, f"content type {name}")
    return row


def owned_release(s: Session, who: Actor, release_id: str) -> ReleaseRow:
    row = releases.get_release(s, release_id)
    auth.require_owner(who, releases.get_content_type(s, row.content_type).team,
                       f"release {release_id} of {row.content_type}")
    return row


def required_approvals(rt: Runtime, content_type: ContentTypeRow) -> int:
    return rt.config.approvals.get(Category(content_type.category), 1)


def start_gate(s: Session, rt: Runtime, who: Actor, release_id: str, reason: str, *,
               emergency: bool) -> tuple[str, dict[str, Any] | None]:
    """The history reason and details to start with, or ``Conflict`` naming everything that
    keeps the gate closed (``details``: ``checks`` for validation, ``freezes``, ``approvals``)."""
    row = releases.get_release(s, release_id)
    content_type = releases.get_content_type(s, row.content_type)
    now = rt.clock.now()
    checks = validations.start_problems(s, release_id, row.content_type)
    frozen = [change.freeze_problem(f) for f in change.active_freezes(s, content_type.team, now)]
    standing = change.standing(s, row, row.approvals_required)  # fixed when the release was created
    unapproved = standing.problems()
    if not emergency:
        if checks or frozen or unapproved:
            parts = ([f"validation failed: {'; '.join(checks)}"] if checks else []) + frozen + unapproved
            raise Conflict("; ".join(parts), release=release_id, checks=checks, freezes=frozen,
                           approvals=unapproved)
        details: dict[str, Any] = {"approved_by": sorted({a.approver for a in standing.valid})}
        if content_type.definition is None:  # said once per rollout, where people read
            details["unvalidated_reason"] = content_type.unvalidated_reason
        return reason, details
    if not reason.strip():
        raise InvalidInput("an emergency start needs a reason", field="reason", value=reason)
    approval = standing.emergency_by(who.name)
    if approval is None:
        raise Forbidden(f"an emergency start of release {release_id} needs an emergency approval by somebody "
                        f"other than its authors ({', '.join(sorted(change.authors(s, row)))}) and the person "
                        f"starting it ({who.name}): "
                        f"ringfence release approve {release_id} --emergency --reason TEXT",
                        release=release_id)
    parts = ([f"emergency override of failed validation: {'; '.join(checks)}"] if checks else []) + \
        [f"emergency start during {f}" for f in frozen] + [f"emergency start without {p}" for p in unapproved]
    text = "; ".join(parts or ["emergency start"]) + f"; approved by {approval.approver} ({approval.reason}); " \
        f"reason: {reason}"
    return text, {"emergency": True, "reason": reason, "checks": checks, "freezes": frozen,
                  "approvals": unapproved, "approved_by": approval.approver, "approval_reason": approval.reason}

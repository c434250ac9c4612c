"""The audit API: read the audit log and verify its hash chain.

``GET /v1/audit`` returns entries in ``seq`` order (oldest first): the newest ``limit`` by
default, or the first ``limit`` after ``after`` to follow or export the log page by page; with
the head of the chain, the anchor a later verification can be held to.

``GET /v1/audit/verify`` walks the whole chain, one short transaction per chunk, and answers
``{"ok", "entries", "head": {"seq", "hash"}, "broken": null | {"seq", "problem"}}``. A broken
chain is a finding, not an error: the status is 200 either way. ``anchor_seq`` and
``anchor_hash`` (a head kept from before) also catch removed newest entries.

Reading the log is a power of unscoped admins (:func:`auditor`); the entries are written by the routes that
make the changes, in the same transaction, through :func:`ringfence.store.audit.append`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from ringfence.core.errors import Forbidden, InvalidInput
from ringfence.server import auth
from ringfence.server.auth import Actor
from ringfence.store import audit

router = APIRouter(prefix="/v1", tags=["audit"])

AUDIT = auth.ADMIN
"""Roles that may read and verify the audit log."""


def auditor(request: Request) -> Actor:
    """An unscoped caller with a role in :data:`AUDIT`: the log records every team's and
    tenant's changes, so a token scoped to one of them does not read it."""
    who = auth.actor(request, AUDIT)
    scope = (f"team {who.team!r}" if who.team is not None
             else f"tenant {who.tenant!r}" if who.tenant is not None else None)
    if scope is not None:
        raise Forbidden(f"the audit log holds every team's and tenant's changes; this token is scoped to {scope}",
                        role=who.role)
    return who


Auditor = Annotated[Actor, Depends(auditor)]


@router.get("/audit")
def list_entries(
    _: Auditor, request: Request,
    after: Annotated[int | None, Query(ge=0, description="entries after this seq, oldest first")] = None,
    before: Annotated[int | None, Query(ge=1, description="the newest entries before this seq")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    actor: Annotated[str | None, Query(max_length=200)] = None,
    action: Annotated[str | None, Query(max_length=64, description="exact, or a family: rollout.*")] = None,
    target: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    rt = auth.runtime(request)
    with rt.db.session() as s:
        rows = audit.entries(s, after_seq=after, before_seq=before, limit=limit, actor=actor, action=action,
                             target=target)
        head = audit.head(s)
        return {"entries": [audit.entry_dict(r) for r in rows], "head": head._asdict()}


@router.get("/audit/verify")
def verify(
    _: Auditor, request: Request,
    anchor_seq: Annotated[int | None, Query(ge=0, description="seq of a head kept from before")] = None,
    anchor_hash: Annotated[str | None, Query(description="hash of that head")] = None,
) -> dict[str, Any]:
    rt = auth.runtime(request)
    if (anchor_seq is None) != (anchor_hash is None):
        raise InvalidInput("give both anchor_seq and anchor_hash, or neither",
                           field="anchor_seq" if anchor_seq is None else "anchor_hash")
    anchor = audit.parse_head(anchor_seq, anchor_hash) if anchor_seq is not None and anchor_hash is not None else None
    result = audit.verify_chain(rt.db.session, anchor=anchor)
    broken = None if result.broken is None else {"seq": result.broken.seq, "problem": result.broken.problem}
    return {"ok": result.ok, "entries": result.entries, "head": result.head._asdict(), "broken": broken}

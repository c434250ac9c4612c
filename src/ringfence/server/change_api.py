"""Change management and identities over HTTP: approvals, plan changes, freeze windows, teams
and API tokens. Rules live in :mod:`ringfence.store.change` and :mod:`ringfence.server.gate`."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from ringfence.core.errors import Forbidden, InvalidInput, NotFound
from ringfence.server import auth
from ringfence.server.auth import Actor
from ringfence.server.gate import owned_release
from ringfence.server.schemas import ApprovalIn, FreezeIn, PlanIn, TeamIn, TokenIn
from ringfence.store import access, change, releases
from ringfence.store.telemetry import rollout_status

router = APIRouter(prefix="/v1")
Reader = Annotated[Actor, Depends(auth.reader)]
Approver = Annotated[Actor, Depends(auth.approver)]
Releaser = Annotated[Actor, Depends(auth.releaser)]
Admin = Annotated[Actor, Depends(auth.admin)]
TenantAdmin = Annotated[Actor, Depends(auth.tenant_admin)]


@router.post("/releases/{release_id}/approve")
def approve_release(release_id: str, body: ApprovalIn, who: Approver, request: Request) -> dict[str, Any]:
    """Approve a release as it is now (never one's own); ``emergency`` approves the emergency
    path for somebody else to take."""
    rt = auth.runtime(request)
    with rt.db.session() as s:
        row = owned_release(s, who, release_id)
        approval = change.approve(s, row, approver=who.name, reason=body.reason, emergency=body.emergency,
                                  now=rt.clock.now())
        auth.audit(s, request, who, "release.approve", target=release_id, reason=body.reason,
                   details={"emergency": body.emergency, "fingerprint": approval.fingerprint})
        return rollout_status(s, release_id, rt.clock.now(), rt.snapshot.wave_reach)


@router.put("/releases/{release_id}/plan")
def change_plan(release_id: str, body: PlanIn, who: Releaser, request: Request) -> dict[str, Any]:
    """Give a release that has not started a new plan; approvals of the old one stop counting."""
    rt = auth.runtime(request)
    with rt.db.session() as s:
        owned_release(s, who, release_id)
        row = releases.change_plan(s, release_id, body.plan, plan_origin=body.plan_origin, actor=who.name,
                                   now=rt.clock.now())
        auth.audit(s, request, who, "release.plan", target=release_id, details={"plan": row.plan_name})
        return rollout_status(s, release_id, rt.clock.now(), rt.snapshot.wave_reach)


# -- freeze windows ----------------------------------------------------------------------------
@router.post("/freezes", status_code=201)
def create_freeze(body: FreezeIn, who: Admin, request: Request) -> dict[str, Any]:
    """A freeze window for one team (its admins) or everyone (global admins)."""
    rt = auth.runtime(request)
    if body.team is None and who.team is not None:
        raise Forbidden(f"the token of {who.name} is for team {who.team!r}: it freezes that team only", team=who.team)
    auth.require_owner(who, body.team, f"team {body.team}" if body.team else "every team")
    now = rt.clock.now()
    starts = body.starts_at or now
    ends = body.ends_at or (starts + timedelta(hours=body.hours) if body.hours else None)
    if ends is None:
        raise InvalidInput("give ends_at or hours", field="ends_at")
    with rt.db.session() as s:
        row = change.create_freeze(s, team=body.team, starts_at=starts, ends_at=ends, reason=body.reason,
                                   actor=who.name, now=now)
        auth.audit(s, request, who, "freeze.create", target=row.id, reason=row.reason, details=change.freeze_json(row))
        return change.freeze_json(row)


@router.get("/freezes")
def list_freezes(_: Reader, request: Request, all: bool = False) -> dict[str, Any]:
    rt = auth.runtime(request)
    with rt.db.session() as s:
        return {"freezes": [change.freeze_json(f) for f in change.freezes(s, rt.clock.now(), include_past=all)]}


@router.delete("/freezes/{freeze_id}")
def delete_freeze(freeze_id: str, who: Admin, request: Request) -> dict[str, Any]:
    rt = auth.runtime(request)
    with rt.db.session() as s:
        rows = {f.id: f for f in change.freezes(s, rt.clock.now(), include_past=True)}
        if freeze_id in rows:
            auth.require_owner(who, rows[freeze_id].team, f"freeze window {freeze_id}")
        row = change.delete_freeze(s, freeze_id)
        auth.audit(s, request, who, "freeze.delete", target=freeze_id, details=change.freeze_json(row))
        return change.freeze_json(row)


# -- teams and tokens --------------------------------------------------------------------------
@router.post("/teams", status_code=201)
def create_team(body: TeamIn, who: Admin, request: Request) -> dict[str, Any]:
    rt = auth.runtime(request)
    if who.team is not None:
        raise Forbidden("only a global admin creates teams", team=who.team)
    with rt.db.session() as s:
        row = access.create_team(s, body.name, actor=who.name, now=rt.clock.now())
        auth.audit(s, request, who, "team.create", target=row.name)
        return {"name": row.name, "created_by": row.created_by}


@router.get("/teams")
def list_teams(_: Reader, request: Request) -> dict[str, Any]:
    rt = auth.runtime(request)
    with rt.db.session() as s:
        return {"teams": [{"name": t.name, "created_by": t.created_by} for t in access.list_teams(s)]}


@router.post("/tokens", status_code=201)
def create_token(body: TokenIn, who: TenantAdmin, request: Request) -> dict[str, Any]:
    """An API token for a person or service account, shown once. A team admin makes tokens of
    its team, a tenant admin of its tenant; neither makes a token wider than its own."""
    rt = auth.runtime(request)
    team, tenant = body.team, body.tenant
    if who.tenant is not None:
        tenant = tenant or who.tenant
        auth.require_tenant(who, tenant)
    if who.team is not None:
        team = team or who.team
        auth.require_owner(who, team, f"team {team}")
    now = rt.clock.now()
    expires = now + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    with rt.db.session() as s:
        name = body.name or f"{body.role}-{secrets.token_hex(3)}"
        token_id, secret = access.create_api_token(s, name=name, role=body.role, now=now, team=team,
                                                   tenant=tenant, created_by=who.name, expires_at=expires)
        row = next(r for r in access.list_api_tokens(s) if r.id == token_id)
        auth.audit(s, request, who, "api-token.create", target=token_id, details=access.token_json(row))
        return {**access.token_json(row), "token": secret}


@router.get("/tokens")
def list_tokens(who: TenantAdmin, request: Request,
                team: Annotated[str | None, Query(max_length=128)] = None) -> dict[str, Any]:
    rt = auth.runtime(request)
    with rt.db.session() as s:
        rows = [r for r in access.list_api_tokens(s, who.tenant)
                if (who.team is None or r.team == who.team) and (team is None or r.team == team)]
        return {"tokens": [access.token_json(r) for r in rows]}


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: str, who: TenantAdmin, request: Request) -> dict[str, Any]:
    rt = auth.runtime(request)
    with rt.db.session() as s:
        rows = {r.id: r for r in access.list_api_tokens(s, who.tenant)
                if who.team is None or r.team == who.team}
        if token_id not in rows:  # another tenant's or team's token is, for this caller, not there
            raise NotFound(f"no API token with id {token_id!r}", id=token_id)
        revoked = access.revoke_api_token(s, token_id, rt.clock.now())
        auth.audit(s, request, who, "api-token.revoke", target=token_id, details=access.token_json(revoked))
        return access.token_json(revoked)

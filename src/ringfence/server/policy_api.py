"""The policy API: customers' channel policies (rules in :mod:`ringfence.core.policy`).

* ``PUT /v1/policies`` sets (creates or replaces) the policy of a tenant, or of a group of its
  devices (a device tag), for one category.
* ``GET /v1/policies?tenant=&category=`` lists the policies in force.
* ``DELETE /v1/policies?tenant=&group=&category=`` clears one; its devices fall back to the
  tenant's policy, then to the default (``ga``, no delay).

Setting and clearing need role ``admin``: an unscoped admin for any tenant, a tenant's admin
(a token scoped to the tenant) for its own tenant only. Reading needs any role; a tenant's
token sees only its own tenant's policies. Every change is written to the audit log in its
transaction and followed by a reload of the check-in snapshot, so devices follow it at their
next check-in.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ringfence.core.errors import Forbidden
from ringfence.core.policy import DELAY_HOURS
from ringfence.server import auth
from ringfence.server.auth import Actor
from ringfence.store import audit, policies
from ringfence.store.schema import PolicyRow

router = APIRouter(prefix="/v1", tags=["policies"])
TenantReader = Annotated[Actor, Depends(auth.tenant_reader)]
TenantAdmin = Annotated[Actor, Depends(auth.tenant_admin)]


class PolicyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(max_length=200)
    group: str | None = Field(default=None, max_length=128,
                              description="a device tag: the policy covers the tenant's devices that carry it")
    category: str = Field(max_length=32, description="rapid-response, system-critical, software, configuration")
    channel: str = Field(max_length=16, description="early, ga, pause or pin")
    delay_hours: int | None = Field(default=None, description=f"ga only: one of {', '.join(map(str, DELAY_HOURS))}")
    content_type: str | None = Field(default=None, max_length=128,
                                     description="pin only: the content type of the pinned version (default: the "
                                                 "one content type of the category that has it)")
    version: str | None = Field(default=None, max_length=128, description="pin only: the version to run")
    windows: list[Any] | None = Field(default=None, description='software only: weekly UTC windows, e.g. '
                                                                '{"days": ["sat", "sun"], "start": "02:00", '
                                                                '"end": "06:00"}')
    reason: str = Field(default="", max_length=2000, description="why, for the audit log")


def _may_change(who: Actor, tenant: str) -> None:
    """An unscoped admin changes any tenant's policies; a tenant's admin only its own; a team
    token acts on its team's content, not on customers' choices."""
    if who.team is not None:
        raise Forbidden(f"the token of {who.name} is scoped to team {who.team!r}; customers' channel policies are "
                        "set by an unscoped admin or the tenant's own admin", team=who.team)
    auth.require_tenant(who, tenant)


def _source(request: Request) -> str | None:
    return request.client.host if request.client is not None else None


@router.put("/policies")
async def set_policy(body: PolicyIn, who: TenantAdmin, request: Request) -> dict[str, Any]:
    """Set the channel policy of a tenant (or one of its device groups) for one category."""
    rt = auth.runtime(request)
    _may_change(who, body.tenant.strip())

    def _set() -> dict[str, Any]:
        now = rt.clock.now()
        with rt.db.session() as s:
            row = policies.set_policy(s, tenant=body.tenant, group=body.group, category=body.category,
                                      channel=body.channel, delay_hours=body.delay_hours,
                                      content_type=body.content_type, version=body.version, windows=body.windows,
                                      actor=who.name, now=now)
            result = policies.policy_json(row)
            audit.append(s, actor=who.name, role=who.role, source=_source(request), action="policy.set",
                         target=_target(row), reason=body.reason, now=now, details=result)
            return result

    result = await asyncio.to_thread(_set)
    await rt.reload_views()
    return result


@router.get("/policies")
def list_policies(
    who: TenantReader, request: Request,
    tenant: Annotated[str | None, Query(max_length=200)] = None,
    category: Annotated[str | None, Query(max_length=32)] = None,
) -> dict[str, Any]:
    """The policies in force, by tenant, category and group. A tenant's token sees its own."""
    rt = auth.runtime(request)
    if who.tenant is not None:
        if tenant is not None:
            auth.require_tenant(who, tenant)
        tenant = who.tenant
    with rt.db.session() as s:
        return {"policies": [policies.policy_json(r) for r in policies.list_policies(s, tenant=tenant,
                                                                                      category=category)]}


@router.delete("/policies")
async def clear_policy(
    who: TenantAdmin, request: Request,
    tenant: Annotated[str, Query(max_length=200)],
    category: Annotated[str, Query(max_length=32)],
    group: Annotated[str | None, Query(max_length=128)] = None,
    reason: Annotated[str, Query(max_length=2000)] = "",
) -> dict[str, Any]:
    """Clear one policy; its devices fall back to the tenant's policy, then to the default."""
    rt = auth.runtime(request)
    _may_change(who, tenant.strip())

    def _clear() -> dict[str, Any]:
        now = rt.clock.now()
        with rt.db.session() as s:
            row = policies.clear_policy(s, tenant=tenant, group=group, category=category, actor=who.name, now=now)
            was = policies.policy_json(row)
            audit.append(s, actor=who.name, role=who.role, source=_source(request), action="policy.clear",
                         target=_target(row), reason=reason, now=now, details={"was": was})
            return {"cleared": was}

    result = await asyncio.to_thread(_clear)
    await rt.reload_views()
    return result


def _target(row: PolicyRow) -> str:
    return f"policy:{row.tenant}/{row.device_group or '*'}/{row.category}"

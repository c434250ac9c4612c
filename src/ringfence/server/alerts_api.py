"""The alerts API: webhook subscriptions and their deliveries.

Subscriptions are global: every team's halts and rollbacks go to them. So only an unscoped admin
creates, tests and removes them; anybody who may read the fleet's state (not a tenant's token)
lists them and their deliveries. A subscription's URL may itself be a credential (a Slack
incoming webhook's path is), so others see only its scheme and host; the secret is shown once,
when the subscription is created, and never again.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from ringfence.core.errors import Forbidden
from ringfence.server import auth
from ringfence.server.alerts import payload_of_test
from ringfence.server.auth import Actor
from ringfence.store import alerts

router = APIRouter(prefix="/v1", tags=["alerts"])
Reader = Annotated[Actor, Depends(auth.reader)]


def global_admin(request: Request) -> Actor:
    """An admin whose token is scoped to no team and no tenant: subscriptions hear every team's
    rollouts."""
    who = auth.actor(request, auth.ADMIN)
    if who.team is not None:
        raise Forbidden(f"webhooks announce every team's rollouts; the token of {who.name} is for team "
                        f"{who.team!r}", team=who.team)
    return who


GlobalAdmin = Annotated[Actor, Depends(global_admin)]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, description="http(s) URL the alerts are POSTed to")
    format: Literal["json", "slack"] = Field(default="json", description="generic JSON, or a Slack message")
    events: list[str] | None = Field(default=None, max_length=16,
                                     description=f"some of {', '.join(alerts.EVENTS)} (default: all)")
    secret: str | None = Field(default=None, max_length=200,
                               description="HMAC-SHA256 key for X-Ringfence-Signature (default: generated; "
                                           "shown once)")
    enabled: bool = True


def _shown(url: str, who: Actor) -> str:
    """The URL for ``who``: whole for a global admin, else scheme and host only."""
    if who.role == "admin" and who.team is None and who.tenant is None:
        return url
    parts = urlsplit(url)
    hidden = parts.path not in ("", "/") or parts.query
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{'/…' if hidden else ''}"


@router.post("/webhooks", status_code=201)
def create_webhook(body: WebhookIn, who: GlobalAdmin, request: Request) -> dict[str, Any]:
    """Subscribe a URL to alerts; the answer carries the signing secret, shown this once."""
    rt = auth.runtime(request)
    with rt.db.session() as s:
        row = alerts.create_webhook(s, url=body.url, format=body.format, events=body.events, secret=body.secret,
                                    enabled=body.enabled, actor=who.name, now=rt.clock.now())
        shown = alerts.webhook_json(row)
        auth.audit(s, request, who, "webhook.create", target=row.id,
                   details={"url": _shown(row.url, _NOBODY), "format": row.format, "events": row.events,
                            "enabled": row.enabled, "secret_given": body.secret is not None})
        return {**shown, "secret": row.secret}


_NOBODY = Actor(name="audit", role="viewer", token_id="")  # the audit log keeps the URL's host only


@router.get("/webhooks")
def list_webhooks(who: Reader, request: Request) -> dict[str, Any]:
    rt = auth.runtime(request)
    with rt.db.session() as s:
        counts = alerts.delivery_counts(s)
        return {"webhooks": [alerts.webhook_json(w, counts.get(w.id), url=_shown(w.url, who))
                             for w in alerts.list_webhooks(s)], "events": list(alerts.EVENTS)}


@router.delete("/webhooks/{webhook_id}")
def delete_webhook(webhook_id: str, who: GlobalAdmin, request: Request) -> dict[str, Any]:
    """Remove a subscription; its pending deliveries are dropped."""
    rt = auth.runtime(request)
    with rt.db.session() as s:
        counts = alerts.delivery_counts(s).get(webhook_id)
        row = alerts.delete_webhook(s, webhook_id)
        shown = alerts.webhook_json(row, counts)
        auth.audit(s, request, who, "webhook.delete", target=webhook_id,
                   details={"url": _shown(row.url, _NOBODY), "dropped_pending": shown["deliveries"]["pending"]})
        return shown


@router.get("/webhooks/{webhook_id}/deliveries")
def list_deliveries(
    webhook_id: str, _: Reader, request: Request,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """A subscription's deliveries, newest first: status, attempts, the last answer or error,
    and when the next attempt is due."""
    rt = auth.runtime(request)
    with rt.db.session() as s:
        rows = alerts.deliveries(s, webhook_id, limit=limit, status=status)
        return {"webhook": webhook_id, "deliveries": [alerts.delivery_json(r) for r in rows]}


@router.post("/webhooks/{webhook_id}/test", status_code=202)
async def test_webhook(webhook_id: str, request: Request) -> dict[str, Any]:
    """Send a ``test`` event to one subscription now (through the outbox, signed and retried
    like any alert); the answer is the pending delivery."""
    rt = auth.runtime(request)
    who = await asyncio.to_thread(global_admin, request)

    def _enqueue() -> dict[str, Any]:
        now = rt.clock.now()
        with rt.db.session() as s:
            alerts.get_webhook(s, webhook_id)
            [delivery_id] = alerts.enqueue(s, "test", payload_of_test(webhook_id, rt.config.base_url, now, who.name),
                                           now, webhook_id=webhook_id)
            auth.audit(s, request, who, "webhook.test", target=webhook_id, details={"delivery": delivery_id})
            return alerts.delivery_json(alerts.get_delivery(s, delivery_id))

    delivery = await asyncio.to_thread(_enqueue)
    rt.alerts.wake()
    return delivery

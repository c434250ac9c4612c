"""Alerts on the command line: webhook subscriptions, their deliveries and a test event."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from ringfence.cli.client import Client
from ringfence.cli.common import Json, Server, Token, out, print_json, reports

webhook_app = typer.Typer(help="Webhooks: alerts on halts, rollbacks, completions, failed validation and "
                               "releases waiting for approval.", no_args_is_help=True)


@webhook_app.command("add")
@reports
def webhook_add(
    url: str,
    format: Annotated[str, typer.Option("--format", help="json (generic) or slack")] = "json",
    event: Annotated[list[str] | None, typer.Option(
        "--event", help="halt, rollback, complete, validation_failed or approval_needed; repeat for several "
                        "(default: all)")] = None,
    secret: Annotated[str | None, typer.Option("--secret", help="the HMAC key receivers verify with "
                                                                "(default: generated and shown once)")] = None,
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    """Subscribe URL to alerts (global admins)."""
    with Client(server, token) as c:
        result = c.post("/v1/webhooks", {"url": url, "format": format, "events": event or None, "secret": secret})
    if json_out:
        print_json(result)
        return
    out.print(f"webhook {result['id']}: {result['format']} to {result['url']} on {', '.join(result['events'])}",
              markup=False, highlight=False)
    out.print("signing secret (shown once, keep it with the receiver):", highlight=False)
    out.print(result["secret"], markup=False, highlight=False)


@webhook_app.command("list")
@reports
def webhook_list(server: Server = None, token: Token = None, json_out: Json = False) -> None:
    with Client(server, token) as c:
        result = c.get("/v1/webhooks")
    if json_out:
        print_json(result)
        return
    table = Table("id", "url", "format", "events", "enabled", "pending", "delivered", "failed", "created by")
    for w in result["webhooks"]:
        d = w["deliveries"]
        table.add_row(w["id"], w["url"], w["format"], ", ".join(w["events"]), "yes" if w["enabled"] else "no",
                      str(d["pending"]), str(d["delivered"]), str(d["failed"]), w["created_by"])
    out.print(table)


@webhook_app.command("remove")
@reports
def webhook_remove(webhook_id: str, server: Server = None, token: Token = None, json_out: Json = False) -> None:
    """Remove a subscription; its pending deliveries are dropped."""
    with Client(server, token) as c:
        result = c.request("DELETE", f"/v1/webhooks/{webhook_id}")
    if json_out:
        print_json(result)
        return
    out.print(f"webhook {webhook_id} removed ({result['deliveries']['pending']} pending deliveries dropped)",
              highlight=False)


@webhook_app.command("deliveries")
@reports
def webhook_deliveries(
    webhook_id: str,
    status: Annotated[str | None, typer.Option("--status", help="pending, delivered or failed")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    """A subscription's deliveries, newest first."""
    with Client(server, token) as c:
        result = c.get(f"/v1/webhooks/{webhook_id}/deliveries", status=status, limit=limit)
    if json_out:
        print_json(result)
        return
    table = Table("id", "event", "release", "status", "attempts", "last answer", "next attempt", "created")
    for d in result["deliveries"]:
        table.add_row(d["id"], d["event"], d["release"] or "-", d["status"], str(d["attempts"]), _last(d),
                      d["next_attempt_at"] or "-", d["created_at"])
    out.print(table)


def _last(delivery: dict[str, Any]) -> str:
    if delivery["last_error"]:
        return str(delivery["last_error"])
    return str(delivery["last_status_code"]) if delivery["last_status_code"] is not None else "-"


@webhook_app.command("test")
@reports
def webhook_test(webhook_id: str, server: Server = None, token: Token = None, json_out: Json = False) -> None:
    """Send a test event (signed and retried like any alert)."""
    with Client(server, token) as c:
        result = c.post(f"/v1/webhooks/{webhook_id}/test")
    if json_out:
        print_json(result)
        return
    out.print(f"test delivery {result['id']} queued; `ringfence webhook deliveries {webhook_id}` shows how it went",
              markup=False, highlight=False)

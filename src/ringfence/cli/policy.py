"""``ringfence policy``: customers' channel policies — when content of a category reaches a
tenant or a group of its devices (rules in :mod:`ringfence.core.policy`)::

    ringfence policy set --tenant acme --category rapid-response --channel early
    ringfence policy set --tenant acme --category software --channel ga --delay-hours 24 \\
        --window "sat,sun 02:00-06:00"
    ringfence policy set --tenant acme --group lab --category rapid-response --channel pin --version 291.1
    ringfence policy list --tenant acme
    ringfence policy clear --tenant acme --group lab --category rapid-response

Errors print one line on stderr and exit with the codes of :mod:`ringfence.cli.client` (2 bad
value, naming the field; 3 not authorised; 4 no such policy; ...). ``--json`` prints the
server's JSON document on stdout.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from ringfence.cli.client import Client
from ringfence.cli.common import Json, Server, Token, out, print_json, reports
from ringfence.core.policy import parse_window

policy_app = typer.Typer(help="Channel policies: when content reaches a tenant or a device group.",
                         no_args_is_help=True)

Tenant = Annotated[str, typer.Option("--tenant", help="the tenant")]
Category = Annotated[str, typer.Option("--category", help="rapid-response, system-critical, software, configuration")]
Group = Annotated[str | None, typer.Option("--group", help="a device tag: only the tenant's devices carrying it")]

def _who(p: dict[str, Any]) -> str:
    return f"tenant {p['tenant']}" + (f", group {p['group']}" if p.get("group") else "")


def describe(p: dict[str, Any]) -> str:
    """A policy as one line: ``pause``, ``ga +24h``, ``pin sensor/x 291.1, windows sat,sun 02:00-06:00``."""
    what = str(p["channel"])
    if p.get("delay_hours"):
        what += f" +{p['delay_hours']}h"
    if p["channel"] == "pin":
        what += f" {p['content_type']} {p['version']}"
    if p.get("windows"):
        what += ", windows " + "; ".join(f"{','.join(w['days'])} {w['start']}-{w['end']}" for w in p["windows"])
    return what


@policy_app.command("set")
@reports
def set_command(
    tenant: Tenant,
    category: Category,
    channel: Annotated[str, typer.Option("--channel", help="early, ga, pause or pin")],
    delay_hours: Annotated[int | None, typer.Option("--delay-hours",
                                                    help="ga only: 1, 2, 4, 8, 12, 24, 48 or 72")] = None,
    version: Annotated[str | None, typer.Option("--version", help="pin only: the version to run")] = None,
    content_type: Annotated[str | None, typer.Option("--content-type",
                                                     help="pin only: its content type (default: the one of the "
                                                          "category that has the version)")] = None,
    group: Group = None,
    window: Annotated[list[str] | None, typer.Option("--window", help="software only, repeatable: a weekly UTC "
                                                                      "window like 'sat,sun 02:00-06:00'")] = None,
    reason: Annotated[str, typer.Option("--reason", help="why, for the audit log")] = "",
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    """Set the channel policy of a tenant (or one of its device groups) for a category."""
    windows = [parse_window(w, f"--window[{i}]").as_dict() for i, w in enumerate(window or [])]
    body: dict[str, Any] = {"tenant": tenant, "group": group, "category": category, "channel": channel,
                            "delay_hours": delay_hours, "version": version, "content_type": content_type,
                            "windows": windows or None, "reason": reason}
    with Client(server, token) as client:
        result = client.request("PUT", "/v1/policies", json={k: v for k, v in body.items() if v is not None})
    if json_out:
        print_json(result)
        return
    out.print(Text(f"{_who(result)}, {result['category']}: {describe(result)}"))


@policy_app.command("list")
@reports
def list_command(
    tenant: Annotated[str | None, typer.Option("--tenant", help="only this tenant's policies")] = None,
    category: Annotated[str | None, typer.Option("--category", help="only this category's policies")] = None,
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    """List the policies in force (a tenant's token sees its own tenant's)."""
    with Client(server, token) as client:
        result = client.get("/v1/policies", tenant=tenant, category=category)
    if json_out:
        print_json(result)
        return
    if not result["policies"]:
        out.print("no channel policies: every device follows the default (ga, no delay)")
        return
    table = Table("tenant", "group", "category", "policy", "changed (UTC)", "by")
    for p in result["policies"]:
        when = datetime.fromisoformat(p["changed_at"]).astimezone(UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(Text(p["tenant"]), Text(p["group"] or "*"), p["category"], Text(describe(p)), when,
                      Text(p["changed_by"]))  # Text: no markup from what people typed
    out.print(table)


@policy_app.command("clear")
@reports
def clear_command(
    tenant: Tenant, category: Category, group: Group = None,
    reason: Annotated[str, typer.Option("--reason", help="why, for the audit log")] = "",
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    """Clear a policy: its devices fall back to the tenant's policy, then to the default."""
    params = {k: v for k, v in {"tenant": tenant, "category": category, "group": group,
                                "reason": reason or None}.items() if v is not None}
    with Client(server, token) as client:
        result = client.request("DELETE", "/v1/policies", params=params)
    if json_out:
        print_json(result)
        return
    was = result["cleared"]
    out.print(Text(f"cleared {_who(was)}, {was['category']} (was {describe(was)})"))

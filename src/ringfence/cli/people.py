"""People and change management on the command line: API tokens, teams, approvals, plan
changes and freeze windows (the rules are the server's; see :mod:`ringfence.server.gate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ringfence.cli.client import Client
from ringfence.cli.common import Json, Server, Token, out, print_json, reports

token_app = typer.Typer(help="API tokens of people and service accounts.", no_args_is_help=True)
team_app = typer.Typer(help="Teams: they own content types.", no_args_is_help=True)
freeze_app = typer.Typer(help="Freeze windows: no rollout starts inside one.", no_args_is_help=True)


@token_app.command("create")
@reports
def token_create(
    role: Annotated[str, typer.Option("--role", help="viewer, operator, releaser, approver or admin")],
    name: Annotated[str | None, typer.Option("--name", help="the person or service account the token is for "
                                                           "(default: named after the role)")] = None,
    team: Annotated[str | None, typer.Option("--team", help="act on this team's content types only")] = None,
    tenant: Annotated[str | None, typer.Option("--tenant", help="see and manage this tenant only "
                                                                "(roles viewer and admin)")] = None,
    expires_in_days: Annotated[float | None, typer.Option("--expires-in-days", min=0.001)] = None,
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    """Create an API token (the secret is shown once)."""
    body = {"name": name, "role": role, "team": team, "tenant": tenant, "expires_in_days": expires_in_days}
    with Client(server, token) as c:
        result = c.post("/v1/tokens", body)
    if json_out:
        print_json(result)
        return
    scope = f"team {result['team']}" if result["team"] else f"tenant {result['tenant']}" if result["tenant"] else "all"
    out.print(f"token {result['id']} for {result['name']} ({result['role']}, {scope}); shown once, keep it safe:",
              highlight=False)
    out.print(result["token"], markup=False, highlight=False)


@token_app.command("list")
@reports
def token_list(server: Server = None, token: Token = None, json_out: Json = False) -> None:
    with Client(server, token) as c:
        result = c.get("/v1/tokens")
    if json_out:
        print_json(result)
        return
    table = Table("id", "name", "role", "team", "tenant", "created", "expires", "revoked")
    for t in result["tokens"]:
        table.add_row(t["id"], t["name"], t["role"], t["team"] or "-", t["tenant"] or "-", t["created_at"],
                      t["expires_at"] or "-", t["revoked_at"] or "-")
    out.print(table)


@token_app.command("revoke")
@reports
def token_revoke(token_id: str, server: Server = None, token: Token = None, json_out: Json = False) -> None:
    """Revoke an API token: it stops working at once."""
    with Client(server, token) as c:
        result = c.request("DELETE", f"/v1/tokens/{token_id}")
    print_json(result) if json_out else out.print(f"token {token_id} of {result['name']} revoked", highlight=False)


@team_app.command("create")
@reports
def team_create(name: str, server: Server = None, token: Token = None, json_out: Json = False) -> None:
    with Client(server, token) as c:
        result = c.post("/v1/teams", {"name": name})
    print_json(result) if json_out else out.print(f"team {result['name']} created", highlight=False)


@team_app.command("list")
@reports
def team_list(server: Server = None, token: Token = None, json_out: Json = False) -> None:
    with Client(server, token) as c:
        result = c.get("/v1/teams")
    if json_out:
        print_json(result)
        return
    for t in result["teams"]:
        out.print(t["name"], markup=False, highlight=False)


def release_approve(
    release_id: str,
    reason: Annotated[str, typer.Option("--reason", help="why (required with --emergency)")] = "",
    emergency: Annotated[bool, typer.Option("--emergency", help="approve the emergency path (past failed "
                                                                "validation or a freeze) for somebody else")] = False,
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    """Approve a release as it is now (never your own)."""
    with Client(server, token) as c:
        result = c.post(f"/v1/releases/{release_id}/approve", {"reason": reason, "emergency": emergency})
    if json_out:
        print_json(result)
        return
    approvals = result["approvals"]
    kind = "emergency approval" if emergency else "approval"
    out.print(f"{kind} recorded; {len(approvals['valid'])} of {approvals['required']} approvals stand",
              highlight=False)


def release_plan(
    release_id: str, plan: Annotated[Path, typer.Option("--plan", help="the new plan file (YAML)")],
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    """Give a release that has not started a new plan; earlier approvals stop counting."""
    from ringfence.core.plan import parse_plan

    text = plan.read_text(encoding="utf-8")
    parse_plan(text, str(plan))
    with Client(server, token) as c:
        result = c.request("PUT", f"/v1/releases/{release_id}/plan", json={"plan": text, "plan_origin": str(plan)})
    print_json(result) if json_out else out.print(f"release {release_id} now rolls out with plan {result['plan']}",
                                                  highlight=False)


@freeze_app.command("create")
@reports
def freeze_create(
    reason: Annotated[str, typer.Option("--reason")],
    hours: Annotated[float | None, typer.Option("--hours", min=0.001, help="length from --start (or now)")] = None,
    start: Annotated[str | None, typer.Option("--start", help="ISO time with zone; default now")] = None,
    end: Annotated[str | None, typer.Option("--end", help="ISO time with zone")] = None,
    team: Annotated[str | None, typer.Option("--team", help="freeze one team; default everyone")] = None,
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    """A freeze window: no rollout of the team's (or anybody's) content starts inside it, except
    through the emergency path."""
    body: dict[str, Any] = {"reason": reason, "hours": hours, "starts_at": start, "ends_at": end, "team": team}
    with Client(server, token) as c:
        result = c.post("/v1/freezes", body)
    print_json(result) if json_out else out.print(
        f"freeze {result['id']} for {result['team'] or 'everyone'}: {result['starts_at']} to {result['ends_at']}",
        highlight=False)


@freeze_app.command("list")
@reports
def freeze_list(
    all_: Annotated[bool, typer.Option("--all", help="include windows that are over")] = False,
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    with Client(server, token) as c:
        result = c.get("/v1/freezes", all=all_ or None)
    if json_out:
        print_json(result)
        return
    table = Table("id", "team", "starts", "ends", "reason", "by")
    for f in result["freezes"]:
        table.add_row(f["id"], f["team"] or "everyone", f["starts_at"], f["ends_at"], f["reason"], f["created_by"])
    out.print(table)


@freeze_app.command("delete")
@reports
def freeze_delete(freeze_id: str, server: Server = None, token: Token = None, json_out: Json = False) -> None:
    with Client(server, token) as c:
        result = c.request("DELETE", f"/v1/freezes/{freeze_id}")
    print_json(result) if json_out else out.print(f"freeze {freeze_id} deleted", highlight=False)

"""``ringfence``: the command line. Command names, options and JSON keys are a contract other
tools use; extend them, never rename them.

Every remote command reads ``--server`` / ``RINGFENCE_SERVER`` and ``--token`` /
``RINGFENCE_TOKEN``. Errors print one line on stderr and exit non-zero (codes in
:mod:`ringfence.cli.client`). ``--json`` prints one JSON document on stdout.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn
from rich.table import Table

from ringfence.cli.alerts import webhook_app
from ringfence.cli.audit import audit_app
from ringfence.cli.client import EXIT_INVALID, EXIT_UNAVAILABLE, Client
from ringfence.cli.common import DataDir, Json, Server, Token, err, out, reports
from ringfence.cli.common import fail as _fail
from ringfence.cli.common import print_json as _print_json
from ringfence.cli.demo import demo_command
from ringfence.cli.keys import keys_app
from ringfence.cli.people import freeze_app, release_approve, release_plan, team_app
from ringfence.cli.people import token_app as api_token_app
from ringfence.cli.policy import policy_app
from ringfence.cli.sim import sim_app
from ringfence.cli.validate import validate_command

app = typer.Typer(help="Ringfence: safe progressive delivery of updates to large fleets.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
plan_app = typer.Typer(help="Work with plan files.", no_args_is_help=True)
content_app = typer.Typer(help="Content types: named streams of updates.", no_args_is_help=True)
token_app = typer.Typer(help="Enrolment tokens that agents enroll with.", no_args_is_help=True)
artifact_app = typer.Typer(help="Immutable, content-addressed artifacts.", no_args_is_help=True)
release_app = typer.Typer(help="Releases: an artifact and the plan that rolls it out.", no_args_is_help=True)
rollout_app = typer.Typer(help="Drive and watch a release's rollout.", no_args_is_help=True)
app.add_typer(plan_app, name="plan")
app.add_typer(content_app, name="content-type")
app.add_typer(token_app, name="enroll-token")
app.add_typer(artifact_app, name="artifact")
app.add_typer(release_app, name="release")
app.add_typer(rollout_app, name="rollout")
agent_app = typer.Typer(help="The endpoint agent.", no_args_is_help=True)
app.add_typer(agent_app, name="agent")
app.add_typer(sim_app, name="sim")
app.command("validate")(validate_command)
app.command("demo")(demo_command)
app.add_typer(api_token_app, name="token")
app.add_typer(team_app, name="team")
app.add_typer(freeze_app, name="freeze")
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(webhook_app, name="webhook")
release_app.command("approve")(reports(release_approve))
release_app.command("plan")(reports(release_plan))

# -- local commands ---------------------------------------------------------------------------------
@app.command()
@reports
def init(
    data_dir: DataDir,
    keys: Annotated[bool, typer.Option("--keys/--no-keys", help="create TUF signing keys in DATA_DIR/keys "
                                                                 "(unless they exist)")] = True,
    json_out: Json = False,
) -> None:
    """Create the database (SQLite in DATA_DIR, or RINGFENCE_DATABASE_URL), an admin token and the
    TUF keys artifacts are signed with."""
    from ringfence.core.clock import SystemClock
    from ringfence.store.access import create_api_token
    from ringfence.store.db import Database, database_url, redact
    from ringfence.store.schema import ApiToken

    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "blobs").mkdir(exist_ok=True)
    db = Database(database_url(data_dir))
    try:
        db.migrate()
        with db.session() as s:
            if s.query(ApiToken).filter(ApiToken.role == "admin").first() is not None:
                raise _fail(f"{redact(db.url)} is already initialised (it has an admin token); the database was "
                            "migrated to the newest schema and nothing else changed", EXIT_INVALID)
            token_id, secret = create_api_token(s, name="admin", role="admin", now=SystemClock().now())
    finally:
        db.dispose()
    result: dict[str, Any] = {"data_dir": str(data_dir), "database": redact(db.url), "admin_token": secret,
                              "token_id": token_id}
    key_dir = data_dir / "keys"
    if keys and not key_dir.exists():
        from ringfence.trust import init_keys

        init_keys(key_dir)
    if (key_dir / "publish" / "1.root.json").is_file():
        result["trusted_root"] = str((key_dir / "publish" / "1.root.json").resolve())
    if json_out:
        _print_json(result)
        return
    out.print(f"Initialised {result['database']}")
    out.print("Admin token (shown once; keep it safe):")
    out.print(secret, markup=False, highlight=False)
    if "trusted_root" in result:
        out.print(f"Agents verify artifacts from the root {result['trusted_root']} (ship it with them). The root "
                  f"and targets keys in {key_dir}/root and {key_dir}/targets belong offline: move them off this "
                  "machine and keep only online/ and publish/ here.", highlight=False)


@app.command()
@reports
def server(
    data_dir: DataDir,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8470,
    log_format: Annotated[str, typer.Option("--log-format", help="text or json")] = "text",
    poll_interval: Annotated[float, typer.Option(help="seconds between agent check-ins")] = 60.0,
    approvals: Annotated[str, typer.Option(
        "--approvals", help="approvals a release needs per category, e.g. 'software=2,rapid-response=1' "
        "(categories left out keep their default: 1, software 2; 0 turns approvals off for a category)")] = "",
    trust_keys: Annotated[Path | None, typer.Option(
        "--trust-keys", help="key directory from `ringfence keys init` (its online/ and publish/ are read); "
        "default DATA_DIR/keys")] = None,
) -> None:
    """Run the control plane (API, agent endpoints, reconciler)."""
    import uvicorn

    from ringfence.logs import configure
    from ringfence.server.app import create_app
    from ringfence.server.config import ServerConfig
    from ringfence.store.db import Database, database_url, redact

    if log_format not in ("text", "json"):
        raise _fail(f"--log-format must be text or json, not {log_format!r}", EXIT_INVALID)
    if poll_interval <= 0:
        raise _fail("--poll-interval must be positive", EXIT_INVALID)
    url = database_url(data_dir)
    probe = Database(url)
    try:
        probe.check()
        if not probe.is_current():
            raise _fail(f"the database at {redact(url)} is not initialised or needs migrating; run "
                        f"`ringfence init --data-dir {data_dir}`", EXIT_UNAVAILABLE)
    finally:
        probe.dispose()
    log_config = configure(log_format)
    config = ServerConfig(data_dir=data_dir, database_url=url, host=host, port=port, poll_interval_s=poll_interval,
                          approvals=_approvals(approvals), trust_keys=trust_keys)
    uvicorn.run(create_app(config), host=host, port=port, log_config=log_config, access_log=False,
                timeout_graceful_shutdown=5)


def _approvals(text: str) -> dict[Any, int]:
    """``--approvals`` over the defaults; a bad entry names itself."""
    from ringfence.core.models import Category
    from ringfence.store.change import DEFAULT_APPROVALS

    counts: dict[Any, int] = dict(DEFAULT_APPROVALS)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        try:
            category = Category(name.strip())
        except ValueError:
            raise _fail(f"--approvals: unknown category {name.strip()!r} in {item!r}; expected one of "
                        f"{', '.join(c.value for c in Category)}", EXIT_INVALID) from None
        if not value.strip().isdigit() or int(value) > 10:
            raise _fail(f"--approvals: {item!r} needs a count from 0 to 10", EXIT_INVALID)
        counts[category] = int(value)
    return counts


@plan_app.command("check")
@reports
def plan_check(plan: Path, json_out: Json = False) -> None:
    """Validate a plan file: exit 0, or non-zero naming the field and line of every problem."""
    from ringfence.core.plan import parse_plan

    parsed = parse_plan(plan.read_text(encoding="utf-8"), str(plan))
    if json_out:
        _print_json({"ok": True, "plan": parsed.as_dict()})
        return
    table = Table("#", "wave", "share", "max devices", "soak", "failure budget", title=f"plan {parsed.name}")
    from ringfence.core.durations import format_duration

    for i, w in enumerate(parsed.waves):
        cap = ", ".join(f"{k} {v}" for k, v in (("total", w.cap.total), ("per stratum", w.cap.per_stratum)) if v)
        table.add_row(str(i), w.name, f"{w.share:.2%}" if w.share is not None else "-", cap or "-",
                      format_duration(w.soak), "-" if w.gates.failure_budget is None else str(w.gates.failure_budget))
    out.print(table)
    out.print(f"{plan}: ok ({len(parsed.waves)} waves, strata {' x '.join(parsed.strata)})")


# -- remote commands --------------------------------------------------------------------------------
@content_app.command("create")
@reports
def content_type_create(
    name: str, category: Annotated[str, typer.Option("--category", help="rapid-response, system-critical, "
                                                      "software or configuration")],
    definition: Annotated[Path | None, typer.Option(
        "--definition", help="a content-type definition (YAML): releases must pass its validators before they "
        "start; its consumer commands run on the server from this file's directory")] = None,
    team: Annotated[str | None, typer.Option("--team", help="the team that owns it (default: your token's)")] = None,
    unvalidated: Annotated[str | None, typer.Option(
        "--unvalidated", metavar="REASON", help="register without a definition: its releases start without "
        "validation; say why (kept with the content type and shown in every rollout's status)")] = None,
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    """Create a content type with the definition its releases are validated against (or, with a
    reason, without one)."""
    body: dict[str, Any] = {"name": name, "category": category}
    if definition is not None:
        body |= _definition_body(definition)
    if unvalidated is not None:
        body["unvalidated_reason"] = unvalidated
    if team is not None:
        body["team"] = team
    with Client(server, token) as c:
        result = c.post("/v1/content-types", body)
    _print_json(result) if json_out else out.print(f"content type {result['name']} ({result['category']}) created")


def _definition_body(definition: Path) -> dict[str, str]:
    return {"definition": definition.read_text(encoding="utf-8"), "definition_dir": str(definition.resolve().parent)}


@content_app.command("define")
@reports
def content_type_define(
    name: str,
    definition: Annotated[Path, typer.Option("--definition", help="the new content-type definition (YAML)")],
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    """Give a content type a new definition; releases not yet started can be validated again
    with `release validate`."""
    with Client(server, token) as c:
        result = c.request("PUT", f"/v1/content-types/{name}/definition", json=_definition_body(definition))
    _print_json(result) if json_out else out.print(f"content type {result['name']} is validated against "
                                                   f"{definition}")


@content_app.command("list")
@reports
def content_type_list(server: Server = None, token: Token = None, json_out: Json = False) -> None:
    with Client(server, token) as c:
        result = c.get("/v1/content-types")
    if json_out:
        _print_json(result)
        return
    table = Table("name", "category", "validation")
    for ct in result["content_types"]:
        table.add_row(ct["name"], ct["category"], "definition" if ct["validated"] else
                      f"none: {ct['unvalidated_reason']}")
    out.print(table)


@token_app.command("create")
@reports
def enroll_token_create(
    tenant: Annotated[str, typer.Option(help="tenant the enrolled devices belong to")] = "default",
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    """Create a token agents enroll with (shown once)."""
    with Client(server, token) as c:
        result = c.post("/v1/enroll-tokens", {"tenant": tenant})
    if json_out:
        _print_json(result)
        return
    out.print(f"Enrolment token for tenant {result['tenant']} (shown once):")
    out.print(result["token"], markup=False, highlight=False)


def _chunks(path: Path, progress: Progress | None, task: Any) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            if progress is not None:
                progress.update(task, advance=len(chunk))
            yield chunk


@artifact_app.command("push")
@reports
def artifact_push(
    file: Path,
    content_type: Annotated[str, typer.Option("--type", help="content type")],
    version: Annotated[str, typer.Option("--version", help="version of this artifact")],
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    """Upload FILE as an immutable artifact (its sha256 is declared and checked by the server)."""
    import hashlib

    size = file.stat().st_size
    digest = hashlib.sha256()
    with file.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    params = {"content_type": content_type, "version": version, "sha256": digest.hexdigest()}
    with Client(server, token, timeout=600) as c:
        if json_out or not sys.stderr.isatty():
            result = c.upload("/v1/artifacts", _chunks(file, None, None), size, params)
        else:
            with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                          TransferSpeedColumn(), console=err, transient=True) as progress:
                task = progress.add_task(f"uploading {file.name}", total=size)
                result = c.upload("/v1/artifacts", _chunks(file, progress, task), size, params)
    if json_out:
        _print_json(result)
    else:
        out.print(f"{result['content_type']} {result['version']}: sha256 {result['sha256']} ({result['size']} bytes)")


@artifact_app.command("list")
@reports
def artifact_list(
    content_type: Annotated[str | None, typer.Option("--type")] = None,
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    with Client(server, token) as c:
        result = c.get("/v1/artifacts", content_type=content_type)
    if json_out:
        _print_json(result)
        return
    table = Table("content type", "version", "sha256", "size", "created")
    for a in result["artifacts"]:
        table.add_row(a["content_type"], a["version"], a["sha256"][:16] + "…", str(a["size"]), a["created_at"])
    out.print(table)


@release_app.command("create")
@reports
def release_create(
    content_type: Annotated[str, typer.Option("--type", help="content type")],
    version: Annotated[str, typer.Option("--version", help="artifact version to release")],
    plan: Annotated[Path, typer.Option("--plan", help="plan file (YAML)")],
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    """Create a release of an artifact with a plan; prints the release id."""
    from ringfence.core.plan import parse_plan

    text = plan.read_text(encoding="utf-8")
    parse_plan(text, str(plan))  # fail fast, locally, with the file's own name
    with Client(server, token) as c:
        result = c.post("/v1/releases", {"content_type": content_type, "version": version, "plan": text,
                                         "plan_origin": str(plan)})
    if json_out:
        _print_json(result)
    else:
        out.print(result["release"], markup=False, highlight=False)


@release_app.command("validate")
@reports
def release_validate(release_id: str, server: Server = None, token: Token = None, json_out: Json = False) -> None:
    """Run a release's validators again (before its rollout starts) and show the results; exit 1
    when the gate stays closed."""
    with Client(server, token, timeout=600) as c:
        result = c.post(f"/v1/releases/{release_id}/validate")
    if json_out:
        _print_json(result)
    else:
        _print_validation(result["validation"])
    if not result["validation"]["ok"]:
        raise typer.Exit(1)


def _print_validation(validation: dict[str, Any]) -> None:
    if validation["unvalidated_reason"] is not None:
        out.print(f"validation: [yellow]none[/yellow] (content type registered without a definition: "
                  f"{validation['unvalidated_reason']})", highlight=False)
        return
    table = Table("validator", "target", "status", "message", title="validation")
    style = {"passed": "green", "failed": "red", "error": "red"}
    for r in validation["results"]:
        table.add_row(r["validator"], r["target"] or "-", f"[{style[r['status']]}]{r['status']}[/]", r["message"])
    out.print(table)
    verdict = "[green]passed[/green]" if validation["ok"] else "[red]closed[/red]: " + "; ".join(
        validation["problems"])
    out.print(f"validation gate: {verdict}", highlight=False)
    if validation["emergency_override"]:
        o = validation["emergency_override"]
        out.print(f"[bold red]emergency override[/bold red] by {o['actor']} at {o['at']}: {o['reason']}",
                  highlight=False)


@release_app.command("list")
@reports
def release_list(
    content_type: Annotated[str | None, typer.Option("--type")] = None,
    phase: Annotated[str | None, typer.Option("--phase")] = None,
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    with Client(server, token) as c:
        result = c.get("/v1/releases", content_type=content_type, phase=phase)
    if json_out:
        _print_json(result)
        return
    table = Table("release", "content type", "version", "plan", "phase", "wave", "created")
    for r in result["releases"]:
        table.add_row(r["release"], r["content_type"], r["version"], r["plan"], r["phase"], str(r["wave"]),
                      r["created_at"])
    out.print(table)


def _print_action(result: dict[str, Any], json_out: bool) -> None:
    if json_out:
        _print_json(result)
    else:
        out.print(f"{result['release']}: {result['phase']} (wave {result['wave'] + 1} of {len(result['waves'])}, "
                  f"{result['wave_name']})")


def _rollout_action(action: str) -> Callable[..., None]:
    @reports
    def command(
        release_id: str,
        reason: Annotated[str, typer.Option("--reason", help="why; kept in the history")] = "",
        server: Server = None, token: Token = None, json_out: Json = False,
    ) -> None:
        with Client(server, token) as c:
            result = c.post(f"/v1/rollouts/{release_id}/{action}", {"reason": reason})
        _print_action(result, json_out)

    command.__doc__ = {
        "pause": "Stop admitting new devices; routine, resume at will.",
        "resume": "Resume a paused rollout, or a halted one (give --reason).",
        "halt": "Stop admitting new devices because something is wrong; exposed devices keep the version.",
        "rollback": "Send every device back to the baseline version.",
    }[action]
    return command


@rollout_app.command("start")
@reports
def rollout_start(
    release_id: str,
    reason: Annotated[str, typer.Option("--reason", help="why; kept in the history")] = "",
    emergency: Annotated[bool, typer.Option("--emergency", help="start although the release failed validation "
                                            "(needs --reason; written to the history and shown in status)")] = False,
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    """Start rolling out a ready release (first wave); refused when it failed validation."""
    with Client(server, token) as c:
        result = c.post(f"/v1/rollouts/{release_id}/start", {"reason": reason, "emergency": emergency})
    _print_action(result, json_out)


for _action in ("pause", "resume", "halt", "rollback"):
    rollout_app.command(_action)(_rollout_action(_action))


@rollout_app.command("status")
@reports
def rollout_status(release_id: str, server: Server = None, token: Token = None, json_out: Json = False) -> None:
    """Show a rollout: phase, waves with exposure and failures, and its history."""
    with Client(server, token) as c:
        result = c.get(f"/v1/rollouts/{release_id}")
    if json_out:
        _print_json(result)
        return
    out.print(f"[bold]{result['release']}[/bold] {result['content_type']} {result['version']} "
              f"plan {result['plan']}: [bold]{result['phase']}[/bold], wave {result['wave'] + 1} of "
              f"{len(result['waves'])} ({result['wave_name']})")
    table = Table("#", "wave", "state", "admitted", "exposed", "healthy", "failed")
    for w in result["waves"]:
        table.add_row(str(w["index"]), w["name"], w["state"], str(w["admitted"]), str(w["exposed"]),
                      str(w["healthy"]), str(w["failed"]))
    out.print(table)
    if result.get("waiting"):
        out.print(f"wave {result['wave_name']!r} is waiting for:", highlight=False)
        for line in result["waiting"]:
            out.print(f"  - {line}", highlight=False, markup=False)
    if "validation" in result:
        _print_validation(result["validation"])
    if result.get("emergency"):
        e = result["emergency"]
        out.print(f"[bold red]EMERGENCY START[/bold red] by {e['started_by']} at {e['at']}, approved by "
                  f"{e['approved_by']} ({e['approval_reason']}): {e['reason']}; overrode: "
                  f"{'; '.join(e['overrode']) or 'nothing'}", highlight=False)
    approvals = result.get("approvals")
    if approvals and approvals["required"]:
        names = ", ".join(a["approver"] for a in approvals["valid"]) or "none yet"
        out.print(f"approvals: {len(approvals['valid'])} of {approvals['required']} ({names})"
                  + (f"; {len(approvals['stale'])} stale" if approvals["stale"] else ""), highlight=False)
    history = Table("at", "from", "to", "actor", "reason", title="history")
    for h in result["history"]:
        history.add_row(h["at"], h["from"] or "-", h["to"], h["actor"], h["reason"])
    out.print(history)


@app.command()
@reports
def devices(
    tenant: Annotated[str | None, typer.Option()] = None,
    platform: Annotated[str | None, typer.Option()] = None,
    region: Annotated[str | None, typer.Option()] = None,
    tag: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    """List enrolled devices (filter by tenant, platform, region, tag)."""
    with Client(server, token) as c:
        result = c.get("/v1/devices", tenant=tenant, platform=platform, region=region, tag=tag, limit=limit,
                       offset=offset)
    if json_out:
        _print_json(result)
        return
    table = Table("id", "tenant", "platform", "os", "region", "versions", "last seen",
                  title=f"{result['total']} devices")
    for d in result["devices"]:
        versions = ", ".join(f"{k}={v}" for k, v in sorted(d["versions"].items()))
        table.add_row(d["id"][:12], d["tenant"], d["platform"], d["os_version"], d["region"], versions,
                      d["last_seen_at"] or "-")
    out.print(table)


@agent_app.command("run")
def agent_run(
    state_dir: Annotated[Path, typer.Option("--state-dir", help="where the agent keeps its journal, credential "
                                                                  "and content")],
    server: Annotated[str | None, typer.Option("--server", envvar="RINGFENCE_SERVER", help="API base URL")] = None,
    enroll_token: Annotated[str | None, typer.Option("--enroll-token", envvar="RINGFENCE_ENROLL_TOKEN",
                                                     help="enrolment token (needed only for the first run)")] = None,
    once: Annotated[bool, typer.Option("--once", help="start, check in once (finishing any update it "
                                                      "brings), and exit")] = False,
    attributes: Annotated[Path | None, typer.Option("--attributes", help="YAML/JSON file: platform, os_version, "
                                                                         "arch, region, tags, agent_version")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="agent config file (appliers, probes, "
                                                                 "workload, limits)")] = None,
    log_format: Annotated[str, typer.Option("--log-format", help="text or json")] = "text",
    json_out: Json = False,
    trusted_root: Annotated[Path | None, typer.Option("--trusted-root", help="the TUF root shipped with the agent "
                                                                            "(`ringfence init` prints it): every "
                                                                            "artifact must then be signed")] = None,
) -> None:
    """Run the endpoint agent: enroll once, then check in and apply updates safely."""
    from ringfence.agent.daemon import run_agent

    code = run_agent(server=server, enroll_token=enroll_token, state_dir=state_dir, once=once,
                     attributes=attributes, config=config, log_format=log_format, json_out=json_out,
                     trusted_root=trusted_root)
    if code:
        raise typer.Exit(code)


def main() -> None:
    app()

"""``ringfence audit``: read the audit log and verify its hash chain.

``audit list`` prints entries oldest first (the newest ``--limit`` by default, or those after
``--after``); ``audit verify`` asks the server to walk the whole chain and exits 0 when it is
intact, 1 (``EXIT_ERROR``) naming the first broken entry::

    audit log broken at entry 7: hash does not match its contents: the row was altered

Removed newest entries leave an intact, shorter chain; ``--anchor FILE`` holds the log to a head
kept from before (``{"seq": N, "hash": "..."}``, e.g. written by ``--save-anchor`` or the JSON
of an earlier ``audit verify --json``). Keep anchors where whoever can write the database cannot.

Other failures exit with the codes of :mod:`ringfence.cli.client` (2 bad anchor file, 3 not
authorised, 6 server unreachable, ...). ``--json`` prints the server's JSON document on stdout.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ringfence.cli.client import EXIT_ERROR, EXIT_INVALID, ApiError, Client
from ringfence.cli.common import Json, Server, Token
from ringfence.cli.common import fail as _fail
from ringfence.cli.common import print_json as _print_json

audit_app = typer.Typer(help="The audit log: every change and admin action, hash-chained.", no_args_is_help=True)

VERIFY_TIMEOUT_S = 600.0  # the server reads the whole log: minutes for tens of millions of entries

_out = Console(soft_wrap=True, highlight=False)


def _get(server: str | None, token: str | None, path: str, timeout: float = 30.0, **params: Any) -> Any:
    try:
        with Client(server, token, timeout=timeout) as client:
            return client.get(path, **params)
    except ApiError as exc:
        raise _fail(exc.message, exc.exit_code) from None


@audit_app.command("list")
def list_command(
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="at most this many entries")] = 100,
    actor: Annotated[str | None, typer.Option("--actor", help="only this actor's entries")] = None,
    action: Annotated[str | None, typer.Option("--action", help="only this action, or a family: 'rollout.*'")
                      ] = None,
    target: Annotated[str | None, typer.Option("--target", help="only entries about this target")] = None,
    after: Annotated[int | None, typer.Option("--after", min=0, help="the entries after this seq")] = None,
    before: Annotated[int | None, typer.Option("--before", min=1, help="the newest entries before this seq")
                      ] = None,
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    """List audit entries, oldest first: who did what, when, from where and why."""
    result = _get(server, token, "/v1/audit", limit=limit, actor=actor, action=action, target=target, after=after,
                  before=before)
    if json_out:
        _print_json(result)
        return
    table = Table("seq", "when (UTC)", "actor", "source", "action", "target", "reason")
    for e in result["entries"]:
        when = datetime.fromisoformat(e["at"]).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(str(e["seq"]), when, Text(e["actor"]), Text(e["source"] or "-"), e["action"],
                      Text(e["target"] or "-"), Text(e["reason"]))  # Text: no markup from what people typed
    _out.print(table)
    head = result["head"]
    _out.print(f"head: entry {head['seq']} {head['hash']}")


@audit_app.command("verify")
def verify_command(
    anchor: Annotated[Path | None, typer.Option("--anchor", help="a head kept from before: JSON {seq, hash}")
                      ] = None,
    save_anchor: Annotated[Path | None, typer.Option("--save-anchor", help="when intact, write the head here")
                           ] = None,
    server: Server = None, token: Token = None, json_out: Json = False,
) -> None:
    """Verify the audit log's hash chain; exit 1 naming the first broken entry."""
    params = _read_anchor(anchor) if anchor is not None else {}
    result = _get(server, token, "/v1/audit/verify", timeout=VERIFY_TIMEOUT_S, **params)
    broken = result["broken"]
    if broken is None and save_anchor is not None:
        _write_anchor(save_anchor, result["head"])
    if json_out:
        _print_json(result)
    if broken is not None:
        raise _fail(f"audit log broken at entry {broken['seq']}: {broken['problem']}", EXIT_ERROR)
    if not json_out:
        head = result["head"]
        held = f"; holds the anchor at entry {params['anchor_seq']}" if params else ""
        _out.print(f"audit log intact: {result['entries']} entries, head {head['seq']} {head['hash']}{held}")


def _read_anchor(path: Path) -> dict[str, Any]:
    """``anchor_seq`` and ``anchor_hash`` from a file holding ``{"seq", "hash"}`` or a whole
    ``audit verify --json`` document (its ``head``)."""
    try:
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise _fail(f"cannot read the anchor {path}: {exc.strerror}", EXIT_INVALID) from None
    except ValueError as exc:
        raise _fail(f"the anchor {path} is not JSON: {exc}", EXIT_INVALID) from None
    found = doc.get("head", doc) if isinstance(doc, dict) else None
    seq, hash_ = (found.get("seq"), found.get("hash")) if isinstance(found, dict) else (None, None)
    if not isinstance(seq, int) or isinstance(seq, bool) or not isinstance(hash_, str):
        raise _fail(f'the anchor {path} holds no head: expected {{"seq": N, "hash": "..."}}', EXIT_INVALID)
    return {"anchor_seq": seq, "anchor_hash": hash_}


def _write_anchor(path: Path, head: dict[str, Any]) -> None:
    """Replace ``path`` with the head in one step: a crash leaves the old anchor or the new."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_text(json.dumps({"seq": head["seq"], "hash": head["hash"]}) + "\n")
        os.replace(partial, path)
    except OSError as exc:
        raise _fail(f"cannot write the anchor {path}: {exc.strerror}", EXIT_INVALID) from None

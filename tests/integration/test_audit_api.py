"""The audit API and ``ringfence audit`` on SQLite and PostgreSQL: who may read the log, what a
page and a verification look like, and the CLI's output and exit codes against a real server
listening on a socket (uvicorn in a thread, the CLI's own HTTP client)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import delete, text, update
from typer.testing import CliRunner, Result

from ringfence.cli import audit as cli_audit
from ringfence.cli.audit import audit_app
from ringfence.cli.client import EXIT_AUTH, EXIT_ERROR, EXIT_INVALID, EXIT_OK, EXIT_UNAVAILABLE
from ringfence.server import audit_api
from ringfence.server.app import create_app
from ringfence.server.config import ServerConfig
from ringfence.store import audit
from ringfence.store.access import create_api_token, hash_secret
from ringfence.store.audit import AuditRow
from ringfence.store.db import Database
from ringfence.store.schema import ApiToken
from tests.conftest import free_port
from tests.integration.conftest import Api, error_of, make_api
from tests.integration.store_support import at

ALTERED = "hash does not match its contents: the row was altered"


def mount(app: FastAPI) -> FastAPI:
    """Include the audit router unless ``create_app`` already does."""
    if not any(getattr(route, "path", "") == "/v1/audit" for route in app.routes):
        app.include_router(audit_api.router)
    return app


def write(db: Database, n: int) -> audit.Head:
    for i in range(n):
        with db.session() as s:
            audit.append(s, actor=["alice", "bob"][i % 2], role="operator", source="10.1.2.3",
                         action=["rollout.halt", "release.create"][i % 2], target=f"rel-{i % 3}",
                         reason=f"[bold]step[/] {i}", details={"i": i}, now=at(i))
    with db.session() as s:
        return audit.head(s)


def alter(db: Database, statement: Any) -> None:
    """Past the database's guards, as somebody with database access."""
    with db.engine.begin() as conn:
        if db.is_sqlite:
            for name in ("audit_log_no_update", "audit_log_no_delete", "audit_log_extends_chain"):
                conn.execute(text(f"DROP TRIGGER IF EXISTS {name}"))
        else:
            conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        conn.execute(statement)


# --- the API ------------------------------------------------------------------------------------

@pytest.fixture
def api(tmp_path: Path, db_url: str) -> Iterator[Api]:
    for running in make_api(tmp_path, db_url):
        mount(running.app)
        yield running


def test_list_returns_entries_oldest_first_with_the_head(api: Api) -> None:
    head = write(api.db, 5)
    body = api.http.get("/v1/audit", params={"limit": 2}).json()
    assert [e["seq"] for e in body["entries"]] == [4, 5]
    assert body["head"] == {"seq": 5, "hash": head.hash}
    first = api.http.get("/v1/audit", params={"after": 0, "limit": 1}).json()["entries"][0]
    assert first == {"seq": 1, "at": at(0).isoformat(), "actor": "alice", "role": "operator", "source": "10.1.2.3",
                     "action": "rollout.halt", "target": "rel-0", "reason": "[bold]step[/] 0", "details": {"i": 0},
                     "prev_hash": audit.GENESIS, "hash": first["hash"]}


@pytest.mark.parametrize(("params", "seqs"), [
    ({"actor": "bob"}, [2, 4]),
    ({"action": "rollout.*"}, [1, 3, 5]),
    ({"target": "rel-1"}, [2, 5]),
    ({"after": 2, "limit": 2}, [3, 4]),
    ({"before": 3}, [1, 2]),
])
def test_list_filters(api: Api, params: dict[str, Any], seqs: list[int]) -> None:
    write(api.db, 5)
    assert [e["seq"] for e in api.http.get("/v1/audit", params=params).json()["entries"]] == seqs


@pytest.mark.parametrize("params", [{"limit": 1001}, {"limit": 0}, {"after": -1}])
def test_list_refuses_bad_paging_in_the_one_error_shape(api: Api, params: dict[str, Any]) -> None:
    r = api.http.get("/v1/audit", params=params)
    assert r.status_code in (400, 422)
    error_of(r)


def test_verify_reports_an_intact_log(api: Api) -> None:
    head = write(api.db, 4)
    assert api.http.get("/v1/audit/verify").json() == {
        "ok": True, "entries": 4, "head": {"seq": 4, "hash": head.hash}, "broken": None}
    anchored = api.http.get("/v1/audit/verify", params={"anchor_seq": 4, "anchor_hash": head.hash}).json()
    assert anchored["ok"] is True


def test_verify_names_the_first_broken_entry(api: Api) -> None:
    head = write(api.db, 6)
    alter(api.db, update(AuditRow).where(AuditRow.seq == 3).values(actor="mallory"))
    body = api.http.get("/v1/audit/verify").json()
    assert body["ok"] is False
    assert body["broken"] == {"seq": 3, "problem": ALTERED}
    assert (body["entries"], body["head"]["seq"]) == (2, 2)  # what was checked before the break
    alter(api.db, delete(AuditRow).where(AuditRow.seq >= 3))
    assert api.http.get("/v1/audit/verify").json()["ok"] is True
    anchored = api.http.get("/v1/audit/verify", params={"anchor_seq": head.seq, "anchor_hash": head.hash}).json()
    assert anchored["broken"] == {"seq": 3, "problem": "the last entries were removed: the chain ends at entry 2 "
                                                       "but the anchor names entry 6"}


@pytest.mark.parametrize("params", [{"anchor_seq": 3}, {"anchor_hash": "a" * 64},
                                    {"anchor_seq": 3, "anchor_hash": "not-hex"}])
def test_verify_refuses_half_or_bad_anchors(api: Api, params: dict[str, Any]) -> None:
    r = api.http.get("/v1/audit/verify", params=params)
    assert r.status_code == 400
    assert error_of(r)["code"] == "invalid_input"


@pytest.mark.parametrize("path", ["/v1/audit", "/v1/audit/verify"])
def test_only_admins_read_the_audit_log(api: Api, path: str) -> None:
    assert error_of(api.as_token(None).get(path))["status"] == 401
    for role in ("viewer", "operator", "releaser", "approver"):
        r = api.as_token(api.token_for(role)).get(path)
        assert error_of(r)["status"] == 403, role


def test_a_scoped_admin_token_does_not_read_the_audit_log(api: Api) -> None:
    token = api.token_for("admin")
    with api.db.session() as s:
        s.execute(update(ApiToken).where(ApiToken.token_hash == hash_secret(token)).values(team="sensors"))
    err = error_of(api.as_token(token).get("/v1/audit"))
    assert err["status"] == 403
    assert "scoped to team 'sensors'" in err["message"]


# --- the CLI against a real server ---------------------------------------------------------------------

@dataclass
class Served:
    url: str
    token: str
    db: Database

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(audit_app, [*args, "--server", self.url, "--token", self.token])


@pytest.fixture
def served(tmp_path: Path, db_url: str) -> Iterator[Served]:
    db = Database(db_url)
    db.migrate()
    with db.session() as s:
        _, token = create_api_token(s, name="admin", role="admin", now=at(0))
    port = free_port()
    app = mount(create_app(ServerConfig(data_dir=tmp_path, database_url=db_url)))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield Served(f"http://127.0.0.1:{port}", token, db)
    finally:
        server.should_exit = True
        thread.join(30)
        db.dispose()


def test_cli_list_json_and_table(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_audit._out, "width", 200)
    head = write(served.db, 3)
    result = served.cli("list", "--json", "--actor", "alice")
    assert result.exit_code == EXIT_OK, result.output
    body = json.loads(result.stdout)
    assert [e["seq"] for e in body["entries"]] == [1, 3]
    assert body["head"] == {"seq": 3, "hash": head.hash}
    table = served.cli("list", "--limit", "2")
    assert table.exit_code == EXIT_OK, table.output
    assert "2024-07-19 04:00:02" in table.stdout and "rollout.halt" in table.stdout
    assert "[bold]step[/] 2" in table.stdout  # what people typed is printed, not rendered
    assert "step[/] 0" not in table.stdout


def test_cli_verify_exits_0_when_intact_and_1_naming_the_broken_entry(served: Served, tmp_path: Path) -> None:
    write(served.db, 5)
    anchor = tmp_path / "audit-anchor.json"
    ok = served.cli("verify", "--save-anchor", str(anchor))
    assert ok.exit_code == EXIT_OK, ok.output
    assert "audit log intact: 5 entries" in ok.stdout
    assert json.loads(anchor.read_text())["seq"] == 5

    alter(served.db, update(AuditRow).where(AuditRow.seq == 4).values(reason="nothing to see"))
    broken = served.cli("verify")
    assert broken.exit_code == EXIT_ERROR
    assert f"audit log broken at entry 4: {ALTERED}" in broken.stderr
    as_json = served.cli("verify", "--json")
    assert as_json.exit_code == EXIT_ERROR
    assert json.loads(as_json.stdout)["broken"] == {"seq": 4, "problem": ALTERED}


def test_cli_verify_with_an_anchor_catches_removed_newest_entries(served: Served, tmp_path: Path) -> None:
    write(served.db, 4)
    anchor = tmp_path / "verified.json"
    earlier = served.cli("verify", "--json")
    anchor.write_text(earlier.stdout)  # a whole earlier `verify --json` is an anchor too
    alter(served.db, delete(AuditRow).where(AuditRow.seq == 4))
    assert served.cli("verify").exit_code == EXIT_OK
    result = served.cli("verify", "--anchor", str(anchor))
    assert result.exit_code == EXIT_ERROR
    assert "audit log broken at entry 4: the last entries were removed" in result.stderr


@pytest.mark.parametrize("content", ["not json", '{"seq": "4"}', "[]"])
def test_cli_verify_refuses_a_bad_anchor_file(served: Served, tmp_path: Path, content: str) -> None:
    anchor = tmp_path / "anchor.json"
    anchor.write_text(content)
    result = served.cli("verify", "--anchor", str(anchor))
    assert result.exit_code == EXIT_INVALID
    assert "anchor" in result.stderr
    assert served.cli("verify", "--anchor", str(tmp_path / "missing.json")).exit_code == EXIT_INVALID


def test_cli_maps_server_errors_to_exit_codes(served: Served) -> None:
    with served.db.session() as s:
        _, viewer = create_api_token(s, name="viewer", role="viewer", now=at(0))
    denied = CliRunner().invoke(audit_app, ["list", "--server", served.url, "--token", viewer])
    assert denied.exit_code == EXIT_AUTH
    assert "may not do this" in denied.stderr
    gone = CliRunner().invoke(audit_app, ["verify", "--server", f"http://127.0.0.1:{free_port()}", "--token", "x"])
    assert gone.exit_code == EXIT_UNAVAILABLE
    assert "cannot reach the Ringfence server" in gone.stderr

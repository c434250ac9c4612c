"""An in-process control plane on each backend: the real FastAPI app, its background services
and a manual clock, driven through Starlette's TestClient (HTTP semantics, no sockets)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ringfence.core.clock import ManualClock
from ringfence.core.models import Category
from ringfence.server.app import create_app
from ringfence.server.config import ServerConfig
from ringfence.store.access import create_api_token
from ringfence.store.db import Database
from tests.support import UNVALIDATED, until


@dataclass
class Caller:
    """Requests through the app's one TestClient (so they share the event loop of its
    background services) with another credential."""

    http: TestClient
    token: str | None

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}" if self.token is not None else ""}
        return self.http.request(method, path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


@dataclass
class Api:
    """A running app: ``http`` carries the admin token; ``as_role`` makes clients for others."""

    http: TestClient
    clock: ManualClock
    db: Database
    app: Any

    def as_token(self, token: str | None) -> Caller:
        return Caller(self.http, token)

    def token_for(self, role: str) -> str:
        with self.db.session() as s:
            _, secret = create_api_token(s, name=f"{role}-user", role=role, now=self.clock.now())
        return secret

    def ticks(self, n: int = 3) -> None:
        """Wait for ``n`` more reconciler ticks: how a check that something did *not* happen waits."""
        reconciler = self.app.state.runtime.reconciler
        target = reconciler.ticks + n
        until(lambda: reconciler.ticks >= target, f"{n} reconciler ticks")

    def polls(self, n: int = 3) -> None:
        """Wait for ``n`` more looks of the webhook dispatcher at its outbox."""
        dispatcher = self.app.state.runtime.alerts
        target = dispatcher.polls + n
        until(lambda: dispatcher.polls >= target, f"{n} dispatcher polls")

    def device(self, enroll_token: str, **attributes: Any) -> Caller:
        """Enroll a device and return a client that carries its credential."""
        body = {"platform": "windows", "region": "eu-west", **attributes}
        r = self.as_token(enroll_token).post("/v1/agent/enroll", json=body)
        assert r.status_code == 201, r.text
        return self.as_token(r.json()["credential"])


def make_api(tmp_path: Path, db_url: str, **config: Any) -> Iterator[Api]:
    database = Database(db_url)
    database.migrate()
    clock = ManualClock()
    with database.session() as s:
        _, admin = create_api_token(s, name="admin", role="admin", now=clock.now())
    config.setdefault("approvals", dict.fromkeys(Category, 0))  # change management has its own tests
    settings = ServerConfig(data_dir=tmp_path, database_url=db_url, reconcile_interval_s=0.05,
                            population_refresh_s=0.05, **config)
    app = create_app(settings, clock)
    with TestClient(app) as http:
        http.headers["Authorization"] = f"Bearer {admin}"
        yield Api(http, clock, database, app)
    database.dispose()


@pytest.fixture
def api(tmp_path: Path, db_url: str) -> Iterator[Api]:
    yield from make_api(tmp_path, db_url)


CT = "sensor/ipc-templates"


@pytest.fixture
def setup(api: Api) -> Iterator[tuple[Api, str]]:
    """A content type and an enrolment token."""
    assert api.http.post("/v1/content-types", json={"name": CT, "category": "rapid-response",
                                                    "unvalidated_reason": UNVALIDATED}).status_code == 201
    token = api.http.post("/v1/enroll-tokens", json={"tenant": "acme"}).json()["token"]
    yield api, token


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The one error shape; asserts it is exactly that."""
    body = response.json()
    assert set(body) == {"error"}, body
    err: dict[str, Any] = body["error"]
    assert set(err) == {"status", "code", "message", "details"}, err
    assert err["status"] == response.status_code
    assert isinstance(err["message"], str) and err["message"]
    return err

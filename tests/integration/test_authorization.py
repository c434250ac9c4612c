"""The authorisation matrix: every endpoint of the API x every role x every scope (a global
token, a token of the owning team, of another team, of a tenant), over the real app on SQLite
and PostgreSQL. Each call is either refused with 403 or gets past authorisation (anything but
401 and 403). A new endpoint without a row here fails the test."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest

from ringfence.core.errors import InvalidInput
from ringfence.store.access import ROLES, create_api_token, create_team
from tests.integration.conftest import Api, make_api
from tests.support import UNVALIDATED

CT = "red/content"
DATA = b"red content 1"
SHA = hashlib.sha256(DATA).hexdigest()
SCOPES = ("global", "owner", "other-team", "tenant")
READ = set(ROLES)
OPERATE = {"operator", "releaser", "admin"}
RELEASE = {"releaser", "admin"}
APPROVE = {"approver", "admin"}
ADMIN = {"admin"}
PLAN = "name: one\nwaves:\n  - {name: all, share: 1.0, soak: 1m}\n"


def _in(roles: set[str], *scopes: str) -> Callable[[str, str], bool]:
    return lambda role, scope: role in roles and scope in scopes


VENDOR = ("global", "owner", "other-team")  # not a tenant's token
OWNED = ("global", "owner")
EVERYONE = (*VENDOR, "tenant")

# (method, path) -> (who gets past authorisation, how to call it: path values and body)
MATRIX: dict[tuple[str, str], tuple[Callable[[str, str], bool], dict[str, Any]]] = {
    ("post", "/v1/agent/enroll"): (lambda r, s: False, {"json": {"platform": "windows"}}),
    ("post", "/v1/agent/checkin"): (lambda r, s: False, {"json": {}}),
    ("post", "/v1/agent/revocations"): (lambda r, s: False, {"json": {"versions": {}}}),
    ("get", "/v1/content-types"): (_in(READ, *VENDOR), {}),
    ("post", "/v1/content-types"): (_in(ADMIN, *OWNED), {"json": {
        "name": "red/other", "category": "configuration", "team": "red", "unvalidated_reason": UNVALIDATED}}),
    ("put", "/v1/content-types/{name}/definition"): (_in(ADMIN, *OWNED), {"json": {
        "definition": "name: x", "definition_dir": "/tmp"}}),
    ("get", "/v1/content-types/{name}"): (_in(READ, *VENDOR), {}),
    ("get", "/v1/artifacts"): (_in(READ, *VENDOR), {}),
    ("post", "/v1/artifacts"): (_in(RELEASE, *OWNED), {"params": {"content_type": CT, "version": "9"},
                                                       "content": b"x"}),
    ("get", "/v1/artifacts/{sha256}"): (_in(READ, *VENDOR), {}),
    ("get", "/v1/releases"): (_in(READ, *VENDOR), {}),
    ("post", "/v1/releases"): (_in(RELEASE, *OWNED), {"json": {"content_type": CT, "version": "1",
                                                                "plan": PLAN}}),
    ("post", "/v1/releases/{release_id}/validate"): (_in(RELEASE, *OWNED), {}),
    ("get", "/v1/rollouts/{release_id}"): (_in(READ, *VENDOR), {}),
    ("get", "/v1/releases/{release_id}"): (_in(READ, *VENDOR), {}),
    ("post", "/v1/rollouts/{release_id}/{action}"): (_in(OPERATE, *OWNED), {"json": {"reason": "matrix"}}),
    ("get", "/v1/devices"): (_in(READ, *EVERYONE), {}),
    ("post", "/v1/enroll-tokens"): (lambda r, s: r in ADMIN and s in ("global", "tenant"),
                                    {"json": {"tenant": "acme"}}),
    ("get", "/v1/whoami"): (_in(READ, *EVERYONE), {}),
    ("post", "/v1/releases/{release_id}/approve"): (_in(APPROVE, *OWNED), {"json": {"reason": "ok"}}),
    ("put", "/v1/releases/{release_id}/plan"): (_in(RELEASE, *OWNED), {"json": {"plan": PLAN}}),
    ("get", "/v1/freezes"): (_in(READ, *VENDOR), {}),
    ("post", "/v1/freezes"): (_in(ADMIN, *OWNED), {"json": {"team": "red", "hours": 1, "reason": "matrix"}}),
    ("delete", "/v1/freezes/{freeze_id}"): (_in(ADMIN, *VENDOR), {}),
    ("get", "/v1/teams"): (_in(READ, *VENDOR), {}),
    ("post", "/v1/teams"): (_in(ADMIN, "global"), {"json": {"name": "green"}}),
    ("get", "/v1/tokens"): (_in(ADMIN, *EVERYONE), {}),
    ("post", "/v1/tokens"): (_in(ADMIN, *EVERYONE), {"json": {"role": "viewer"}}),
    ("delete", "/v1/tokens/{token_id}"): (_in(ADMIN, *EVERYONE), {}),
    ("get", "/v1/audit"): (_in(ADMIN, "global"), {}),
    ("get", "/v1/audit/verify"): (_in(ADMIN, "global"), {}),
    ("get", "/v1/server"): (_in(READ, *VENDOR), {}),
    ("get", "/healthz"): (lambda r, s: True, {}),
    ("get", "/v1/tuf/metadata/{name}"): (_in(READ, *VENDOR), {}),
    ("get", "/v1/tuf/targets/{path}"): (_in(READ, *VENDOR), {}),
    ("post", "/v1/tuf/reload"): (_in(ADMIN, "global"), {}),
    ("get", "/v1/policies"): (_in(READ, *EVERYONE), {}),
    ("put", "/v1/policies"): (lambda r, s: r in ADMIN and s in ("global", "tenant"), {"json": {
        "tenant": "acme", "category": "configuration", "channel": "ga", "delay_hours": 4}}),
    ("delete", "/v1/policies"): (lambda r, s: r in ADMIN and s in ("global", "tenant"), {"params": {
        "tenant": "acme", "category": "software"}}),
    ("get", "/v1/webhooks"): (_in(READ, *VENDOR), {}),
    ("post", "/v1/webhooks"): (_in(ADMIN, "global"), {"json": {"url": "http://127.0.0.1:9/matrix"}}),
    ("delete", "/v1/webhooks/{webhook_id}"): (_in(ADMIN, "global"), {}),
    ("get", "/v1/webhooks/{webhook_id}/deliveries"): (_in(READ, *VENDOR), {}),
    ("post", "/v1/webhooks/{webhook_id}/test"): (_in(ADMIN, "global"), {}),
}


@pytest.fixture
def world(tmp_path: Any, db_url: str) -> Any:
    for api in make_api(tmp_path, db_url):
        with api.db.session() as s:
            for team in ("red", "blue"):
                create_team(s, team, actor="admin", now=api.clock.now())
        assert api.http.post("/v1/content-types", json={"name": CT, "category": "rapid-response", "team": "red",
                                                        "unvalidated_reason": UNVALIDATED}).status_code == 201
        assert api.http.post("/v1/artifacts", content=DATA,
                             params={"content_type": CT, "version": "1", "sha256": SHA}).status_code == 201
        release = api.http.post("/v1/releases", json={"content_type": CT, "version": "1", "plan": PLAN}).json()
        yield api, release["release"]


def _token(api: Api, role: str, scope: str) -> str:
    team = {"owner": "red", "other-team": "blue"}.get(scope)
    with api.db.session() as s:
        _, secret = create_api_token(s, name=f"{role}-{scope}", role=role, now=api.clock.now(), team=team,
                                     tenant="acme" if scope == "tenant" else None)
    return secret


def test_every_endpoint_is_in_the_matrix(world: Any) -> None:
    api, _ = world
    served = {(m, p) for p, methods in api.app.openapi()["paths"].items() for m in methods} | {("get", "/healthz")}
    assert served == set(MATRIX), f"not in the matrix: {served - set(MATRIX)}; gone: {set(MATRIX) - served}"


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("role", ROLES)
def test_each_role_and_scope_gets_exactly_what_the_matrix_says(world: Any, role: str, scope: str) -> None:
    api, release = world
    if scope == "tenant" and role not in ("viewer", "admin"):
        with pytest.raises(InvalidInput, match="a tenant token has role viewer or admin"):
            _token(api, role, scope)
        return
    caller = api.as_token(_token(api, role, scope))
    values = {"name": CT, "path": "revocations.json", "sha256": SHA, "release_id": release, "action": "pause",
              "freeze_id": "nope", "token_id": "nope", "webhook_id": "nope"}
    wrong = []
    for (method, path), (may, call) in MATRIX.items():
        named = {**values, "name": "timestamp.json"} if path.startswith("/v1/tuf/") else values
        url = path.format(**{k: v for k, v in named.items() if "{" + k + "}" in path})
        got = caller.request(method.upper(), url, **call).status_code
        expected_ok = may(role, scope)
        if (expected_ok and got in (401, 403)) or (not expected_ok and got != (401 if "/agent/" in path else 403)):
            wrong.append(f"{method.upper()} {url}: {got}, expected {'access' if expected_ok else 'refusal'}")
    assert not wrong, "\n".join(wrong)

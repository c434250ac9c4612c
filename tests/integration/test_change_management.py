"""Change management over the real app, on SQLite and PostgreSQL: approvals by people other than
the author, approvals that go stale when the release changes, freeze windows, the emergency
path, API tokens, and the audit log that records all of it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ringfence.core.models import Category
from ringfence.store.change import DEFAULT_APPROVALS
from ringfence.store.schema import ApiToken
from tests.integration.conftest import Api, Caller, error_of, make_api
from tests.support import UNVALIDATED

CT = "sensor/channel-files"
PLAN = "name: one\nwaves:\n  - {name: all, share: 1.0, soak: 1m}\n"
OTHER_PLAN = "name: two\nwaves:\n  - {name: half, share: 0.5, soak: 1m}\n  - {name: all, share: 1.0, soak: 1m}\n"


@pytest.fixture
def governed(tmp_path: Path, db_url: str) -> Iterator[Api]:
    """A server with the default approval rules (1 for rapid content, 2 for software)."""
    yield from make_api(tmp_path, db_url, approvals=dict(DEFAULT_APPROVALS))


def person(api: Api, role: str, name: str, **scope: Any) -> Caller:
    made = api.http.post("/v1/tokens", json={"role": role, "name": name, **scope})
    assert made.status_code == 201, made.text
    return api.as_token(made.json()["token"])


def release(api: Api, author: Caller, category: str = "rapid-response", version: str = "1") -> str:
    if api.http.get(f"/v1/content-types/{CT}").status_code == 404:
        assert api.http.post("/v1/content-types", json={"name": CT, "category": category,
                                                        "unvalidated_reason": UNVALIDATED}).status_code == 201
    data = f"content {version}".encode()
    assert author.post("/v1/artifacts", content=data, params={
        "content_type": CT, "version": version, "sha256": hashlib.sha256(data).hexdigest()}).status_code == 201
    made = author.post("/v1/releases", json={"content_type": CT, "version": version, "plan": PLAN})
    assert made.status_code == 201, made.text
    rid: str = made.json()["release"]
    return rid


def test_a_release_starts_only_with_approvals_from_people_other_than_its_author(governed: Api) -> None:
    # Given a release by alice of rapid-response content, which needs one approval
    alice = person(governed, "releaser", "alice")
    rid = release(governed, alice)
    refused = alice.post(f"/v1/rollouts/{rid}/start", json={"reason": "go"})
    assert refused.status_code == 409
    assert error_of(refused)["message"] == "approvals: 0 of 1 required"
    assert error_of(refused)["details"]["approvals"] == ["approvals: 0 of 1 required"]
    # When alice approves her own release, Then she is refused
    alice_approves = person(governed, "approver", "alice")
    own = alice_approves.post(f"/v1/releases/{rid}/approve", json={"reason": "lgtm"})
    assert own.status_code == 403 and error_of(own)["message"].startswith("alice wrote release")
    # When bob approves, Then it starts, and the start names who approved
    bob = person(governed, "approver", "bob")
    approved = bob.post(f"/v1/releases/{rid}/approve", json={"reason": "reviewed the diff"})
    assert approved.status_code == 200 and approved.json()["approvals"]["ok"] is True
    again = bob.post(f"/v1/releases/{rid}/approve", json={"reason": "twice"})
    assert again.status_code == 409
    started = alice.post(f"/v1/rollouts/{rid}/start", json={"reason": "go"})
    assert started.status_code == 200, started.text
    assert started.json()["history"][-1]["details"]["approved_by"] == ["bob"]
    assert started.json()["emergency"] is None
    # Approvals are for releases that have not started
    assert bob.post(f"/v1/releases/{rid}/approve", json={"reason": "late"}).status_code == 409


def test_software_needs_two_people_and_a_changed_plan_makes_approvals_stale(governed: Api) -> None:
    alice = person(governed, "releaser", "alice")
    rid = release(governed, alice, category="software")
    for name in ("bob", "carol"):
        assert person(governed, "approver", name).post(f"/v1/releases/{rid}/approve",
                                                       json={"reason": "ok"}).status_code == 200
    assert governed.http.get(f"/v1/rollouts/{rid}").json()["approvals"]["ok"] is True
    # When the plan changes, Then both approvals are kept but count for nothing
    changed = alice.request("PUT", f"/v1/releases/{rid}/plan", json={"plan": OTHER_PLAN})
    assert changed.status_code == 200, changed.text
    approvals = changed.json()["approvals"]
    assert (approvals["required"], approvals["valid"], len(approvals["stale"])) == (2, [], 2)
    assert changed.json()["history"][-1]["intent"] == "plan"
    refused = alice.post(f"/v1/rollouts/{rid}/start", json={"reason": "go"})
    assert error_of(refused)["message"] == ("approvals: 0 of 2 required; 2 earlier approval(s) are of the release "
                                            "before it changed")
    bad_plan = alice.request("PUT", f"/v1/releases/{rid}/plan", json={"plan": "name: x\nwaves: []\n"})
    assert bad_plan.status_code == 400
    # Whoever wrote part of the release may not approve it: dave changes the plan, then tries
    dave = person(governed, "admin", "dave")
    assert dave.request("PUT", f"/v1/releases/{rid}/plan", json={"plan": PLAN}).status_code == 200
    own = dave.post(f"/v1/releases/{rid}/approve", json={"reason": "my own plan"})
    assert own.status_code == 403 and error_of(own)["message"].startswith("dave wrote release")
    assert dave.post(f"/v1/releases/{rid}/approve", json={"emergency": True, "reason": "x"}).status_code == 403


def test_a_freeze_blocks_starts_except_by_the_emergency_path(governed: Api) -> None:
    alice = person(governed, "releaser", "alice")
    rid = release(governed, alice)
    assert person(governed, "approver", "bob").post(f"/v1/releases/{rid}/approve",
                                                    json={"reason": "ok"}).status_code == 200
    # Given a global freeze for the holidays
    frozen = governed.http.post("/v1/freezes", json={"hours": 48, "reason": "holidays"})
    assert frozen.status_code == 201
    bad = governed.http.post("/v1/freezes", json={"hours": 1, "reason": "x",
                                                  "starts_at": "2026-12-24T00:00:00"})
    assert bad.status_code == 422  # no time zone
    refused = alice.post(f"/v1/rollouts/{rid}/start", json={"reason": "go"})
    assert refused.status_code == 409 and "freeze: everyone until" in error_of(refused)["message"]
    assert "(holidays)" in error_of(refused)["message"]
    assert governed.http.get(f"/v1/rollouts/{rid}").json()["freezes"][0]["reason"] == "holidays"
    # When carol approves the emergency path and alice takes it, Then it starts and says so
    no_one = alice.post(f"/v1/rollouts/{rid}/start", json={"reason": "fix-forward", "emergency": True})
    assert no_one.status_code == 403
    carol = person(governed, "approver", "carol")
    assert carol.post(f"/v1/releases/{rid}/approve", json={"emergency": True,
                                                           "reason": "customer outage"}).status_code == 200
    started = alice.post(f"/v1/rollouts/{rid}/start", json={"reason": "fix-forward", "emergency": True})
    assert started.status_code == 200, started.text
    entry = started.json()["history"][-1]
    assert entry["reason"].startswith("emergency start during freeze: everyone until")
    assert entry["details"]["approved_by"] == "carol" and entry["details"]["freezes"]
    emergency = started.json()["emergency"]
    assert (emergency["started_by"], emergency["approved_by"], emergency["reason"]) == ("alice", "carol", "fix-forward")
    assert emergency["overrode"][0].startswith("freeze: everyone until")
    # And after the window, the freeze is over
    governed.clock.advance(timedelta(hours=49))
    assert governed.http.get("/v1/freezes").json()["freezes"] == []
    assert len(governed.http.get("/v1/freezes", params={"all": True}).json()["freezes"]) == 1


def test_a_team_freeze_holds_only_that_teams_content(governed: Api) -> None:
    governed.http.post("/v1/teams", json={"name": "red"})
    governed.http.post("/v1/teams", json={"name": "blue"})
    red_admin = person(governed, "admin", "rita", team="red")
    assert red_admin.post("/v1/freezes", json={"hours": 2, "reason": "red's own"}).status_code == 403  # global
    assert red_admin.post("/v1/freezes", json={"team": "blue", "hours": 2, "reason": "x"}).status_code == 403
    made = red_admin.post("/v1/freezes", json={"team": "red", "hours": 2, "reason": "red release train"})
    assert made.status_code == 201
    assert governed.http.post("/v1/content-types", json={"name": "red/one", "category": "configuration", "team": "red",
                                                         "unvalidated_reason": UNVALIDATED}).status_code == 201
    alice = person(governed, "releaser", "alice")
    rid = release(governed, alice)  # CT has no team: not frozen by red's window
    assert person(governed, "approver", "bob").post(f"/v1/releases/{rid}/approve",
                                                    json={"reason": "ok"}).status_code == 200
    assert alice.post(f"/v1/rollouts/{rid}/start", json={"reason": "go"}).status_code == 200
    assert red_admin.request("DELETE", f"/v1/freezes/{made.json()['id']}").status_code == 200


def test_tokens_are_hashed_shown_once_expire_and_revoke(governed: Api) -> None:
    made = governed.http.post("/v1/tokens", json={"role": "viewer", "name": "ci-bot", "expires_in_days": 1})
    assert made.status_code == 201
    secret, token_id = made.json()["token"], made.json()["id"]
    with governed.db.session() as s:
        row = s.scalars(select(ApiToken).where(ApiToken.id == token_id)).one()
        assert secret not in (row.token_hash, row.name)
        assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    listed = governed.http.get("/v1/tokens").json()["tokens"]
    assert all("token" not in t for t in listed) and any(t["id"] == token_id for t in listed)
    bot = governed.as_token(secret)
    assert bot.get("/v1/whoami").json()["name"] == "ci-bot"
    governed.clock.advance(timedelta(days=1, seconds=1))
    assert bot.get("/v1/whoami").status_code == 401
    other = governed.http.post("/v1/tokens", json={"role": "operator", "name": "pager"}).json()
    pager = governed.as_token(other["token"])
    assert pager.get("/v1/whoami").status_code == 200
    assert governed.http.request("DELETE", f"/v1/tokens/{other['id']}").json()["revoked_at"] is not None
    assert pager.get("/v1/whoami").status_code == 401
    wrong = governed.http.post("/v1/tokens", json={"role": "root"})
    assert wrong.status_code == 400 and error_of(wrong)["details"]["field"] == "role"
    tenant = governed.http.post("/v1/tokens", json={"role": "releaser", "tenant": "acme"})
    assert tenant.status_code == 400 and "viewer or admin" in error_of(tenant)["message"]


def test_a_tenant_admin_sees_and_manages_only_its_tenant(governed: Api) -> None:
    acme = person(governed, "admin", "acme-it", tenant="acme")
    for tenant in ("acme", "globex"):
        enroll = governed.http.post("/v1/enroll-tokens", json={"tenant": tenant}).json()["token"]
        governed.device(enroll, platform="linux")
    devices = acme.get("/v1/devices").json()["devices"]
    assert [d["tenant"] for d in devices] == ["acme"]
    assert acme.get("/v1/devices", params={"tenant": "globex"}).status_code == 403
    assert acme.post("/v1/enroll-tokens", json={"tenant": "globex"}).status_code == 403
    assert acme.post("/v1/enroll-tokens", json={"tenant": "acme"}).status_code == 201
    viewer = acme.post("/v1/tokens", json={"role": "viewer", "name": "acme-viewer"}).json()
    assert viewer["tenant"] == "acme"
    assert sorted(t["name"] for t in acme.get("/v1/tokens").json()["tokens"]) == ["acme-it", "acme-viewer"]
    assert acme.get("/v1/releases").status_code == 403
    assert acme.get("/v1/audit").status_code == 403


def test_every_change_is_in_the_audit_log_with_who_where_and_why(governed: Api) -> None:
    alice = person(governed, "releaser", "alice")
    rid = release(governed, alice)
    person(governed, "approver", "bob").post(f"/v1/releases/{rid}/approve", json={"reason": "reviewed"})
    alice.post(f"/v1/rollouts/{rid}/start", json={"reason": "weekly content"})
    governed.http.post(f"/v1/rollouts/{rid}/halt", json={"reason": "canary crashes"})
    entries = governed.http.get("/v1/audit", params={"limit": 1000}).json()["entries"]
    actions = [(e["actor"], e["action"]) for e in entries]
    for expected in [("admin", "api-token.create"), ("admin", "content-type.create"), ("alice", "artifact.push"),
                     ("system", "rollout.prepare"), ("alice", "release.create"), ("bob", "release.approve"),
                     ("alice", "rollout.start"), ("admin", "rollout.halt")]:
        assert expected in actions, expected
    halt = next(e for e in entries if e["action"] == "rollout.halt")
    assert (halt["target"], halt["reason"], halt["role"]) == (rid, "canary crashes", "admin")
    assert halt["source"] == "testclient"
    verified = governed.http.get("/v1/audit/verify").json()
    assert verified["ok"] is True and verified["entries"] == len(entries)


def test_the_approval_defaults_are_one_for_content_and_two_for_software() -> None:
    assert DEFAULT_APPROVALS == {Category.RAPID_RESPONSE: 1, Category.SYSTEM_CRITICAL: 1,
                                 Category.CONFIGURATION: 1, Category.SOFTWARE: 2}

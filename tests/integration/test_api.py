"""The admin and agent APIs in process, on SQLite and PostgreSQL: every route family, its
errors in the one shape, and a rollout driven by the reconciler under a manual clock."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import CT, Api, Caller, error_of, make_api
from tests.support import UNVALIDATED

TWO_WAVES = """
name: two-waves
waves:
  - name: canary
    max_devices: {total: 2}
    soak: 10m
    gates: {failure_budget: 0, min_devices: 2}
  - name: everyone
    share: 1.0
    soak: 10m
    gates: {failure_budget: 1}
"""


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s")


def push(api: Api, version: str, data: bytes | None = None, **params: str) -> Any:
    data = data if data is not None else f"content {version}".encode()
    query = {"content_type": CT, "version": version, "sha256": hashlib.sha256(data).hexdigest(), **params}
    return api.http.post("/v1/artifacts", params=query, content=data,
                         headers={"Content-Type": "application/octet-stream"})


def release(api: Api, version: str, plan: str = TWO_WAVES) -> str:
    assert push(api, version).status_code == 201
    r = api.http.post("/v1/releases", json={"content_type": CT, "version": version, "plan": plan})
    assert r.status_code == 201, r.text
    assert r.json()["phase"] == "ready"
    release_id: str = r.json()["release"]
    return release_id


def event(kind: str, version: str) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "kind": kind, "content_type": CT, "version": version,
            "at": "2024-07-19T04:09:00+00:00"}


def status(api: Api, release_id: str) -> dict[str, Any]:
    r = api.http.get(f"/v1/rollouts/{release_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# -- content types ----------------------------------------------------------------------------------------
def test_content_types_create_list_and_refuse_bad_input(api: Api) -> None:
    # Without a definition, a content type is registered only with the reason it skips validation
    bare = api.http.post("/v1/content-types", json={"name": CT, "category": "rapid-response"})
    assert bare.status_code == 400 and error_of(bare)["details"]["field"] == "unvalidated_reason"
    assert "requires the validators schema, contract, fuzz, matrix" in error_of(bare)["message"]
    terse = api.http.post("/v1/content-types", json={"name": CT, "category": "rapid-response",
                                                      "unvalidated_reason": "because"})
    assert terse.status_code == 400 and error_of(terse)["details"] == {"field": "unvalidated_reason",
                                                                       "value": "because"}
    reason = "lab content type for rollout drills"
    r = api.http.post("/v1/content-types", json={"name": CT, "category": "rapid-response",
                                                  "unvalidated_reason": reason})
    listed = {"name": CT, "category": "rapid-response", "team": None, "validated": False,
              "unvalidated_reason": reason}
    assert r.status_code == 201 and r.json() == listed
    assert api.http.get("/v1/content-types").json()["content_types"] == [listed]

    dup = api.http.post("/v1/content-types", json={"name": CT, "category": "software",
                                                    "unvalidated_reason": reason})
    assert dup.status_code == 409 and error_of(dup)["code"] == "conflict"
    bad = api.http.post("/v1/content-types", json={"name": "x", "category": "nonsense"})
    assert bad.status_code == 400
    assert error_of(bad)["details"] == {"field": "category", "value": "nonsense"}
    bad_name = api.http.post("/v1/content-types", json={"name": "Bad Name!", "category": "software"})
    assert bad_name.status_code == 400 and error_of(bad_name)["details"]["field"] == "name"
    missing = api.http.post("/v1/content-types", json={"name": "y"})
    assert missing.status_code == 422 and error_of(missing)["details"]["problems"][0]["field"] == "category"


# -- artifacts --------------------------------------------------------------------------------------------
def _stored_blobs(api: Api, tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]


def test_artifact_push_download_and_hash_mismatch(setup: tuple[Api, str], tmp_path: Path) -> None:
    api, enroll = setup
    data = b"\x00template-291\xff" * 100
    r = push(api, "291.0", data)
    assert r.status_code == 201, r.text
    digest = hashlib.sha256(data).hexdigest()
    assert r.json()["sha256"] == digest and r.json()["size"] == len(data)
    assert [a["version"] for a in api.http.get("/v1/artifacts").json()["artifacts"]] == ["291.0"]

    got = api.http.get(f"/v1/artifacts/{digest}")
    assert got.status_code == 200 and got.content == data
    device = api.device(enroll)
    assert device.get(f"/v1/artifacts/{digest}").content == data
    assert api.as_token(None).get(f"/v1/artifacts/{digest}").status_code == 401

    before = _stored_blobs(api, tmp_path)
    wrong = push(api, "292.0", b"other bytes", sha256="0" * 64)
    assert wrong.status_code == 400
    assert "does not match" in error_of(wrong)["message"]
    assert _stored_blobs(api, tmp_path) == before
    assert len(api.http.get("/v1/artifacts").json()["artifacts"]) == 1

    again = push(api, "291.0", b"different")
    assert again.status_code == 409 and "immutable" in error_of(again)["message"]
    unknown_type = push(api, "1.0", content_type="no/such-type")
    assert unknown_type.status_code == 404
    missing = api.http.get(f"/v1/artifacts/{'a' * 64}")
    assert missing.status_code == 404 and error_of(missing)["code"] == "not_found"
    assert api.http.get("/v1/artifacts/not-a-hash").status_code == 400


@pytest.fixture
def small_api(tmp_path: Path, db_url: str) -> Iterator[Api]:
    yield from make_api(tmp_path, db_url, max_artifact_bytes=1024)


def test_oversized_upload_is_refused_and_nothing_kept(small_api: Api, tmp_path: Path) -> None:
    api = small_api
    api.http.post("/v1/content-types", json={"name": CT, "category": "software", "unvalidated_reason": UNVALIDATED})
    r = push(api, "big", b"x" * 5000)
    assert r.status_code == 413 and error_of(r)["code"] == "payload_too_large"
    assert _stored_blobs(api, tmp_path) == []
    assert api.http.get("/v1/artifacts").json()["artifacts"] == []


# -- releases and plans -----------------------------------------------------------------------------------
def test_release_with_invalid_plan_names_field_and_line(setup: tuple[Api, str]) -> None:
    api, _ = setup
    assert push(api, "1.0").status_code == 201
    plan = "name: p\nwaves:\n  - name: a\n    share: 1.5\n    soak: 1m\n"
    r = api.http.post("/v1/releases", json={"content_type": CT, "version": "1.0", "plan": plan,
                                            "plan_origin": "p.yaml"})
    assert r.status_code == 400
    err = error_of(r)
    assert err["code"] == "invalid_plan"
    assert err["details"]["problems"] == [{"field": "waves[0].share", "line": 4,
                                           "message": "must be a fraction with 0 < share <= 1 (1% is 0.01), got 1.5"}]
    assert "p.yaml:4" in err["message"]
    assert api.http.get("/v1/releases").json()["releases"] == []

    unknown = api.http.post("/v1/releases", json={"content_type": CT, "version": "9.9", "plan": TWO_WAVES})
    assert unknown.status_code == 404 and "push it first" in error_of(unknown)["message"]


def test_rollout_actions_follow_the_rules(setup: tuple[Api, str]) -> None:
    api, _ = setup
    rid = release(api, "1.0")
    assert api.http.post(f"/v1/rollouts/{rid}/pause").status_code == 409  # ready: nothing to pause
    assert api.http.post(f"/v1/rollouts/{rid}/start", json={"reason": "go"}).json()["phase"] == "rolling"
    assert api.http.post(f"/v1/rollouts/{rid}/pause").json()["phase"] == "paused"
    assert api.http.post(f"/v1/rollouts/{rid}/resume").json()["phase"] == "rolling"
    assert api.http.post(f"/v1/rollouts/{rid}/halt", json={"reason": "looks wrong"}).json()["phase"] == "halted"
    no_reason = api.http.post(f"/v1/rollouts/{rid}/resume")
    assert no_reason.status_code == 409
    err = error_of(no_reason)
    assert err["code"] == "transition_rejected" and "needs a reason" in err["message"]
    # With nobody exposed the reconciler may finish the rollback before this answer is read.
    rolled = api.http.post(f"/v1/rollouts/{rid}/rollback", json={"reason": "bad"}).json()["phase"]
    assert rolled in ("rolling_back", "rolled_back")
    again = api.http.post(f"/v1/rollouts/{rid}/start")
    assert again.status_code == 409 and "cannot start a rollout that is rol" in error_of(again)["message"]

    # Nobody was exposed, so the reconciler finishes the rollback at once.
    history = wait_for(lambda: (s := status(api, rid))["phase"] == "rolled_back" and s["history"])
    assert [(h["from"], h["to"]) for h in history[:7]] == [
        (None, "draft"), ("draft", "ready"), ("ready", "rolling"), ("rolling", "paused"), ("paused", "rolling"),
        ("rolling", "halted"), ("halted", "rolling_back")]
    assert history[2]["reason"] == "go" and history[5]["reason"] == "looks wrong"
    assert all(h["actor"] for h in history)

    assert api.http.post("/v1/rollouts/rel-nope/start").status_code == 404
    bogus = api.http.post(f"/v1/rollouts/{rid}/explode")
    assert bogus.status_code == 404 and "expected one of" in error_of(bogus)["message"]
    assert api.http.get("/v1/rollouts/rel-nope").status_code == 404


def test_only_one_active_rollout_per_content_type(setup: tuple[Api, str]) -> None:
    api, _ = setup
    first, second = release(api, "1.0"), release(api, "2.0")
    assert api.http.post(f"/v1/rollouts/{first}/start").status_code == 200
    refused = api.http.post(f"/v1/rollouts/{second}/start")
    assert refused.status_code == 409 and first in error_of(refused)["message"]


# -- the agent API and a whole rollout --------------------------------------------------------------------
def test_agent_credentials_are_checked(setup: tuple[Api, str]) -> None:
    api, enroll = setup
    bad = api.as_token("rfe_not-a-token").post("/v1/agent/enroll", json={"platform": "windows"})
    assert bad.status_code == 401 and error_of(bad)["code"] == "unauthorized"
    assert bad.headers["www-authenticate"] == "Bearer"
    assert api.as_token("nope.nope").post("/v1/agent/checkin", json={}).status_code == 401
    device = api.device(enroll)
    # A device credential never opens an admin endpoint.
    assert device.get("/v1/releases").status_code == 401
    assert device.post("/v1/agent/checkin", json={"bogus": 1}).status_code == 422
    too_many = device.post("/v1/agent/checkin", json={"events": [event("healthy", "1") for _ in range(201)]})
    assert too_many.status_code == 400 and error_of(too_many)["details"]["field"] == "events"


def _devices(api: Api, enroll: str, n: int) -> list[Caller]:
    regions = ["eu-west", "us-east"]
    return [api.device(enroll, platform=["windows", "linux"][i % 2], region=regions[(i // 2) % 2]) for i in range(n)]


def _desired(device: Caller, versions: dict[str, str] | None = None) -> dict[str, Any] | None:
    r = device.post("/v1/agent/checkin", json={"versions": versions or {}})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body["desired"].get(CT)


def test_rollout_admits_within_caps_advances_after_soak_and_completes(setup: tuple[Api, str]) -> None:
    api, enroll = setup
    devices = _devices(api, enroll, 8)
    rid = release(api, "1.0")
    api.http.post(f"/v1/rollouts/{rid}/start")
    wait_for(lambda: api.http.get("/v1/server").json()["devices"] == 8)
    time.sleep(0.2)  # let the population refresh rebuild the cohort table

    told = [_desired(d) for d in devices]
    assert sum(1 for t in told if t is not None) == 2, "the canary is capped at 2 devices"
    exposed = [d for d, t in zip(devices, told, strict=True) if t is not None]
    # Announcing intent is acknowledged by id, and counts the device as exposed.
    for d in exposed:
        ev = event("intent", "1.0")
        assert d.post("/v1/agent/checkin", json={"events": [ev]}).json()["acked"] == [ev["id"]]
        d.post("/v1/agent/checkin", json={"versions": {CT: "1.0"}, "events": [event("healthy", "1.0")]})
    # Stable: the same devices are told again, nobody else.
    assert [_desired(d) is not None for d in devices] == [t is not None for t in told]

    api.clock.advance(599)
    api.ticks()
    assert status(api, rid)["wave"] == 0, "no promotion before the soak has passed"
    api.clock.advance(2)
    wait_for(lambda: status(api, rid)["wave"] == 1)
    wait_for(lambda: all(_desired(d) is not None for d in devices))  # once the snapshot has the new wave
    for d in devices:
        d.post("/v1/agent/checkin", json={"versions": {CT: "1.0"}, "events": [event("intent", "1.0")]})
    api.clock.advance(601)
    # Soaked, but the six new trials are undecided: the wave waits for evidence, and says so.
    held = wait_for(lambda: (s := status(api, rid))["waiting"] and s)
    assert held["phase"] == "rolling" and held["wave"] == 1
    assert any("trials undecided" in line for line in held["waiting"]), held["waiting"]
    assert sum(p["undecided"] for p in held["progress"].values()) == 6
    for d in devices:
        d.post("/v1/agent/checkin", json={"versions": {CT: "1.0"}, "events": [event("healthy", "1.0")]})
    final = wait_for(lambda: (s := status(api, rid))["phase"] == "completed" and s)
    assert final["totals"]["exposed"] == 8
    assert [w["state"] for w in final["waves"]] == ["done", "done"]
    assert [w["exposed"] for w in final["waves"]] == [2, 6]
    assert "soak 10m passed" in final["history"][-1]["reason"]

    listed = api.http.get("/v1/devices", params={"platform": "windows"}).json()
    assert listed["total"] == 4 and all(d["platform"] == "windows" for d in listed["devices"])
    wait_for(lambda: all(d["versions"].get(CT) == "1.0"
                         for d in api.http.get("/v1/devices").json()["devices"]))


def test_failure_budget_halts_and_rollback_returns_devices_to_baseline(setup: tuple[Api, str]) -> None:
    api, enroll = setup
    devices = _devices(api, enroll, 6)
    wait_for(lambda: api.http.get("/v1/server").json()["devices"] == 6)
    good = release(api, "1.0", "name: all\nwaves:\n  - name: all\n    share: 1.0\n    soak: 1m\n")
    api.http.post(f"/v1/rollouts/{good}/start")
    for d in devices:
        assert _desired(d)["version"] == "1.0"  # type: ignore[index]
        d.post("/v1/agent/checkin", json={"versions": {CT: "1.0"},
                                           "events": [event("intent", "1.0"), event("healthy", "1.0")]})
    api.clock.advance(61)
    wait_for(lambda: status(api, good)["phase"] == "completed")
    baseline = {CT: "1.0"}

    bad = release(api, "2.0", "name: bad\nwaves:\n  - name: all\n    share: 1.0\n    soak: 1h\n"
                              "    gates: {failure_budget: 1}\n")
    api.http.post(f"/v1/rollouts/{bad}/start")
    for d in devices[:2]:
        assert _desired(d, baseline)["version"] == "2.0"  # type: ignore[index]
        d.post("/v1/agent/checkin", json={"versions": baseline, "events": [event("intent", "2.0")]})
        d.post("/v1/agent/checkin", json={"versions": {CT: "2.0"}, "events": [event("crash", "2.0")]})
    halted = wait_for(lambda: (s := status(api, bad))["phase"] == "halted" and s)
    # Check-ins are answered from the snapshot, which follows the database a moment later.
    wait_for(lambda: api.http.get("/v1/server").json()["rollout_phases"].get(bad) == "halted")
    reason = halted["history"][-1]["reason"]
    assert halted["history"][-1]["actor"] == "reconciler"
    assert "failure budget exceeded" in reason and "2 failed devices" in reason and "windows/eu-west" in reason
    # Halted: nobody new is exposed.
    assert all(_desired(d, baseline)["version"] == "1.0" for d in devices[2:])  # type: ignore[index]

    api.http.post(f"/v1/rollouts/{bad}/rollback", json={"reason": "crashes"})
    for d in devices[:2]:
        assert _desired(d, {CT: "2.0"})["version"] == "1.0"  # type: ignore[index]
    api.ticks()
    assert status(api, bad)["phase"] == "rolling_back", "two devices still report 2.0"
    for d in devices[:2]:
        d.post("/v1/agent/checkin", json={"versions": baseline})
    done = wait_for(lambda: (s := status(api, bad))["phase"] == "rolled_back" and s)
    assert "checked in since the rollback and report the baseline" in done["history"][-1]["reason"]


# -- roles and the error shape ----------------------------------------------------------------------------
def test_roles_are_enforced(setup: tuple[Api, str]) -> None:
    api, _ = setup
    rid = release(api, "1.0")
    viewer = api.as_token(api.token_for("viewer"))
    assert viewer.get(f"/v1/rollouts/{rid}").status_code == 200
    denied = viewer.post(f"/v1/rollouts/{rid}/start")
    assert denied.status_code == 403 and "viewer" in error_of(denied)["message"]
    operator = api.as_token(api.token_for("operator"))
    assert operator.post(f"/v1/rollouts/{rid}/start").status_code == 403  # starting is a releaser's call
    releaser = api.as_token(api.token_for("releaser"))
    assert releaser.post(f"/v1/rollouts/{rid}/start").status_code == 200
    assert operator.post(f"/v1/rollouts/{rid}/halt").status_code == 200
    assert releaser.post("/v1/content-types", json={"name": "x/y", "category": "software",
                                                                 "unvalidated_reason": UNVALIDATED}).status_code == 403
    assert api.as_token("rft_wrong").get("/v1/releases").status_code == 401
    assert api.as_token(None).get("/v1/releases").status_code == 401
    assert api.http.get("/v1/whoami").json()["role"] == "admin"


@pytest.mark.parametrize(("method", "path", "status_code"), [
    ("GET", "/v1/no-such-route", 404),
    ("DELETE", "/v1/content-types", 405),
    ("POST", "/v1/releases", 422),
    ("GET", "/v1/releases?phase=exploded", 400),
    ("GET", "/v1/releases/rel-missing", 404),
])
def test_every_error_has_the_one_shape(api: Api, method: str, path: str, status_code: int) -> None:
    r = api.http.request(method, path, json={} if method == "POST" else None)
    assert r.status_code == status_code
    error_of(r)


def test_openapi_is_served(api: Api) -> None:
    spec = api.http.get("/openapi.json").json()
    assert "/v1/agent/checkin" in spec["paths"] and "/v1/rollouts/{release_id}/{action}" in spec["paths"]


def test_resuming_a_halt_counts_only_new_failures(setup: tuple[Api, str]) -> None:
    api, enroll = setup
    devices = _devices(api, enroll, 4)
    wait_for(lambda: api.http.get("/v1/server").json()["devices"] == 4)
    rid = release(api, "1.0", "name: all\nwaves:\n  - name: all\n    share: 1.0\n    soak: 1h\n"
                              "    gates: {failure_budget: 0}\n")
    api.http.post(f"/v1/rollouts/{rid}/start")
    for d in devices:
        assert _desired(d) is not None
        d.post("/v1/agent/checkin", json={"events": [event("intent", "1.0")]})
    devices[0].post("/v1/agent/checkin", json={"events": [event("crash", "1.0")]})
    wait_for(lambda: status(api, rid)["phase"] == "halted")

    api.clock.advance(5)
    resumed = api.http.post(f"/v1/rollouts/{rid}/resume", json={"reason": "crash was a lab machine"})
    assert resumed.json()["phase"] == "rolling"
    api.ticks()
    assert status(api, rid)["phase"] == "rolling", "the failure a person answered for halted it again"

    api.clock.advance(5)
    devices[1].post("/v1/agent/checkin", json={"events": [event("crash", "1.0")]})
    again = wait_for(lambda: (s := status(api, rid))["phase"] == "halted" and s)
    assert "1 failed devices since the resume at" in again["history"][-1]["reason"]

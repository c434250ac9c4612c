"""What the agent API tells an agent about rollbacks and revocations, and what it counts from
the lifecycle events an agent sends, in process on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.conftest import CT, Api, Caller, error_of, make_api
from tests.integration.test_api import _devices, event, release, status, wait_for

ONE_WAVE = "name: all\nwaves:\n  - name: all\n    share: 1.0\n    soak: 1m\n"


def checkin(device: Caller, versions: dict[str, str] | None = None,
            events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    r = device.post("/v1/agent/checkin", json={"versions": versions or {}, "events": events or []})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def completed_baseline(api: Api, devices: list[Caller]) -> str:
    good = release(api, "1.0", ONE_WAVE)
    api.http.post(f"/v1/rollouts/{good}/start")
    for d in devices:
        target = checkin(d)["desired"][CT]
        assert target["version"] == "1.0"
        assert "activation" not in target  # the default policy costs no bytes
        # Promotion needs evidence: every device announces, runs and confirms the version.
        checkin(d, {CT: "1.0"}, [event("intent", "1.0"), event("activated", "1.0"), event("healthy", "1.0")])
    api.clock.advance(61)
    wait_for(lambda: status(api, good)["phase"] == "completed")
    return good


def test_the_plan_decides_whether_agents_need_an_acknowledged_intent(setup: tuple[Api, str]) -> None:
    api, enroll = setup
    device = _devices(api, enroll, 1)[0]
    wait_for(lambda: api.http.get("/v1/server").json()["devices"] == 1)
    rid = release(api, "1.0", ONE_WAVE + "activation:\n  require_intent_ack: false\n  intent_ack_timeout: 5s\n")
    api.http.post(f"/v1/rollouts/{rid}/start")
    target = checkin(device)["desired"][CT]
    assert target["activation"] == {"require_intent_ack": False, "intent_ack_timeout_s": 5.0}
    assert target["version"] == "1.0"
    assert target["url"] == f"/v1/artifacts/{target['sha256']}"

    bad = api.http.post("/v1/releases", json={"content_type": CT, "version": "1.0", "plan":
                                              ONE_WAVE + "activation: {intent_ack_timeout: 1h}\n"})
    assert bad.status_code == 400
    assert "activation.intent_ack_timeout" in error_of(bad)["message"]


def test_rollback_sends_exposed_devices_to_their_lkg_and_revokes_the_version(setup: tuple[Api, str]) -> None:
    api, enroll = setup
    devices = _devices(api, enroll, 4)
    wait_for(lambda: api.http.get("/v1/server").json()["devices"] == 4)
    completed_baseline(api, devices)
    baseline = {CT: "1.0"}

    bad = release(api, "2.0", "name: bad\nwaves:\n  - name: all\n    share: 1.0\n    soak: 1h\n"
                              "    gates: {failure_budget: 10}\n")
    api.http.post(f"/v1/rollouts/{bad}/start")
    exposed, others = devices[:2], devices[2:]
    for d in exposed:
        assert checkin(d, baseline)["desired"][CT]["version"] == "2.0"
        checkin(d, baseline, [event("intent", "2.0")])
        checkin(d, {CT: "2.0"}, [event("activated", "2.0"), event("heartbeat", "2.0")])
    checkin(exposed[0], {CT: "2.0"}, [event("healthy", "2.0")])
    checkin(exposed[1], {CT: "2.0"}, [event("failed", "2.0")])
    counts = wait_for(lambda: (t := status(api, bad)["totals"])["activated"] == 2 and t)
    assert (counts["exposed"], counts["healthy"], counts["failed"], counts["reverted"]) == (2, 1, 1, 0)

    api.http.post(f"/v1/rollouts/{bad}/halt", json={"reason": "failures"})
    api.http.post(f"/v1/rollouts/{bad}/rollback", json={"reason": "failures after the trial"})
    wait_for(lambda: status(api, bad)["phase"] == "rolling_back")
    # Exposed devices are told to leave 2.0 for their own LKG (the baseline is the fallback) ...
    for d in exposed:
        answer = checkin(d, {CT: "2.0"})
        assert answer["desired"][CT]["rollback_from"] == "2.0"
        assert answer["desired"][CT]["version"] == "1.0"
    # ... devices that never took it are simply on the baseline.
    for d in others:
        answer = checkin(d, baseline)
        assert answer["desired"][CT]["version"] == "1.0"
        assert "rollback_from" not in answer["desired"][CT]
        assert "revoked" not in answer
    # A device still reporting 2.0 is told it is revoked, with the operator's reason.
    answer = checkin(exposed[0], {CT: "2.0"})
    assert answer["revoked"][CT] == {"version": "2.0", "release": bad, "phase": "rolling_back",
                                     "reason": "failures after the trial"}

    # The start-up check answers the same question on its own.
    r = exposed[0].post("/v1/agent/revocations", json={"versions": {CT: "2.0", "other/type": "2.0"}})
    assert r.status_code == 200, r.text
    assert r.json() == {"revoked": {CT: answer["revoked"][CT]}}
    assert exposed[0].post("/v1/agent/revocations", json={"versions": baseline}).json() == {"revoked": {}}

    for d in exposed:
        checkin(d, baseline, [event("rolled_back", "2.0")])
    done = wait_for(lambda: (s := status(api, bad))["phase"] == "rolled_back" and s)
    assert done["totals"]["reverted"] == 2
    # Rolled back and no longer active: the version stays revoked for anyone who still has it.
    wait_for(lambda: exposed[0].post("/v1/agent/revocations", json={"versions": {CT: "2.0"}})
             .json()["revoked"][CT]["phase"] == "rolled_back")


def test_revocation_check_refuses_strangers_and_bad_bodies(setup: tuple[Api, str]) -> None:
    api, enroll = setup
    device = _devices(api, enroll, 1)[0]
    stranger = api.as_token("nobody.secret")
    r = stranger.post("/v1/agent/revocations", json={"versions": {CT: "1.0"}})
    assert r.status_code == 401
    assert error_of(r)["code"] == "unauthorized"
    r = device.post("/v1/agent/revocations", json={"versions": ["1.0"]})
    assert r.status_code == 422
    assert error_of(r)["details"]["problems"][0]["field"] == "versions"
    r = api.http.post("/v1/agent/revocations", json={"versions": {}})  # an admin token is not a device
    assert r.status_code == 401


def test_once_a_halt_is_committed_no_device_is_admitted_even_by_a_node_that_has_not_heard(
        setup: tuple[Api, str]) -> None:
    from sqlalchemy import select

    from ringfence.core.rollout import Intent
    from ringfence.store.releases import apply_intent
    from ringfence.store.schema import AdmissionRow

    api, enroll = setup
    first, second = api.device(enroll), api.device(enroll)
    wait_for(lambda: api.http.get("/v1/server").json()["devices"] == 2)
    rid = release(api, "2.0", ONE_WAVE)
    api.http.post(f"/v1/rollouts/{rid}/start")
    assert checkin(first)["desired"][CT]["version"] == "2.0"
    # Another node halts the rollout: committed in the database, while this node's memory still
    # says "rolling" (nothing reloads it here on SQLite, and not yet on PostgreSQL).
    with api.db.session() as s:
        apply_intent(s, rid, Intent.HALT, actor="node-2", reason="judged elsewhere", now=api.clock.now())
    answer = checkin(second)
    assert CT not in answer["desired"], answer  # no baseline to fall back to: told nothing
    with api.db.session() as s:
        admitted = set(s.scalars(select(AdmissionRow.device_id).where(AdmissionRow.release_id == rid)))
    assert first.token is not None
    assert admitted == {first.token.partition(".")[0]}


def test_a_replayed_checkin_is_refused_also_after_a_restart(tmp_path: Path, db_url: str) -> None:
    # Given a device that numbers its check-ins
    for api in make_api(tmp_path, db_url):
        enroll = api.http.post("/v1/enroll-tokens", json={"tenant": "acme"}).json()["token"]
        device = api.device(enroll)
        assert device.post("/v1/agent/checkin", json={"sequence": 1}).status_code == 200
        assert device.post("/v1/agent/checkin", json={"sequence": 5}).status_code == 200
        # When a check-in is sent again, or an older one, or one without a number, Then each is refused
        for body in ({"sequence": 5}, {"sequence": 4}, {}):
            replayed = device.post("/v1/agent/checkin", json=body)
            assert replayed.status_code == 409, body
            assert error_of(replayed)["code"] == "replayed_checkin"
            assert "refused as a replay" in error_of(replayed)["message"]
        assert device.post("/v1/agent/checkin", json={"sequence": 6}).status_code == 200
        credential = device.token
    # And after the server restarts, the device's last number is remembered
    for api in make_api(tmp_path, db_url):
        device = api.as_token(credential)
        assert error_of(device.post("/v1/agent/checkin", json={"sequence": 6}))["details"]["last"] == 6
        assert device.post("/v1/agent/checkin", json={"sequence": 7}).status_code == 200

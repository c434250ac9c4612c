"""Channel policies over the real app, on SQLite and PostgreSQL: what paused, pinned, delayed,
early and windowed devices are told at check-in while rollouts run, what ``rollout status``
counts as held back, who may set policies, and ``ringfence policy`` against the same app.

Given / When / Then: tenants enroll devices, a customer sets a policy, a release rolls out under
a manual clock, and each device's check-in answer is read.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from ringfence.cli import policy as cli_policy
from ringfence.cli.client import EXIT_INVALID, EXIT_NOT_FOUND, EXIT_OK, Client
from ringfence.cli.policy import policy_app
from ringfence.store import audit
from ringfence.store.access import create_api_token
from tests.integration.conftest import CT, Api, Caller, error_of, make_api
from tests.support import UNVALIDATED

SW = "agent/binary"
EARLY_VERSION = "5.0"
ALL = "name: all\nwaves:\n  - name: all\n    share: 1.0\n    soak: {soak}\n"
EARLY_FIRST = """
name: early-first
waves:
  - name: early
    selector: {channel: early}
    share: 1.0
    soak: 10m
  - name: everyone
    share: 1.0
    soak: 10m
"""


@pytest.fixture
def api(tmp_path: Path, db_url: str) -> Iterator[Api]:
    for running in make_api(tmp_path, db_url):
        for name, category in ((CT, "rapid-response"), (SW, "software"), ("core/kernel-guard", "system-critical")):
            r = running.http.post("/v1/content-types", json={"name": name, "category": category,
                                                             "unvalidated_reason": UNVALIDATED})
            assert r.status_code == 201, r.text
        yield running


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s")


def enroll(api: Api, tenant: str, n: int = 1, **attributes: Any) -> list[Caller]:
    token = api.http.post("/v1/enroll-tokens", json={"tenant": tenant}).json()["token"]
    return [api.device(token, **attributes) for _ in range(n)]


def push(api: Api, version: str, content_type: str = CT) -> None:
    data = f"{content_type} {version}".encode()
    r = api.http.post("/v1/artifacts", content=data, headers={"Content-Type": "application/octet-stream"},
                      params={"content_type": content_type, "version": version,
                              "sha256": hashlib.sha256(data).hexdigest()})
    assert r.status_code == 201, r.text


def start(api: Api, version: str, plan: str, content_type: str = CT) -> str:
    push(api, version, content_type)
    r = api.http.post("/v1/releases", json={"content_type": content_type, "version": version, "plan": plan})
    assert r.status_code == 201, r.text
    release_id: str = r.json()["release"]
    assert api.http.post(f"/v1/rollouts/{release_id}/start").status_code == 200
    return release_id


def status(api: Api, release_id: str) -> dict[str, Any]:
    r = api.http.get(f"/v1/rollouts/{release_id}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def checkin(device: Caller, versions: dict[str, str] | None = None,
            events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    r = device.post("/v1/agent/checkin", json={"versions": versions or {}, "events": events or []})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def told(device: Caller, content_type: str = CT, versions: dict[str, str] | None = None) -> str | None:
    """The version the device is told to run (None: keep what it runs)."""
    answer = checkin(device, versions)["desired"].get(content_type)
    return None if answer is None else answer.get("version")


def event(kind: str, version: str, content_type: str = CT) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "kind": kind, "content_type": content_type, "version": version,
            "at": "2024-07-19T04:09:00+00:00"}


def run(device: Caller, version: str, content_type: str = CT) -> None:
    """The device takes the version: intent, then healthy."""
    checkin(device, events=[event("intent", version, content_type)])
    checkin(device, {content_type: version}, [event("healthy", version, content_type)])


def put(api: Api, **body: Any) -> httpx.Response:
    response: httpx.Response = api.http.put("/v1/policies", json=body)
    return response


def set_policy(api: Api, **body: Any) -> dict[str, Any]:
    r = put(api, **body)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def fleet_of(api: Api, n: int) -> None:
    wait_for(lambda: api.http.get("/v1/server").json()["devices"] == n)
    snapshot = api.app.state.runtime.snapshot
    wait_for(lambda: not snapshot.population_changed)  # the population refresh rebuilt the cohort tables


def complete(api: Api, release_id: str, soak_s: float) -> None:
    api.clock.advance(soak_s + 1)
    try:
        wait_for(lambda: status(api, release_id)["phase"] == "completed")
    except AssertionError:
        now = status(api, release_id)
        raise AssertionError(f"not completed: {now['phase']}, waiting for {now.get('waiting')}, verdicts "
                             f"{now.get('verdicts')}") from None
    wait_for(lambda: release_id not in api.http.get("/v1/server").json()["rollout_phases"])


# -- pause ---------------------------------------------------------------------------------------
def test_a_paused_tenant_never_gets_the_rollouts_version_while_others_do(api: Api) -> None:
    paused, others = enroll(api, "acme", 2), enroll(api, "globex", 2)
    fleet_of(api, 4)
    set_policy(api, tenant="acme", category="rapid-response", channel="pause")

    rid = start(api, "1.0", ALL.format(soak="1m"))
    assert [told(d) for d in others] == ["1.0", "1.0"]
    assert [told(d) for d in paused] == [None, None]
    now = status(api, rid)
    assert now["held_by_policy"] == {"pause": 2, "pin": 0, "delay": 0, "window": 0}
    assert now["totals"]["admitted"] == 2
    for d in others:
        run(d, "1.0")

    complete(api, rid, 60)
    assert [told(d, versions={CT: "0.9"}) for d in paused] == [None, None], "not even once it is GA"
    # Cleared: the tenant follows the default again and gets the baseline.
    assert api.http.delete("/v1/policies", params={"tenant": "acme", "category": "rapid-response"}).status_code == 200
    assert [told(d) for d in paused] == ["1.0", "1.0"]


def test_system_critical_content_cannot_be_paused(api: Api) -> None:
    r = put(api, tenant="acme", category="system-critical", channel="pause")
    assert r.status_code == 400
    err = error_of(r)
    assert err["details"]["field"] == "channel" and "system-critical content cannot be paused" in err["message"]
    assert put(api, tenant="acme", category="system-critical", channel="ga", delay_hours=4).status_code == 200


# -- pin -----------------------------------------------------------------------------------------
def test_a_pinned_group_runs_its_version_until_a_revocation_wins(api: Api) -> None:
    lab = enroll(api, "acme", 1, tags=["lab"])[0]
    rest = enroll(api, "acme", 2)
    fleet_of(api, 3)
    first = start(api, "1.0", ALL.format(soak="1m"))
    for d in [lab, *rest]:
        assert told(d) == "1.0"
        run(d, "1.0")
    complete(api, first, 60)

    missing = put(api, tenant="acme", group="lab", category="rapid-response", channel="pin", version="2.0")
    assert missing.status_code == 400 and error_of(missing)["details"]["field"] == "version"
    push(api, "2.0")
    unreleased = put(api, tenant="acme", group="lab", category="rapid-response", channel="pin", version="2.0")
    assert unreleased.status_code == 400 and error_of(unreleased)["details"]["field"] == "version"
    assert "passed the start gate" in error_of(unreleased)["message"], "a pin skips no gate"
    wrong_type = put(api, tenant="acme", group="lab", category="rapid-response", channel="pin", version="1.0",
                     content_type=SW)
    assert wrong_type.status_code == 400 and error_of(wrong_type)["details"]["field"] == "content_type"
    pinned = set_policy(api, tenant="acme", group="lab", category="rapid-response", channel="pin", version="1.0")
    assert pinned["content_type"] == CT, "the one content type of the category that has 1.0"

    second = api.http.post("/v1/releases", json={"content_type": CT, "version": "2.0",
                                                 "plan": ALL.format(soak="1h")}).json()["release"]
    assert api.http.post(f"/v1/rollouts/{second}/start").status_code == 200
    assert [told(d, versions={CT: "1.0"}) for d in rest] == ["2.0", "2.0"]
    assert told(lab, versions={CT: "1.0"}) == "1.0", "runs its pin and nothing else"
    assert status(api, second)["held_by_policy"]["pin"] == 1

    # Pinned to the version that is rolling out, then 2.0 is rolled back: the revocation wins over the pin.
    set_policy(api, tenant="acme", group="lab", category="rapid-response", channel="pin", version="2.0")
    answer = checkin(lab, {CT: "1.0"})["desired"][CT]
    assert answer["version"] == "2.0"
    checkin(lab, {CT: "2.0"})
    roll_back(api, second)
    answer = checkin(lab, {CT: "2.0"})
    assert answer["desired"][CT]["version"] == "1.0", "the baseline"
    assert answer["revoked"][CT]["version"] == "2.0"


def roll_back(api: Api, release_id: str) -> None:
    api.http.post(f"/v1/rollouts/{release_id}/halt", json={"reason": "stop"})
    api.http.post(f"/v1/rollouts/{release_id}/rollback", json={"reason": "undo"})
    wait_for(lambda: status(api, release_id)["phase"] == "rolled_back")  # nobody took it
    wait_for(lambda: release_id not in api.http.get("/v1/server").json()["rollout_phases"])


# -- delay ---------------------------------------------------------------------------------------
def test_a_delayed_tenant_gets_a_version_once_it_has_been_ga_for_the_delay(api: Api) -> None:
    delayed, prompt = enroll(api, "initech")[0], enroll(api, "globex")[0]
    fleet_of(api, 2)
    set_policy(api, tenant="initech", category="rapid-response", channel="ga", delay_hours=24)

    first = start(api, "1.0", ALL.format(soak="1m"))
    assert told(prompt) == "1.0"
    assert told(delayed) is None, "not admitted to the rollout"
    assert status(api, first)["held_by_policy"]["delay"] == 1
    run(prompt, "1.0")
    complete(api, first, 60)
    assert told(delayed) is None, "GA for a minute, not 24 hours"
    api.clock.advance(timedelta(hours=23, minutes=58))
    assert told(delayed) is None
    api.clock.advance(timedelta(minutes=2))
    assert told(delayed) == "1.0"
    checkin(delayed, {CT: "1.0"})

    second = start(api, "2.0", ALL.format(soak="1m"))
    assert told(prompt, versions={CT: "1.0"}) == "2.0"
    assert told(delayed, versions={CT: "1.0"}) == "1.0", "the previous release, GA long enough"
    run(prompt, "2.0")
    complete(api, second, 60)
    assert told(delayed, versions={CT: "1.0"}) == "1.0"
    api.clock.advance(timedelta(hours=24))
    assert told(delayed, versions={CT: "1.0"}) == "2.0"


# -- early ---------------------------------------------------------------------------------------
def test_early_tenants_form_their_own_wave(api: Api) -> None:
    early, normal = enroll(api, "acme", 2), enroll(api, "globex", 3)
    fleet_of(api, 5)
    set_policy(api, tenant="acme", category="rapid-response", channel="early")

    rid = start(api, EARLY_VERSION, EARLY_FIRST)
    assert [told(d) for d in early] == [EARLY_VERSION] * 2
    assert [told(d) for d in normal] == [None] * 3, "the first wave selects channel early only"
    first = status(api, rid)
    assert [w["admitted"] for w in first["waves"]] == [2, 0]
    assert first["held_by_policy"] == {"pause": 0, "pin": 0, "delay": 0, "window": 0}
    for d in early:
        run(d, EARLY_VERSION)
    api.clock.advance(601)
    wait_for(lambda: status(api, rid)["wave"] == 1)
    wait_for(lambda: all(told(d) == EARLY_VERSION for d in normal))
    assert [w["admitted"] for w in status(api, rid)["waves"]] == [2, 3]
    # The device's own channel is untouched: early applies to the category, by policy.
    listed = api.http.get("/v1/devices", params={"tenant": "acme"}).json()["devices"]
    assert {d["channel"] for d in listed} == {"ga"}


# -- maintenance windows -------------------------------------------------------------------------
def test_software_moves_only_inside_its_window_and_status_counts_every_hold(api: Api) -> None:
    windowed = enroll(api, "acme")[0]  # the clock starts on a Friday, 04:00 UTC
    paused, pinned, delayed, free = (enroll(api, t)[0] for t in ("globex", "hooli", "initech", "umbrella"))
    fleet_of(api, 5)
    assert put(api, tenant="acme", category="rapid-response", channel="ga",
               windows=[{"days": ["sat"], "start": "02:00", "end": "06:00"}]).status_code == 400
    set_policy(api, tenant="acme", category="software", channel="ga",
               windows=[{"days": ["sat", "sun"], "start": "02:00", "end": "06:00"}])
    set_policy(api, tenant="globex", category="software", channel="pause")
    seven = start(api, "7.0", ALL.format(soak="1m"), SW)  # a pin names a version that passed the start gate
    assert told(free, SW) == "7.0"
    run(free, "7.0", SW)  # a completion needs confirmed health
    complete(api, seven, 60)
    set_policy(api, tenant="hooli", category="software", channel="pin", version="7.0", content_type=SW)
    set_policy(api, tenant="initech", category="software", channel="ga", delay_hours=72)

    rid = start(api, "8.0", ALL.format(soak="3d"), SW)
    assert told(free, SW) == "8.0"
    run(free, "8.0", SW)
    assert told(windowed, SW) is None, "Friday 04:00: outside its window"
    assert (told(paused, SW), told(pinned, SW), told(delayed, SW)) == (None, "7.0", None)
    assert status(api, rid)["held_by_policy"] == {"pause": 1, "pin": 1, "delay": 1, "window": 1}
    assert status(api, rid)["totals"]["admitted"] == 1

    api.clock.advance(timedelta(hours=22))  # Saturday 02:00
    assert told(windowed, SW) == "8.0"
    run(windowed, "8.0", SW)
    now = status(api, rid)
    assert now["held_by_policy"]["window"] == 0 and now["totals"]["admitted"] == 2


# -- who may set policies ------------------------------------------------------------------------
def tenant_token(api: Api, tenant: str, role: str = "admin") -> Caller:
    with api.db.session() as s:
        _, secret = create_api_token(s, name=f"{tenant}-{role}", role=role, tenant=tenant, now=api.clock.now())
    return api.as_token(secret)


def test_a_tenant_admin_manages_only_its_own_tenant(api: Api) -> None:
    set_policy(api, tenant="globex", category="rapid-response", channel="early")
    acme = tenant_token(api, "acme")
    body = {"tenant": "acme", "category": "rapid-response", "channel": "pause"}
    assert acme.request("PUT", "/v1/policies", json=body).status_code == 200
    other = acme.request("PUT", "/v1/policies", json={**body, "tenant": "globex"})
    assert other.status_code == 403 and error_of(other)["code"] == "forbidden"
    assert acme.request("DELETE", "/v1/policies",
                        params={"tenant": "globex", "category": "rapid-response"}).status_code == 403
    # It sees its own tenant's policies only, and may not even ask for another's.
    assert [p["tenant"] for p in acme.get("/v1/policies").json()["policies"]] == ["acme"]
    assert acme.get("/v1/policies", params={"tenant": "globex"}).status_code == 403
    viewer = tenant_token(api, "acme", "viewer")
    assert viewer.get("/v1/policies").status_code == 200
    assert viewer.request("PUT", "/v1/policies", json=body).status_code == 403
    assert api.as_token(api.token_for("operator")).request("PUT", "/v1/policies", json=body).status_code == 403
    # A global admin sees and changes every tenant's.
    assert [p["tenant"] for p in api.http.get("/v1/policies").json()["policies"]] == ["acme", "globex"]
    assert api.http.delete("/v1/policies", params={"tenant": "globex", "category": "rapid-response"}
                           ).status_code == 200


def test_policies_are_replaced_cleared_and_audited(api: Api) -> None:
    first = set_policy(api, tenant="acme", group="lab", category="rapid-response", channel="pause",
                       reason="lab freeze")
    assert (first["group"], first["revision"], first["changed_by"]) == ("lab", 1, "admin")
    again = set_policy(api, tenant="acme", group="lab", category="rapid-response", channel="early")
    assert (again["channel"], again["revision"]) == ("early", 2)
    assert put(api, tenant="acme", category="rapid-response", channel="ga", delay_hours=5).json()["error"][
        "details"]["field"] == "delay_hours"
    assert put(api, tenant="acme", category="nonsense", channel="ga").json()["error"]["details"]["field"] == \
        "category"
    listed = api.http.get("/v1/policies", params={"tenant": "acme"}).json()["policies"]
    assert [(p["group"], p["channel"]) for p in listed] == [("lab", "early")]

    params = {"tenant": "acme", "group": "lab", "category": "rapid-response"}
    cleared = api.http.delete("/v1/policies", params=params)
    assert cleared.status_code == 200 and cleared.json()["cleared"]["channel"] == "early"
    assert api.http.get("/v1/policies").json()["policies"] == []
    gone = api.http.delete("/v1/policies", params=params)
    assert gone.status_code == 404 and error_of(gone)["code"] == "not_found"
    assert set_policy(api, tenant="acme", group="lab", category="rapid-response", channel="pause")["revision"] == 4

    with api.db.session() as s:
        entries = [(e.action, e.target, e.reason) for e in audit.entries(s, limit=10)
                   if e.action.startswith("policy.")]
    assert entries == [("policy.set", "policy:acme/lab/rapid-response", "lab freeze"),
                       ("policy.set", "policy:acme/lab/rapid-response", ""),
                       ("policy.clear", "policy:acme/lab/rapid-response", ""),
                       ("policy.set", "policy:acme/lab/rapid-response", "")]


# -- the command line ----------------------------------------------------------------------------
@pytest.fixture
def cli(api: Api, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``ringfence policy`` with its HTTP client going through the app in process."""

    class InApp(Client):
        def __init__(self, server: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
            super().__init__("http://testserver", token, timeout)
            self._http.close()
            self._http = api.http

        def close(self) -> None:
            pass

    monkeypatch.setattr(cli_policy, "Client", InApp)
    runner = CliRunner()
    return lambda *args: runner.invoke(policy_app, list(args))


def test_the_command_line_sets_lists_and_clears(api: Api, cli: Callable[..., Any]) -> None:
    done = cli("set", "--tenant", "acme", "--category", "software", "--channel", "ga", "--delay-hours", "24",
               "--window", "sat,sun 02:00-06:00", "--window", "mon-fri 22:00-02:00")
    assert done.exit_code == EXIT_OK, done.output
    assert "tenant acme, software: ga +24h, windows sat,sun 02:00-06:00; mon,tue,wed,thu,fri 22:00-02:00" in \
        done.output
    listed = cli("list", "--json")
    assert listed.exit_code == EXIT_OK
    assert '"delay_hours": 24' in listed.output and '"mon", "tue"' not in listed.output  # indented JSON
    assert "acme" in cli("list").output

    bad_window = cli("set", "--tenant", "acme", "--category", "software", "--channel", "ga", "--window", "weekends")
    assert bad_window.exit_code == EXIT_INVALID and "--window[0]" in bad_window.output
    critical = cli("set", "--tenant", "acme", "--category", "system-critical", "--channel", "pause")
    assert critical.exit_code == EXIT_INVALID and "cannot be paused" in critical.output

    cleared = cli("clear", "--tenant", "acme", "--category", "software", "--json")
    assert cleared.exit_code == EXIT_OK and '"cleared"' in cleared.output
    again = cli("clear", "--tenant", "acme", "--category", "software")
    assert again.exit_code == EXIT_NOT_FOUND and "no policy for tenant 'acme', category software" in again.output

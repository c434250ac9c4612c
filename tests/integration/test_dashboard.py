"""The dashboard over the real app, in process on SQLite and PostgreSQL: the pages are HTML shells
anyone may load (they hold no data), the script and style sheet are served and packaged, the
routes stay out of the API's schema, and the two data endpoints answer only to a token — with
each rollout's progress per wave, the fleet in counts, and the failure curves per stratum."""

from __future__ import annotations

import fnmatch
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest

from ringfence.server.dashboard import UI
from ringfence.store.access import create_api_token
from tests.integration.conftest import CT, Api, Caller, error_of
from tests.integration.test_agent_api import checkin
from tests.integration.test_api import release, wait_for

ROOT = Path(__file__).resolve().parents[2]
CANARY_THEN_ALL = """
name: canary-then-all
waves:
  - name: canary
    selector: {include: {tags: [canary]}}
    share: 1.0
    soak: 1h
  - name: everyone
    share: 1.0
    soak: 1h
"""


@pytest.mark.parametrize("path", ["/", "/ui/rollouts/rel-x", "/ui/login", "/ui/audit"])
def test_every_page_is_an_html_shell_that_loads_the_script_under_a_strict_policy(api: Api, path: str) -> None:
    r = api.as_token(None).get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"
    assert '<script src="/ui/static/dashboard.js" defer></script>' in r.text
    assert 'href="/ui/static/dashboard.css"' in r.text


def test_the_script_and_style_sheet_are_served_and_nothing_else_is(api: Api) -> None:
    anyone = api.as_token(None)
    js = anyone.get("/ui/static/dashboard.js")
    assert (js.status_code, js.headers["content-type"]) == (200, "text/javascript; charset=utf-8")
    assert "sessionStorage" in js.text
    css = anyone.get("/ui/static/dashboard.css")
    assert (css.status_code, css.headers["content-type"]) == (200, "text/css; charset=utf-8")
    for name in ("rollout.html", "..%2Fdashboard.py", "nope.js"):
        missing = anyone.get(f"/ui/static/{name}")
        assert missing.status_code == 404
        error_of(missing)


def test_every_file_of_the_dashboard_is_packaged() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ringfence"]
    files = [p.relative_to(UI.parent.parent).as_posix() for p in UI.iterdir()]  # relative to the package
    assert files
    assert [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)] == []


def test_the_dashboard_is_not_part_of_the_api_schema(api: Api) -> None:
    paths = api.app.openapi()["paths"]
    assert [p for p in paths if p == "/" or p.startswith("/ui")] == []


def test_the_data_endpoints_answer_only_to_a_token_of_the_vendor(setup: tuple[Api, str]) -> None:
    api, _ = setup
    with api.db.session() as s:
        _, tenant = create_api_token(s, name="acme-viewer", role="viewer", now=api.clock.now(), tenant="acme")
    for path in ("/ui/data/overview", "/ui/data/rollouts/rel-x/curves"):
        assert api.as_token(None).get(path).status_code == 401
        assert api.as_token("rft_not-a-token").get(path).status_code == 401
        assert api.as_token(tenant).get(path).status_code == 403
    assert api.as_token(api.token_for("viewer")).get("/ui/data/overview").status_code == 200
    missing = api.http.get("/ui/data/rollouts/rel-nope/curves")
    assert missing.status_code == 404
    error_of(missing)


def _event(api: Api, kind: str) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "kind": kind, "content_type": CT, "version": "291",
            "at": api.clock.now().isoformat()}


def test_the_overview_and_the_curves_show_progress_per_wave_the_fleet_and_who_failed(setup: tuple[Api, str]) -> None:
    api, enroll = setup
    # Given four Windows machines (two of them canaries) and a Linux canary
    canary = [api.device(enroll, platform="windows", tags=["canary"]) for _ in range(2)]
    canary.append(api.device(enroll, platform="linux", tags=["canary"]))
    control = [api.device(enroll, platform="windows") for _ in range(2)]
    wait_for(lambda: api.http.get("/v1/server").json()["devices"] == 5)
    rid = release(api, "291", CANARY_THEN_ALL)
    assert api.http.post(f"/v1/rollouts/{rid}/start", json={"reason": "weekly"}).status_code == 200

    # When the canaries take the release and one Windows canary crashes a minute later
    wait_for(lambda: all(checkin(d)["desired"].get(CT, {}).get("version") == "291" for d in canary))
    for d in canary:
        checkin(d, {CT: "291"}, [_event(api, "intent")])
    for d in control:
        checkin(d)
    api.clock.advance(60)
    checkin(canary[0], {CT: "291"}, [_event(api, "crash")])
    api.clock.advance(60)
    viewer = api.as_token(api.token_for("viewer"))

    # Then the overview shows the fleet in counts: by platform, by region, by the version each reports
    fleet = {"devices": 5, "platforms": {"windows": 4, "linux": 1}, "regions": {"eu-west": 5},
             "versions": {CT: {"291": 3, "none": 2}}}
    overview = wait_for(lambda: (o := _ok(viewer, "/ui/data/overview"))["fleet"] == fleet and o)  # written in batches
    assert list(overview["fleet"]["platforms"]) == ["windows", "linux"]  # largest first
    # And the rollout in its first wave, exposed of admitted per wave, and its last transition
    [rollout] = overview["rollouts"]
    assert {k: rollout[k] for k in ("release", "content_type", "version", "phase", "wave")} == {
        "release": rid, "content_type": CT, "version": "291", "phase": "rolling", "wave": 0}
    assert rollout["waves"] == [{"name": "canary", "admitted": 3, "exposed": 3},
                                {"name": "everyone", "admitted": 0, "exposed": 0}]
    assert (rollout["last"]["intent"], rollout["last"]["to"], rollout["last"]["reason"]) == ("start", "rolling",
                                                                                             "weekly")

    # And the curves: per stratum, exposed and control devices and their failures over the rollout
    # (the control devices count from their first check-in, written with the sightings)
    def windows_control(c: dict[str, Any]) -> int:
        return int({s["stratum"]: s["points"] for s in c["strata"]}["windows/eu-west"][-1][3])

    curves = wait_for(lambda: (c := _ok(viewer, f"/ui/data/rollouts/{rid}/curves?points=5")) and c["strata"]
                      and windows_control(c) == 2 and c)
    assert curves["columns"] == ["at_s", "exposed", "exposed_failed", "control", "control_failed"]
    windows = {c["stratum"]: c["points"] for c in curves["strata"]}["windows/eu-west"]
    assert windows == [[0.0, 2, 0, 2, 0], [30.0, 2, 0, 2, 0], [60.0, 2, 1, 2, 0], [90.0, 2, 1, 2, 0],
                       [120.0, 2, 1, 2, 0]]
    assert {c["stratum"]: c["points"][-1] for c in curves["strata"]}["linux/eu-west"] == [120.0, 1, 0, 0, 0]


def test_the_curves_of_a_release_that_has_not_started_are_empty(setup: tuple[Api, str]) -> None:
    api, _ = setup
    rid = release(api, "291", CANARY_THEN_ALL)
    assert _ok(api.as_token(api.token_for("viewer")), f"/ui/data/rollouts/{rid}/curves") == {
        "release": rid, "start": None, "end": None,
        "columns": ["at_s", "exposed", "exposed_failed", "control", "control_failed"], "strata": []}


def _ok(caller: Caller, path: str) -> Any:
    r = caller.get(path)
    assert r.status_code == 200, r.text
    return r.json()

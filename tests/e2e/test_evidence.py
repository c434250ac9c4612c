"""Evidence, never elapsed time, over a real server process: a rollout nobody confirmed stays
rolling and says what it waits for, and a device the rollout never admitted cannot halt it.

"Did not happen" is checked after reconciler ticks have passed (the server counts them in
``/v1/server``), never after a sleep.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support import SENSOR_DIR, UNVALIDATED, AgentProcess, Device, Publisher, ServerProcess, run_cli, until

pytestmark = pytest.mark.e2e

CT = "sensor/channel-files"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
QUICK = """
name: quick
waves:
  - name: canary
    max_devices: {total: 2}
    soak: 1s
    gates: {failure_budget: 0}
  - name: everyone
    share: 1.0
    soak: 1s
    gates: {failure_budget: 0}
"""


def _ticks(admin: httpx.Client) -> int:
    ticks: int = admin.get("/v1/server").json()["reconciler"]["ticks"]
    return ticks


def _after_ticks(admin: httpx.Client, n: int) -> None:
    """Return once the reconciler has looked ``n`` more times."""
    target = _ticks(admin) + n
    until(lambda: _ticks(admin) >= target, f"{n} reconciler ticks", timeout=120)


def _release(admin: httpx.Client, version: str, plan: str = QUICK) -> str:
    admin.post("/v1/artifacts", params={"content_type": CT, "version": version}, content=f"files {version}".encode(),
               headers={"Content-Type": "application/octet-stream"}).raise_for_status()
    r = admin.post("/v1/releases", json={"content_type": CT, "version": version, "plan": plan})
    r.raise_for_status()
    release: str = r.json()["release"]
    admin.post(f"/v1/rollouts/{release}/start").raise_for_status()
    return release


def _status(admin: httpx.Client, release: str) -> dict[str, Any]:
    body: dict[str, Any] = admin.get(f"/v1/rollouts/{release}").json()
    return body


@pytest.fixture
def admin(server: ServerProcess) -> httpx.Client:
    client = server.client()
    client.post("/v1/content-types", json={"name": CT, "category": "rapid-response",
                                           "unvalidated_reason": UNVALIDATED}).raise_for_status()
    return client


def test_a_rollout_nobody_confirmed_stays_rolling_and_says_why(server: ServerProcess, admin: httpx.Client) -> None:
    release = _release(admin, "291.1")
    _after_ticks(admin, 3)  # every soak of the plan has passed by now
    status = _status(admin, release)
    assert (status["phase"], status["wave"]) == ("rolling", 0)
    assert status["waiting"] == ["no device has announced intent yet: a rollout that exposed nobody has proven "
                                 "nothing"]
    text = run_cli("rollout", "status", release, env=server.cli_env(), check=True).stdout
    assert "waiting for" in text and "proven nothing" in " ".join(text.split())
    assert run_cli("rollout", "halt", release, "--reason", "nothing proven", env=server.cli_env()).returncode == 0


def test_a_device_the_rollout_never_admitted_cannot_halt_it(server: ServerProcess, admin: httpx.Client) -> None:
    acme = admin.post("/v1/enroll-tokens", json={"tenant": "acme"}).json()["token"]
    globex = admin.post("/v1/enroll-tokens", json={"tenant": "globex"}).json()["token"]
    capped = "    max_devices: {total: 2}\n"
    plan = QUICK.replace(capped, capped + "    selector: {tenant: [acme]}\n")
    plan = plan.replace("  - name: everyone\n", "  - name: everyone\n    selector: {tenant: [acme]}\n")
    insider = Device(server.url, platform="windows", region="eu-west").enroll(acme)
    outsider = Device(server.url, platform="macos", region="nowhere").enroll(globex)
    release = _release(admin, "291.2", plan)
    # The outsider was never offered 291.2, but says it announced and crashed on it.
    assert outsider.checkin().get("desired", {}).get(CT) is None
    answer = outsider.checkin([Device.event("intent", CT, "291.2"), Device.event("failed", CT, "291.2")])
    assert len(answer["acked"]) == 2  # stored for the record ...
    _after_ticks(admin, 3)
    status = _status(admin, release)
    assert status["phase"] == "rolling", status["history"][-1]  # ... but it speaks for nothing
    assert status["totals"]["failed"] == 0 and status["totals"]["exposed"] == 0
    metrics = admin.get("/metrics").text
    assert "ringfence_unadmitted_events_total 2.0" in metrics
    assert "never admitted it" in server.log()

    # The admitted device's own crash is evidence: the rollout halts in its canary.
    # (the snapshot counts the new fleet at its next refresh)
    until(lambda: insider.checkin().get("desired", {}).get(CT, {}).get("version") == "291.2",
          "the acme device offered 291.2")
    insider.checkin([Device.event("intent", CT, "291.2"), Device.event("failed", CT, "291.2")])
    status = until(lambda: (s := _status(admin, release))["phase"] == "halted" and s, "the halt")
    assert status["wave_name"] == "canary"
    assert "1 failed devices of 1 exposed > budget 0" in status["history"][-1]["reason"]
    shown = json.loads(run_cli("rollout", "status", release, "--json", env=server.cli_env(), check=True).stdout)
    assert shown["totals"]["failed"] == 1


def test_the_readme_agent_walk_through_halts_the_2024_file_in_its_canary(tmp_path: Path) -> None:
    """The README's "Running an agent", as written: the example agent config and attributes,
    the quickstart plan, the good channel file and then the 2024 one."""
    server = ServerProcess(tmp_path / "data")  # the server tells agents to check in every second
    server.init()
    server.start()
    try:
        publisher = Publisher(server)
        publisher.content_type(CT)
        agent = AgentProcess(tmp_path / "agent", server.url, publisher.enroll_token(),
                             config=EXAMPLES / "sensor" / "agent.yaml",
                             attributes=yaml.safe_load((EXAMPLES / "sensor" / "attributes.yaml").read_text()))
        agent.start()
        plan = (EXAMPLES / "plans" / "quickstart.yaml").read_text()
        good = publisher.release(CT, "291.1", (SENSOR_DIR / "content" / "good" / "channel-291.json").read_bytes(),
                                 plan)
        done = publisher.wait_status(good, lambda s: s["phase"] == "completed", what="291.1 completed")
        assert (done["totals"]["exposed"], done["totals"]["healthy"], done["totals"]["failed"]) == (1, 1, 0)

        bad = publisher.release(CT, "291.2", (SENSOR_DIR / "content" / "bad-291" / "channel-291.json").read_bytes(),
                                plan)
        halted = publisher.wait_status(bad, lambda s: s["phase"] != "rolling", what="291.2 stopped")
        assert (halted["phase"], halted["wave_name"]) == ("halted", "canary"), halted["history"][-1]
        assert "1 failed devices of 1 exposed > budget 0" in halted["history"][-1]["reason"]
        agent.wait_for(lambda: agent.journal()["content"][CT]["active"] == "291.1", what="back on 291.1")
        assert run_cli("rollout", "rollback", bad, "--reason", "undo 291.2", env=server.cli_env()).returncode == 0
        assert agent.stop() == 0
    finally:
        server.stop()

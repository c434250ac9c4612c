"""The third layer: with validation failing and overridden in an emergency, the rollout itself
still stops the 2024 file. Real server, real agents supervising the real sample sensor.

Layers one and two (the contract check, and the platform matrix with the contract check off)
are tested in ``tests/e2e/test_validate_cli.py`` and ``tests/integration/test_validation_gate.py``.
Here the release of the bad channel file fails validation and is refused; the on-call engineer
starts it anyway with the emergency flag and a reason; the sensors crash as they load it, the
agents roll back by themselves, and the server halts the rollout in its first wave."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import FIRST_PLAN, SENSOR_DIR, AgentProcess, Publisher, ServerProcess, own_server, run_cli

pytestmark = pytest.mark.e2e

CT = "sensor/ipc-templates"
GOOD = (SENSOR_DIR / "instances" / "good.json").read_bytes()
BAD = (SENSOR_DIR / "instances" / "bad-field-count.json").read_bytes()
GUARDED = """
name: guarded
waves:
  - name: canary
    max_devices: {total: 2}
    soak: 1h
    gates: {failure_budget: 0}
  - name: everyone
    share: 1.0
    soak: 1h
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from own_server(tmp_path)


def agent_config(tmp_path: Path) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(f"""
boot_limit: 2
heartbeat: 1s
content_types:
  {CT}:
    file_name: channel.json
    trial: 3s
    probe: workload
workload:
  command: ["{{python}}", "{SENSOR_DIR / 'sensor.py'}", "run", "--content", "{{content}}",
            "--ready-file", "{{ready_file}}", "--interval", "0.2"]
  content_type: {CT}
  crash: process
""")
    return path


def test_an_overridden_bad_release_is_still_halted_by_the_rollout(server: ServerProcess, tmp_path: Path) -> None:
    publisher = Publisher(server)
    definition = (SENSOR_DIR / "ipc-templates.yaml").read_text()
    publisher._ok(publisher.http.post("/v1/content-types", json={
        "name": CT, "category": "rapid-response", "definition": definition, "definition_dir": str(SENSOR_DIR)}))
    token = publisher.enroll_token()
    agents = [AgentProcess(tmp_path / f"agent{i}", server.url, token, config=agent_config(tmp_path),
                           attributes={"platform": "windows", "region": "eu-west"}) for i in range(2)]
    good = publisher.release(CT, "1", GOOD, FIRST_PLAN)  # passes validation, starts
    for agent in agents:
        agent.start()
    for agent in agents:
        agent.wait_for(lambda a=agent: a.journal()["content"].get(CT, {}).get("lkg") == "1", what="good committed")
    publisher.wait_status(good, lambda s: s["phase"] == "completed", what="the good release completed")

    # The 2024 file fails validation, and the release cannot start ...
    bad = publisher.release(CT, "2", BAD, GUARDED, start=False)
    refused = publisher.http.post(f"/v1/rollouts/{bad}/start", json={"reason": "ship it"})
    assert refused.status_code == 409
    message = refused.json()["error"]["message"]
    assert "contract: instance 291-d of template ipc-pipe reads field 20 (the 21st)" in message
    cli = run_cli("rollout", "start", bad, env=server.cli_env())  # as a person types it
    assert cli.returncode != 0
    assert "validation failed: contract: instance 291-d of template ipc-pipe reads field 20" in cli.stderr
    # ... until a second person approves the emergency path and someone takes it, which the history keeps.
    made = run_cli("token", "create", "--role", "approver", "--name", "dana", "--json", env=server.cli_env(),
                   check=True)
    dana = {**server.cli_env(), "RINGFENCE_TOKEN": json.loads(made.stdout)["token"]}
    approved = run_cli("release", "approve", bad, "--emergency", "--reason", "exploit in the wild", env=dana)
    assert approved.returncode == 0, approved.stderr
    started = publisher.http.post(f"/v1/rollouts/{bad}/start",
                                  json={"emergency": True, "reason": "active exploit, no time to fix the sensor"})
    assert started.status_code == 200, started.text

    # The sensors crash on the 21st field; the agents roll back; the rollout halts in its canary.
    status = publisher.wait_status(bad, lambda s: s["phase"] == "halted", timeout=60, what="halted by the rollout")
    assert status["wave"] == 0
    assert status["totals"]["failed"] >= 1 and status["totals"]["reverted"] >= 1
    start = next(h for h in status["history"] if h["intent"] == "start")
    assert start["reason"].startswith("emergency override of failed validation: contract")
    assert start["details"]["approved_by"] == "dana"
    assert status["validation"]["ok"] is False and status["validation"]["emergency_override"] is not None
    for agent in agents:
        agent.wait_for(lambda a=agent: a.journal()["content"].get(CT, {}).get("active") == "1",
                       what="back on the good version")

"""The agent supervising the sample sensor, with the 2024 content bug: a real crash loop and a
real local rollback, with the server stopped and with it running; and the start-up revocation
check that reaches a machine before it loads a version the server rolled back."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    FIRST_PLAN,
    ROLLING_PLAN,
    SENSOR_DIR,
    AgentProcess,
    Device,
    Publisher,
    ServerProcess,
    own_server,
    silence_halt_heard,
)

pytestmark = pytest.mark.e2e

CT = "sensor/channel-files"
GOOD = (SENSOR_DIR / "content" / "good" / "channel-291.json").read_bytes()
BAD = (SENSOR_DIR / "content" / "bad-291" / "channel-291.json").read_bytes()
FIRST = FIRST_PLAN
ROLLING = ROLLING_PLAN


def agent_config(tmp_path: Path, crash: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(f"""
boot_limit: 2
heartbeat: 1s
revocation_timeout: 2s
content_types:
  {CT}:
    file_name: channel-291.json
    trial: 3s
    probe: workload
workload:
  command: ["{{python}}", "{SENSOR_DIR / 'sensor.py'}", "run", "--content", "{{content}}",
            "--ready-file", "{{ready_file}}", "--interval", "0.2"]
  content_type: {CT}
  crash: {crash}
""")
    return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from own_server(tmp_path)


def ready(agent: AgentProcess) -> dict[str, Any] | None:
    path = agent.state_dir / "run" / "workload.ready"
    return json.loads(path.read_text()) if path.exists() else None


def on_good_content(server: ServerProcess, publisher: Publisher, tmp_path: Path, crash: str) -> AgentProcess:
    """Given a device whose sensor runs the good channel file as its LKG."""
    publisher.content_type(CT)
    agent = AgentProcess(tmp_path / "agent", server.url, publisher.enroll_token(), config=agent_config(tmp_path, crash))
    first = publisher.release(CT, "291.1", GOOD, FIRST)
    agent.start()
    agent.wait_for(lambda: agent.journal()["content"].get(CT, {}).get("lkg") == "291.1", what="good content committed")
    publisher.wait_status(first, lambda s: s["phase"] == "completed", what="first release completed")
    assert (ready(agent) or {}).get("instances") == 3
    return agent


def test_sensor_crash_loop_reverts_within_two_crashes_with_the_server_stopped(server: ServerProcess,
                                                                              tmp_path: Path) -> None:
    publisher = Publisher(server)
    agent = on_good_content(server, publisher, tmp_path, crash="host")

    # When the bad channel file is released, the sensor crashes as it loads it and takes the host down
    release = publisher.release(CT, "291.2", BAD, ROLLING)
    assert agent.wait_exit() == 70, agent.log()
    assert "out-of-bounds read" in (agent.state_dir / "run" / "workload.log").read_text()
    assert publisher.status(release)["totals"]["exposed"] == 1  # the intent went out before the switch

    # And the server goes away; the machine reboots into the same crash, then the guard reverts
    server.stop()
    crashes = 1
    for _ in range(3):
        agent.start()
        deadline = time.monotonic() + 30
        while agent.running and not (agent.journal()["content"][CT]["active"] == "291.1" and ready(agent)):
            assert time.monotonic() < deadline, agent.log()
            time.sleep(0.1)
        if not agent.running:
            assert agent.wait_exit() == 70, agent.log()
            crashes += 1
            continue
        break
    assert crashes == 2, agent.log()
    assert "crash-loop guard" in agent.log()

    # Then the sensor runs the good content again, with no server
    state = agent.journal()
    assert state["content"][CT]["active"] == "291.1"
    assert "291.2" in state["content"][CT]["blocked"]
    assert agent.current(CT) == "291.1"
    assert agent.wait_for(lambda: (ready(agent) or {}).get("instances") == 3, what="sensor on good content")
    assert {"crash", "auto_reverted"} <= set(state["outbox_kinds"])  # waiting for the server

    # And once the server is back it learns everything: exposed, failed, reverted
    server.start()
    status = publisher.wait_status(release, lambda s: s["totals"]["reverted"] == 1 and not agent.journal()["outbox"],
                                   what="the events delivered")
    assert status["totals"]["exposed"] == 1
    assert status["totals"]["failed"] == 1  # one device, however many of its events say so
    assert status["totals"]["healthy"] == 0
    assert agent.stop() == 0


def test_sensor_crash_with_the_server_running_rolls_back_at_once(server: ServerProcess, tmp_path: Path) -> None:
    publisher = Publisher(server)
    agent = on_good_content(server, publisher, tmp_path, crash="process")

    release = publisher.release(CT, "291.2", BAD, ROLLING)
    status = publisher.wait_status(release, lambda s: s["totals"]["reverted"] == 1, what="the device reverted")
    assert (status["totals"]["exposed"], status["totals"]["failed"], status["totals"]["healthy"]) == (1, 1, 0)
    assert agent.running  # the sensor crashed, not the machine
    journal = agent.journal()["content"][CT]
    assert journal["active"] == "291.1"
    assert "SIGABRT" in journal["blocked"]["291.2"]
    assert agent.wait_for(lambda: (ready(agent) or {}).get("instances") == 3, what="sensor back on good content")
    assert agent.stop() == 0


def test_start_up_revocation_check_reverts_before_loading(server: ServerProcess, tmp_path: Path) -> None:
    publisher = Publisher(server)
    agent = on_good_content(server, publisher, tmp_path, crash="process")
    # Given version 291.3 passed its trial here and is the LKG (a fault that shows only later)
    release = publisher.release(CT, "291.3", GOOD.replace(b"mojo", b"mojo-v3"), ROLLING)
    agent.wait_for(lambda: agent.journal()["content"][CT]["lkg"] == "291.3", what="291.3 committed")
    assert agent.stop() == 0

    # When the operator halts and rolls the release back while the machine is off
    publisher.action(release, "halt", "crashes reported after the trial")
    publisher.action(release, "rollback", "crashes reported after the trial")

    # Then at the next boot the agent reverts before the sensor loads anything
    agent.start()
    agent.wait_for(lambda: agent.journal()["content"][CT]["active"] == "291.1" and ready(agent),
                   what="reverted at start-up")
    boot = agent.log().rsplit("--- boot", 1)[1]
    assert "found before loading it" in boot
    assert boot.index("found before loading it") < boot.index("started sensor.py")  # 291.3 never loaded
    assert boot.count("started sensor.py") == 1
    assert agent.current(CT) == "291.1"
    # And the rollback completes: the device is confirmed off the version
    publisher.wait_status(release, lambda s: s["phase"] == "rolled_back", what="rollback confirmed")
    assert agent.stop() == 0


def test_unreachable_server_at_start_up_does_not_stop_the_agent(tmp_path: Path, server: ServerProcess) -> None:
    publisher = Publisher(server)
    agent = on_good_content(server, publisher, tmp_path, crash="process")
    assert agent.stop() == 0
    server.stop()

    started = time.monotonic()
    agent.start()
    agent.wait_for(lambda: ready(agent), what="sensor running with the server down")
    assert time.monotonic() - started < 15
    assert "revocation check skipped" in agent.log()
    assert agent.journal()["content"][CT]["active"] == "291.1"
    assert agent.stop() == 0


SILENT_PLAN = """
name: judged
health: {alpha: 0.01, trial_timeout: 5s, silence_after: 1h}
waves:
  - name: canary
    selector: {include: {tags: [canary]}}
    max_devices: 3
    soak: 1h
    gates: {failure_budget: 100}
  - name: everyone
    share: 1.0
    soak: 1h
"""


def test_machines_that_die_silently_halt_the_rollout(server: ServerProcess, tmp_path: Path) -> None:
    """The 2024 signature end to end: three real agents take the bad channel file, their sensor
    takes each machine down as it loads, and nobody reboots them. They never say anything again;
    the judges see exposed devices that never confirmed health against a control arm that keeps
    checking in, and halt the rollout on silence alone."""
    publisher = Publisher(server)
    publisher.content_type(CT)
    token = publisher.enroll_token()
    control = [Device(server.url, platform="windows", region="eu-west").enroll(token) for _ in range(25)]
    agents = [AgentProcess(tmp_path / f"agent{i}", server.url, token, config=agent_config(tmp_path, "host"),
                           attributes={"platform": "windows", "region": "eu-west", "tags": ["canary"]})
              for i in range(3)]
    for agent in agents:
        agent.start()
    for agent in agents:
        agent.wait_for(lambda a=agent: a.journal()["device_id"], what="enrolled")
    release = publisher.release(CT, "291.2", BAD, SILENT_PLAN)

    for agent in agents:
        assert agent.wait_exit() == 70, agent.log()  # the machine went down with its sensor

    def control_checks_in(status: dict[str, Any]) -> bool:
        for device in control:  # the rest of the fleet keeps checking in
            device.checkin()
        return bool(status["phase"] == "halted")

    status = publisher.wait_status(release, control_checks_in, what="halted on silence")
    assert status["totals"]["exposed"] == 3
    assert status["totals"]["failed"] == 0  # no device ever reported a failure: this is silence
    last = status["history"][-1]
    assert last["actor"] == "reconciler"
    silence_halt_heard(last["reason"], "windows/eu-west", exposed=3, control=25)
    verdicts = {v["judge"]: v for v in last["details"]["verdicts"]}
    assert verdicts["silence"]["numbers"]["unconfirmed"] == 3
    # Three control devices were asked back as placebos, and came back: three discordant pairs.
    assert verdicts["silence"]["numbers"]["placebo"]["exposed_only_silent"] == 3

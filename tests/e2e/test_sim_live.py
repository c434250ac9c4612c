"""A live fleet against a real server process: hundreds of simulated agents speaking the agent API
over HTTP, checked against what the server counted.

Given 200 devices over three platforms and two regions, polling every second: a good release
reaches every one of them; a release that crashes Windows machines as it loads halts in its first
wave, the crashed machines revert themselves within two boots and the server counts each once,
and a rollback brings everyone back. A failed probe and a machine that goes silent are reported
as the agent reports them. ``ringfence sim live`` prints the fleet's counters as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ringfence.sim.live import FaultKind, FaultSpec, FleetConfig, LiveFleet, spread
from tests.support import FIRST_PLAN, ROLLING_PLAN, Publisher, ServerProcess, own_server, run_cli

pytestmark = pytest.mark.e2e

CT = "sensor/ipc-templates"
POLL_S = 1.0  # own_server's poll interval
CONFIG = FleetConfig(trial_s=1.0, heartbeat_s=5.0, reboot_s=0.5, ramp_s=1.0)
TWO_WAVES = """
name: live-good
waves:
  - name: canary
    share: 0.1
    soak: 2s
    gates: {failure_budget: 0}
  - name: everyone
    share: 1.0
    soak: 2s
"""
# The canary soaks long enough for the crashes to be reported before anyone else is exposed.
CANARY_FIRST = """
name: live-bad
waves:
  - name: canary
    share: 0.25
    soak: 1m
    gates: {failure_budget: 2}
  - name: everyone
    share: 1.0
    soak: 2s
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from own_server(tmp_path)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the small fleets below: each test uses its own content type and checks
    only its own devices."""
    yield from own_server(tmp_path_factory.mktemp("shared"))


async def until(check: Callable[[], bool], fleet: LiveFleet, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; fleet: {json.dumps(fleet.report())}")
        await asyncio.sleep(0.2)


async def quiet(fleet: LiveFleet, what: str) -> None:
    """No update in flight and every event acknowledged, for longer than one check-in interval
    (a device told to update by the check-in under way starts within that)."""
    def idle() -> bool:
        report = fleet.report()
        return not report["in_flight"] and not report["outbox"]

    await until(idle, fleet, what)
    await asyncio.sleep(POLL_S * 1.2)
    await until(idle, fleet, what)


def server_versions(publisher: Publisher, content_type: str) -> Counter[str]:
    response = publisher.http.get("/v1/devices", params={"limit": 1000})
    response.raise_for_status()
    return Counter(d["versions"].get(content_type, "none") for d in response.json()["devices"])


def test_a_good_release_reaches_every_device_and_a_bad_one_halts_in_its_first_wave(server: ServerProcess) -> None:
    publisher = Publisher(server)
    publisher.content_type(CT)
    token = publisher.enroll_token()
    fleet = LiveFleet(server.url, token, spread(200, regions=("eu-west", "us-east")),
                      fault=FaultSpec("2", FaultKind.CRASH, frozenset({"windows"})), config=CONFIG, seed=2024)
    asyncio.run(_good_then_bad(fleet, publisher))


async def _good_then_bad(fleet: LiveFleet, publisher: Publisher) -> None:
    def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return asyncio.to_thread(fn, *args, **kwargs)

    async with fleet:
        await until(lambda: fleet.counters.enrolled == 200, fleet, "every device enrolled")

        # When a good release rolls out in two waves
        good = await call(publisher.release, CT, "1", b"good content", TWO_WAVES)

        # Then it completes, and every device runs it, as the server sees too
        await call(publisher.wait_status, good, lambda s: s["phase"] == "completed", 30, "completed")
        await until(lambda: fleet.versions() == {CT: {"1": 200}}, fleet, "every device on version 1")
        await quiet(fleet, "the good release settled")
        assert fleet.report()["healthy"] == 200
        assert await call(server_versions, publisher, CT) == {"1": 200}

        # When a release that crashes Windows machines as they load it starts
        bad = await call(publisher.release, CT, "2", b"bad content", CANARY_FIRST)

        # Then the reconciler halts it in its first wave
        status = await call(publisher.wait_status, bad, lambda s: s["phase"] == "halted", 30, "halted")
        assert status["wave"] == 0
        assert (status["history"][-1]["to"], status["history"][-1]["actor"]) == ("halted", "reconciler")

        # And every Windows machine that took it crashed twice and reverted itself, and only those
        await quiet(fleet, "the crashed devices reverted")
        exposed = [d for d in fleet.devices if "2" in d.state.content[CT].blocked or d.running()[CT] == "2"]
        crashed = [d for d in exposed if d.crashes]
        fine = [d for d in exposed if not d.crashes]
        assert crashed
        assert fine
        assert {d.profile.platform for d in crashed} == {"windows"}
        assert "windows" not in {d.profile.platform for d in fine}
        assert all(d.crashes == 2 and d.running()[CT] == "1" for d in crashed)
        assert all(d.running()[CT] == "2" for d in fine)
        report = fleet.report()
        assert (report["crashed"], report["auto_reverted"], report["silent"]) == (len(crashed), len(crashed), 0)

        # And the server counted each device once: exposed, failed and reverted, or healthy
        totals = (await call(publisher.status, bad))["totals"]
        assert totals["exposed"] == len(exposed)
        assert (totals["failed"], totals["reverted"], totals["healthy"]) == (len(crashed), len(crashed), len(fine))

        # When the operator rolls the release back, every device returns to version 1
        await call(publisher.action, bad, "rollback", "crashes on windows")
        await call(publisher.wait_status, bad, lambda s: s["phase"] == "rolled_back", 30, "rolled back")
        await until(lambda: fleet.versions() == {CT: {"1": 200}}, fleet, "every device back on version 1")
        assert fleet.report()["recalled"] == len(fine)
        # ... and following the rollback is no failure: the server's count of failed devices stands
        totals = (await call(publisher.status, bad))["totals"]
        assert totals["failed"] == len(crashed) and totals["reverted"] == len(exposed)
        assert fleet.report()["refused"] == 0  # the server took every request as the fleet sent it


def test_a_failed_probe_and_a_silent_machine_are_reported_as_the_agent_reports_them(shared: ServerProcess) -> None:
    ct = "sensor/probe-and-silence"
    publisher = Publisher(shared)
    publisher.content_type(ct)

    def fault(profile: Any, content_type: str, version: str) -> FaultKind | None:
        return {"windows": FaultKind.PROBE, "linux": FaultKind.SILENT}.get(profile.platform)

    # A trial longer than a check-in interval: every device is admitted before the first failure.
    fleet = LiveFleet(shared.url, publisher.enroll_token(), spread(30, regions=("eu-west",)), fault=fault,
                      config=FleetConfig(trial_s=2.0, reboot_s=0.5, ramp_s=1.0), seed=7)

    async def scenario() -> None:
        async with fleet:
            await until(lambda: fleet.counters.enrolled == 30, fleet, "every device enrolled")
            release = await asyncio.to_thread(publisher.release, ct, "1", b"content", ROLLING_PLAN)
            await until(lambda: fleet.report()["silent"] == 10 and fleet.report()["rolled_back"] == 10
                        and fleet.report()["healthy"] == 10, fleet, "every device done with version 1")
            status = await asyncio.to_thread(
                publisher.wait_status, release, lambda s: s["totals"]["failed"] == 10 and s["totals"]["healthy"] == 10,
                30, "the server counted them")
            # Everyone announced intent; the silent machines never said anything after that
            assert status["totals"]["exposed"] == 30
            assert (status["totals"]["failed"], status["totals"]["reverted"]) == (10, 10)
        probed = [d for d in fleet.devices if d.profile.platform == "windows"]
        assert all(d.running() == {} and "health probe failed" in d.state.content[ct].blocked["1"] for d in probed)
        assert all(d.silent and d.crashes == 1 for d in fleet.devices if d.profile.platform == "linux")
        assert fleet.report()["events"]["probe_failed"] == 10
        assert fleet.versions() == {ct: {"1": 20}}  # macOS committed it; Linux machines boot-loop on it

    asyncio.run(scenario())


def test_the_command_line_runs_a_fleet_and_prints_its_counters_as_one_json_line(shared: ServerProcess) -> None:
    ct = "sensor/command-line"
    publisher = Publisher(shared)
    publisher.content_type(ct)
    token = publisher.enroll_token()
    publisher.release(ct, "1", b"content", FIRST_PLAN)

    proc = run_cli("sim", "live", "--enroll-token", token, "--devices", "12", "--duration", "4", "--trial", "0.5",
                   "--ramp", "0.5", "--seed", "1", "--json", env=shared.cli_env(), check=True)
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (report["devices"], report["enrolled"], report["refused"]) == (12, 12, 0)
    assert report["checkins"] >= 12
    assert report["versions"][ct] == {"1": 12}

    wrong = run_cli("sim", "live", "--enroll-token", "nope", "--devices", "1", "--duration", "1",
                    env=shared.cli_env())
    assert wrong.returncode == 3
    assert wrong.stderr.startswith("error: enrolment refused")
    assert len(wrong.stderr.strip().splitlines()) == 1
    gone = run_cli("sim", "live", "--server", "http://127.0.0.1:9", "--enroll-token", token, "--duration", "1")
    assert gone.returncode == 6
    assert gone.stderr.startswith("error: cannot reach the Ringfence server")

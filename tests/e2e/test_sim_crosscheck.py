"""The offline simulator against a real server: the same small fleet, the same plan and the same
fault, once in arrays on a simulated clock and once as simulated agents over HTTP against a real
server process. Both must stop at the same wave — and a good release must complete in both.

The plan's first wave leaves Windows out; the bad version crashes Windows hosts as they load it,
so a faithful simulator passes the first wave and halts in the second, like the server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ringfence.core.models import Category
from ringfence.core.plan import parse_plan
from ringfence.sim.live import FaultKind, FaultSpec, FleetConfig, LiveFleet, spread
from ringfence.sim.run import run_plan
from ringfence.sim.scenario import parse_scenario
from tests.support import Publisher, ServerProcess, own_server

pytestmark = pytest.mark.e2e

CT = "sensor/ipc-templates"
PLAN = """
name: crosscheck
waves:
  - name: everything-but-windows
    selector: {exclude: {platform: [windows]}}
    share: 1.0
    soak: 6s
    gates: {failure_budget: 0}
  - name: everyone
    share: 1.0
    soak: 15s
    gates: {failure_budget: 2}
"""
SCENARIO = """
name: crosscheck
horizon: 10m
start_utc: "12:00"
fleet:
  tenants: 1
  internal_hosts: 0
  poll: {median: 1s, sigma: 0, min: 1s, max: 1s}
  regions: {eu-west: {share: 0.5}, us-east: {share: 0.5}}
  platforms:
    windows: {hosts: 40, workstation_share: 0}
    linux: {hosts: 40, workstation_share: 0}
    macos: {hosts: 40, workstation_share: 0}
update: {category: rapid-response, load: 0s, trial: 1s}
faults: %s
background: {crash_rate: 0}
agents: {reboot: 1s, boot_limit: 2, report_delay: [0s, 1s], operator_rollback_after: 1h}
"""
WINDOWS_CRASH = "[{select: {platform: [windows]}, kind: crash-on-load, boot_loop: true}]"


def offline(faults: str) -> tuple[str, int]:
    scenario = parse_scenario(SCENARIO % faults)
    result = run_plan(scenario, parse_plan(PLAN, category=Category.RAPID_RESPONSE), seed=5)
    last = result.history[-1]
    return result.phase, int(last["wave"])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from own_server(tmp_path)


def live(server: ServerProcess, bad: bool) -> tuple[str, int]:
    publisher = Publisher(server)
    publisher.content_type(CT)
    token = publisher.enroll_token()
    fault = FaultSpec("2", FaultKind.CRASH, frozenset({"windows"})) if bad else None
    fleet = LiveFleet(server.url, token, spread(120, regions=("eu-west", "us-east")), fault=fault,
                      config=FleetConfig(trial_s=1.0, heartbeat_s=5.0, reboot_s=1.0, ramp_s=1.0), seed=5)

    async def drive() -> dict[str, Any]:
        async with fleet:
            deadline = time.monotonic() + 30
            while fleet.counters.enrolled < 120:
                assert time.monotonic() < deadline, "the fleet did not enrol"
                await asyncio.sleep(0.2)
            release = await asyncio.to_thread(publisher.release, CT, "2", b"version 2", PLAN)
            return await asyncio.to_thread(
                publisher.wait_status, release, lambda s: s["phase"] in ("halted", "completed"), 60, "a verdict")

    status = asyncio.run(drive())
    return status["phase"], int(status["wave"])


def test_a_bad_release_halts_at_the_same_wave_offline_and_against_a_real_server(server: ServerProcess) -> None:
    phase, wave = offline(WINDOWS_CRASH)
    assert (phase, wave) in {("halted", 1), ("rolled_back", 1)}
    assert live(server, bad=True) == ("halted", wave)


def test_a_good_release_completes_offline_and_against_a_real_server(server: ServerProcess) -> None:
    assert offline("[]") == ("completed", 1)
    assert live(server, bad=False) == ("completed", 1)

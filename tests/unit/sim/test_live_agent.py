"""The simulated agent's transitions, without a server: the same lifecycle, events and crash-loop
guard as the real agent, and the fault model that decides which versions fail where."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from ringfence.agent.answers import Desired, parse_desired
from ringfence.core.clock import ManualClock
from ringfence.core.errors import InvalidInput
from ringfence.core.models import EventKind
from ringfence.sim.live import FleetConfig
from ringfence.sim.live_agent import (
    DeviceProfile,
    FaultKind,
    FaultSpec,
    SimulatedDevice,
    recalled,
    spread,
    stopped_asking,
)

CT = "sensor/ipc-templates"
SHA = {"1": "1" * 64, "2": "2" * 64}


def desired(version: str, **extra: Any) -> Desired:
    parsed = parse_desired(CT, {"version": version, "sha256": SHA[version], "size": 10,
                                "url": f"/v1/artifacts/{SHA[version]}", "release": f"r{version}", **extra})
    assert parsed is not None
    return parsed


def kinds(device: SimulatedDevice) -> list[str]:
    return [e["kind"] for e in device.state.outbox]


def installed(device: SimulatedDevice, version: str) -> None:
    """Take ``version`` through the whole lifecycle: it passes its trial and becomes the LKG."""
    activated(device, version)
    device.commit(CT, keep=3)


def activated(device: SimulatedDevice, version: str) -> None:
    """``version`` announced, acknowledged and switched in: its trial begins (boot 1)."""
    u = device.begin(desired(version))
    assert u is not None
    device.announce(CT)
    u.intent_acked = True
    device.activate(CT)


@pytest.fixture
def device() -> SimulatedDevice:
    d = SimulatedDevice(DeviceProfile("windows", "eu-west", "11", "x86_64"), ManualClock())
    d.boot(boot_limit=2)  # the first power-on: nothing to report
    return d


def test_spread_gives_every_stratum_its_share_and_shares_profiles() -> None:
    fleet = spread(200, regions=("eu-west", "us-east"))
    strata = Counter((p.platform, p.region) for p in fleet)
    assert len(strata) == 6
    assert set(strata.values()) == {33, 34}
    assert len({id(p) for p in fleet}) == 6
    assert fleet[0].attributes()["os_version"] == "11"


def test_a_fault_spec_names_a_version_its_platforms_and_content_type() -> None:
    windows, linux = DeviceProfile("windows"), DeviceProfile("linux")
    spec = FaultSpec("2", FaultKind.SILENT, frozenset({"windows"}), content_type=CT)
    assert spec(windows, CT, "2") is FaultKind.SILENT
    assert spec(linux, CT, "2") is None
    assert spec(windows, CT, "1") is None
    assert spec(windows, "agent/binary", "2") is None
    assert FaultSpec("2")(linux, "agent/binary", "2") is FaultKind.CRASH  # no platforms, no type: everywhere


def test_a_good_update_announces_its_intent_before_it_activates_and_commits_as_lkg(device: SimulatedDevice) -> None:
    installed(device, "1")
    assert kinds(device) == ["intent", "activated", "healthy"]
    c = device.state.content[CT]
    assert (c.active, c.lkg, c.update) == (c.lkg, c.lkg, None)
    assert device.running() == {CT: "1"}
    ids = [e["id"] for e in device.state.outbox]
    assert len(set(ids)) == 3
    assert device.state.outbox[0]["details"] == {"release": "r1", "lkg": None}


def test_the_crash_loop_guard_reverts_after_boot_limit_crashes(device: SimulatedDevice) -> None:
    installed(device, "1")
    activated(device, "2")
    device.state.acknowledge({e["id"] for e in device.state.outbox})

    # The host goes down as version 2 loads; the first reboot reports it and tries again
    assert device.boot(boot_limit=2) == [CT]
    assert kinds(device) == ["crash"]
    assert device.state.content[CT].update is not None
    assert device.state.content[CT].update.boots == 2  # type: ignore[union-attr]

    # It goes down again; the second reboot reports it and reverts before loading anything
    assert device.boot(boot_limit=2) == []
    assert kinds(device) == ["crash", "crash", "auto_reverted"]
    c = device.state.content[CT]
    assert device.running() == {CT: "1"}
    assert c.update is None
    assert "crash-loop guard" in c.blocked["2"]
    revert = device.state.outbox[-1]
    assert (revert["version"], revert["details"]["to"], revert["details"]["boots"]) == ("2", "1", 2)
    assert device.begin(desired("2")) is not None  # the fleet driver skips blocked versions, as the agent does


def test_event_ids_stay_unique_across_boots_and_leave_the_outbox_only_when_acknowledged(
        device: SimulatedDevice) -> None:
    installed(device, "1")
    activated(device, "2")
    device.boot(boot_limit=2)
    device.boot(boot_limit=2)
    ids = [e["id"] for e in device.state.outbox]
    assert kinds(device) == ["intent", "activated", "healthy", "intent", "activated", "crash", "crash",
                             "auto_reverted"]
    assert len(set(ids)) == 8
    assert ids[-1].startswith("3-")  # <boot>-<seq>
    device.answered({"acked": ids[:6], "poll_interval_s": 0.5})
    assert [e["id"] for e in device.state.outbox] == ids[6:]
    assert device.poll_interval_s == 0.5
    assert not device.acknowledged(ids[6])
    assert device.acknowledged(ids[0])


def test_an_unclean_exit_outside_a_trial_reports_a_crash_of_what_ran(device: SimulatedDevice) -> None:
    installed(device, "1")
    device.state.outbox.clear()
    assert device.boot(boot_limit=2) == []
    assert kinds(device) == ["crash"]
    assert device.running() == {CT: "1"}


def test_a_rollback_returns_to_the_lkg_and_the_version_is_never_retried(device: SimulatedDevice) -> None:
    installed(device, "1")
    installed(device, "2")
    device.state.outbox.clear()
    device.follow_rollback(desired("1", rollback_from="2"))
    assert kinds(device) == ["recalled"]  # ordered by the server: a revert, not a failure here
    assert device.running() == {CT: "1"}
    assert "2" in device.state.content[CT].blocked
    device.follow_rollback(desired("1", rollback_from="2"))  # the answer repeats: nothing more to do
    assert kinds(device) == ["recalled"]


def test_a_revocation_found_at_start_reverts_before_loading(device: SimulatedDevice) -> None:
    installed(device, "1")
    installed(device, "2")
    device.state.outbox.clear()
    device.honour_revocations({CT: {"version": "2", "reason": "crashes on windows"}}, at_start=True)
    assert device.running() == {CT: "1"}
    assert device.state.outbox[0]["kind"] == "recalled"
    assert device.state.outbox[0]["details"]["reason"].endswith("(found before loading it)")


def test_a_download_that_keeps_arriving_wrong_is_given_up(device: SimulatedDevice) -> None:
    assert device.begin(desired("1")) is not None
    for _ in range(3):
        device.bad_download(CT, "hash mismatch", max_failures=3)
    assert [e["details"].get("final", False) for e in device.state.outbox] == [False, False, True]
    assert device.state.content[CT].blocked == {"1": "hash mismatch"}
    assert device.state.content[CT].update is None


def test_the_checkin_body_carries_attributes_once_and_at_most_100_events(device: SimulatedDevice) -> None:
    installed(device, "1")
    for _ in range(150):
        device.event(EventKind.HEARTBEAT, CT, "1")
    first = device.checkin_body()
    assert first["attributes"]["platform"] == "windows"
    assert first["versions"] == {CT: "1"}
    assert len(first["events"]) == 100
    device.answered({"acked": [e["id"] for e in first["events"]]})
    second = device.checkin_body()
    assert "attributes" not in second
    assert len(second["events"]) == 53


def test_answers_that_recall_a_version_or_stop_asking_for_it() -> None:
    asking = {"desired": {CT: {"version": "2"}}}
    assert not stopped_asking(asking, CT, "2")
    assert stopped_asking({"desired": {}}, CT, "2")
    assert stopped_asking({"desired": {CT: {"version": "1", "rollback_from": "2"}}}, CT, "2")
    assert not recalled(asking, CT, "2")
    assert recalled({"desired": {CT: {"version": "1", "rollback_from": "2"}}}, CT, "2")
    assert recalled({"revoked": {CT: {"version": "2"}}}, CT, "2")


@pytest.mark.parametrize(("setting", "value"), [("trial_s", 0.0), ("poll_bounds_s", (5.0, 1.0)),
                                                ("boot_limit", 0), ("jitter", 1.0)])
def test_fleet_settings_out_of_range_name_the_setting(setting: str, value: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        FleetConfig(**{setting: value})
    assert caught.value.details["field"] == setting

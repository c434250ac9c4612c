"""The judges wired into the control plane, in process on SQLite and PostgreSQL: silence after
activation halts a rollout within a tick with the verdict as the reason, and the rollout status
shows the verdicts per stratum."""

from __future__ import annotations

import time
from typing import Any

from tests.integration.conftest import CT, Api, Caller
from tests.integration.test_agent_api import checkin
from tests.integration.test_api import event, release, status, wait_for

PLAN = """
name: judged
health:
  alpha: 0.01
  trial_timeout: 2m
  silence_after: 1h
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


def fleet(api: Api, enroll: str) -> tuple[list[Caller], list[Caller]]:
    canary = [api.device(enroll, platform="windows", region="eu-west", tags=["canary"]) for _ in range(3)]
    control = [api.device(enroll, platform="windows", region="eu-west") for _ in range(30)]
    wait_for(lambda: api.http.get("/v1/server").json()["devices"] == 33)
    return canary, control


def test_silence_after_activation_halts_with_the_verdict_as_the_reason(setup: tuple[Api, str]) -> None:
    api, enroll = setup
    canary, control = fleet(api, enroll)
    rid = release(api, "291", PLAN)
    api.http.post(f"/v1/rollouts/{rid}/start")
    wait_for(lambda: all(checkin(d)["desired"].get(CT, {}).get("version") == "291" for d in canary))
    for d in canary:  # they announce, activate ... and are never heard from again
        checkin(d, {}, [event("intent", "291"), event("activated", "291")])
    for d in control:
        checkin(d)
    running = wait_for(lambda: (s := status(api, rid))["verdicts"] and s)
    stratum = running["verdicts"]["0"]["strata"]
    assert {v["judge"]: v["phase"] for v in stratum} == {"hazard-ratio": "passed", "silence": "inconclusive"}

    api.clock.advance(121)  # the trial timeout passes with no healthy from any of them
    for d in control:
        checkin(d)  # the control arm keeps checking in
    halted = wait_for(lambda: (s := status(api, rid))["phase"] == "halted" and s)
    last = halted["history"][-1]
    assert last["actor"] == "reconciler"
    assert last["reason"].startswith("hazard-ratio verdict in wave 'canary': windows/eu-west: 3 of 3 exposed failed")
    assert "e-value" in last["reason"] and ">= 100" in last["reason"]
    failed = {v["judge"]: v for v in last["details"]["verdicts"]}
    assert failed["silence"]["sentence"] == ("windows/eu-west: no health confirmation or heartbeat from any of the "
                                             "3 exposed devices")
    assert failed["hazard-ratio"]["numbers"]["exposed"]["silent"] == 3
    assert failed["hazard-ratio"]["numbers"]["control"]["devices"] == 30
    # Halted: nobody new, and the status still shows the verdicts that stopped it.
    assert halted["verdicts"]["0"]["overall"] == "failed"

    # A person answers for those three and resumes: the judges start afresh from that moment
    # instead of halting again on the same evidence.
    api.clock.advance(5)
    resumed = api.http.post(f"/v1/rollouts/{rid}/resume", json={"reason": "lab machines, unplugged"})
    assert resumed.json()["phase"] == "rolling"
    time.sleep(0.5)  # several reconciler ticks
    again = status(api, rid)
    assert again["phase"] == "rolling", again["history"][-1]["reason"]
    assert all(v["phase"] != "failed" for v in again["verdicts"]["0"]["strata"])


def test_healthy_canaries_keep_the_judges_quiet(setup: tuple[Api, str]) -> None:
    api, enroll = setup
    canary, control = fleet(api, enroll)
    rid = release(api, "292", PLAN)
    api.http.post(f"/v1/rollouts/{rid}/start")
    wait_for(lambda: all(checkin(d)["desired"].get(CT, {}).get("version") == "292" for d in canary))
    for d in canary:
        checkin(d, {}, [event("intent", "292")])
        checkin(d, {CT: "292"}, [event("activated", "292"), event("healthy", "292")])
    api.clock.advance(121)
    for d in [*canary, *control]:
        checkin(d, {CT: "292"} if d in canary else {})
    current: dict[str, Any] = wait_for(lambda: (s := status(api, rid))["verdicts"] and s)
    phases = {v["judge"]: v["phase"] for v in current["verdicts"]["0"]["strata"]}
    assert phases == {"hazard-ratio": "passed", "silence": "passed"}  # no limit set: no evidence of harm is a pass
    assert current["phase"] == "rolling"

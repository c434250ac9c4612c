"""The judges wired into the control plane, in process on SQLite and PostgreSQL: silence after
activation halts a rollout within a tick with the verdict as the reason, placebo devices are
asked and counted, and the rollout status shows the verdicts per stratum and for the rollout."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import CT, Api, Caller
from tests.integration.test_agent_api import checkin
from tests.integration.test_api import event, release, status, wait_for
from tests.support import silence_halt_heard

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
    # The control arm's first check-ins since the start are written with the sightings (a lane
    # of their own): the hazard test passes once they are in.
    running = wait_for(lambda: (s := status(api, rid))["verdicts"] and any(
        v["judge"] == "hazard-ratio" and v["phase"] == "passed" for v in s["verdicts"]["0"]["strata"]) and s)
    stratum = running["verdicts"]["0"]["strata"]
    assert {v["judge"]: v["phase"] for v in stratum} == {"hazard-ratio": "passed", "silence": "inconclusive"}
    assert running["verdicts"]["0"]["rollout"]["phase"] == "passed"

    api.clock.advance(61)  # the three placebo devices among the control arm come back after 1m ...
    for d in control:
        checkin(d)
    api.clock.advance(60)  # ... and the trial timeout passes with no healthy from any exposed device
    for d in control:
        checkin(d)  # the control arm keeps checking in
    halted = wait_for(lambda: (s := status(api, rid))["phase"] == "halted" and s)
    last = halted["history"][-1]
    assert last["actor"] == "reconciler"
    silence_halt_heard(last["reason"], "windows/eu-west", exposed=3, control=30)
    failed = {v["judge"]: v for v in last["details"]["verdicts"]}
    assert failed["silence"]["numbers"]["unconfirmed"] == 3
    assert failed["silence"]["numbers"]["placebo"] == {"exposed_only_silent": 3, "placebo_only_silent": 0,
                                                       "both_silent": 0, "neither_silent": 0, "waiting": 0}
    # Halted: nobody new, and the status still shows the verdicts that stopped it.
    assert halted["verdicts"]["0"]["overall"] == "failed"

    # A person answers for those three and resumes: the judges start afresh from that moment
    # instead of halting again on the same evidence.
    api.clock.advance(5)
    resumed = api.http.post(f"/v1/rollouts/{rid}/resume", json={"reason": "lab machines, unplugged"})
    assert resumed.json()["phase"] == "rolling"
    api.ticks()
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
    # Once the control arm's first check-ins are written (with the sightings), no limit set and no
    # evidence of harm is a pass.
    current: dict[str, Any] = wait_for(lambda: (s := status(api, rid))["verdicts"] and all(
        v["phase"] == "passed" for v in s["verdicts"]["0"]["strata"]) and s)
    phases = {v["judge"]: v["phase"] for v in current["verdicts"]["0"]["strata"]}
    assert phases == {"hazard-ratio": "passed", "silence": "passed"}
    assert current["phase"] == "rolling"


def test_placebo_devices_are_asked_back_within_the_trial_timeout_and_paired(setup: tuple[Api, str]) -> None:
    api, enroll = setup
    canary, control = fleet(api, enroll)
    rid = release(api, "293", PLAN.replace("trial_timeout: 2m", "trial_timeout: 1m"))
    api.http.post(f"/v1/rollouts/{rid}/start")
    wait_for(lambda: all(checkin(d)["desired"].get(CT, {}).get("version") == "293" for d in canary))
    for d in canary:
        checkin(d, {}, [event("intent", "293")])
    # One placebo per admitted device of the stratum: the first three control devices to check in
    # are asked back after 30s (the plan's trial timeout / 2), +15 % for the agents' jitter.
    intervals = [checkin(d)["poll_interval_s"] for d in control]
    assert intervals[:3] == [35.5] * 3 and set(intervals[3:]) == {60.0}
    api.clock.advance(10)
    assert checkin(control[0])["poll_interval_s"] == 24.0  # 20s left: asked again, not seen yet
    api.clock.advance(25)
    for d in canary:
        checkin(d, {CT: "293"}, [event("activated", "293"), event("healthy", "293")])
    assert [checkin(d)["poll_interval_s"] for d in control[:3]] == [60.0] * 3  # seen: back to normal
    api.clock.advance(30)  # every trial deadline has passed
    current = wait_for(lambda: (s := status(api, rid))["verdicts"]["0"]["rollout"]["numbers"]["placebo"]
                       ["neither_silent"] == 3 and s)
    rollout = current["verdicts"]["0"]["rollout"]
    assert rollout["phase"] == "passed" and rollout["stratum"] == "*"
    assert rollout["numbers"]["placebo"] == {"exposed_only_silent": 0, "placebo_only_silent": 0, "both_silent": 0,
                                             "neither_silent": 3, "waiting": 0}
    assert rollout["sentence"].startswith("no evidence of harm yet: rollout e-value")


def test_a_plan_without_health_settings_gets_its_categorys_defaults(setup: tuple[Api, str]) -> None:
    api, _ = setup
    plain = PLAN.split("waves:")[1]
    rid = release(api, "294", "name: plain\nwaves:" + plain)
    assert status(api, rid)["health"] == {"alpha": 0.01, "hazard_ratio_limit": None, "trial_timeout_s": 600.0,
                                          "placebo_after_s": 300.0, "silence_after_s": 57600.0,
                                          "baseline_rate": None, "error_pause_after_s": 900.0}  # rapid-response content

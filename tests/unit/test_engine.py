"""The reconciler step: given a rollout, what was observed and the time, which action (if any).

States are reached through the rules (``transition``), never written by hand, and time comes
from a :class:`ManualClock`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ringfence.analysis.verdicts import Verdict, VerdictPhase
from ringfence.core.clock import ManualClock
from ringfence.core.plan import Plan, parse_plan
from ringfence.core.rollout import Intent, Phase, RolloutState, TransitionContext, transition
from ringfence.engine.reconciler import Action, EngineLimits, Observations, StratumProgress, error_since, step, waiting

PLAN = parse_plan(
    """
name: engine-test
waves:
  - name: canary
    max_devices: 20
    soak: 30m
    gates: {failure_budget: 1, min_devices: 10}
  - name: tenth
    share: 0.1
    soak: 1h
    gates: {failure_budget: 5}
  - name: everyone
    share: 1.0
    soak: 2h
"""
)


def apply(state: RolloutState, intent: Intent, clock: ManualClock, reason: str = "") -> RolloutState:
    new, _ = transition(state, intent, actor="test", reason=reason, now=clock.now())
    return new


def rolling(clock: ManualClock, plan: Plan = PLAN, wave: int = 0) -> RolloutState:
    """A rollout started now, advanced to ``wave`` (each advance at the current time)."""
    state = RolloutState(Phase.DRAFT, 0, len(plan.waves))
    state = apply(state, Intent.PREPARE, clock)
    state = apply(state, Intent.START, clock)
    for _ in range(wave):
        state = apply(state, Intent.ADVANCE, clock)
    return state


def confirmed(n: int, stratum: str = "windows/eu-west") -> dict[str, StratumProgress]:
    """``n`` exposed devices of one stratum, every trial ended healthy."""
    return {stratum: StratumProgress(exposed=n, healthy=n, undecided=0)}


def only(actions: list[Action]) -> Action:
    assert len(actions) == 1, actions
    return actions[0]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


# -- draft ------------------------------------------------------------------------------------


def test_draft_waits_while_requirements_are_pending(clock: ManualClock) -> None:
    state = RolloutState(Phase.DRAFT, 0, 3)
    assert step(state, PLAN, Observations(pending=("approval",)), clock.now()) == []


def test_draft_prepares_once_nothing_is_pending(clock: ManualClock) -> None:
    state = RolloutState(Phase.DRAFT, 0, 3)
    action = only(step(state, PLAN, Observations(), clock.now()))
    assert action.intent is Intent.PREPARE
    new, entry = transition(state, action.intent, actor="engine", reason=action.reason, now=clock.now(),
                            ctx=TransitionContext())
    assert new.phase is Phase.READY
    assert entry.reason == action.reason


# -- rolling: halt ----------------------------------------------------------------------------


def test_halts_when_failures_exceed_the_wave_budget(clock: ManualClock) -> None:
    state = rolling(clock)
    obs = Observations(
        failed_devices=4,
        failed_by_stratum={"windows/eu-west": 2, "linux/us-east": 1, "macos/eu-west": 1, "windows/ap-south": 0},
        exposed_devices=12,
        wave_exposed=12,
    )
    action = only(step(state, PLAN, obs, clock.now()))
    assert action.intent is Intent.HALT
    assert "'canary'" in action.reason
    assert "4 failed devices of 12 exposed > budget 1" in action.reason
    # The three worst strata, worst first, ties by name.
    assert action.reason.endswith("(2 in windows/eu-west, 1 in linux/us-east, 1 in macos/eu-west)")
    assert "ap-south" not in action.reason
    assert action.details["failed_devices"] == 4
    assert action.details["failure_budget"] == 1
    assert action.details["wave"] == 0
    assert action.details["wave_name"] == "canary"
    assert action.details["failed_by_stratum"] == dict(obs.failed_by_stratum)
    halted = apply(state, action.intent, clock, action.reason)
    assert halted.phase is Phase.HALTED


def test_halt_without_a_stratum_breakdown_has_no_parenthesis(clock: ManualClock) -> None:
    action = only(step(rolling(clock), PLAN, Observations(failed_devices=2, exposed_devices=5), clock.now()))
    assert action.intent is Intent.HALT
    assert action.reason.endswith("2 failed devices of 5 exposed > budget 1")


def test_failures_at_the_budget_do_not_halt(clock: ManualClock) -> None:
    state = rolling(clock)
    assert step(state, PLAN, Observations(failed_devices=1, exposed_devices=5, wave_exposed=5), clock.now()) == []


def test_the_current_waves_budget_applies(clock: ManualClock) -> None:
    state = rolling(clock, wave=1)  # budget 5
    assert step(state, PLAN, Observations(failed_devices=5, exposed_devices=50), clock.now()) == []
    action = only(step(state, PLAN, Observations(failed_devices=6, exposed_devices=50), clock.now()))
    assert action.intent is Intent.HALT
    assert "'tenth'" in action.reason
    assert "budget 5" in action.reason


def test_a_zero_budget_halts_on_the_first_failure(clock: ManualClock) -> None:
    plan = parse_plan("name: z\nwaves: [{name: only, share: 1, soak: 1m, gates: {failure_budget: 0}}]\n")
    action = only(step(rolling(clock, plan), plan, Observations(failed_devices=1, exposed_devices=1), clock.now()))
    assert action.intent is Intent.HALT


def test_no_budget_never_halts(clock: ManualClock) -> None:
    state = rolling(clock, wave=2)  # "everyone" has no failure budget
    clock.advance(timedelta(hours=2))
    obs = Observations(failed_devices=10_000, exposed_devices=10_000, wave_exposed=10, progress=confirmed(10))
    action = only(step(state, PLAN, obs, clock.now()))
    assert action.intent is Intent.COMPLETE


def test_halt_comes_before_promotion(clock: ManualClock) -> None:
    state = rolling(clock)
    clock.advance(timedelta(days=1))
    obs = Observations(failed_devices=2, exposed_devices=20, wave_exposed=20)
    assert only(step(state, PLAN, obs, clock.now())).intent is Intent.HALT


# -- rolling: soak, min_devices, advance, complete ---------------------------------------------


def test_no_advance_before_the_soak(clock: ManualClock) -> None:
    state = rolling(clock)
    obs = Observations(exposed_devices=20, wave_exposed=20, progress=confirmed(20))
    assert step(state, PLAN, obs, clock.now()) == []
    clock.advance(timedelta(minutes=30) - timedelta(seconds=1))
    assert step(state, PLAN, obs, clock.now()) == []
    clock.advance(1)
    assert only(step(state, PLAN, obs, clock.now())).intent is Intent.ADVANCE


def test_no_advance_before_min_devices_even_after_soak(clock: ManualClock) -> None:
    state = rolling(clock)
    clock.advance(timedelta(hours=6))
    # Many devices exposed by the rollout, but too few of them in this wave.
    assert step(state, PLAN, Observations(exposed_devices=500, wave_exposed=9, progress=confirmed(500)),
                clock.now()) == []
    obs = Observations(exposed_devices=500, wave_exposed=10, progress=confirmed(500))
    assert only(step(state, PLAN, obs, clock.now())).intent is Intent.ADVANCE


def test_advance_after_soak_names_the_numbers_and_the_next_wave(clock: ManualClock) -> None:
    state = rolling(clock)
    clock.advance(timedelta(minutes=45))
    obs = Observations(failed_devices=1, exposed_devices=18, wave_exposed=15,
                       progress={"windows/eu-west": StratumProgress(exposed=18, healthy=17, undecided=0)})
    action = only(step(state, PLAN, obs, clock.now()))
    assert action.intent is Intent.ADVANCE
    assert action.reason == ("soak 30m passed in wave 'canary'; 17 confirmed healthy, 1 failed of 18 exposed, "
                             "budget 1; advancing to 'tenth'")
    assert action.details == {
        "wave": 0, "wave_name": "canary", "failed_devices": 1, "exposed_devices": 18, "wave_exposed": 15,
        "failure_budget": 1, "progress": {"windows/eu-west": {"exposed": 18, "healthy": 17, "undecided": 0}},
    }
    advanced = apply(state, action.intent, clock, action.reason)
    assert advanced.wave == 1
    # The next wave's soak starts now.
    assert step(advanced, PLAN, obs, clock.now()) == []
    clock.advance(timedelta(hours=1))
    assert only(step(advanced, PLAN, obs, clock.now())).intent is Intent.ADVANCE


def test_complete_on_the_last_wave(clock: ManualClock) -> None:
    state = rolling(clock, wave=2)
    clock.advance(timedelta(hours=2))
    obs = Observations(failed_devices=3, exposed_devices=900, wave_exposed=700,
                       progress={"windows/eu-west": StratumProgress(exposed=900, healthy=897, undecided=0)})
    action = only(step(state, PLAN, obs, clock.now()))
    assert action.intent is Intent.COMPLETE
    assert action.reason == ("soak 2h passed in wave 'everyone'; last wave done; 897 confirmed healthy, 3 failed of "
                             "900 exposed")
    assert apply(state, action.intent, clock, action.reason).phase is Phase.COMPLETED


def test_a_rollout_driven_by_the_engine_reaches_completed(clock: ManualClock) -> None:
    """Tick every minute; pass each action through the rules, as the server does."""
    state = RolloutState(Phase.DRAFT, 0, len(PLAN.waves))
    obs = Observations(exposed_devices=100, wave_exposed=25, progress=confirmed(100))
    seen: list[tuple[Intent, int]] = []
    started = None
    for _ in range(24 * 60):
        if state.phase is Phase.READY:
            state = apply(state, Intent.START, clock, "operator starts")
            started = clock.now()
        for action in step(state, PLAN, obs, clock.now()):
            seen.append((action.intent, state.wave))
            state = apply(state, action.intent, clock, action.reason)
        if state.phase is Phase.COMPLETED:
            break
        clock.advance(60)
    assert state.phase is Phase.COMPLETED
    assert seen == [(Intent.PREPARE, 0), (Intent.ADVANCE, 0), (Intent.ADVANCE, 1), (Intent.COMPLETE, 2)]
    # Each wave took exactly its soak: the engine promotes on the first tick after it.
    assert started is not None
    assert clock.now() - started == timedelta(minutes=30 + 60 + 120)


# -- rolling back -----------------------------------------------------------------------------


def rolling_back(clock: ManualClock) -> RolloutState:
    state = apply(rolling(clock), Intent.HALT, clock, "budget")
    return apply(state, Intent.ROLLBACK, clock, "bad update")


def test_rollback_finishes_when_no_device_is_left_on_the_version(clock: ManualClock) -> None:
    state = rolling_back(clock)
    action = only(step(state, PLAN, Observations(exposed_devices=40, still_on_version=0), clock.now()))
    assert action.intent is Intent.FINISH_ROLLBACK
    assert action.reason == "all 40 exposed devices checked in since the rollback and report the baseline"
    assert action.details == {"still_on_version": 0, "exposed_devices": 40}
    assert apply(state, action.intent, clock, action.reason).phase is Phase.ROLLED_BACK


def test_rollback_waits_for_confirmations_until_the_window_ends(clock: ManualClock) -> None:
    state = rolling_back(clock)
    obs = Observations(exposed_devices=40, still_on_version=3)
    assert step(state, PLAN, obs, clock.now()) == []
    clock.advance(timedelta(minutes=59, seconds=59))
    assert step(state, PLAN, obs, clock.now()) == []
    clock.advance(1)
    action = only(step(state, PLAN, obs, clock.now()))
    assert action.intent is Intent.FINISH_ROLLBACK
    assert "confirmation window 1h ended" in action.reason
    assert "3 of 40 exposed devices never confirmed" in action.reason
    assert action.details == {"still_on_version": 3, "exposed_devices": 40}


def test_the_confirmation_window_is_a_limit(clock: ManualClock) -> None:
    state = rolling_back(clock)
    limits = EngineLimits(rollback_confirm_window=timedelta(minutes=5))
    obs = Observations(exposed_devices=10, still_on_version=10)
    clock.advance(timedelta(minutes=4))
    assert step(state, PLAN, obs, clock.now(), limits) == []
    clock.advance(timedelta(minutes=1))
    assert "window 5m ended" in only(step(state, PLAN, obs, clock.now(), limits)).reason


def test_the_window_counts_from_the_start_of_the_rollback(clock: ManualClock) -> None:
    state = rolling(clock)
    clock.advance(timedelta(hours=5))  # long in rolling and halted: none of it counts
    state = apply(state, Intent.HALT, clock, "budget")
    clock.advance(timedelta(hours=5))
    state = apply(state, Intent.ROLLBACK, clock, "bad")
    clock.advance(timedelta(minutes=10))
    assert step(state, PLAN, Observations(exposed_devices=10, still_on_version=1), clock.now()) == []


# -- phases where the engine does nothing -----------------------------------------------------

BAD_NEWS = Observations(failed_devices=1000, exposed_devices=1000, wave_exposed=1000, still_on_version=0)


@pytest.mark.parametrize("intent", [Intent.PAUSE, Intent.HALT])
def test_paused_and_halted_produce_nothing(clock: ManualClock, intent: Intent) -> None:
    state = apply(rolling(clock), intent, clock, "stop")
    clock.advance(timedelta(days=3))
    assert step(state, PLAN, BAD_NEWS, clock.now()) == []


def test_ready_completed_and_rolled_back_produce_nothing(clock: ManualClock) -> None:
    ready = apply(RolloutState(Phase.DRAFT, 0, 3), Intent.PREPARE, clock)
    completed = apply(rolling(clock, wave=2), Intent.COMPLETE, clock, "done")
    rolled_back = apply(rolling_back(clock), Intent.FINISH_ROLLBACK, clock, "done")
    clock.advance(timedelta(days=3))
    for state in (ready, completed, rolled_back):
        assert step(state, PLAN, BAD_NEWS, clock.now()) == [], state.phase


def test_halt_reason_says_failures_are_counted_since_the_resume() -> None:
    since = datetime(2024, 7, 19, 5, 0, tzinfo=UTC)
    plan = parse_plan("name: p\nwaves:\n  - name: all\n    share: 1.0\n    soak: 1h\n    gates: {failure_budget: 0}\n")
    state = RolloutState(Phase.ROLLING, 0, 1, wave_started_at=since, phase_changed_at=since)
    actions = step(state, plan, Observations(failed_devices=1, exposed_devices=3, failures_since=since), since)
    assert [a.intent for a in actions] == [Intent.HALT]
    assert "1 failed devices since the resume at 2024-07-19T05:00:00+00:00 of 3 exposed" in actions[0].reason


# -- the judges' verdicts ------------------------------------------------------------------------
def _verdict(phase: str, judge: str = "hazard-ratio", stratum: str = "windows/eu-west") -> Verdict:
    return Verdict(judge, stratum, VerdictPhase(phase), f"{stratum}: {judge} says {phase}", {"e_value": 1.0})


def test_a_failed_verdict_halts_with_its_sentence(clock: ManualClock) -> None:
    obs = Observations(exposed_devices=12, wave_exposed=12,
                       verdicts=(_verdict("passed", "silence"), _verdict("failed"), _verdict("failed", "silence")))
    action = only(step(rolling(clock), PLAN, obs, clock.now()))
    assert action.intent is Intent.HALT
    assert action.reason == ("hazard-ratio verdict in wave 'canary': windows/eu-west: hazard-ratio says failed "
                             "(and 1 more failed verdicts)")
    assert [v["judge"] for v in action.details["verdicts"]] == ["hazard-ratio", "silence"]


def test_without_a_limit_running_verdicts_do_not_hold_promotion(clock: ManualClock) -> None:
    state = rolling(clock)
    clock.advance(timedelta(minutes=31))
    obs = Observations(exposed_devices=12, wave_exposed=12, verdicts=(_verdict("running"),), progress=confirmed(12))
    assert only(step(state, PLAN, obs, clock.now())).intent is Intent.ADVANCE


def test_with_a_limit_promotion_waits_for_a_passed_bound_in_every_stratum(clock: ManualClock) -> None:
    plan = parse_plan(PLAN_TEXT_WITH_LIMIT)
    state = rolling(clock, plan)
    clock.advance(timedelta(minutes=31))
    held = Observations(exposed_devices=12, wave_exposed=12, progress=confirmed(12),
                        verdicts=(_verdict("passed"), _verdict("running", stratum="linux/us-east"),
                                  _verdict("passed", "silence")))
    assert step(state, plan, held, clock.now()) == []
    assert "hazard-ratio: linux/us-east: hazard-ratio says running" in waiting(state, plan, held, clock.now())
    ready = Observations(exposed_devices=12, wave_exposed=12, progress=confirmed(12),
                         verdicts=(_verdict("passed"), _verdict("passed", "baseline", "linux/us-east"),
                                   _verdict("passed", "silence")))
    assert only(step(state, plan, ready, clock.now())).intent is Intent.ADVANCE


PLAN_TEXT_WITH_LIMIT = """
name: bounded
health: {hazard_ratio_limit: 2.0}
waves:
  - name: canary
    max_devices: 20
    soak: 30m
  - name: everyone
    share: 1.0
    soak: 1h
"""


# -- evidence, never elapsed time ------------------------------------------------------------------
CONFIRMED = Observations(exposed_devices=12, wave_exposed=12, progress=confirmed(12))


@pytest.mark.parametrize(("phase", "before_soak", "after_soak"), [
    ("passed", None, Intent.ADVANCE),
    ("running", None, Intent.ADVANCE),  # no hazard-ratio limit: a running comparison does not hold
    ("inconclusive", None, None),  # holds, and says what is missing
    ("error", None, None),  # holds (and pauses after error_pause_after)
    ("failed", Intent.HALT, Intent.HALT),
])
def test_each_verdict_phase_at_and_after_the_soak(clock: ManualClock, phase: str, before_soak: Intent | None,
                                                  after_soak: Intent | None) -> None:
    state = rolling(clock)
    obs = Observations(exposed_devices=12, wave_exposed=12, progress=confirmed(12),
                       verdicts=(_verdict(phase, "silence"),), error_since=clock.now() if phase == "error" else None)
    assert [a.intent for a in step(state, PLAN, obs, clock.now())] == ([before_soak] if before_soak else [])
    clock.advance(timedelta(minutes=30))
    if phase == "error":  # it began just now: the wave holds, the pause comes later
        obs = replace(obs, error_since=clock.now())
    assert [a.intent for a in step(state, PLAN, obs, clock.now())] == ([after_soak] if after_soak else [])
    if after_soak is None:
        reasons = waiting(state, PLAN, obs, clock.now())
        assert reasons == [f"silence {'could not run' if phase == 'error' else 'is inconclusive'}: "
                           f"windows/eu-west: silence says {phase}"]


def test_no_promotion_with_zero_confirmations(clock: ManualClock) -> None:
    state = rolling(clock)
    clock.advance(timedelta(days=2))
    nobody = Observations()
    assert step(state, PLAN, nobody, clock.now()) == []
    assert waiting(state, PLAN, nobody, clock.now()) == [
        "no device has announced intent yet: a rollout that exposed nobody has proven nothing",
        "0 of 10 devices of the wave exposed (min_devices)"]
    silent = Observations(exposed_devices=12, wave_exposed=12,
                          progress={"windows/eu-west": StratumProgress(exposed=12, healthy=0, undecided=12)})
    assert step(state, PLAN, silent, clock.now()) == []
    assert waiting(state, PLAN, silent, clock.now()) == [
        "windows/eu-west: 0 of 1 healthy confirmations; 12 trials undecided (at most 3 of 12 may be)"]


def test_every_exposed_stratum_needs_its_own_confirmations(clock: ManualClock) -> None:
    plan = parse_plan("name: p\nwaves:\n  - {name: all, share: 1.0, soak: 1m, gates: {min_healthy: 3}}\n")
    state = rolling(clock, plan)
    clock.advance(timedelta(minutes=5))
    progress = {"windows/eu-west": StratumProgress(exposed=50, healthy=50, undecided=0),
                "linux/us-east": StratumProgress(exposed=2, healthy=1, undecided=1)}
    obs = Observations(exposed_devices=52, wave_exposed=52, progress=progress)
    assert step(state, plan, obs, clock.now()) == []
    assert waiting(state, plan, obs, clock.now()) == [
        "linux/us-east: 1 of 2 healthy confirmations; 1 trials undecided (at most 0 of 2 may be)"]
    done = {**progress, "linux/us-east": StratumProgress(exposed=2, healthy=2, undecided=0)}
    assert only(step(state, plan, Observations(exposed_devices=52, wave_exposed=52, progress=done),
                     clock.now())).intent is Intent.COMPLETE


def test_too_many_undecided_trials_hold_the_wave(clock: ManualClock) -> None:
    plan = parse_plan("name: p\nwaves:\n  - {name: all, share: 1.0, soak: 1m, gates: {max_undecided: 0.1}}\n")
    state = rolling(clock, plan)
    clock.advance(timedelta(minutes=5))
    busy = Observations(exposed_devices=100, wave_exposed=100,
                        progress={"macos/ap": StratumProgress(exposed=100, healthy=89, undecided=11)})
    assert step(state, plan, busy, clock.now()) == []
    settled = Observations(exposed_devices=100, wave_exposed=100,
                           progress={"macos/ap": StratumProgress(exposed=100, healthy=90, undecided=10)})
    assert only(step(state, plan, settled, clock.now())).intent is Intent.COMPLETE


def test_a_wave_with_nobody_new_to_reach_stands_on_the_earlier_evidence(clock: ManualClock) -> None:
    state = rolling(clock, wave=1)
    clock.advance(timedelta(hours=1))
    earlier = Observations(exposed_devices=12, wave_exposed=0, progress=confirmed(12))
    assert step(state, PLAN, earlier, clock.now()) == []  # reach unknown: somebody may still come
    somebody = Observations(exposed_devices=12, wave_exposed=0, progress=confirmed(12), wave_reach=4)
    assert step(state, PLAN, somebody, clock.now()) == []
    assert waiting(state, PLAN, somebody, clock.now()) == [
        "no device of wave 'tenth' has announced intent yet: nothing new is proven"]
    vacuous = Observations(exposed_devices=12, wave_exposed=0, progress=confirmed(12), wave_reach=0)
    assert only(step(state, PLAN, vacuous, clock.now())).intent is Intent.ADVANCE
    # ... but a rollout that exposed nobody at all never passes, reach or not.
    empty = Observations(wave_reach=0)
    assert step(state, PLAN, empty, clock.now()) == []


def test_a_judge_error_holds_and_then_pauses_for_a_person(clock: ManualClock) -> None:
    state = rolling(clock)
    clock.advance(timedelta(minutes=31))
    verdicts = (_verdict("error"),)
    since = error_since(None, verdicts, clock.now())
    assert since == clock.now()
    assert error_since(since, (_verdict("passed"),), clock.now()) is None  # cleared once none is an error
    obs = Observations(exposed_devices=12, wave_exposed=12, progress=confirmed(12), verdicts=verdicts,
                       error_since=since)
    clock.advance(timedelta(minutes=15) - timedelta(seconds=1))
    assert error_since(since, verdicts, clock.now()) == since
    assert step(state, PLAN, obs, clock.now()) == []
    clock.advance(1)
    action = only(step(state, PLAN, obs, clock.now()))
    assert action.intent is Intent.PAUSE
    assert "judges could not run for 15m in wave 'canary' (limit 15m)" in action.reason
    assert action.reason.endswith("paused for a person")
    assert apply(state, action.intent, clock, action.reason).phase is Phase.PAUSED

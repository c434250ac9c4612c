"""The reconciler step: given a rollout, what was observed and the time, which action (if any).

States are reached through the rules (``transition``), never written by hand, and time comes
from a :class:`ManualClock`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ringfence.analysis.verdicts import Verdict, VerdictPhase
from ringfence.core.clock import ManualClock
from ringfence.core.plan import Plan, parse_plan
from ringfence.core.rollout import Intent, Phase, RolloutState, TransitionContext, transition
from ringfence.engine.reconciler import Action, EngineLimits, Observations, step

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
    action = only(step(state, PLAN, Observations(failed_devices=10_000, exposed_devices=10_000), clock.now()))
    assert action.intent is Intent.COMPLETE


def test_halt_comes_before_promotion(clock: ManualClock) -> None:
    state = rolling(clock)
    clock.advance(timedelta(days=1))
    obs = Observations(failed_devices=2, exposed_devices=20, wave_exposed=20)
    assert only(step(state, PLAN, obs, clock.now())).intent is Intent.HALT


# -- rolling: soak, min_devices, advance, complete ---------------------------------------------


def test_no_advance_before_the_soak(clock: ManualClock) -> None:
    state = rolling(clock)
    obs = Observations(exposed_devices=20, wave_exposed=20)
    assert step(state, PLAN, obs, clock.now()) == []
    clock.advance(timedelta(minutes=30) - timedelta(seconds=1))
    assert step(state, PLAN, obs, clock.now()) == []
    clock.advance(1)
    assert only(step(state, PLAN, obs, clock.now())).intent is Intent.ADVANCE


def test_no_advance_before_min_devices_even_after_soak(clock: ManualClock) -> None:
    state = rolling(clock)
    clock.advance(timedelta(hours=6))
    # Many devices exposed by the rollout, but too few of them in this wave.
    assert step(state, PLAN, Observations(exposed_devices=500, wave_exposed=9), clock.now()) == []
    assert only(step(state, PLAN, Observations(exposed_devices=500, wave_exposed=10), clock.now())).intent is (
        Intent.ADVANCE
    )


def test_advance_after_soak_names_the_numbers_and_the_next_wave(clock: ManualClock) -> None:
    state = rolling(clock)
    clock.advance(timedelta(minutes=45))
    obs = Observations(failed_devices=1, exposed_devices=18, wave_exposed=15)
    action = only(step(state, PLAN, obs, clock.now()))
    assert action.intent is Intent.ADVANCE
    assert action.reason == "soak 30m passed in wave 'canary'; 1 failed of 18 exposed, budget 1; advancing to 'tenth'"
    assert action.details == {
        "wave": 0, "wave_name": "canary", "failed_devices": 1, "exposed_devices": 18, "wave_exposed": 15,
        "failure_budget": 1,
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
    action = only(step(state, PLAN, Observations(failed_devices=3, exposed_devices=900), clock.now()))
    assert action.intent is Intent.COMPLETE
    assert action.reason == "soak 2h passed in wave 'everyone'; last wave done; 3 failed of 900 exposed"
    assert apply(state, action.intent, clock, action.reason).phase is Phase.COMPLETED


def test_a_rollout_driven_by_the_engine_reaches_completed(clock: ManualClock) -> None:
    """Tick every minute; pass each action through the rules, as the server does."""
    state = RolloutState(Phase.DRAFT, 0, len(PLAN.waves))
    obs = Observations(exposed_devices=100, wave_exposed=25)
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
    obs = Observations(exposed_devices=12, wave_exposed=12, verdicts=(_verdict("running"),))
    assert only(step(state, PLAN, obs, clock.now())).intent is Intent.ADVANCE


def test_with_a_limit_promotion_waits_for_a_passed_bound_in_every_stratum(clock: ManualClock) -> None:
    plan = parse_plan(PLAN_TEXT_WITH_LIMIT)
    state = rolling(clock, plan)
    clock.advance(timedelta(minutes=31))
    waiting = Observations(exposed_devices=12, wave_exposed=12,
                           verdicts=(_verdict("passed"), _verdict("running", stratum="linux/us-east"),
                                     _verdict("inconclusive", "silence")))
    assert step(state, plan, waiting, clock.now()) == []
    ready = Observations(exposed_devices=12, wave_exposed=12,
                         verdicts=(_verdict("passed"), _verdict("passed", "baseline", "linux/us-east"),
                                   _verdict("inconclusive", "silence")))
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

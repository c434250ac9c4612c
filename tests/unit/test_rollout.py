"""The rollout state machine: every (phase, intent) pair against the diagram in the module
docstring, the checks rules add, and what goes into the history."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ringfence.core.errors import Conflict, TransitionRejected
from ringfence.core.rollout import (
    ACTIVE_PHASES,
    OPERATOR_INTENTS,
    RULES,
    Intent,
    Phase,
    RolloutState,
    TransitionContext,
    transition,
)

T0 = datetime(2024, 7, 19, 4, 9, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
WAVES = 3

# The diagram, written out: (from phase, intent) -> to phase. Everything else is refused.
ALLOWED: dict[tuple[Phase, Intent], Phase] = {
    (Phase.DRAFT, Intent.PREPARE): Phase.READY,
    (Phase.READY, Intent.START): Phase.ROLLING,
    (Phase.ROLLING, Intent.PAUSE): Phase.PAUSED,
    (Phase.ROLLING, Intent.ADVANCE): Phase.ROLLING,
    (Phase.ROLLING, Intent.COMPLETE): Phase.COMPLETED,
    (Phase.PAUSED, Intent.RESUME): Phase.ROLLING,
    (Phase.HALTED, Intent.RESUME): Phase.ROLLING,
    (Phase.ROLLING, Intent.HALT): Phase.HALTED,
    (Phase.PAUSED, Intent.HALT): Phase.HALTED,
    (Phase.ROLLING, Intent.ROLLBACK): Phase.ROLLING_BACK,
    (Phase.PAUSED, Intent.ROLLBACK): Phase.ROLLING_BACK,
    (Phase.HALTED, Intent.ROLLBACK): Phase.ROLLING_BACK,
    (Phase.COMPLETED, Intent.ROLLBACK): Phase.ROLLING_BACK,
    (Phase.ROLLING_BACK, Intent.FINISH_ROLLBACK): Phase.ROLLED_BACK,
}
ALL_PAIRS = list(itertools.product(Phase, Intent))
REFUSED = [pair for pair in ALL_PAIRS if pair not in ALLOWED]


def state_for(phase: Phase, intent: Intent) -> RolloutState:
    """A state in ``phase`` on a wave where ``intent``'s own wave check passes (advance needs a
    next wave, complete needs the last one)."""
    wave = WAVES - 1 if intent is Intent.COMPLETE else 0
    return RolloutState(phase=phase, wave=wave, wave_count=WAVES, wave_started_at=T0, phase_changed_at=T0)


def pair_id(pair: tuple[Phase, Intent]) -> str:
    return f"{pair[0].value}-{pair[1].value}"


@pytest.mark.parametrize(("phase", "intent"), list(ALLOWED), ids=[pair_id(p) for p in ALLOWED])
def test_allowed_transitions_reach_the_documented_phase(phase: Phase, intent: Intent) -> None:
    state = state_for(phase, intent)
    new, entry = transition(state, intent, actor="alice", reason="because", now=NOW)
    expected = ALLOWED[(phase, intent)]
    assert new.phase is expected
    assert entry.from_phase is phase
    assert entry.to_phase is expected
    assert entry.intent is intent
    assert entry.at == NOW
    assert new.phase_changed_at == (NOW if expected is not phase else T0)
    assert new.wave_count == WAVES


@pytest.mark.parametrize(("phase", "intent"), REFUSED, ids=[pair_id(p) for p in REFUSED])
def test_other_transitions_are_refused_naming_the_phase(phase: Phase, intent: Intent) -> None:
    state = state_for(phase, intent)
    with pytest.raises(TransitionRejected) as info:
        transition(state, intent, actor="alice", reason="because", now=NOW)
    error = info.value
    assert f"cannot {intent.value} a rollout that is {phase.value}" in error.message
    allowed_from = sorted(p.value for (p, i) in ALLOWED if i is intent)
    assert error.message.endswith("only from " + ", ".join(allowed_from))
    assert error.details == {"phase": phase.value, "intent": intent.value}
    assert isinstance(error, Conflict)


def test_every_intent_has_exactly_one_rule() -> None:
    assert set(RULES) == set(Intent)
    assert all(rule.intent is intent for intent, rule in RULES.items())


def test_operator_intents_are_the_human_ones() -> None:
    assert {Intent.START, Intent.PAUSE, Intent.RESUME, Intent.HALT, Intent.ROLLBACK} == OPERATOR_INTENTS
    assert not OPERATOR_INTENTS & {Intent.PREPARE, Intent.ADVANCE, Intent.COMPLETE, Intent.FINISH_ROLLBACK}


def test_active_phases_are_those_that_decide_what_devices_run() -> None:
    assert {Phase.ROLLING, Phase.PAUSED, Phase.HALTED, Phase.ROLLING_BACK} == ACTIVE_PHASES


def test_rolled_back_is_terminal() -> None:
    for intent in Intent:
        with pytest.raises(TransitionRejected):
            transition(state_for(Phase.ROLLED_BACK, intent), intent, actor="a", reason="r", now=NOW)


def test_transition_leaves_the_old_state_alone() -> None:
    state = state_for(Phase.ROLLING, Intent.PAUSE)
    before = replace(state)
    transition(state, Intent.PAUSE, actor="a", reason="r", now=NOW)
    assert state == before


# -- checks the rules add ---------------------------------------------------------------------


def test_prepare_waits_for_pending_requirements() -> None:
    state = RolloutState(Phase.DRAFT, 0, WAVES)
    ctx = TransitionContext(pending=("validation sensor-matrix", "approval by security"))
    with pytest.raises(TransitionRejected) as info:
        transition(state, Intent.PREPARE, actor="engine", reason="", now=NOW, ctx=ctx)
    assert info.value.message == (
        "cannot prepare: still waiting for: validation sensor-matrix; approval by security"
    )
    assert info.value.details == {"phase": "draft", "intent": "prepare"}


def test_start_begins_wave_zero_now() -> None:
    state = RolloutState(Phase.READY, 0, WAVES)
    new, entry = transition(state, Intent.START, actor="alice", reason="go", now=NOW)
    assert new == RolloutState(Phase.ROLLING, 0, WAVES, wave_started_at=NOW, phase_changed_at=NOW)
    assert (entry.from_wave, entry.to_wave) == (0, 0)


def test_start_is_refused_while_a_sibling_is_active() -> None:
    state = RolloutState(Phase.READY, 0, WAVES)
    with pytest.raises(TransitionRejected) as info:
        transition(state, Intent.START, actor="alice", reason="go", now=NOW,
                   ctx=TransitionContext(active_sibling="rel-7"))
    assert "release rel-7 of the same content type is still active" in info.value.message
    assert info.value.details["phase"] == "ready"


@pytest.mark.parametrize("reason", ["", "   ", "\n\t"])
def test_resuming_a_halted_rollout_needs_a_reason(reason: str) -> None:
    state = state_for(Phase.HALTED, Intent.RESUME)
    with pytest.raises(TransitionRejected) as info:
        transition(state, Intent.RESUME, actor="alice", reason=reason, now=NOW)
    assert "needs a reason" in info.value.message
    assert info.value.details["phase"] == "halted"


def test_resuming_a_halted_rollout_with_a_reason_records_it() -> None:
    state = state_for(Phase.HALTED, Intent.RESUME)
    new, entry = transition(state, Intent.RESUME, actor="alice", reason="crashes were a lab outage", now=NOW)
    assert new.phase is Phase.ROLLING
    assert entry.reason == "crashes were a lab outage"
    assert entry.actor == "alice"


def test_resuming_a_paused_rollout_needs_no_reason() -> None:
    new, entry = transition(state_for(Phase.PAUSED, Intent.RESUME), Intent.RESUME, actor="bob", reason="", now=NOW)
    assert new.phase is Phase.ROLLING
    assert entry.reason == "resume requested by bob (no reason given)"


@pytest.mark.parametrize("phase", [Phase.PAUSED, Phase.HALTED])
def test_resume_is_refused_while_a_sibling_is_active(phase: Phase) -> None:
    with pytest.raises(TransitionRejected) as info:
        transition(state_for(phase, Intent.RESUME), Intent.RESUME, actor="a", reason="ok now", now=NOW,
                   ctx=TransitionContext(active_sibling="rel-9"))
    assert "rel-9" in info.value.message


def test_rolling_back_a_completed_release_waits_for_an_active_sibling() -> None:
    state = state_for(Phase.COMPLETED, Intent.ROLLBACK)
    with pytest.raises(TransitionRejected) as info:
        transition(state, Intent.ROLLBACK, actor="a", reason="bad", now=NOW,
                   ctx=TransitionContext(active_sibling="rel-10"))
    assert "rel-10" in info.value.message
    assert "roll that one back first" in info.value.message


@pytest.mark.parametrize("phase", [Phase.ROLLING, Phase.PAUSED, Phase.HALTED])
def test_rolling_back_an_active_rollout_ignores_siblings(phase: Phase) -> None:
    new, _ = transition(state_for(phase, Intent.ROLLBACK), Intent.ROLLBACK, actor="a", reason="bad", now=NOW,
                        ctx=TransitionContext(active_sibling="rel-10"))
    assert new.phase is Phase.ROLLING_BACK


@pytest.mark.parametrize("wave", range(WAVES - 1))
def test_advance_moves_one_wave_and_restarts_the_soak(wave: int) -> None:
    state = RolloutState(Phase.ROLLING, wave, WAVES, wave_started_at=T0, phase_changed_at=T0)
    new, entry = transition(state, Intent.ADVANCE, actor="engine", reason="soaked", now=NOW)
    assert new == RolloutState(Phase.ROLLING, wave + 1, WAVES, wave_started_at=NOW, phase_changed_at=T0)
    assert (entry.from_wave, entry.to_wave) == (wave, wave + 1)
    assert entry.from_phase is entry.to_phase is Phase.ROLLING


def test_advance_past_the_last_wave_is_refused() -> None:
    state = RolloutState(Phase.ROLLING, WAVES - 1, WAVES, wave_started_at=T0)
    with pytest.raises(TransitionRejected) as info:
        transition(state, Intent.ADVANCE, actor="engine", reason="", now=NOW)
    assert info.value.message == f"cannot advance: wave {WAVES} of {WAVES} is the last; complete instead"


@pytest.mark.parametrize("wave", range(WAVES - 1))
def test_complete_before_the_last_wave_is_refused(wave: int) -> None:
    state = RolloutState(Phase.ROLLING, wave, WAVES, wave_started_at=T0)
    with pytest.raises(TransitionRejected) as info:
        transition(state, Intent.COMPLETE, actor="engine", reason="", now=NOW)
    assert info.value.message == f"cannot complete: wave {wave + 1} of {WAVES} is not the last"


def test_a_single_wave_rollout_completes_and_cannot_advance() -> None:
    state = RolloutState(Phase.ROLLING, 0, 1, wave_started_at=T0)
    with pytest.raises(TransitionRejected):
        transition(state, Intent.ADVANCE, actor="engine", reason="", now=NOW)
    new, _ = transition(state, Intent.COMPLETE, actor="engine", reason="done", now=NOW)
    assert new.phase is Phase.COMPLETED


# -- history ----------------------------------------------------------------------------------


def test_history_entry_records_actor_reason_and_details() -> None:
    details = {"failed_devices": 3, "failure_budget": 1}
    state = state_for(Phase.ROLLING, Intent.HALT)
    new, entry = transition(state, Intent.HALT, actor="engine", reason="budget exceeded", now=NOW, details=details)
    assert entry.actor == "engine"
    assert entry.reason == "budget exceeded"
    assert entry.details == details
    assert (entry.from_wave, entry.to_wave) == (state.wave, new.wave)
    details["failed_devices"] = 99  # the history keeps its own copy
    assert entry.details["failed_devices"] == 3


@pytest.mark.parametrize("intent", [Intent.PAUSE, Intent.HALT, Intent.ROLLBACK, Intent.ADVANCE])
def test_missing_reason_gets_a_default_naming_intent_and_actor(intent: Intent) -> None:
    _, entry = transition(state_for(Phase.ROLLING, intent), intent, actor="carol", reason="", now=NOW)
    assert entry.reason == f"{intent.value} requested by carol (no reason given)"
    assert entry.details == {}


def test_a_whole_life_through_the_rules() -> None:
    state = RolloutState(Phase.DRAFT, 0, WAVES)
    history = []
    steps = [
        (Intent.PREPARE, "engine"),
        (Intent.START, "alice"),
        (Intent.ADVANCE, "engine"),
        (Intent.PAUSE, "bob"),
        (Intent.RESUME, "bob"),
        (Intent.ADVANCE, "engine"),
        (Intent.HALT, "engine"),
        (Intent.ROLLBACK, "alice"),
        (Intent.FINISH_ROLLBACK, "engine"),
    ]
    now = T0
    for intent, actor in steps:
        now += timedelta(minutes=5)
        state, entry = transition(state, intent, actor=actor, reason=f"step {intent.value}", now=now)
        history.append(entry)
    assert state.phase is Phase.ROLLED_BACK
    assert state.wave == 2
    assert [e.to_phase for e in history] == [
        Phase.READY, Phase.ROLLING, Phase.ROLLING, Phase.PAUSED, Phase.ROLLING, Phase.ROLLING,
        Phase.HALTED, Phase.ROLLING_BACK, Phase.ROLLED_BACK,
    ]
    # Each entry starts where the previous one ended.
    for before, after in itertools.pairwise(history):
        assert after.from_phase is before.to_phase
        assert after.from_wave == before.to_wave
        assert after.at > before.at


@pytest.mark.parametrize("phase", [Phase.PAUSED, Phase.HALTED])
def test_resume_restarts_the_soak_of_the_current_wave(phase: Phase) -> None:
    state = RolloutState(phase, 2, WAVES, wave_started_at=T0, phase_changed_at=T0)
    new, _ = transition(state, Intent.RESUME, actor="bob", reason="fixed upstream", now=NOW)
    assert new == RolloutState(Phase.ROLLING, 2, WAVES, wave_started_at=NOW, phase_changed_at=NOW)

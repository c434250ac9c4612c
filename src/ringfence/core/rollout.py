"""The rollout state machine. Every change of phase or wave goes through a :class:`Rule`;
nothing writes a phase directly.

Phases::

    draft ──prepare──> ready ──start──> rolling ──complete──> completed
                                         │  ▲ │                  │
                                   pause │  │ │ advance (wave k -> k+1, stays rolling)
                                         ▼  │ resume             │
                                        paused                   │
              rolling | paused ──halt──> halted ──resume (reason required)──> rolling
     rolling | paused | halted | completed ──rollback──> rolling_back ──finish_rollback──> rolled_back

* ``draft``: created, requirements (validation, approvals) pending. ``ready``: may start.
* ``rolling``: new devices are admitted up to the current wave. ``paused``: a person stopped
  admissions; resuming is routine. ``halted``: a gate or a person stopped admissions because
  something is wrong; already exposed devices keep the version (halt is not rollback), and
  resuming needs a stated reason. Resuming restarts the current wave's soak: time spent
  paused or halted proved nothing.
* ``rolling_back``: every device is told to run the baseline (last completed release);
  ``rolled_back`` once exposed devices confirm it, or the confirmation window ends.
* ``completed``: the last wave passed; the version becomes the content type's baseline.

Terminal: ``completed`` (unless rolled back later) and ``rolled_back``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from ringfence.core.errors import TransitionRejected


class Phase(StrEnum):
    DRAFT = "draft"
    READY = "ready"
    ROLLING = "rolling"
    PAUSED = "paused"
    HALTED = "halted"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    COMPLETED = "completed"


# Phases in which the rollout decides what devices run (one per content type at a time).
ACTIVE_PHASES = frozenset({Phase.ROLLING, Phase.PAUSED, Phase.HALTED, Phase.ROLLING_BACK})


class Intent(StrEnum):
    PREPARE = "prepare"
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    HALT = "halt"
    ROLLBACK = "rollback"
    FINISH_ROLLBACK = "finish_rollback"
    ADVANCE = "advance"
    COMPLETE = "complete"


# Intents a person (or a tool acting for one) may ask for; the rest are the engine's.
OPERATOR_INTENTS = frozenset({Intent.START, Intent.PAUSE, Intent.RESUME, Intent.HALT, Intent.ROLLBACK})


@dataclass(frozen=True, slots=True)
class RolloutState:
    phase: Phase
    wave: int
    wave_count: int
    wave_started_at: datetime | None = None
    phase_changed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """One entry of a rollout's history: what changed, when, who asked, why, on what numbers."""

    at: datetime
    intent: Intent
    from_phase: Phase
    to_phase: Phase
    from_wave: int
    to_wave: int
    actor: str
    reason: str
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TransitionContext:
    """Facts about the world a rule may need; gathered by the caller.

    ``active_sibling``: id of another release of the same content type in an active phase.
    ``pending``: requirements that keep a release in draft (validation, approvals).
    """

    active_sibling: str | None = None
    pending: tuple[str, ...] = ()


class Rule:
    """Accepts or rejects one intent. Subclasses name FROM and TO and may add a check."""

    intent: Intent
    from_phases: frozenset[Phase]
    to_phase: Phase | None  # None: phase unchanged (wave advance)

    def check(self, state: RolloutState, ctx: TransitionContext, reason: str) -> str | None:
        """Return a rejection reason, or None to accept."""
        return None

    def next_state(self, state: RolloutState, now: datetime) -> RolloutState:
        to = self.to_phase or state.phase
        return replace(state, phase=to, phase_changed_at=now if to != state.phase else state.phase_changed_at)


class _Prepare(Rule):
    intent, from_phases, to_phase = Intent.PREPARE, frozenset({Phase.DRAFT}), Phase.READY

    def check(self, state: RolloutState, ctx: TransitionContext, reason: str) -> str | None:
        if ctx.pending:
            return "still waiting for: " + "; ".join(ctx.pending)
        return None


class _Start(Rule):
    intent, from_phases, to_phase = Intent.START, frozenset({Phase.READY}), Phase.ROLLING

    def check(self, state: RolloutState, ctx: TransitionContext, reason: str) -> str | None:
        if ctx.active_sibling:
            return (
                f"release {ctx.active_sibling} of the same content type is still active; "
                "complete, halt and roll it back, or wait"
            )
        return None

    def next_state(self, state: RolloutState, now: datetime) -> RolloutState:
        return replace(state, phase=Phase.ROLLING, wave=0, wave_started_at=now, phase_changed_at=now)


class _Pause(Rule):
    intent, from_phases, to_phase = Intent.PAUSE, frozenset({Phase.ROLLING}), Phase.PAUSED


class _Resume(Rule):
    intent, from_phases, to_phase = Intent.RESUME, frozenset({Phase.PAUSED, Phase.HALTED}), Phase.ROLLING

    def check(self, state: RolloutState, ctx: TransitionContext, reason: str) -> str | None:
        if state.phase is Phase.HALTED and not reason.strip():
            return "resuming a halted rollout needs a reason: say why the halt no longer applies"
        if ctx.active_sibling:
            return f"release {ctx.active_sibling} of the same content type is active"
        return None

    def next_state(self, state: RolloutState, now: datetime) -> RolloutState:
        # The wave soaks in full again: time spent paused or halted proved nothing.
        return replace(state, phase=Phase.ROLLING, wave_started_at=now, phase_changed_at=now)


class _Halt(Rule):
    intent, from_phases, to_phase = Intent.HALT, frozenset({Phase.ROLLING, Phase.PAUSED}), Phase.HALTED


class _Rollback(Rule):
    intent = Intent.ROLLBACK
    from_phases = frozenset({Phase.ROLLING, Phase.PAUSED, Phase.HALTED, Phase.COMPLETED})
    to_phase = Phase.ROLLING_BACK

    def check(self, state: RolloutState, ctx: TransitionContext, reason: str) -> str | None:
        if state.phase is Phase.COMPLETED and ctx.active_sibling:
            return (
                f"release {ctx.active_sibling} of the same content type is active; roll that one back first"
            )
        return None


class _FinishRollback(Rule):
    intent, from_phases, to_phase = Intent.FINISH_ROLLBACK, frozenset({Phase.ROLLING_BACK}), Phase.ROLLED_BACK


class _Advance(Rule):
    intent, from_phases, to_phase = Intent.ADVANCE, frozenset({Phase.ROLLING}), None

    def check(self, state: RolloutState, ctx: TransitionContext, reason: str) -> str | None:
        if state.wave + 1 >= state.wave_count:
            return f"wave {state.wave + 1} of {state.wave_count} is the last; complete instead"
        return None

    def next_state(self, state: RolloutState, now: datetime) -> RolloutState:
        return replace(state, wave=state.wave + 1, wave_started_at=now)


class _Complete(Rule):
    intent, from_phases, to_phase = Intent.COMPLETE, frozenset({Phase.ROLLING}), Phase.COMPLETED

    def check(self, state: RolloutState, ctx: TransitionContext, reason: str) -> str | None:
        if state.wave + 1 < state.wave_count:
            return f"wave {state.wave + 1} of {state.wave_count} is not the last"
        return None


RULES: Mapping[Intent, Rule] = {
    rule.intent: rule
    for rule in (
        _Prepare(),
        _Start(),
        _Pause(),
        _Resume(),
        _Halt(),
        _Rollback(),
        _FinishRollback(),
        _Advance(),
        _Complete(),
    )
}


def transition(
    state: RolloutState,
    intent: Intent,
    *,
    actor: str,
    reason: str,
    now: datetime,
    ctx: TransitionContext | None = None,
    details: Mapping[str, Any] | None = None,
) -> tuple[RolloutState, Transition]:
    """Apply one intent through its rule. Raises :class:`TransitionRejected` with the reason."""
    rule = RULES[intent]
    ctx = ctx or TransitionContext()
    if state.phase not in rule.from_phases:
        allowed = ", ".join(sorted(p.value for p in rule.from_phases))
        raise TransitionRejected(
            f"cannot {intent.value} a rollout that is {state.phase.value}; only from {allowed}",
            phase=state.phase.value,
            intent=intent.value,
        )
    refusal = rule.check(state, ctx, reason)
    if refusal:
        raise TransitionRejected(
            f"cannot {intent.value}: {refusal}", phase=state.phase.value, intent=intent.value
        )
    new = rule.next_state(state, now)
    entry = Transition(
        at=now,
        intent=intent,
        from_phase=state.phase,
        to_phase=new.phase,
        from_wave=state.wave,
        to_wave=new.wave,
        actor=actor,
        reason=reason or _default_reason(intent, actor),
        details=dict(details or {}),
    )
    return new, entry


def _default_reason(intent: Intent, actor: str) -> str:
    return f"{intent.value} requested by {actor} (no reason given)"

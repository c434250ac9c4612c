"""The agent's decisions, without I/O: what the real agent (:mod:`ringfence.agent.agent`) and the
live fleet's simulated agents (:mod:`ringfence.sim.live`) both decide, written once. Each function
takes the state and the settings it needs and a random source, and returns the decision; the
shells do the waiting, the sending and the writing.

So far: when to check in next (:func:`next_delay`).
"""

from __future__ import annotations

import random
from typing import Protocol


class Pacing(Protocol):
    """The settings :func:`next_delay` reads (``AgentConfig`` and ``FleetConfig`` both have them)."""

    @property
    def poll_bounds_s(self) -> tuple[float, float]: ...

    @property
    def jitter(self) -> float: ...

    @property
    def backoff_initial_s(self) -> float: ...

    @property
    def backoff_max_s(self) -> float: ...


def next_delay(pacing: Pacing, reached: bool, poll_interval_s: float, failures: int, rng: random.Random) -> float:
    """Seconds until the next check-in. After an answer (``reached``): the server's interval,
    clamped to ``poll_bounds_s``, spread by +-``jitter`` so a fleet does not march in step. After
    ``failures`` attempts in a row without one: exponential backoff from ``backoff_initial_s`` up to
    ``backoff_max_s``, drawn from the upper half of the ceiling (full spread would let some agents
    hammer a server that is down; none at all would bring them back together)."""
    if reached:
        low, high = pacing.poll_bounds_s
        base = min(max(poll_interval_s, low), high)
        return base * rng.uniform(1 - pacing.jitter, 1 + pacing.jitter)
    ceiling = min(pacing.backoff_max_s, pacing.backoff_initial_s * 2 ** min(failures, 30))
    return rng.uniform(ceiling / 2, ceiling)

"""The agent's decisions without I/O (:mod:`ringfence.agent.lifecycle`), as both shells use them."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ringfence.agent.config import AgentConfig
from ringfence.agent.lifecycle import next_delay
from ringfence.sim.live import FleetConfig


@pytest.mark.parametrize("pacing", [AgentConfig(server="http://s", state_dir=Path("/tmp/x")), FleetConfig()],
                         ids=["agent", "live fleet"])
def test_the_next_check_in_follows_the_server_clamped_and_jittered_and_backs_off_when_unreachable(
        pacing: AgentConfig | FleetConfig) -> None:
    rng = random.Random(7)
    low, high = pacing.poll_bounds_s
    for asked in (0.01, 60.0, 10 * high):
        base = min(max(asked, low), high)
        delays = [next_delay(pacing, True, asked, 0, rng) for _ in range(500)]
        assert base * (1 - pacing.jitter) <= min(delays) < max(delays) <= base * (1 + pacing.jitter)
    ceilings = [min(pacing.backoff_max_s, pacing.backoff_initial_s * 2 ** n) for n in range(40)]
    for failures, ceiling in enumerate(ceilings):
        delay = next_delay(pacing, False, 60.0, failures, rng)
        assert ceiling / 2 <= delay <= ceiling
    assert ceilings[-1] == pacing.backoff_max_s  # the ceiling stops growing


def test_the_same_random_source_gives_both_shells_the_same_delays() -> None:
    agent, fleet = AgentConfig(server="http://s", state_dir=Path("/tmp/x"), backoff_max_s=30.0), FleetConfig()
    a, b = random.Random(3), random.Random(3)
    for reached, failures in [(True, 0), (False, 1), (False, 5), (True, 0), (False, 9)]:
        assert next_delay(agent, reached, 30.0, failures, a) == next_delay(fleet, reached, 30.0, failures, b)

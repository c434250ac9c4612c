"""Running scenarios: one strategy, or every strategy side by side on the same fleet.

The fleet is drawn from ``(seed, 0)`` and each run's world from ``(seed, 1)``, so every
strategy of a comparison faces the same hosts, the same working days and the same background
crashes, and a run is the same on every machine for a given seed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ringfence.core.plan import Plan
from ringfence.plans import default_plan
from ringfence.sim.fleet import Fleet
from ringfence.sim.peers import STRATEGIES, PeerRun
from ringfence.sim.result import RunResult
from ringfence.sim.ringfence import RingfenceRun
from ringfence.sim.scenario import Scenario

Progress = Callable[[str, float], None]  # (strategy, fraction of the horizon done)


def build_fleet(scenario: Scenario, seed: int) -> Fleet:
    fleet = Fleet.build(scenario.fleet_spec(), np.random.default_rng([seed, 0]), scenario.start_utc_h)
    for outage in scenario.outages:
        fleet.outages.append((fleet.regions.index(outage.region), outage.at, outage.at + outage.duration))
    return fleet


def run_plan(scenario: Scenario, plan: Plan | None, seed: int, fleet: Fleet | None = None,
             progress: Progress | None = None, name: str = "ringfence") -> RunResult:
    """Ringfence with ``plan`` (default: the default plan for the scenario's content category)."""
    plan = plan or default_plan(scenario.category)
    fleet = fleet or build_fleet(scenario, seed)
    tick = None if progress is None else (lambda f: progress(name, f))
    return RingfenceRun(scenario, fleet, plan, np.random.default_rng([seed, 1]), name).run(seed, tick)


def compare(scenario: Scenario, seed: int, plan: Plan | None = None,
            progress: Progress | None = None) -> list[RunResult]:
    """Ringfence's plan and every built-in model of another strategy, on the same fleet."""
    fleet = build_fleet(scenario, seed)
    results = [run_plan(scenario, plan, seed, fleet, progress)]
    for strategy in STRATEGIES:
        tick = None if progress is None else (lambda f, n=strategy.name: progress(n, f))
        results.append(PeerRun(scenario, fleet, strategy, np.random.default_rng([seed, 1])).run(seed, tick))
    return results

"""What a simulated run produced: the headline numbers, and the curves behind them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ringfence.sim.fleet import Fleet
from ringfence.sim.world import World

SAMPLE_HOSTS = 200_000  # hosts sampled to tell "online" from asleep for the 99 % mark


@dataclass(slots=True)
class RunResult:
    strategy: str
    scenario: str
    hosts: int
    exposed: int
    crashed: int
    auto_recovered: int
    manual_repair: int
    first_failure_to_halt_s: float | None
    time_to_healthy_s: float | None
    time_to_99pct_s: float | None
    halted: bool
    wall_s: float
    seed: int
    halt_reason: str = ""
    phase: str = ""
    minutes: list[float] = field(default_factory=list)
    exposed_curve: list[int] = field(default_factory=list)
    crashed_curve: list[int] = field(default_factory=list)
    recovered_curve: list[int] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self, curves: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "strategy": self.strategy, "scenario": self.scenario, "hosts": self.hosts, "exposed": self.exposed,
            "crashed": self.crashed, "auto_recovered": self.auto_recovered, "manual_repair": self.manual_repair,
            "first_failure_to_halt_s": _round(self.first_failure_to_halt_s),
            "time_to_healthy_s": _round(self.time_to_healthy_s), "time_to_99pct_s": _round(self.time_to_99pct_s),
            "halted": self.halted, "halt_reason": self.halt_reason, "phase": self.phase, "seed": self.seed,
            "wall_s": round(self.wall_s, 2), "history": self.history}
        if curves:
            out["curves"] = {"minutes": self.minutes, "exposed": self.exposed_curve, "crashed": self.crashed_curve,
                             "recovered": self.recovered_curve}
        return out


def _round(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 1)


def summarise(world: World, strategy: str, *, halted_at: float | None, first_failure_at: float | None,
              wall_s: float, seed: int, halt_reason: str = "", phase: str = "",
              history: list[dict[str, Any]] | None = None) -> RunResult:
    """The headline numbers of one run, read off the hosts' arrays at the horizon."""
    horizon = world.scenario.horizon
    exposed = np.isfinite(world.admitted)
    crashed = np.isfinite(world.crashed) & (world.crashed <= horizon)
    recovered = crashed & (world.recovered <= horizon)
    stuck = crashed & world.looping & ~(world.recovered <= horizon)
    healthy_again = None
    if crashed.any() and not stuck.any():
        healthy_again = float(world.recovered[crashed].max())
    to_halt = None
    if halted_at is not None and first_failure_at is not None:
        to_halt = max(halted_at - first_failure_at, 0.0)
    minutes = np.arange(0, horizon / 60 + 1, max(1, round(horizon / 60 / 720)))
    edges = minutes * 60.0
    exposed_curve = np.searchsorted(np.sort(world.admitted[exposed]), edges, "right")
    crashed_curve = np.searchsorted(np.sort(world.crashed[crashed]), edges, "right")
    recovered_curve = np.searchsorted(np.sort(world.recovered[recovered]), edges, "right")
    return RunResult(
        strategy=strategy, scenario=world.scenario.name, hosts=world.fleet.size, exposed=int(exposed.sum()),
        crashed=int(crashed.sum()), auto_recovered=int(recovered.sum()), manual_repair=int(stuck.sum()),
        first_failure_to_halt_s=to_halt, time_to_healthy_s=healthy_again,
        time_to_99pct_s=time_to_share(world, 0.99) if world.scenario.good else None,
        halted=halted_at is not None, wall_s=wall_s, seed=seed, halt_reason=halt_reason, phase=phase,
        minutes=[float(m) for m in minutes], exposed_curve=[int(v) for v in exposed_curve],
        crashed_curve=[int(v) for v in crashed_curve], recovered_curve=[int(v) for v in recovered_curve],
        history=history or [])


def time_to_share(world: World, share: float, step_s: float = 60.0) -> float | None:
    """The first minute at which ``share`` of the hosts that are on run the update (a sample of
    hosts tells which are on; None when never reached within the horizon)."""
    fleet: Fleet = world.fleet
    rng = np.random.default_rng(7)
    sample = rng.choice(fleet.size, size=min(SAMPLE_HOSTS, fleet.size), replace=False)
    running = world.admitted[sample] + 5.0
    left = world.left[sample]
    for t in np.arange(0.0, world.scenario.horizon + step_s, step_s):
        on = fleet.is_on(np.full(sample.size, t), sample)
        if not on.any():
            continue
        updated = (running <= t) & ~(left <= t)
        if updated[on].mean() >= share:
            return float(t)
    return None

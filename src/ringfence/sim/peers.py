"""Models of the strategies people use today, parameterised from their public documentation.

Each model offers the update to a growing share of the fleet on a schedule and watches the
metric its tool would watch; when that metric trips, it reverts (the content is revoked: hosts
fetch the previous version at their next check-in; a host in a boot loop needs luck, see
:mod:`ringfence.sim.world`). None of them has device-local rollback or a start-up revocation
check: their agents behave as the 2024 agent did.

**Assumption shared by every model — what a crash looks like to the tool.** A tool's metric
sees a crash about a minute after it happens (crash telemetry, an alarm's data point), for the
share of crashes :attr:`Agents.peer_crash_visibility` (1.0 by default: generous to the tools, since
a host in a silent boot loop sends nothing itself). It sees every crash of a host running the
update, the update's and the background's alike (it cannot tell them apart), so a threshold of
"one crash" would trip on healthy updates of a large fleet: alarms and analyses trip at the
smallest count per minute that the background alone reaches less than once in 10,000 minutes
(at least 1), and the 2024 vendor reacted to crashes above that. Hosts that are down send no
requests.

Sources:

* *Global push* — the 2024 incident as it happened: every host that checks in gets the update
  from the start; a person reverts it 78 minutes later (the vendor's preliminary post-incident
  review: published 04:09 UTC, reverted 05:27 UTC).
* *AWS AppConfig* predefined deployment strategies (AWS AppConfig User Guide, "Working with
  deployment strategies"): ``AppConfig.AllAtOnce`` (all targets at once, bake time 10 minutes);
  ``AppConfig.Linear20PercentEvery6Minutes`` (linear, growth factor 20 %, over 30 minutes, bake
  time 30 minutes); ``AppConfig.Canary10Percent20Minutes`` (exponential, growth factor 10 %, over
  20 minutes, bake time 10 minutes: 10, 20, 40, 80, 100 %). AppConfig rolls a deployment back when
  a CloudWatch alarm it monitors goes into ALARM during the deployment or its bake time; the
  alarm here: crashes in a 1-minute period at or above a threshold tuned to the background rate
  (see below), one datapoint to alarm, evaluated a minute later.
* *Argo Rollouts* canary (Argo Rollouts docs, "Canary" and "Analysis"): ``setWeight`` 5, 25, 50,
  100 with a 10-minute pause after each (a common configuration; pauses are the user's choice),
  a background analysis measuring crashes every minute with ``failureLimit: 0`` (the first failed
  measurement aborts and returns traffic to the stable version).
* *Flagger* canary analysis (Flagger docs, "Canary analysis"): ``interval: 1m``, ``stepWeight: 10``,
  ``maxWeight: 50``, ``threshold: 5``; the check is the request success rate >= 99 %. A request
  here is a host's check-in (or a crash report); a host in a boot loop makes no requests, so it
  lowers the success rate only through its crash reports (an assumption: Flagger measures the
  traffic that arrives).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ringfence.sim.fleet import Fleet
from ringfence.sim.result import RunResult, summarise
from ringfence.sim.scenario import Scenario
from ringfence.sim.world import CRASH_SEEN, Offer, World

MINUTE = 60.0
Detector = Literal["none", "alarm", "argo", "flagger"]
Progress = Callable[[float], None]


@dataclass(frozen=True, slots=True)
class PeerStrategy:
    name: str
    steps: tuple[tuple[float, float], ...]  # (seconds from the start, cumulative share of hosts)
    detector: Detector
    watch_until_s: float = math.inf  # the metric is watched until then (AppConfig: deployment + bake)
    revert_at_s: float | None = None  # a person reverts then, whatever the metric says
    flagger_threshold: int = 5


STRATEGIES: tuple[PeerStrategy, ...] = (
    PeerStrategy("global-push", ((0.0, 1.0),), "none", revert_at_s=78 * MINUTE),
    PeerStrategy("appconfig-all-at-once", ((0.0, 1.0),), "alarm", watch_until_s=10 * MINUTE),
    PeerStrategy("appconfig-linear-20pct-6min", tuple((i * 6 * MINUTE, 0.2 * (i + 1)) for i in range(5)), "alarm",
                 watch_until_s=(30 + 30) * MINUTE),
    PeerStrategy("appconfig-canary-10pct-20min", tuple((i * 4 * MINUTE, min(0.1 * 2**i, 1.0)) for i in range(5)),
                 "alarm", watch_until_s=(20 + 10) * MINUTE),
    PeerStrategy("argo-canary", ((0.0, 0.05), (10 * MINUTE, 0.25), (20 * MINUTE, 0.50), (30 * MINUTE, 1.0)), "argo",
                 watch_until_s=30 * MINUTE),
    PeerStrategy("flagger", (), "flagger"),
)


def _poisson_limit(mean: float, chance: float) -> int:
    """The smallest k >= 1 with P(Poisson(mean) >= k) <= chance."""
    if mean <= 0:
        return 1
    k, pmf, tail = 0, math.exp(-mean), 1.0
    while tail - pmf > chance or k == 0:
        tail -= pmf
        k += 1
        pmf *= mean / k
    return max(k + 1, 1)


class PeerRun:
    def __init__(self, scenario: Scenario, fleet: Fleet, strategy: PeerStrategy, rng: np.random.Generator) -> None:
        self.scenario, self.fleet, self.strategy = scenario, fleet, strategy
        self.world = World(scenario, fleet, rng, "peer", np.zeros(fleet.size, dtype=np.int16))
        self.share = 0.0
        self.reverted_at: float | None = None
        self.first_seen: float | None = None
        self.reason = ""
        self.history: list[dict[str, object]] = []

    def run(self, seed: int, progress: Progress | None = None) -> RunResult:
        began = time.perf_counter()
        st, horizon = self.strategy, self.scenario.horizon
        steps = list(st.steps)
        flagger_weight, failed_checks = 0.0, 0
        minute_crashes: list[float] = []
        t = 0.0
        while t <= horizon:
            # schedule
            while steps and steps[0][0] <= t and self.reverted_at is None:
                _, share = steps.pop(0)
                self._grow(share, t)
            if st.detector == "flagger" and self.reverted_at is None and flagger_weight == 0.0:
                flagger_weight = 0.1  # the first step, before any check
                self._grow(flagger_weight, t)
            # what the metric saw in the minute before t
            ev = self.world.read(t)
            seen = ev.time[ev.kind == CRASH_SEEN]
            minute_crashes = [float(x) for x in seen]
            limit = self._crash_limit(t)
            if len(minute_crashes) >= limit and self.first_seen is None:
                self.first_seen = float(seen.min())
            if self.reverted_at is None and t > 0:
                tripped = False
                if (st.detector in ("alarm", "argo") and t <= st.watch_until_s + MINUTE
                        and len(minute_crashes) >= limit):
                    tripped = True
                    what = (f"CloudWatch alarm: crashes >= {limit} in a minute" if st.detector == "alarm" else
                            f"analysis measurement failed ({limit} or more crashes; failureLimit 0)")
                elif st.detector == "flagger" and self.share < 1.0:
                    ok = self._success_rate(t, len(minute_crashes)) >= 0.99
                    if ok and flagger_weight < 0.5:
                        flagger_weight = round(flagger_weight + 0.1, 2)
                        self._grow(flagger_weight, t)
                    elif ok:
                        self._grow(1.0, t)  # promotion
                    else:
                        failed_checks += 1
                        if failed_checks >= st.flagger_threshold:
                            tripped = True
                            what = f"{failed_checks} failed checks (success rate < 99 %)"
                if tripped:
                    self._revert(t, what)
                if (st.revert_at_s is not None and t >= st.revert_at_s and self.reverted_at is None
                        and self.first_seen is not None):  # the vendor reacted to the crashes
                    self._revert(t, "reverted by the vendor")
            if progress is not None:
                progress(t / horizon)
            if self._idle(t, steps):
                break
            t += MINUTE
        self.world.read(horizon)
        return summarise(self.world, st.name, halted_at=self.reverted_at, first_failure_at=self.first_seen,
                         wall_s=time.perf_counter() - began, seed=seed, halt_reason=self.reason,
                         phase="rolled_back" if self.reverted_at is not None else "completed",
                         history=self.history)

    def _idle(self, t: float, steps: list[tuple[float, float]]) -> bool:
        """Nothing more can happen: reverted, or everything offered and nobody watching."""
        st = self.strategy
        if self.reverted_at is not None:
            return True
        if steps or (st.detector == "flagger" and self.share < 1.0):
            return False
        if st.revert_at_s is not None and t < st.revert_at_s:
            return False
        return t > st.watch_until_s + MINUTE or st.detector == "flagger"

    def _grow(self, share: float, t: float) -> None:
        if share <= self.share:
            return
        self.share = share
        hosts = np.nonzero(self.fleet.bucket < share)[0]
        self.world.offer(Offer(hosts, t))
        self.history.append({"at_s": round(t, 1), "share": share})

    def _revert(self, t: float, reason: str) -> None:
        self.reverted_at = t
        self.reason = reason
        self.world.close_offers(t)
        self.world.revoke(t)
        self.history.append({"at_s": round(t, 1), "reverted": reason})

    def _crash_limit(self, t: float) -> int:
        """The crashes in a minute that trip a tool's alarm: at least 1, and above what the hosts
        running the update crash anyway (the scenario's background rate) with a false-alarm chance
        of 1 in 10,000 minutes — a threshold its operators would have tuned, since the metric
        cannot tell the update's crashes from the others."""
        w = self.world
        running = int((np.isfinite(w.admitted) & (w.admitted <= t)).sum())
        rate = self.scenario.background.crash_rate * self.scenario.agents.peer_crash_visibility
        expected = rate * running * MINUTE / 3600.0
        return _poisson_limit(expected, 1e-4)

    def _success_rate(self, t: float, crashes: int) -> float:
        """Check-ins per minute of the hosts running the canary that are up, against crash reports."""
        w = self.world
        up = np.isfinite(w.admitted) & (w.admitted <= t) & ~((w.crashed <= t) & ~(w.recovered <= t))
        requests = float((MINUTE / self.fleet.poll_s[up]).sum()) if up.any() else 0.0
        total = requests + crashes
        return 1.0 if total == 0 else requests / total

"""Ringfence in the simulator: the server's engine, cohorts and judges, on a simulated clock.

Nothing here decides anything of its own: the plan is parsed by :func:`parse_plan` (with the
scenario's content category, so its health defaults), cohorts come from :func:`cohort_table` over
the fleet's attribute groups, the rollout moves only through :func:`ringfence.core.rollout.transition`
on the actions of the reconciler's :func:`ringfence.engine.reconciler.step`, and verdicts come
from the same judges (:func:`ringfence.engine.health.judges_for`, :func:`judge_all`). What the
simulator adds is the world (:mod:`ringfence.sim.world`) and the bookkeeping the server's
database would do: counters per stratum updated from the events that reached the server, and
the logrank e-processes updated one failure at a time (the server recomputes them from its
tables; the values are the same).

One difference, said here so nobody is surprised: a device that goes unheard for
``silence_after`` and comes back later fails the server's hazard test only while it is away; the
simulator's incremental bookkeeping counts no such silence failures at all (they are symmetric
between the arms, and the scenarios' sleeping workstations stay under ``silence_after``).
Silence after activation — the signal that matters for a boot loop — is fully modelled: trial
deadlines, placebo pairs and the silence judge.

A halted rollout is rolled back by a person ``agents.operator_rollback_after`` later (the
scenario's assumption); the rollback revokes the version, which reaches looping hosts through
the agent's start-up revocation check.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from ringfence.analysis.hazard import LogrankEProcess, RiskStep
from ringfence.analysis.judges import Evidence, HazardRatioJudge, judge_all
from ringfence.analysis.tallies import ArmTally, Pairs, StratumData
from ringfence.analysis.verdicts import Verdict
from ringfence.core.cohorts import cohort_table, trial_limits
from ringfence.core.models import stratum_key
from ringfence.core.plan import Plan
from ringfence.core.rollout import Intent, Phase, RolloutState, transition
from ringfence.engine.health import judges_for
from ringfence.engine.reconciler import Observations, StratumProgress, error_since, step
from ringfence.sim.fleet import Fleet
from ringfence.sim.result import RunResult, summarise
from ringfence.sim.scenario import Scenario
from ringfence.sim.world import (
    FAILURE,
    HEALTHY,
    INTENT,
    PAIR_EXPOSED,
    PAIR_PLACEBO,
    RECONFIRMED,
    UNCONFIRMED,
    Events,
    Offer,
    World,
)

_KEY = 1e12  # stratum * _KEY + seconds: one sortable key per (stratum, time)
LOOK_S = 5.0  # the simulated reconciler looks this often while anything can change
EPOCH = datetime(2024, 7, 19, tzinfo=UTC)

Progress = Callable[[float], None]


class RingfenceRun:
    """One rollout of ``plan`` over ``fleet`` in ``scenario``."""

    def __init__(self, scenario: Scenario, fleet: Fleet, plan: Plan, rng: np.random.Generator,
                 name: str = "ringfence") -> None:
        self.scenario, self.fleet, self.plan, self.name = scenario, fleet, plan, name
        groups, group_of = fleet.attributes()
        self.table = cohort_table(plan, fleet.population(groups, group_of))
        keys = [stratum_key(g, plan.strata) for g in groups]
        self.strata = sorted(set(keys))
        code = {k: i for i, k in enumerate(self.strata)}
        group_stratum = np.array([code[k] for k in keys], dtype=np.int16)
        self.stratum = group_stratum[group_of]
        matches = np.array([[w.selector.matches(g) for w in plan.waves] for g in groups], dtype=bool)
        self.matches = matches[group_of] if groups else np.zeros((0, len(plan.waves)), dtype=bool)
        eligible = self.matches.any(axis=1)
        s = len(self.strata)
        # As the server (store/health.py), the judges watch a host from its first check-in since
        # the start: one asleep or offline then joins the control arm when it is heard from, and
        # a failure from before that happened while nobody watched it.
        hosts = np.nonzero(eligible)[0]
        self.entry = np.full(fleet.size, math.inf)
        self.entry[hosts] = fleet.next_checkin(np.zeros(hosts.size), hosts)
        heard = hosts[np.isfinite(self.entry[hosts])]
        self._entry_keys = np.sort(self.stratum[heard] * _KEY + self.entry[heard])
        self._stratum_keys = np.arange(s) * _KEY
        self._stratum_first = np.searchsorted(self._entry_keys, self._stratum_keys, "left")
        self.watched = np.zeros(s, dtype=np.int64)  # eligible hosts heard from since the start, per stratum
        health = plan.health
        self.world = World(scenario, fleet, rng, "ringfence", self.stratum,
                           trial_timeout_s=health.trial_timeout.total_seconds(),
                           placebo_wait_s=health.placebo_wait.total_seconds())
        # What the server's tables would hold, per stratum.
        self.exposed = np.zeros(s, dtype=np.int64)
        self.exposed_failed = np.zeros(s, dtype=np.int64)
        self.control_failed = np.zeros(s, dtype=np.int64)
        self.healthy = np.zeros(s, dtype=np.int64)
        self.unconfirmed = np.zeros(s, dtype=np.int64)
        self.first_deadline = np.full(s, math.inf)
        self.pairs_exposed = np.zeros(s, dtype=np.int64)
        self.pairs_placebo = np.zeros(s, dtype=np.int64)
        self.exposed_hours = np.zeros(s)
        self.control_hours = np.zeros(s)
        self.processes = [LogrankEProcess() for _ in range(s)]
        self.steps: list[list[RiskStep]] = [[] for _ in range(s)]
        self.keep_steps = health.hazard_ratio_limit is not None
        self.is_exposed = np.zeros(fleet.size, dtype=bool)
        self.has_failed = np.zeros(fleet.size, dtype=bool)
        self.wave_exposed = np.zeros(len(plan.waves), dtype=np.int64)
        self._trials(fleet.size, s)
        self.verdicts: tuple[Verdict, ...] = ()
        self.failed_devices = 0
        self.failed_by_stratum = np.zeros(s, dtype=np.int64)
        self.first_failure_at: float | None = None
        self.judged = True
        self.history: list[dict[str, Any]] = []
        self.state = RolloutState(Phase.DRAFT, 0, len(plan.waves))
        self.halted_at: float | None = None
        self.halt_reason = ""
        self.rollback_at = math.inf

    def _trials(self, hosts: int, strata: int) -> None:
        # Trials as the server's snapshot counts them (the in-flight window, canary before crowd)
        # and as its tables show them (the engine's confirmations).
        self.decided = np.zeros(hosts, dtype=bool)  # the host's trial ended (healthy or failed)
        self.offered = np.zeros(strata, dtype=np.int64)  # hosts given the version (admitted), per stratum
        self.offered_decided = np.zeros(strata, dtype=np.int64)
        self.exposed_decided = np.zeros(strata, dtype=np.int64)
        self.wave_offered = np.zeros((len(self.plan.waves), strata), dtype=np.int64)
        self.pending = np.zeros(0, dtype=np.int64)  # hosts the current wave asks, not yet admitted
        self.limited = False  # the last offer left hosts out for a window or a canary limit
        self.offered_at_decisions = -1
        self.last_offer_t = -math.inf

        self.error_since: datetime | None = None

    # -- the run -------------------------------------------------------------------------------
    def run(self, seed: int, progress: Progress | None = None) -> RunResult:
        began = time.perf_counter()
        horizon = self.scenario.horizon
        self._apply(Intent.PREPARE, "simulated release", 0.0, "engine")
        self._apply(Intent.START, "simulated release", 0.0, "operator")
        t = 0.0
        last = 0.0
        while t < horizon and self.state.phase not in (Phase.COMPLETED, Phase.ROLLED_BACK):
            t = min(self._next_look(t), horizon)
            self._read(self.world.read(t), t, t - last)
            last = t
            if t >= self.rollback_at and self.state.phase is Phase.HALTED:
                self._apply(Intent.ROLLBACK, "rolled back by the on-call engineer after the halt", t, "operator")
            self._reconcile(t)
            if progress is not None:
                progress(t / horizon)
        self.world.read(horizon)
        return summarise(self.world, self.name, halted_at=self.halted_at, first_failure_at=self.first_failure_at,
                         wall_s=time.perf_counter() - began, seed=seed, halt_reason=self.halt_reason,
                         phase=self.state.phase.value, history=self.history)

    def _next_look(self, t: float) -> float:
        """The next moment anything can change: an event reaching the server, a soak ending, a
        person acting; at most one look interval ahead while events are flowing."""
        nxt = self.world.next_event()
        timers = [self.rollback_at]
        if self.state.phase is Phase.ROLLING and self.state.wave_started_at is not None:
            started = (self.state.wave_started_at - EPOCH).total_seconds()
            timers.append(started + self.plan.waves[self.state.wave].soak.total_seconds())
        due = min([nxt, *[x for x in timers if x > t]])
        if not math.isfinite(due):
            return self.scenario.horizon  # nothing can change any more: waiting is all that is left
        if due <= t + LOOK_S:
            return t + LOOK_S
        return math.ceil(due / LOOK_S) * LOOK_S

    def _apply(self, intent: Intent, reason: str, t: float, actor: str, details: dict[str, Any] | None = None) -> None:
        self.state, entry = transition(self.state, intent, actor=actor, reason=reason, now=EPOCH + timedelta(seconds=t),
                                       details=details)
        self.history.append({"at_s": round(t, 1), "intent": intent.value, "to": entry.to_phase.value,
                             "wave": entry.to_wave, "reason": reason})
        if intent is Intent.START:
            self._open(0, t)
        elif intent is Intent.ADVANCE:
            self._open(self.state.wave, t)
        elif intent is Intent.HALT:
            self.world.close_offers(t)
            self.halted_at = t
            self.halt_reason = reason
            self.rollback_at = t + self.scenario.agents.operator_rollback_after
        elif intent is Intent.COMPLETE:
            # The version is the content type's baseline now: every host still waiting gets it at
            # its next check-in, with no admission (as the server answers them).
            self.pending = self.pending[~np.isfinite(self.world.admitted[self.pending])]
            self.world.offer(Offer(self.pending, t, self.state.wave))
            self.pending = self.pending[:0]
        elif intent is Intent.PAUSE:
            self.world.close_offers(t)  # nobody waits in the simulator to resume it
        elif intent is Intent.ROLLBACK:
            self.world.close_offers(t)
            self.world.revoke(t)

    def _open(self, wave: int, t: float) -> None:
        """Offer the wave to the hosts its cohort asks for (every earlier wave's included)."""
        cohort = self.table[wave]
        thresholds = np.array([cohort.threshold(k) for k in self.strata])
        self.pending = np.nonzero(self.matches[:, wave] & (self.world.fleet.bucket < thresholds[self.stratum]))[0]
        self.limited = True
        self._offer_more(t, force=True)

    def _offer_more(self, t: float, force: bool = False) -> None:
        """Offer the current wave to more of its hosts, as the server would admit them: within
        the wave's caps, its in-flight window (``max_in_trial`` devices per stratum in trial at
        once) and, for a stratum without a confirmed canary, the canary's size
        (:func:`ringfence.core.cohorts.admit` states the rules). Hosts left out wait for the next
        offer, made when trials were decided since the last one."""
        decisions = int(self.offered_decided.sum() + self.healthy.sum())
        if not force and (not self.limited or decisions == self.offered_at_decisions
                          or t - self.last_offer_t < (15.0 if self.pending.size > 1_000_000 else 0.0)):
            return
        self.offered_at_decisions, self.last_offer_t = decisions, t
        self.pending = self.pending[~np.isfinite(self.world.admitted[self.pending])]
        if not self.pending.size:
            self.limited = False
            return
        wave = self.state.wave
        cohort = self.table[wave]
        room = np.full(len(self.strata), np.iinfo(np.int64).max // 4, dtype=np.int64)
        limits = False
        if cohort.stratum_caps is not None:
            room = np.minimum(room, np.array([cohort.cap(k) or 0 for k in self.strata]) - self.wave_offered[wave])
        # The server's admission limits, stratum by stratum (cohorts.trial_limits), on the counts
        # the snapshot would hold: offered hosts still in trial, and confirmed ones.
        per = [trial_limits(self.plan, self.table, k, wave) for k in self.strata]
        window = per[0].window if per else None
        if window is not None:
            room = np.minimum(room, window - (self.offered - self.offered_decided))
            limits = True
        unproven = self.healthy < np.array([p.canary_healthy for p in per], dtype=np.int64)
        if unproven.any():
            canary = np.array([p.canary_size for p in per], dtype=np.int64)
            room = np.where(unproven, np.minimum(room, canary - self.offered), room)
            limits = True
        room = room.clip(0)
        total = None
        if cohort.total_cap is not None:
            total = max(int(cohort.total_cap - self.wave_offered[wave].sum()), 0)
        caps = {i: int(n) for i, n in enumerate(room)} if (limits or cohort.stratum_caps is not None) else None
        hosts = self.world.offer(Offer(self.pending, t, wave, caps, total))
        if hosts.size:
            counts = np.bincount(self.stratum[hosts], minlength=len(self.strata))
            self.offered += counts
            self.wave_offered[wave] += counts
            self.offered_decided += np.bincount(self.stratum[hosts[self.decided[hosts]]], minlength=len(self.strata))
        waiting = np.bincount(self.stratum[self.pending], minlength=len(self.strata)) - (
            np.bincount(self.stratum[hosts], minlength=len(self.strata)) if hosts.size else 0)
        self.limited = limits and bool(((room == 0) & (waiting > 0)).any() or (hosts.size == 0 and waiting.any()))

    # -- what the server hears -----------------------------------------------------------------
    def _read(self, ev: Events, t: float, dt: float) -> None:
        s = len(self.strata)
        at_risk_e = self.exposed - self.exposed_failed
        self.exposed_hours += at_risk_e * dt / 3600.0
        self.control_hours += np.maximum(self.watched - self.exposed - self.control_failed, 0) * dt / 3600.0
        self.watched = np.searchsorted(self._entry_keys, self._stratum_keys + t, "right") - self._stratum_first
        if not ev.time.size:
            return
        strata = self.stratum[ev.host]
        intent = ev.kind == INTENT
        if intent.any():
            hosts = ev.host[intent]
            self.is_exposed[hosts] = True
            self.exposed += np.bincount(strata[intent], minlength=s)
            self.exposed_decided += np.bincount(strata[intent][self.decided[hosts]], minlength=s)
            self.wave_exposed += np.bincount(self.world.wave[hosts].clip(0), minlength=len(self.wave_exposed))
        ends = (ev.kind == HEALTHY) | (ev.kind == FAILURE)
        if ends.any():
            hosts = ev.host[ends]
            first = np.isfinite(self.world.admitted[hosts]) & ~self.decided[hosts]
            hosts = np.unique(hosts[first])
            self.decided[hosts] = True
            codes = self.stratum[hosts]
            self.offered_decided += np.bincount(codes, minlength=s)
            self.exposed_decided += np.bincount(codes[self.is_exposed[hosts]], minlength=s)
        for kind, counter in ((HEALTHY, self.healthy), (PAIR_EXPOSED, self.pairs_exposed),
                              (PAIR_PLACEBO, self.pairs_placebo)):
            mask = ev.kind == kind
            if mask.any():
                np.add(counter, np.bincount(strata[mask], minlength=s), out=counter)
                self.judged = False
        for mask, sign in ((ev.kind == UNCONFIRMED, 1), (ev.kind == RECONFIRMED, -1)):
            if mask.any():
                self.unconfirmed += sign * np.bincount(strata[mask], minlength=s)
                self.judged = False
        rose = (ev.kind == UNCONFIRMED)
        if rose.any():
            np.minimum.at(self.first_deadline, strata[rose], ev.time[rose])
        self.first_deadline[self.unconfirmed <= 0] = math.inf
        for i in np.nonzero(ev.kind == FAILURE)[0]:
            self._failure(int(ev.host[i]), float(ev.time[i]), float(ev.aux[i]))

    def _failure(self, host: int, t: float, happened: float) -> None:
        """A failure report, scored with the risk sets of the moment (first failure of a host)."""
        if self.has_failed[host] or happened < self.entry[host]:
            return
        self.has_failed[host] = True
        s = int(self.stratum[host])
        exposed = bool(self.is_exposed[host]) and self.world.admitted[host] <= happened
        n_e = int(self.exposed[s] - self.exposed_failed[s])
        n_c = int(self.watched[s] - self.exposed[s] - self.control_failed[s])
        step_ = RiskStep(int(exposed), int(not exposed), max(n_e, int(exposed)), max(n_c, int(not exposed)))
        self.processes[s].update(step_)
        if self.keep_steps:
            self.steps[s].append(step_)
        if exposed:
            self.exposed_failed[s] += 1
            self.failed_devices += 1
            self.failed_by_stratum[s] += 1
            if self.first_failure_at is None:
                self.first_failure_at = t
        else:
            self.control_failed[s] += 1
        self.judged = False

    # -- the reconciler ------------------------------------------------------------------------
    def _reconcile(self, t: float) -> None:
        if self.state.phase not in (Phase.ROLLING, Phase.ROLLING_BACK):
            return
        now = EPOCH + timedelta(seconds=t)
        if self.state.phase is Phase.ROLLING and not self.judged:
            self.verdicts = tuple(self._judge(t))
            self.judged = True
        still = 0
        if self.state.phase is Phase.ROLLING_BACK:
            w = self.world
            still = int((np.isfinite(w.admitted) & ~(w.left <= t)).sum())
        rolling = self.state.phase is Phase.ROLLING
        if rolling:
            self._offer_more(t)
        self.error_since = error_since(self.error_since, self.verdicts, now) if rolling else None
        wave = self.state.wave
        progress = {self.strata[i]: StratumProgress(int(e), int(min(self.healthy[i], e)),
                                                    int(max(e - self.exposed_decided[i], 0)))
                    for i, e in enumerate(self.exposed) if e}
        reach = None
        if rolling and not self.wave_exposed[wave]:
            unadmitted = int((~np.isfinite(self.world.admitted[self.pending])).sum())
            reach = unadmitted + int(self.wave_offered[wave].sum())  # offered hosts are on their way
        obs = Observations(
            failed_devices=self.failed_devices,
            failed_by_stratum={self.strata[i]: int(n) for i, n in enumerate(self.failed_by_stratum) if n},
            exposed_devices=int(self.exposed.sum()), wave_exposed=int(self.wave_exposed[wave]),
            still_on_version=still, verdicts=self.verdicts if rolling else (), progress=progress,
            wave_reach=reach, error_since=self.error_since)
        for action in step(self.state, self.plan, obs, now)[:1]:
            self._apply(action.intent, action.reason, t, "reconciler", dict(action.details))

    def _judge(self, t: float) -> list[Verdict]:
        health = self.plan.health
        judges, baseline, rollout = judges_for(self.plan, self.state.wave, len(self.strata))
        if not self.keep_steps:
            judges = [j for j in judges if not isinstance(j, HazardRatioJudge)]
        data: list[StratumData] = []
        own: dict[str, float] = {}
        pooled = [0.0] * len(rollout.mixture.thetas)
        for i, name in enumerate(self.strata):
            control = int(max(self.watched[i] - self.exposed[i], 0))
            if control >= rollout.min_control:
                own[name] = self.processes[i].log_e
                pooled = [a + b for a, b in zip(pooled, self.processes[i].log_lrs, strict=True)]
            if not self.exposed[i]:
                continue
            heard = 0
            quiet = self.unconfirmed[i] >= self.exposed[i] >= 3
            if quiet and math.isfinite(self.first_deadline[i]):
                heard = self._heard_since(i, float(self.first_deadline[i]), t)
            data.append(StratumData(
                name,
                ArmTally(devices=int(self.exposed[i]), failures=int(self.exposed_failed[i]),
                         device_hours=float(self.exposed_hours[i]), healthy=int(self.healthy[i]),
                         unconfirmed=int(self.unconfirmed[i])),
                ArmTally(devices=control, failures=int(self.control_failed[i]),
                         device_hours=float(self.control_hours[i]), heard_since=heard),
                self.steps[i], Pairs(exposed_only=int(self.pairs_exposed[i]),
                                     placebo_only=int(self.pairs_placebo[i]))))
        del health
        return judge_all(data, judges, baseline, rollout, Evidence(own, pooled))

    def _heard_since(self, stratum: int, since: float, t: float) -> int:
        """Control hosts of the stratum that checked in between ``since`` and ``t``."""
        hosts = np.nonzero((self.stratum == stratum) & ~self.is_exposed)[0]
        return int((self.fleet.next_checkin(np.full(hosts.size, since), hosts) <= t).sum())

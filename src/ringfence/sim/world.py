"""What happens to every host: when it fetches the update, what the update does to it, what the
server hears and when.

A strategy (Ringfence's engine, or a model of another tool) *offers* the update to hosts from
some moment on; each offered host fetches it at its next check-in (vectorised: one numpy pass
per offer, never a loop over hosts). At that moment the host's whole future under the update is
drawn — when it loads, whether and when it crashes, whether it loops, when it confirms health,
when the server hears of it — and written as time-stamped **events** into sorted chunks. The
strategy then reads the events that have *reached the server* by each look, in time order,
exactly as a control plane would.

Later decisions change the future: a halt cancels offers not yet taken (hosts that would have
fetched after it never do); a rollback revokes the version (hosts leave it at their next
check-in, and looping hosts at their next boot — Ringfence's start-up revocation check — or,
for other tools' agents, with a small chance per boot). Each host carries a generation number;
events of a superseded future are skipped when read.

Agents:

* ``ringfence`` — announces intent before it activates (the server counts it from then), runs a
  trial and confirms ``healthy``; its crash-loop guard reverts a version that crashed the host
  ``boot_limit`` boots in a row during its trial, with no server; at every start it asks whether
  its version was revoked before loading it. A host that loops on a version it had already
  committed loops until the version is revoked.
* ``peer`` — the agent of 2024: it fetches and loads; a host in a boot loop recovers only if,
  in the short window before the next crash, it fetches reverted content — a chance per boot,
  counted once the revert is published, for a limited number of boots (after which it sits on a
  recovery screen: manual repair). What other tools' health metrics see of crashes is
  :attr:`Agents.peer_crash_visibility`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from ringfence.sim.fleet import Bools, Fleet, Floats, Ints
from ringfence.sim.scenario import Scenario

INF = np.inf

# Event kinds (what reaches the server, or a tool's metrics)
INTENT = 0  # a host announced the version (Ringfence counts it exposed from here)
HEALTHY = 1  # trial passed
FAILURE = 2  # a loud failure report (crash, auto-revert, ...): ``aux`` = when it happened on the host
UNCONFIRMED = 3  # an exposed host's trial deadline passed with no word from it
RECONFIRMED = 4  # ... and it was heard from after all
PAIR_EXPOSED = 5  # a placebo pair decided: only the exposed host stayed silent
PAIR_PLACEBO = 6  # ... only the placebo host did
CRASH_SEEN = 7  # a crash as another tool's metric sees it (Ringfence does not read these)
BACK = 8  # a host left the version (rollback, revocation, automatic revert)

Agent = Literal["ringfence", "peer"]


@dataclass(slots=True)
class Chunk:
    time: Floats
    host: npt.NDArray[np.int32]
    kind: npt.NDArray[np.int8]
    aux: npt.NDArray[np.float64]
    gen: npt.NDArray[np.int16]
    cursor: int = 0


@dataclass(slots=True)
class Events:
    """The events of one look, in time order."""

    time: Floats
    host: Ints
    kind: npt.NDArray[np.int8]
    aux: Floats


@dataclass(slots=True)
class Offer:
    """Hosts offered the update, from ``at`` on; caps: per stratum code and in total."""

    hosts: Ints
    at: float
    wave: int = 0
    stratum_caps: dict[int, int] | None = None
    total_cap: int | None = None


@dataclass(slots=True)
class World:
    scenario: Scenario
    fleet: Fleet
    rng: np.random.Generator
    agent: Agent
    stratum: npt.NDArray[np.int16]  # the judges' stratum code per host
    trial_timeout_s: float = 600.0
    placebo_wait_s: float = 300.0
    admitted: Floats = field(init=False)  # when the host fetched (and announced) the update
    wave: npt.NDArray[np.int16] = field(init=False)
    gen: npt.NDArray[np.int16] = field(init=False)
    crashed: Floats = field(init=False)  # first crash the update caused
    looping: Bools = field(init=False)  # ... a boot loop
    recovered: Floats = field(init=False)  # a looping host running again (without a person)
    left: Floats = field(init=False)  # when the host left the version
    healthy_at: Floats = field(init=False)  # when it confirmed health (ran the update fine)
    fault: npt.NDArray[np.int8] = field(init=False)  # which fault applies to it (-1: none)
    revoked_at: float = INF  # when the version was revoked (rollback)
    offers_closed_at: float = INF  # no fetches after this (halt)
    chunks: list[Chunk] = field(default_factory=list)
    background: Floats = field(init=False)  # host -> time of its background crash (inf: none)

    def __post_init__(self) -> None:
        n = self.fleet.size
        self.admitted = np.full(n, INF)
        self.wave = np.full(n, -1, dtype=np.int16)
        self.gen = np.zeros(n, dtype=np.int16)
        self.crashed = np.full(n, INF)
        self.looping = np.zeros(n, dtype=bool)
        self.recovered = np.full(n, INF)
        self.left = np.full(n, INF)
        self.healthy_at = np.full(n, INF)
        self.fault = np.full(n, -1, dtype=np.int8)
        for i, f in reversed(list(enumerate(self.scenario.faults))):
            self.fault[self._selected(f.select.platform, f.select.region, f.select.os_version, f.select.arch)] = i
        self._background()

    # -- set-up ----------------------------------------------------------------------------------
    def _selected(self, platforms: tuple[str, ...], regions: tuple[str, ...], versions: tuple[str, ...],
                  arches: tuple[str, ...] = ()) -> Bools:
        fl = self.fleet
        mask = np.ones(fl.size, dtype=bool)
        if platforms:
            mask &= np.isin(fl.platform, [fl.platforms.index(p) for p in platforms])
        if regions:
            mask &= np.isin(fl.region, [fl.regions.index(r) for r in regions])
        if versions:
            mask &= np.isin(fl.os, [fl.os_names.index(v) for v in versions if v in fl.os_names])
        if arches:
            mask &= np.isin(fl.arch, [fl.arch_names.index(a) for a in arches if a in fl.arch_names])
        return mask

    def _background(self) -> None:
        """Crashes that have nothing to do with the update, in every host at the scenario's rate
        while it is on: they reach the server after the reboot, from exposed and control hosts
        alike."""
        fl, sc = self.fleet, self.scenario
        rate = sc.background.crash_rate * sc.horizon / 3600.0
        count = int(self.rng.poisson(rate * fl.size))
        hosts = self.rng.integers(0, fl.size, size=count)
        times = self.rng.uniform(0, sc.horizon, size=count)
        on = fl.is_on(times, hosts)
        hosts, times = hosts[on], times[on]
        self.background = np.full(fl.size, INF)
        np.minimum.at(self.background, hosts, times)
        hosts = np.nonzero(np.isfinite(self.background))[0]
        times = self.background[hosts]
        arrive = fl.reachable(times + sc.agents.reboot + self._report_delay(hosts.size), hosts)
        self._emit(arrive, hosts, FAILURE, times)

    def _report_delay(self, n: int) -> Floats:
        low, high = self.scenario.agents.report_delay
        return self.rng.uniform(low, high, size=n)

    def _emit(self, time: Floats, host: Ints, kind: int, aux: Floats | None = None) -> None:
        keep = np.isfinite(time) & (time <= self.scenario.horizon)
        if not keep.any():
            return
        time, host = time[keep], host[keep]
        order = np.argsort(time, kind="stable")
        aux_values = np.zeros(time.size) if aux is None else np.asarray(aux, dtype=float)[keep]
        self.chunks.append(Chunk(time=time[order], host=host[order].astype(np.int32),
                                 kind=np.full(time.size, kind, dtype=np.int8), aux=aux_values[order],
                                 gen=self.gen[host[order]].copy()))

    # -- offers ----------------------------------------------------------------------------------
    def offer(self, offer: Offer) -> Ints:
        """Hosts fetch the update at their next check-in after ``offer.at`` (before any halt),
        within the caps, first come first served. Returns the hosts that will fetch it."""
        fl, sc = self.fleet, self.scenario
        hosts = offer.hosts[~np.isfinite(self.admitted[offer.hosts])]
        if not hosts.size:
            return hosts
        at = fl.next_checkin(np.full(hosts.size, offer.at), hosts)
        keep = (at <= min(sc.horizon, self.offers_closed_at))
        hosts, at = hosts[keep], at[keep]
        if offer.stratum_caps is not None:
            strata = self.stratum[hosts].astype(np.int64)
            order = np.lexsort((at, strata))
            hosts, at, strata = hosts[order], at[order], strata[order]
            first = np.searchsorted(strata, strata, "left")
            rank = np.arange(strata.size) - first
            caps = np.array([offer.stratum_caps.get(int(s), 0) for s in range(int(self.stratum.max()) + 1)])
            keep = rank < caps[strata]
            hosts, at = hosts[keep], at[keep]
        if offer.total_cap is not None and hosts.size > offer.total_cap:
            order = np.argsort(at, kind="stable")[: offer.total_cap]
            hosts, at = hosts[order], at[order]
        self.admitted[hosts] = at
        self.wave[hosts] = offer.wave
        self._future(hosts, at)
        return hosts

    def close_offers(self, at: float) -> int:
        """A halt: hosts that had not fetched yet never do. Returns how many were cancelled."""
        self.offers_closed_at = min(self.offers_closed_at, at)
        cancel = np.nonzero(np.isfinite(self.admitted) & (self.admitted > at))[0]
        self.admitted[cancel] = INF
        self.wave[cancel] = -1
        self.crashed[cancel] = INF
        self.looping[cancel] = False
        self.recovered[cancel] = INF
        self.left[cancel] = INF
        self.healthy_at[cancel] = INF
        self.gen[cancel] += 1
        return int(cancel.size)

    def _future(self, hosts: Ints, fetched: Floats) -> None:
        """Draw what the update does to ``hosts`` that fetched it at ``fetched``."""
        fl, sc, ag = self.fleet, self.scenario, self.scenario.agents
        n = hosts.size
        activated = fetched + self.rng.uniform(1.0, 5.0, n)  # download, verify, announce
        loaded = activated + sc.update.load
        crash = np.full(n, INF)
        loop = np.zeros(n, dtype=bool)
        silent = np.zeros(n, dtype=bool)
        for i, f in enumerate(sc.faults):
            mine = self.fault[hosts] == i
            if not mine.any():
                continue
            hit = mine & (self.rng.random(n) < f.probability)
            if f.kind == "crash-on-load":
                crash = np.where(hit, loaded + self.rng.uniform(0, 2, n), crash)
                loop |= hit & f.boot_loop
            elif f.kind == "delayed-crash":
                crash = np.where(hit, loaded + f.after, crash)
                loop |= hit & f.boot_loop
            else:  # hazard: (multiplier - 1) x the background rate, on top of it
                excess = (f.multiplier - 1) * sc.background.crash_rate / 3600.0
                if excess > 0:
                    crash = np.where(mine, loaded + self.rng.exponential(1 / excess, n), crash)
            silent |= hit & f.silent
        crash[crash > sc.horizon] = INF
        in_trial = crash < activated + sc.update.trial
        healthy = np.where(in_trial, INF, activated + sc.update.trial)
        self.crashed[hosts] = crash
        self.looping[hosts] = loop & np.isfinite(crash)
        self.healthy_at[hosts] = np.where(np.isfinite(healthy) & (healthy <= sc.horizon), healthy, INF)
        announced = fl.reachable(activated, hosts)
        if self.agent == "ringfence":
            self._emit(announced, hosts, INTENT)
        recovered, report, reported_at = self._crash_outcome(hosts, crash, loop, in_trial, silent)
        self.recovered[hosts] = recovered
        self.left[hosts] = np.where(np.isfinite(recovered) & (self.looping[hosts] | in_trial), recovered, INF)
        if self.agent == "ringfence":
            low, high = ag.confirm_delay
            healthy_arrival = fl.contact_after(healthy + self.rng.uniform(low, high, n), hosts)
            healthy_arrival = np.where(self._lost(n), INF, healthy_arrival)
            report = np.where(self._lost(n), INF, report)
            self._emit(healthy_arrival, hosts, HEALTHY)
            self._emit(report, hosts, FAILURE, reported_at)
            self._silence(hosts, activated, healthy_arrival, report)
        # What other tools' crash metrics see: the update's crashes, and the background crashes of
        # hosts while they run it (a metric cannot tell one from the other).
        background = self.background[hosts]
        background = np.where((background >= activated) & (background < crash), background, INF)
        seen = np.isfinite(crash) & (self.rng.random(n) < ag.peer_crash_visibility)
        self._emit(np.where(seen, crash + 60.0, INF), hosts, CRASH_SEEN, crash)
        seen = np.isfinite(background) & (self.rng.random(n) < ag.peer_crash_visibility)
        self._emit(np.where(seen, background + 60.0, INF), hosts, CRASH_SEEN, background)
        self._emit(np.where(np.isfinite(self.left[hosts]), self.left[hosts], INF), hosts, BACK)

    def _lost(self, n: int) -> Bools:
        """Which of ``n`` reports never reach the server (``agents.lost_reports``)."""
        share = self.scenario.agents.lost_reports
        return self.rng.random(n) < share if share > 0 else np.zeros(n, dtype=bool)

    def _crash_outcome(self, hosts: Ints, crash: Floats, loop: Bools, in_trial: Bools,
                       silent: Bools) -> tuple[Floats, Floats, Floats]:
        """When a crashed host runs again without a person (inf: not yet / never), when its
        failure report reaches the server, and when the failure happened."""
        fl, ag = self.fleet, self.scenario.agents
        n = hosts.size
        crashed = np.isfinite(crash)
        recovered = np.full(n, INF)
        if self.agent == "ringfence":
            # The guard: boot counter written before the trial's content loads; at boot_limit it
            # reverts. After a commit there is no guard, only the revocation check at start-up.
            guarded = crashed & loop & in_trial
            recovered = np.where(guarded, crash + ag.boot_limit * ag.reboot, recovered)
            if np.isfinite(self.revoked_at):
                recovered = np.minimum(recovered, self._next_boot_after(crash, self.revoked_at, loop))
        else:
            recovered = np.where(crashed & loop, self._peer_recovery(crash, n), recovered)
        recovered = np.where(crashed & ~loop, crash + ag.reboot, recovered)  # one crash, one reboot
        # A silent loop says nothing until the host runs again; a loud crash (looping or not) is
        # reported after its first reboot.
        report = np.where(crashed, fl.reachable(recovered + self._report_delay(n), hosts), INF)
        report = np.where(crashed & ~silent, fl.reachable(crash + ag.reboot + self._report_delay(n), hosts), report)
        return recovered, report, crash

    def _next_boot_after(self, crash: Floats, when: float, loop: Bools) -> Floats:
        """The first boot of a looping host at or after ``when``."""
        reboot = self.scenario.agents.reboot
        k = np.ceil(np.maximum(when - crash, 0.0) / reboot)
        return np.where(loop & np.isfinite(crash), crash + np.maximum(k, 1) * reboot, INF)

    def _peer_recovery(self, crash: Floats, n: int) -> Floats:
        ag = self.scenario.agents
        if not np.isfinite(self.revoked_at):
            return np.full(n, INF)
        before = np.ceil(np.maximum(self.revoked_at - crash, 0.0) / ag.reboot)  # boots wasted before the revert
        left = ag.peer_boot_attempts - before
        tries = self.rng.geometric(ag.peer_recovery_per_boot, n) if ag.peer_recovery_per_boot > 0 else np.full(n, 10**9)
        ok = tries <= left
        return np.where(ok, crash + (before + tries) * ag.reboot, INF)

    def _silence(self, hosts: Ints, activated: Floats, healthy_arrival: Floats, report: Floats) -> None:
        """Trial deadlines and placebo pairs, as the server's judges see them."""
        fl = self.fleet
        n = hosts.size
        deadline = activated + self.trial_timeout_s
        heard = np.minimum(healthy_arrival, report)
        quiet = heard > deadline
        self._emit(np.where(quiet, deadline, INF), hosts, UNCONFIRMED)
        self._emit(np.where(quiet & np.isfinite(heard), heard, INF), hosts, RECONFIRMED)
        # The placebo: a control host of the same stratum, asked back at the same moment.
        placebo = self._same_stratum(hosts)
        asked = activated + 1.0
        back = asked + np.minimum(self.placebo_wait_s * 1.15 * self.rng.uniform(0.9, 1.1, n),
                                  np.maximum(fl.poll_s[placebo], self.placebo_wait_s))
        seen = fl.contact_after(back, placebo)
        placebo_quiet = seen > asked + self.trial_timeout_s
        decided = deadline + 1.0
        self._emit(np.where(quiet & ~placebo_quiet, decided, INF), hosts, PAIR_EXPOSED)
        self._emit(np.where(~quiet & placebo_quiet, decided, INF), hosts, PAIR_PLACEBO)

    def _same_stratum(self, hosts: Ints) -> Ints:
        """A random host of each host's stratum (the placebo the server would ask)."""
        order = np.argsort(self.stratum, kind="stable")
        strata = self.stratum[order]
        start = np.searchsorted(strata, self.stratum[hosts], "left")
        end = np.searchsorted(strata, self.stratum[hosts], "right")
        pick = start + (self.rng.random(hosts.size) * (end - start)).astype(np.int64)
        return order[np.minimum(pick, end - 1)].astype(np.int64)

    # -- revocation ------------------------------------------------------------------------------
    def revoke(self, at: float) -> None:
        """The version is rolled back at ``at``: hosts on it leave it at their next check-in;
        looping hosts recover at their next boot (Ringfence) or by chance (other agents)."""
        if np.isfinite(self.revoked_at):
            return
        self.revoked_at = at
        fl = self.fleet
        on = np.nonzero(np.isfinite(self.admitted) & ~(self.left <= at))[0]
        if not on.size:
            return
        looping = self.looping[on] & (self.crashed[on] <= at) & ~(self.recovered[on] <= at)
        back = np.where(looping, INF, fl.next_checkin(np.full(on.size, at), on))
        later_crash = self.crashed[on] > at
        back = np.where(later_crash & (back < self.crashed[on]), back, back)
        if self.agent == "ringfence":
            boot = self._next_boot_after(self.crashed[on], at, self.looping[on])
            back = np.where(looping, np.minimum(self.recovered[on], boot), back)
        else:
            back = np.where(looping, self._peer_recovery(self.crashed[on], on.size), back)
        self.gen[on] += 1
        # A host that leaves before its delayed crash never has it.
        spared = later_crash & (back < self.crashed[on])
        self.crashed[on[spared]] = INF
        self.looping[on[spared]] = False
        self.recovered[on] = np.where(looping, back, self.recovered[on])
        self.recovered[on[spared]] = INF
        self.left[on] = back
        self._emit(back, on, BACK)

    # -- reading ---------------------------------------------------------------------------------
    def read(self, until: float) -> Events:
        """Every valid event that reached the server up to ``until`` and was not read before."""
        parts: list[tuple[Floats, npt.NDArray[np.int32], npt.NDArray[np.int8], Floats]] = []
        live = []
        for chunk in self.chunks:
            end = int(np.searchsorted(chunk.time, until, "right"))
            if end > chunk.cursor:
                sl = slice(chunk.cursor, end)
                valid = chunk.gen[sl] == self.gen[chunk.host[sl]]
                parts.append((chunk.time[sl][valid], chunk.host[sl][valid], chunk.kind[sl][valid],
                              chunk.aux[sl][valid]))
                chunk.cursor = end
            if chunk.cursor < chunk.time.size:
                live.append(chunk)
        self.chunks = live
        if not parts:
            return Events(np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int8), np.zeros(0))
        time = np.concatenate([p[0] for p in parts])
        order = np.argsort(time, kind="stable")
        return Events(time[order], np.concatenate([p[1] for p in parts])[order].astype(np.int64),
                      np.concatenate([p[2] for p in parts])[order], np.concatenate([p[3] for p in parts])[order])

    def next_event(self) -> float:
        return min((float(c.time[c.cursor]) for c in self.chunks if c.cursor < c.time.size), default=INF)

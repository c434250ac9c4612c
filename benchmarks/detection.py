"""How fast, and at what cost, each detector halts a bad rollout, and how often it halts a good one.

Seeded simulations of a 100,000-device fleet (12 strata: 3 platforms x 4 regions, one stratum
holding 5 %) taking one release in two waves, with faults F1-F6 from the issue. Every detector
sees the same simulated rollouts (same seeds): Ringfence's judges as ``engine/health.py`` builds
them for a plan without failure budgets, an Argo-Rollouts-style count threshold, a Flagger-style
success rate, a replica of Kayenta's NetflixACAJudge, and the oracle SPRT that knows the true
rates (the lower bound). See the "detection.py" section of benchmarks/README.md for the model,
the peers' assumptions and what each number means.

Ringfence (row ``ringfence``) halts at the first FAILED verdict of either judge, looked at after
every change (every report, silence deadline, decided placebo pair, silence cleared):

* the **rollout judge** (``judges.RolloutJudge``, ``strata`` = the 12 strata the rollout can
  reach): one e-process for the whole rollout, ``E = w.pooled E_pooled + w.strata mean_s E_s +
  w.silence E_sign`` (``judges.DEFAULT_WEIGHTS``), FAILED at ``E >= 1/alpha``. ``E_pooled`` is the
  pooled stratified logrank (the strata's partial likelihood ratios multiplied, then mixed over
  ``DEFAULT_MIXTURE``; every stratum here has far more than ``min_control`` = 20 control
  devices), ``E_s`` each stratum's own mixture logrank (strata without exposure count as 1), and
  ``E_sign`` the placebo sign test (``hazard.sign_log_e``) over all strata's discordant pairs.
  The hazard test's failures are loud failures and the symmetric ``silence_after`` rule (any
  device not heard from for ``silence_after`` fails at ``last_heard + silence_after``; one silent
  since its activation was last heard at its intent); a trial-timeout silence is not one of them.
  The per-stratum ``HazardRatioJudge`` runs at ``alpha * w.strata / 12``, so it can only fail
  when the rollout judge does, and is not replicated separately.
* **placebo devices**: for every exposed device a control device of the same stratum (the Kayenta
  baseline sample, which no wave selects) is asked, at its first check-in after its wave started,
  to come back after ``placebo_wait`` (``Health.placebo_wait``: half the trial timeout); the
  agent's next check-in comes ``placebo_wait * 1.15 + 1 s`` later, jittered by +-10 % (its usual
  interval if that is shorter), and later still if it is asleep or offline (F6) or its region is
  cut off (F5). It is silent if not seen by ``asked + trial_timeout``. An exposed device is silent
  after activation while the server knows of no ``healthy`` (device time within the trial
  timeout) and no loud failure within it; a late ``healthy`` turns it back (as
  ``tallies.silent_after_activation`` reads the tracks). The k-th exposed device of a stratum,
  by exposure time, is paired with the k-th placebo device, by the time it was asked
  (``tallies.pair``); a pair is decided once both trial timeouts have passed.
* the **silence judge** (``judges.SilenceJudge``, per stratum): FAILED when the stratum has at
  least 3 exposed devices, all of them quiet (silent since activation and not heard otherwise, or
  failed by the ``silence_after`` rule), at least one silent since activation, and at least half
  of its control devices were heard from at or after the earliest trial deadline of those (an
  outage that silences the control devices too is not a verdict).

``Halt.by`` says which part of the rollout e-value was largest at the crossing ("pooled",
"strata", "silence") or "silence-judge". Each run cross-checks the vectorised replica against
the real code path (``Track`` -> ``tally()`` -> the judges) on a small fleet at evenly spaced
looks and at each judge's halt (JSON ``validation``: the largest difference in the rollout's,
the strata's and the sign test's log E, and the disagreeing FAILED verdicts, which should be 0).
As on the server (``store/health.py``), a device is at risk from its first contact since the
start (``World.entry``); a failure from before that is not counted. One approximation is left (see
``epoch_terms``): a device whose failure report is in flight leaves the risk sets at its failure
time, where the server keeps it at risk until the report arrives (largest in a rollout's first
minutes, when few control devices have been heard from); at looks with no report in flight log E
agrees to ~1e-12.

    python benchmarks/detection.py --quick          # table, then one JSON line (last line)
    python benchmarks/detection.py --rollouts 1000  # the full run
    python benchmarks/detection.py --quick --json   # only the JSON line
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from scipy import optimize, special, stats

from ringfence.analysis.hazard import DEFAULT_MIXTURE, logrank_log_e, sign_log_e
from ringfence.analysis.judges import (
    DEFAULT_WEIGHTS,
    HazardRatioJudge,
    Judge,
    RolloutJudge,
    SilenceJudge,
    judge_all,
)
from ringfence.analysis.tallies import Pairs, Silence, Track, tally
from ringfence.analysis.verdicts import VerdictPhase
from ringfence.core.plan import Health

INF = math.inf
MINUTE = 1 / 60
SECOND = 1 / 3600
KEY = 1000.0  # stratum * KEY + hours: one sortable key per (stratum, time); horizons stay below KEY

PLATFORMS = ("windows", "macos", "linux")
REGIONS = ("us", "eu", "apac", "sa")
REGION_UTC_OFFSET = np.array([-5.0, 1.0, 8.0, -3.0])  # hours, for the daily cycles of F6
SMALL = len(PLATFORMS) * len(REGIONS) - 1  # linux/sa: the stratum holding 5 % of the fleet


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    devices: int = 100_000
    small_share: float = 0.05  # of the fleet, in stratum SMALL
    baseline_rate: float = 0.001  # failures per device-hour (0.1 %/h), both arms
    poll_h: float = 0.5  # check-in interval of idle agents
    trial_h: float = 5 * MINUTE  # the agent's trial: healthy is sent this long after activation
    trial_timeout_h: float = 0.5  # plan default (30m)
    silence_after_h: float = 6.0  # plan default (6h)
    placebo_after_h: float | None = None  # plan default (None: half the trial timeout)
    horizon_h: float = 24.0
    waves: tuple[tuple[float, float], ...] = ((0.0, 0.01), (4.0, 0.05))  # (start hour, cumulative share)
    alpha: float = 0.01
    wald_beta: float = 0.01
    split: int = 1  # each platform x region stratum judged as this many (e.g. os_version x arch)

    @property
    def placebo_wait_h(self) -> float:
        """How long a placebo device is asked to stay away (``Health.placebo_wait``)."""
        after = None if self.placebo_after_h is None else timedelta(hours=self.placebo_after_h)
        health = Health(trial_timeout=timedelta(hours=self.trial_timeout_h), placebo_after=after)
        return health.placebo_wait.total_seconds() / 3600


@dataclass(frozen=True)
class Fault:
    key: str  # F1 .. F6 with a suffix
    label: str
    kind: str  # crash-on-load | silent | hazard | late-crash | outage | cycles
    theta: float = 1.0  # hazard ratio (kind "hazard")
    scope: str = "fleet"  # fleet | stratum (only stratum SMALL is faulty)

    @property
    def good(self) -> bool:
        return self.kind in ("outage", "cycles")


FAULTS: tuple[Fault, ...] = (
    Fault("F1", "crash on load (every exposed device)", "crash-on-load"),
    Fault("F2", "silent boot loop (exposed devices never report again)", "silent"),
    Fault("F3-x1.5", "hazard x1.5, fleet-wide", "hazard", 1.5),
    Fault("F3-x2", "hazard x2, fleet-wide", "hazard", 2.0),
    Fault("F3-x5", "hazard x5, fleet-wide", "hazard", 5.0),
    Fault("F3-x1.5-s", "hazard x1.5, one stratum (5 % of the fleet)", "hazard", 1.5, "stratum"),
    Fault("F3-x2-s", "hazard x2, one stratum (5 % of the fleet)", "hazard", 2.0, "stratum"),
    Fault("F3-x5-s", "hazard x5, one stratum (5 % of the fleet)", "hazard", 5.0, "stratum"),
    Fault("F4", "crash 6 h after activation", "late-crash"),
    Fault("F5", "no fault; one region offline 7-9 h (both arms)", "outage"),
    Fault("F6", "no fault; daily usage cycles, delayed and duplicated telemetry", "cycles"),
)
CRASH_ON_LOAD_MEAN_H = 20 * SECOND  # F1, F2: time from activation to the crash (exponential)
LATE_CRASH_AT_H = 6.0  # F4: the hazard jumps this long after activation ...
LATE_CRASH_MEAN_H = 10 * MINUTE  # ... to one crash per 10 minutes
F6_SILENCE_AFTER_H = 16.0  # see README: a fleet whose workstations sleep 10-14 h needs more than 6 h


@dataclass(frozen=True)
class Fleet:
    """Devices in stratum order; which wave (if any) each belongs to; the Kayenta baseline sample,
    which doubles as the placebo devices (as many per wave and stratum as the wave exposes)."""

    cfg: Config
    stratum: np.ndarray
    region: np.ndarray
    sizes: np.ndarray
    wave_start: np.ndarray  # hour the device's wave starts (inf: in no wave)
    baseline_sample: np.ndarray  # bool: the control devices Kayenta compares the canary with
    placebo_start: np.ndarray  # hour from which the device is a placebo candidate (its wave's start; inf: never)

    @classmethod
    def build(cls, cfg: Config) -> Fleet:
        n_strata = len(PLATFORMS) * len(REGIONS)
        small = round(cfg.devices * cfg.small_share)
        rest = cfg.devices - small
        base = np.full(n_strata, rest // (n_strata - 1))
        base[: rest % (n_strata - 1)] += 1
        base[SMALL] = small
        # finer strata: every platform x region stratum split into ``split`` equal parts
        sizes = np.repeat(base // cfg.split, cfg.split)
        sizes[::cfg.split] += base % cfg.split
        stratum = np.repeat(np.arange(n_strata * cfg.split), sizes)
        pos = np.arange(cfg.devices) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        wave_start = np.full(cfg.devices, INF)
        for start, share in reversed(cfg.waves):  # earlier waves overwrite: cumulative shares
            wave_start[pos < np.round(share * sizes[stratum])] = start
        last = np.round(cfg.waves[-1][1] * sizes[stratum])
        baseline = (pos >= last) & (pos < 2 * last)
        placebo_start = np.full(cfg.devices, INF)
        for start, share in reversed(cfg.waves):
            placebo_start[baseline & (pos - last < np.round(share * sizes[stratum]))] = start
        return cls(cfg, stratum, (stratum // cfg.split) % len(REGIONS), sizes, wave_start, baseline, placebo_start)

    @property
    def offsets(self) -> np.ndarray:
        """Index of each stratum's first device (devices are in stratum order)."""
        return np.cumsum(self.sizes) - self.sizes


# --------------------------------------------------------------------------------------------
# One simulated rollout
# --------------------------------------------------------------------------------------------
@dataclass
class World:
    """What happened to every device in one rollout, in hours since the first wave started.

    ``f`` is the true failure time; ``r`` when its report reaches the server (inf: never reported).
    ``q_*`` is the device's silence as the server's rules see it (kind 1: an exposed device with no
    ``healthy`` and no loud failure known at its trial deadline, silent after activation from
    ``q_event`` (the deadline) until ``q_end``, when the server hears of either; kind 2: not heard
    from for ``silence_after`` in F5's outage, failed at ``q_event`` until heard from again at
    ``q_end``). Placebo devices were asked at ``placebo_at`` and came back at ``placebo_seen``."""

    fault: Fault
    silence_after_h: float
    x: np.ndarray
    f: np.ndarray
    r: np.ndarray
    dup: np.ndarray  # arrival of a duplicate of the failure report (inf: none)
    h_at: np.ndarray  # device time of the ``healthy`` event (inf: none)
    h_arr: np.ndarray  # its arrival
    q_kind: np.ndarray
    q_event: np.ndarray
    q_end: np.ndarray
    affected: np.ndarray  # devices the fault applies to once exposed
    requests: np.ndarray  # per minute: requests (check-ins, heartbeats, healthy) from exposed devices
    placebo_at: np.ndarray  # when a placebo device was asked to come back (inf: not a placebo device)
    placebo_seen: np.ndarray  # when its first contact after the wait arrived (inf: not within the horizon)
    net: Network
    epochs: tuple[float, ...] = ()  # times at which many silence failures clear at once (F5)
    excess_rate: float = 0.0  # the fault's added hazard once active (per hour) ...
    excess_onset: float = 0.0  # ... from this age on (hours since activation)
    details: dict[str, float] = field(default_factory=dict)
    entry: np.ndarray = field(default_factory=lambda: np.zeros(0))  # first contact since the start (inf: none)

    def contacts(self) -> np.ndarray:
        """Arrivals besides the periodic check-ins, one row per kind: the exposure (the intent),
        ``healthy``, the failure report and its duplicate, the placebo's return."""
        return np.stack([self.x, self.h_arr, self.r, self.dup, self.placebo_seen])


@dataclass
class Network:
    """When what a device sends reaches the server: at once, or once the device is on and online
    again (F6), or at the end of its region's outage (F5). Devices check in every poll interval
    at their phase ``phi`` (the check-in is sent when due, and arrives as above)."""

    phi: np.ndarray
    poll: float
    region: np.ndarray
    cycles: Cycles | None = None
    outage: tuple[float, float, int] = (INF, INF, -1)  # start, end, region (-1: none)

    def deliver(self, t: np.ndarray, idx: np.ndarray) -> np.ndarray:
        start, end, region = self.outage
        return np.where((self.region[idx] == region) & (t >= start) & (t < end), end, t)

    def arrive(self, t: np.ndarray, idx: np.ndarray) -> np.ndarray:
        if self.cycles is not None:
            t = self.cycles.next_contact(t, idx)
        return self.deliver(t, idx)

    def first_check_in(self, idx: np.ndarray, after: float) -> np.ndarray:
        """Arrival of the first periodic check-in that arrives at or after ``after``. Arrival is
        monotone in the sending time, and a check-in due before ``after`` arrives after it only
        when the device was unreachable from then until after ``after`` (every such check-in
        then arrives at the same moment), so the one due just before and the one due just after
        decide it."""
        due = after + np.mod(self.phi[idx] - after, self.poll)
        before = self.arrive(due - self.poll, idx)
        return np.where(before >= after, before, self.arrive(due, idx))

    def last_check_in(self, idx: np.ndarray, at: float) -> np.ndarray:
        """Arrival of the last periodic check-in that arrived by ``at`` (-inf: none in 2 days)."""
        due = at - np.mod(at - self.phi[idx], self.poll)
        out = np.full(idx.size, -INF)
        todo = np.arange(idx.size)
        for _ in range(round(48 / self.poll)):
            got = self.arrive(due[todo], idx[todo])
            ok = got <= at
            out[todo[ok]] = got[ok]
            todo = todo[~ok]
            if not todo.size:
                break
            due[todo] -= self.poll
        return out


def first_contact(world: World, idx: np.ndarray, after: float) -> np.ndarray:
    """When each device was first heard from at or after ``after`` (a check-in or any message)."""
    extra = world.contacts()[:, idx]
    extra = np.where(extra >= after, extra, INF).min(axis=0)
    return np.minimum(world.net.first_check_in(idx, after), extra)


def last_contact(world: World, idx: np.ndarray, at: float) -> np.ndarray:
    """When each device was last heard from by ``at``."""
    extra = world.contacts()[:, idx]
    extra = np.where(extra <= at, extra, -INF).max(axis=0)
    return np.maximum(world.net.last_check_in(idx, at), extra)


class Cycles:
    """F6: daily usage cycles and network dropouts. Half the devices are workstations, on from
    about 08:00 local (+-1.5 h) for 10-14 h; the rest always on. Everyone fails at the baseline
    rate times a usage factor 0.5-1.5 (peak 14:00 local) while on, and not at all while off. Each
    device also drops off the network about once a day for Exp(45 min): nothing it sends arrives
    before it is back (its outbox is delivered then)."""

    def __init__(self, rng: np.random.Generator, fleet: Fleet) -> None:
        cfg = fleet.cfg
        n = cfg.devices
        self.clock0 = rng.uniform(0, 24)  # UTC hour at which the rollout starts
        self.offset = REGION_UTC_OFFSET[fleet.region]
        self.workstation = rng.random(n) < 0.5
        self.on_start = 8.0 + rng.uniform(-1.5, 1.5, n)
        self.on_len = np.where(self.workstation, 10.0 + rng.uniform(0, 4, n), 24.0)
        count = np.minimum(rng.poisson(cfg.horizon_h / 24.0, n), 2)
        starts = rng.uniform(0, cfg.horizon_h, (n, 2))
        ends = starts + rng.exponential(0.75, (n, 2))
        unused = np.arange(2)[None, :] >= count[:, None]
        self.off_start = np.where(unused, INF, starts)
        self.off_end = np.where(unused, INF, ends)

    def local(self, t: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return np.mod(t + self.clock0 + self.offset[idx], 24.0)

    def since_on(self, t: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return np.mod(self.local(t, idx) - self.on_start[idx], 24.0)

    def is_on(self, t: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return ~self.workstation[idx] | (self.since_on(t, idx) < self.on_len[idx])

    def next_on(self, t: np.ndarray, idx: np.ndarray) -> np.ndarray:
        rel = self.since_on(t, idx)
        return np.where(self.is_on(t, idx), t, t + 24.0 - rel + 1e-7)  # just after switching on

    def next_off(self, t: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """When a device that is on at ``t`` turns off (inf for servers)."""
        return np.where(self.workstation[idx], t + self.on_len[idx] - self.since_on(t, idx), INF)

    def online_after(self, t: np.ndarray, idx: np.ndarray) -> np.ndarray:
        out = t.copy()
        for k in range(2):
            s, e = self.off_start[idx, k], self.off_end[idx, k]
            out = np.where((out >= s) & (out < e), e, out)
        return out

    def next_contact(self, t: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """The first moment at or after ``t`` at which the device is on and online (inf stays inf)."""
        out = np.array(t, dtype=float)
        live = np.nonzero(np.isfinite(out))[0]
        sub, sub_idx = out[live], idx[live]
        for _ in range(3):
            sub = self.online_after(self.next_on(sub, sub_idx), sub_idx)
        out[live] = sub
        return out

    def usage(self, t: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return 1.0 + 0.5 * np.cos(2 * math.pi * (self.local(t, idx) - 14.0) / 24.0)


def _report_delay(rng: np.random.Generator, n: int) -> np.ndarray:
    """A loud failure (crash, failed probe, rollback) reaches the server after the reboot or
    the revert: 30 s to 3 min."""
    return rng.uniform(0.5 * MINUTE, 3 * MINUTE, n)


def simulate(fleet: Fleet, fault: Fault, rng: np.random.Generator) -> World:
    cfg = fleet.cfg
    n, horizon, poll, lam0 = cfg.devices, cfg.horizon_h, cfg.poll_h, cfg.baseline_rate
    idx = np.arange(n)
    phi = rng.random(n) * poll  # check-in phase
    in_wave = np.isfinite(fleet.wave_start)
    starts = np.minimum(fleet.wave_start, fleet.placebo_start)  # the waves, and when placebo devices are asked
    grid = np.where(np.isfinite(starts), starts + np.mod(phi - starts, poll), INF)
    cycles = Cycles(rng, fleet) if fault.kind == "cycles" else None
    details: dict[str, float] = {}

    # exposure: the first check-in at or after the wave's start (in F5/F6: the first one that arrives)
    x = grid.copy()
    outage = (INF, INF, -1)
    if fault.kind == "outage":
        region = int(rng.integers(len(REGIONS)))
        t_out = rng.uniform(1.0, 14.0)
        outage = (t_out, t_out + rng.uniform(7.0, 9.0), region)
        details = {"outage_region": region, "outage_start_h": t_out, "outage_end_h": outage[1]}
    net = Network(phi, poll, fleet.region, cycles, outage)

    def delivered(t: np.ndarray) -> np.ndarray:
        """When something the device sends at ``t`` arrives (outage: at its end)."""
        return net.deliver(t, idx)

    if cycles is not None:
        x = cycles.next_contact(grid, idx)
    x = delivered(x)
    x[x > horizon] = INF
    act = x.copy()  # exposed devices, and placebo devices (asked at their first check-in after the wave's start)
    placebo = np.isfinite(act) & ~in_wave
    x[placebo] = INF
    exposed = np.isfinite(x)

    # true failure times: the baseline hazard, plus the fault's once exposed
    if cycles is None:
        f0 = rng.exponential(1 / lam0, n)
    else:  # thinning of the usage-modulated hazard (max 1.5 lam0); three candidates suffice in 24 h
        cand = np.cumsum(rng.exponential(1 / (1.5 * lam0), (n, 3)), axis=1)
        u = rng.random(cand.shape)
        rows, cols = np.nonzero(cand <= horizon)
        at = cand[rows, cols]
        keep = cycles.is_on(at, rows) & (u[rows, cols] * 1.5 < cycles.usage(at, rows))
        f0 = np.full(n, INF)
        np.minimum.at(f0, rows[keep], at[keep])
    affected = np.ones(n, dtype=bool) if fault.scope == "fleet" else fleet.stratum // fleet.cfg.split == SMALL
    g = np.full(n, INF)  # time from activation to the fault's failure
    excess_rate, excess_onset = 0.0, 0.0
    if fault.kind in ("crash-on-load", "silent"):
        g = rng.exponential(CRASH_ON_LOAD_MEAN_H, n)
        excess_rate = 1 / CRASH_ON_LOAD_MEAN_H
    elif fault.kind == "hazard":
        excess_rate = (fault.theta - 1) * lam0
        g = np.where(affected, rng.exponential(1 / excess_rate, n), INF)
    elif fault.kind == "late-crash":
        g = LATE_CRASH_AT_H + rng.exponential(LATE_CRASH_MEAN_H, n)
        excess_rate, excess_onset = 1 / LATE_CRASH_MEAN_H, LATE_CRASH_AT_H
    fault_t = np.where(exposed & affected, x + g, INF)
    by_fault = fault_t < f0
    f = np.minimum(f0, fault_t)
    f[f > horizon] = INF
    by_fault &= np.isfinite(f)
    failed = np.isfinite(f)
    after_exposure = failed & (x <= f)
    silent_death = by_fault & (fault.kind == "silent")

    # failure reports (a silent boot loop sends none)
    r = np.where(failed & ~silent_death, f + _report_delay(rng, n), INF)
    if cycles is not None:
        r = cycles.next_contact(r, idx)
    r = delivered(r)
    dup = np.full(n, INF)
    if cycles is not None:  # retries (5 % of messages, Exp(3 min) late) and duplicates (5 %)
        r = r + np.where(rng.random(n) < 0.05, rng.exponential(3 * MINUTE, n), 0.0)
        dup = np.where(np.isfinite(r) & (rng.random(n) < 0.05), r + rng.exponential(10 * MINUTE, n), INF)

    # healthy: sent at the end of the trial if the device is still alive (and not boot-looping)
    h_at = np.where(np.isfinite(act) & ~silent_death, act + cfg.trial_h, INF)
    if cycles is not None:  # a workstation switched off mid-trial finishes the trial after waking
        ex = np.nonzero(np.isfinite(act))[0]
        off = cycles.next_off(act[ex], ex)
        paused = off < h_at[ex]
        resume = cycles.next_on(off[paused] + 1e-7, ex[paused])
        h_at[ex[paused]] = resume + (h_at[ex[paused]] - off[paused])
        details["paused_trials"] = float(paused.sum())
    # a failure during the trial means no healthy; one before the exposure does not (the device had
    # recovered: it checked in and took the version, and _requests counts it as alive)
    h_at = np.where(failed & (f >= act) & (f < h_at), INF, h_at)
    h_arr = h_at.copy()
    if cycles is not None:
        h_arr = cycles.next_contact(h_arr, idx)
        h_arr = h_arr + np.where(rng.random(n) < 0.05, rng.exponential(3 * MINUTE, n), 0.0)
    h_arr = delivered(h_arr)

    # placebo devices: asked to come back after placebo_wait, the agent checks in again after
    # placebo_wait * 1.15 + 1 s (server.snapshot._return_in; its usual interval if that is shorter),
    # jittered by +-10 %; the first contact at or after the wait marks it seen (drawn last, so the
    # other detectors see the same worlds whatever the placebo model)
    p_ids = np.nonzero(placebo)[0]
    ask = cfg.placebo_wait_h * 1.15 + SECOND
    back = act[p_ids] + (ask * rng.uniform(0.9, 1.1, p_ids.size) if ask < poll else poll)
    if cycles is not None:
        back = cycles.next_contact(back, p_ids)
    placebo_at = np.where(placebo, act, INF)
    placebo_seen = np.full(n, INF)
    placebo_seen[p_ids] = net.deliver(back, p_ids)
    placebo_seen[placebo_seen > horizon] = INF

    # silence-derived failures as the server counts them
    q_kind = np.zeros(n, dtype=np.int8)
    q_event = np.full(n, INF)
    q_end = np.full(n, INF)
    deadline = act + cfg.trial_timeout_h
    known_by = np.minimum(h_arr, r)  # not silent after activation once healthy or a loud failure is known
    trial = exposed & (known_by > deadline) & (deadline <= horizon)
    q_kind[trial], q_event[trial], q_end[trial] = 1, deadline[trial], known_by[trial]
    h_at[placebo], h_arr[placebo] = INF, INF
    silence_after = cfg.silence_after_h
    epochs: tuple[float, ...] = ()
    if fault.kind == "outage":
        t_out, t_back, _ = outage
        last_grid = t_out - np.mod(t_out - phi, poll)
        heard = np.maximum.reduce([last_grid, np.where(x <= t_out, x, -INF), np.where(h_arr <= t_out, h_arr, -INF),
                                   np.where(r <= t_out, r, -INF), np.where(placebo_seen <= t_out, placebo_seen, -INF)])
        quiet = heard + silence_after
        sil = (fleet.region == outage[2]) & ~trial & (quiet < t_back) & ~(r < t_out)
        q_kind[sil], q_event[sil], q_end[sil] = 2, quiet[sil], t_back
        epochs = (t_back,)
        details["silenced"] = float(sil.sum())
    elif fault.kind == "cycles":
        silence_after = F6_SILENCE_AFTER_H

    requests = _requests(fleet, x, f, after_exposure, silent_death, h_arr, phi, outage, cycles, cfg)
    world = World(fault, silence_after, x, f, r, dup, h_at, h_arr, q_kind, q_event, q_end, affected, requests,
                  placebo_at, placebo_seen, net, epochs, excess_rate, excess_onset, details)
    # The server watches a device from its first check-in (or message) since the start
    # (store/health.py): the judges count it at risk from then on.
    world.entry = first_contact(world, idx, 0.0)
    world.entry[world.entry > horizon] = INF
    return world


def _requests(fleet: Fleet, x: np.ndarray, f: np.ndarray, after_exposure: np.ndarray, silent_death: np.ndarray,
              h_arr: np.ndarray, phi: np.ndarray, outage: tuple[float, float, int], cycles: Cycles | None,
              cfg: Config) -> np.ndarray:
    """Per minute, the requests exposed devices send while they run the new version: heartbeats
    every 5 s during the trial, the ``healthy`` check-in, then a check-in per poll interval
    (what a request-based monitor such as Flagger's sees as traffic). Failure reports are counted
    separately."""
    bins = round(cfg.horizon_h * 60)
    out = np.zeros(bins)
    live = np.isfinite(x) & ~silent_death
    idx = np.nonzero(live)[0]
    end = np.where(after_exposure[idx], f[idx], cfg.horizon_h)
    # heartbeats: 12 a minute from activation to the end of the trial (or the failure)
    hb_end = np.minimum(x[idx] + cfg.trial_h, end)
    lo = np.floor(x[idx] * 60).astype(int)
    hi = np.floor(np.minimum(hb_end, cfg.horizon_h - 1e-9) * 60).astype(int)
    ok = hi >= lo
    diff = np.zeros(bins + 1)
    np.add.at(diff, lo[ok], 12.0)
    np.add.at(diff, hi[ok] + 1, -12.0)
    out += np.cumsum(diff)[:bins]
    # healthy and polls
    k = np.arange(1, math.ceil(cfg.horizon_h / cfg.poll_h) + 1)
    times = x[idx, None] + k[None, :] * cfg.poll_h
    mask = times < end[:, None]
    if outage[2] >= 0:
        in_out = (fleet.region[idx] == outage[2])[:, None]
        mask &= ~(in_out & (times >= outage[0]) & (times < outage[1]))
    if cycles is not None:
        didx = np.broadcast_to(idx[:, None], times.shape)
        mask &= cycles.is_on(times, didx) & (cycles.online_after(times, didx) == times)
    polls = times[mask]
    healthy = h_arr[idx][np.isfinite(h_arr[idx])]
    every = np.concatenate([polls, healthy])
    every = every[every < cfg.horizon_h]
    out += np.bincount((every * 60).astype(int), minlength=bins)[:bins]
    return out


# --------------------------------------------------------------------------------------------
# Ringfence: the rollout judge (pooled + strata + placebo sign test) and the silence judge
# --------------------------------------------------------------------------------------------
THETAS = np.array(DEFAULT_MIXTURE.thetas)
LOG_THETAS = np.log(THETAS)
LOG_WEIGHTS = np.array(DEFAULT_MIXTURE.log_weights)
LOG_UP = np.log(2 * THETAS / (1 + THETAS))  # sign test: a pair in which only the exposed device was silent
LOG_DOWN = np.log(2 / (1 + THETAS))  # ... only the placebo device
MIN_SILENT = SilenceJudge().min_silent  # exposed devices a silence verdict needs
E_CAP = 60.0  # log E beyond which an e-process has long crossed any threshold (keeps exp() finite)


@dataclass
class Records:
    """Every failure the hazard test counts at some look: loud ones from their report on, silence
    ones (``silence_after``) while they last. Event time, when it is counted from (appear) and
    until (end). Silence after activation is not one of them (it is the placebo test's); a device
    silent since its activation fails here only by the ``silence_after`` rule, like any other, at
    ``x + silence_after`` (last heard at its intent) unless heard from before."""

    dev: np.ndarray
    event: np.ndarray
    appear: np.ndarray
    end: np.ndarray
    exposed: np.ndarray
    stratum: np.ndarray
    silent: np.ndarray  # a silence failure (not a loud one)

    @classmethod
    def of(cls, world: World, fleet: Fleet) -> Records:
        horizon = fleet.cfg.horizon_h
        loud = np.nonzero(world.r <= horizon)[0]
        generic = np.nonzero((world.q_kind == 2) & (world.q_event <= horizon))[0]
        lost = world.x + world.silence_after_h  # never heard from after the activation
        dead = np.nonzero((world.q_kind == 1) & (world.q_end > lost) & (lost <= horizon))[0]
        quiet = np.concatenate([generic, dead])
        q_event = np.concatenate([world.q_event[generic], lost[dead]])
        q_end = np.concatenate([world.q_end[generic], world.q_end[dead]])
        dev = np.concatenate([loud, quiet])
        event = np.concatenate([world.f[loud], q_event])
        appear = np.concatenate([world.r[loud], q_event])
        end = np.concatenate([np.full(loud.size, INF), q_end])
        silent = np.arange(dev.size) >= loud.size
        watched = event >= world.entry[dev]  # one from before happened while nobody watched the device
        dev, event, appear, end, silent = dev[watched], event[watched], appear[watched], end[watched], silent[watched]
        return cls(dev, event, appear, end, world.x[dev] <= event, fleet.stratum[dev], silent)


def _count_before(keys: np.ndarray, stratum: np.ndarray, at: np.ndarray, side: str) -> np.ndarray:
    """How many sorted ``keys`` of each query's stratum lie before its time (``side`` as numpy's)."""
    return np.searchsorted(keys, stratum * KEY + at, side) - np.searchsorted(keys, stratum * KEY, "left")


def epoch_terms(world: World, fleet: Fleet, rec: Records, b0: float, b1: float) -> tuple[np.ndarray, np.ndarray]:
    """Log likelihood-ratio terms (one row per failure record counted during [b0, b1), one column
    per theta of the mixture), each scored with the risk sets just before it (failing devices
    included). Risk sets come from the failures counted during the epoch (in which failures are
    only added, see ``_bounds``); the one difference from tally() at a look: a device whose
    failure report is still in flight is out of the risk sets from its failure time on, where
    the server keeps it in until the report arrives (see README)."""
    ids = np.nonzero((rec.appear < b1) & (rec.end > b0))[0]
    depart = np.full(fleet.cfg.devices, INF)
    np.minimum.at(depart, rec.dev[ids], rec.event[ids])
    x, s = world.x, fleet.stratum
    eligible = np.isfinite(x) & (x <= depart)  # exposed before failing: joins the exposed arm
    kx = np.sort(s[eligible] * KEY + x[eligible])
    ke = np.sort(s[eligible] * KEY + depart[eligible])
    heard = np.isfinite(world.entry)
    kin = np.sort(s[heard] * KEY + world.entry[heard])  # joins the control arm at its first contact
    kc = np.sort(s[heard] * KEY + np.where(eligible, x, depart)[heard])  # leaves it at exposure or failure
    st, at = rec.stratum[ids], rec.event[ids]
    n_e = _count_before(kx, st, at, "right") - _count_before(ke, st, at, "left")
    n_c = _count_before(kin, st, at, "right") - _count_before(kc, st, at, "left")
    arm = rec.exposed[ids]
    n_e = np.where(arm, np.maximum(n_e, 1), n_e)
    n_c = np.where(arm, n_c, np.maximum(n_c, 1))
    share = n_e / np.maximum(n_e + n_c, 1)
    terms = arm[:, None] * LOG_THETAS[None, :] - np.log1p((THETAS - 1)[None, :] * share[:, None])
    terms[(n_e <= 0) | (n_c <= 0)] = 0.0  # one arm empty: no evidence (as in hazard._log_lr)
    return ids, terms


@dataclass
class Halt:
    time: float = INF  # hours since the first wave started; inf: no halt within the horizon
    by: str = ""
    stratum: int = -1


@dataclass
class Path:
    """One epoch's changes to the counted failures, sorted by (stratum, time), with each stratum's
    log E after the change and whether it is the last change of its (stratum, time)."""

    times: np.ndarray
    strata: np.ndarray
    values: np.ndarray
    log_e: np.ndarray
    last: np.ndarray
    first: np.ndarray  # index of the stratum's first change


def epoch_path(world: World, fleet: Fleet, rec: Records, b0: float, b1: float) -> Path | None:
    ids, terms = epoch_terms(world, fleet, rec, b0, b1)
    if not ids.size:
        return None
    start = np.maximum(rec.appear[ids], b0)  # failures counted when the epoch starts come in at b0
    end = rec.end[ids]
    gone = end < b1
    times = np.concatenate([start, end[gone]])
    values = np.concatenate([terms, -terms[gone]])
    strata = np.concatenate([rec.stratum[ids], rec.stratum[ids][gone]])
    keep = times <= fleet.cfg.horizon_h
    times, values, strata = times[keep], values[keep], strata[keep]
    keys = strata * KEY + times
    order = np.argsort(keys, kind="stable")
    keys, strata, times, values = keys[order], strata[order], times[order], values[order]
    sums = np.cumsum(values, axis=0)
    first = np.searchsorted(strata, strata, "left")
    sums -= np.where((first > 0)[:, None], sums[np.maximum(first - 1, 0)], 0.0)
    log_e = special.logsumexp(sums + LOG_WEIGHTS[None, :], axis=1)
    last = np.append(keys[1:] != keys[:-1], True)  # look once every change at that moment is in
    return Path(times, strata, values, log_e, last, first)


def _bounds(world: World, fleet: Fleet, rec: Records) -> list[float]:
    """Epochs: a new one wherever a counted silence failure clears (the device was heard from
    again), so that within an epoch failures are only ever added."""
    horizon = fleet.cfg.horizon_h
    clears = rec.end[rec.end <= horizon]
    inner = sorted({float(t) for t in clears} | {t for t in world.epochs if t <= horizon})
    return [0.0, *inner, horizon + 1e-6]


def sign_test_path(world: World, fleet: Fleet) -> tuple[np.ndarray, np.ndarray]:
    """The placebo sign test as ``tallies.pair`` + ``hazard.sign_log_e`` read it: per stratum, the
    k-th exposed device (by exposure time) with the k-th placebo device (by the time it was asked),
    decided once both trial deadlines have passed. The placebo is silent if not seen by its
    deadline; the exposed device while the server knows of no ``healthy`` sent by its deadline
    and no loud failure within it (a late ``healthy`` turns a decided pair round). Returns the
    times at which the discordant counts change and log E after each."""
    cfg = fleet.cfg
    trial, horizon = cfg.trial_timeout_h, cfg.horizon_h

    def ranked(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ids = np.nonzero(np.isfinite(t))[0]
        ids = ids[np.lexsort((ids, t[ids], fleet.stratum[ids]))]
        s = fleet.stratum[ids]
        return ids, s * 10_000_000 + np.arange(ids.size) - np.searchsorted(s, s, "left")

    e_ids, e_key = ranked(world.x)
    p_ids, p_key = ranked(world.placebo_at)
    _, ie, ip = np.intersect1d(e_key, p_key, assume_unique=True, return_indices=True)
    e, p = e_ids[ie], p_ids[ip]
    x = world.x[e]
    deadline = x + trial
    decided = np.maximum(deadline, world.placebo_at[p] + trial)
    p_silent = world.placebo_seen[p] > world.placebo_at[p] + trial
    confirmed = np.minimum(np.where(world.h_at[e] <= deadline, world.h_arr[e], INF),
                           np.where((world.f[e] >= x) & (world.f[e] <= deadline), world.r[e], INF))
    e_silent = confirmed > decided
    late = e_silent & (confirmed <= horizon)  # decided with the exposed device silent, then confirmed
    times = np.concatenate([decided, confirmed[late]])
    up = np.concatenate([(e_silent & ~p_silent).astype(int), -(~p_silent[late]).astype(int)])  # exposed only
    down = np.concatenate([(p_silent & ~e_silent).astype(int), p_silent[late].astype(int)])  # placebo only
    use = (times <= horizon) & ((up != 0) | (down != 0))
    order = np.argsort(times[use], kind="stable")
    times, a, b = times[use][order], np.cumsum(up[use][order]), np.cumsum(down[use][order])
    log_e = special.logsumexp(a[:, None] * LOG_UP + b[:, None] * LOG_DOWN + LOG_WEIGHTS, axis=1)
    return times, log_e


def _at(times: np.ndarray, values: np.ndarray, looks: np.ndarray, default: float = 0.0) -> np.ndarray:
    """A step function (value after the last change at or before each look)."""
    j = np.searchsorted(times, looks, "right") - 1
    return np.where(j >= 0, values[np.maximum(j, 0)], default) if times.size else np.full(looks.size, default)


def _rollout_log_e(pooled: np.ndarray, mean: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """log of w.pooled E_pooled + w.strata mean E_s + w.silence E_sign, from the parts' logs."""
    w = DEFAULT_WEIGHTS
    parts = np.stack([pooled, mean, sign], axis=-1)
    out: np.ndarray = special.logsumexp(parts, axis=-1, b=np.array([w.pooled, w.strata, w.silence]))
    return out


def _lead(pooled: float, mean: float, sign: float) -> str:
    w = DEFAULT_WEIGHTS
    parts = {"pooled": math.log(w.pooled or 1e-300) + pooled, "strata": math.log(w.strata or 1e-300) + mean,
             "silence": math.log(w.silence or 1e-300) + sign}
    return max(parts, key=lambda name: parts[name])


def rollout_judge_halt(world: World, fleet: Fleet) -> Halt:
    """RolloutJudge looked at after every change: the first look at which the rollout's e-value
    reaches 1/alpha. Within an epoch (failures only added) the strata's e-values and the pooled
    e-value follow the path of counted failures; the sign test follows its own path."""
    cfg = fleet.cfg
    k = len(fleet.sizes)
    rec = Records.of(world, fleet)
    sign_t, sign_log = sign_test_path(world, fleet)
    threshold = math.log(1 / cfg.alpha) - 1e-9
    for b0, b1 in itertools.pairwise(_bounds(world, fleet, rec)):
        path = epoch_path(world, fleet, rec, b0, b1)
        extra = sign_t[(sign_t >= b0) & (sign_t < b1)]
        if path is None:
            looks, pooled, mean = extra, np.zeros(extra.size), np.zeros(extra.size)
        else:
            e_s = np.exp(np.minimum(path.log_e, E_CAP))
            idx = np.arange(e_s.size)
            delta = e_s - np.where(path.first == idx, 1.0, e_s[np.maximum(idx - 1, 0)])
            g = np.argsort(path.times, kind="stable")
            tg = path.times[g]
            sum_s = k + np.cumsum(delta[g])  # strata without a change so far count 1
            pool = special.logsumexp(np.cumsum(path.values[g], axis=0) + LOG_WEIGHTS, axis=1)
            last = np.append(tg[1:] != tg[:-1], True)  # look once every change at that moment is in
            tg, sum_s, pool = tg[last], sum_s[last], pool[last]
            looks = np.concatenate([tg, extra])
            pooled = np.concatenate([pool, _at(tg, pool, extra)])
            mean = np.log(np.maximum(np.concatenate([sum_s, _at(tg, sum_s, extra, float(k))]), 1e-300) / k)
        sign = _at(sign_t, sign_log, looks)
        hit = np.nonzero(_rollout_log_e(pooled, mean, sign) >= threshold)[0]
        if hit.size:
            j = hit[np.argmin(looks[hit])]
            t = float(looks[j])
            worst = -1
            if path is not None:  # the stratum with the largest e-value at the halt
                keys = path.strata * KEY + path.times
                at = np.searchsorted(keys, np.arange(k) * KEY + t, "right") - 1
                own = np.where((at >= 0) & (path.strata[np.maximum(at, 0)] == np.arange(k)),
                               path.log_e[np.maximum(at, 0)], 0.0)
                worst = int(np.argmax(own))
            return Halt(t, _lead(float(pooled[j]), float(mean[j]), float(sign[j])), worst)
    return Halt()


def ringfence_halt(world: World, fleet: Fleet) -> Halt:
    """The judges as the engine runs them (engine/health.py, no failure budgets): the rollout
    judge and the silence judge of every stratum, looked at after every change; the first FAILED
    verdict halts."""
    rollout = rollout_judge_halt(world, fleet)
    silence = silence_judge_halt(world, fleet)
    return silence if silence.time < rollout.time else rollout


def _exposed_arm(world: World) -> np.ndarray:
    """Exposed devices whose first failure (if any) came after the exposure: a device that failed
    before it (while watched) is a control device for tally()."""
    return np.isfinite(world.x) & ~((world.f < world.x) & (world.f >= world.entry))


def _quiet_spans(world: World) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per device, for SilenceJudge: quiet (silent since its activation, or failed by the
    ``silence_after`` rule) on [start, end), and silent since activation but not yet failed by
    ``silence_after`` (``unconfirmed``) on [start, unconfirmed_end)."""
    n = world.x.size
    start, end, unconfirmed_end = np.full(n, INF), np.full(n, -INF), np.full(n, -INF)
    trial, generic = world.q_kind == 1, (world.q_kind == 2) & (world.x <= world.q_event)
    quiet = trial | generic
    start[quiet], end[quiet] = world.q_event[quiet], world.q_end[quiet]
    unconfirmed_end[trial] = np.minimum(world.q_end[trial], world.x[trial] + world.silence_after_h)
    return start, end, unconfirmed_end


def _silence_verdict(world: World, fleet: Fleet, s: int, members: np.ndarray, unconfirmed: np.ndarray,
                     unconfirmed_end: np.ndarray, exposed: int, a: float, b: float) -> float | None:
    """The first time in [a, b) — every one of the stratum's ``exposed`` devices quiet, some silent
    since activation, nobody exposed meanwhile — at which at least half of its control devices were
    heard from since the earliest trial deadline of the unconfirmed devices (which moves on as
    they fail by the ``silence_after`` rule)."""
    cfg = fleet.cfg
    deadline = world.x[members[unconfirmed]] + cfg.trial_timeout_h
    until = unconfirmed_end[members[unconfirmed]]
    lo, hi = int(fleet.offsets[s]), int(fleet.offsets[s] + fleet.sizes[s])
    controls = lo + np.nonzero(~(world.x[lo:hi] <= a))[0]
    # the control arm at time t: devices watched by t (first heard from since the start), less the
    # exposed ones (devices exposed after failing included)
    entered = np.sort(world.entry[lo:hi])
    cuts = [float(c) for c in np.unique(until[(until > a) & (until < b)])]
    for p, q in zip([a, *cuts], [*cuts, b], strict=True):
        live = until > p
        if not live.any():
            return None
        heard = np.sort(first_contact(world, controls, float(deadline[live].min())))
        # the verdict turns at p or when another control device is heard from (a device joining
        # the arm can only turn it back)
        times = np.concatenate([[p], heard[(heard > p) & (heard < q)]])
        count = np.searchsorted(heard, times, "right")
        devices = np.searchsorted(entered, times, "right") - exposed
        ok = np.nonzero((devices <= 0) | (2 * count >= devices))[0]
        if ok.size:
            return float(times[ok[0]])
    return None


def silence_judge_halt(world: World, fleet: Fleet) -> Halt:
    """SilenceJudge: the first time any stratum's verdict is FAILED. Between two exposures the
    exposed set is fixed; the verdict needs all of them quiet (from the latest start to the
    earliest end of their quiet spans) and one of them unconfirmed."""
    cfg = fleet.cfg
    start, end, unconfirmed_end = _quiet_spans(world)
    arm = _exposed_arm(world)
    best = Halt()
    for s in range(len(fleet.sizes)):
        lo = int(fleet.offsets[s])
        ids = lo + np.nonzero(np.isfinite(world.x[lo:lo + fleet.sizes[s]]))[0]
        in_arm = arm[ids]
        if in_arm.sum() < MIN_SILENT:
            continue
        ids = ids[np.lexsort((ids, world.x[ids]))]
        in_arm = arm[ids]
        unconfirmed = in_arm & (world.q_kind[ids] == 1)
        since = np.maximum.accumulate(np.where(in_arm, start[ids], -INF))
        until = np.minimum.accumulate(np.where(in_arm, end[ids], INF))
        some = np.maximum.accumulate(np.where(unconfirmed, unconfirmed_end[ids], -INF))
        x = world.x[ids]
        nxt = np.append(x[1:], INF)
        count = np.cumsum(in_arm)
        a = np.maximum(since, x)
        b = np.minimum.reduce([until, nxt, some, np.full(x.size, cfg.horizon_h + 1e-9)])
        for i in np.nonzero((count >= MIN_SILENT) & (a < b) & (a < best.time))[0]:
            t = _silence_verdict(world, fleet, s, ids[:i + 1], unconfirmed[:i + 1], unconfirmed_end, int(count[i]),
                                 float(a[i]), float(b[i]))
            if t is not None:
                if t < best.time:
                    best = Halt(t, "silence-judge", s)
                break
    return best


def silence_failed_at(world: World, fleet: Fleet, look: float) -> set[int]:
    """Strata whose SilenceJudge is FAILED at one look (for the cross-check), by the same rule."""
    start, end, unconfirmed_end = _quiet_spans(world)
    exposed = _exposed_arm(world) & (world.x <= look)
    quiet = (start <= look) & (look < end)
    unconfirmed = exposed & (world.q_kind == 1) & (start <= look) & (look < unconfirmed_end)
    failed = set()
    for s in range(len(fleet.sizes)):
        sl = slice(int(fleet.offsets[s]), int(fleet.offsets[s] + fleet.sizes[s]))
        n = int(exposed[sl].sum())
        if n < MIN_SILENT or not quiet[sl][exposed[sl]].all() or not unconfirmed[sl].any():
            continue
        first = float(world.x[sl][unconfirmed[sl]].min()) + fleet.cfg.trial_timeout_h
        controls = sl.start + np.nonzero(~(world.x[sl] <= look))[0]
        heard = int((first_contact(world, controls, first) <= look).sum())
        devices = int((world.entry[sl] <= look).sum()) - n
        if devices == 0 or 2 * heard >= devices:
            failed.add(s)
    return failed


def rollout_log_e_at(world: World, fleet: Fleet, look: float) -> tuple[float, np.ndarray, float]:
    """log E of the rollout judge at one look, each stratum's log E and the sign test's, from the
    same records, terms and pairs (for the cross-check)."""
    rec = Records.of(world, fleet)
    bounds = _bounds(world, fleet, rec)
    k = max(i for i, b in enumerate(bounds[:-1]) if b <= look)
    ids, terms = epoch_terms(world, fleet, rec, bounds[k], bounds[k + 1])
    active = (rec.appear[ids] <= look) & (rec.end[ids] > look)
    sums = np.zeros((len(fleet.sizes), len(THETAS)))
    np.add.at(sums, rec.stratum[ids][active], terms[active])
    own = special.logsumexp(sums + LOG_WEIGHTS[None, :], axis=1)
    pooled = float(special.logsumexp(sums.sum(axis=0) + LOG_WEIGHTS))
    mean = float(special.logsumexp(own) - math.log(len(fleet.sizes)))
    sign_t, sign_log = sign_test_path(world, fleet)
    sign = float(_at(sign_t, sign_log, np.array([look]))[0])
    total = float(_rollout_log_e(np.array(pooled), np.array(mean), np.array(sign)))
    return total, own, sign


# --------------------------------------------------------------------------------------------
# The other detectors, on what a metrics pipeline would see
# --------------------------------------------------------------------------------------------
@dataclass
class Series:
    """Per minute: failure reports (duplicates included) from devices that failed on the new
    version, requests from exposed devices, exposed devices so far; the same reports from the
    Kayenta baseline sample (as many never-exposed devices as the last wave exposes)."""

    canary_fail: np.ndarray
    requests: np.ndarray
    canary_size: np.ndarray
    base_fail: np.ndarray
    base_size: int

    @classmethod
    def of(cls, world: World, fleet: Fleet) -> Series:
        bins = round(fleet.cfg.horizon_h * 60)

        def hist(t: np.ndarray) -> np.ndarray:
            t = t[t < fleet.cfg.horizon_h]
            return np.bincount((t * 60).astype(int), minlength=bins)[:bins].astype(float)

        canary = np.isfinite(world.x) & np.isfinite(world.f) & (world.x <= world.f)
        base = fleet.baseline_sample & ~np.isfinite(world.x)
        return cls(hist(np.concatenate([world.r[canary], world.dup[canary]])), world.requests,
                   np.cumsum(hist(world.x)), hist(np.concatenate([world.r[base], world.dup[base]])), int(base.sum()))


ARGO_INTERVAL_MIN = 5
ARGO_COMMON_THRESHOLD = 1


def argo_counts(series: Series) -> np.ndarray:
    """Argo-style measurement every 5 minutes: failures the canary reported in the interval."""
    return series.canary_fail.reshape(-1, ARGO_INTERVAL_MIN).sum(axis=1)


def argo_halt(counts: np.ndarray, threshold: int) -> Halt:
    """failureLimit 0: the first measurement at or above the threshold aborts the rollout."""
    hit = np.nonzero(counts >= threshold)[0]
    return Halt((hit[0] + 1) * ARGO_INTERVAL_MIN * MINUTE, "argo") if hit.size else Halt()


def flagger_halt(series: Series) -> Halt:
    """Flagger-style: every minute, the canary's request success rate must be >= 99 %; a minute
    without canary requests is a failed check too (Flagger's "no values found"); the 5th failed
    check rolls back. The first tick only starts the analysis."""
    total = series.requests + series.canary_fail
    failed = (total <= 0) | (series.canary_fail > 0.01 * total)
    failed[0] = False
    hit = np.nonzero(np.cumsum(failed) >= 5)[0]
    return Halt((hit[0] + 1) * MINUTE, "flagger") if hit.size else Halt()


KAYENTA_INTERVAL_MIN = 60
KAYENTA_Z = float(-stats.norm.ppf(0.01))  # 98 % two-sided: alpha/2 = 1 %


def _cm_percentile(sorted_values: np.ndarray, p: float) -> float:
    """Apache commons-math Percentile, default (legacy) estimation, as Kayenta's IQR detector uses."""
    n = sorted_values.size
    if n == 1:
        return float(sorted_values[0])
    pos = p * (n + 1) / 100
    if pos < 1:
        return float(sorted_values[0])
    if pos >= n:
        return float(sorted_values[-1])
    lo = math.floor(pos)
    return float(sorted_values[lo - 1] + (pos - lo) * (sorted_values[lo] - sorted_values[lo - 1]))


def _remove_outliers(values: np.ndarray) -> np.ndarray:
    """IQRDetector(factor = 3, reduceSensitivity = true), as NetflixACAJudge transforms each series."""
    if values.size == 0:
        return values
    v = np.sort(values)
    p25, p75 = _cm_percentile(v, 25), _cm_percentile(v, 75)
    iqr = p75 - p25
    lower = min(_cm_percentile(v, 1), p25 - 3 * iqr)
    upper = max(_cm_percentile(v, 99), p75 + 3 * iqr)
    return values[(values <= upper) & (values >= lower)]


def _wilcoxon_diff(mu: float, quantile: float, x: np.ndarray, y: np.ndarray) -> float:
    """Kayenta's MannWhitney.wilcoxonDiff (normal approximation, tie and continuity corrected)."""
    nx, ny = x.size, y.size
    ranks = stats.rankdata(np.concatenate([x - mu, y]))
    _, ties = np.unique(ranks, return_counts=True)
    dz = ranks[:nx].sum() - nx * (nx + 1) / 2 - nx * ny / 2
    sigma = math.sqrt(nx * ny / 12 * ((nx + ny + 1) - float((ties**3 - ties).sum()) / ((nx + ny) * (nx + ny - 1))))
    if sigma == 0:
        raise ArithmeticError("all observations tied")
    return (dz - 0.5 * np.sign(dz)) / sigma - quantile


def kayenta_high(experiment: np.ndarray, control: np.ndarray) -> bool:
    """NetflixACAJudge on one metric, direction "increase": MannWhitneyClassifier(tolerance 0.25,
    confLevel 0.98) -> High?"""
    x, y = _remove_outliers(experiment), _remove_outliers(control)
    if not x.size or not y.size or np.array_equal(np.sort(x), np.sort(y)):
        return False
    if np.unique(np.concatenate([x, y])).size == 1:
        return False
    try:
        # lowerConfidence > 0.25 |estimate| >= 0 needs the shift test at mu = 0 to reject; the
        # statistic falls with mu, so a non-rejection at 0 means Pass without the root finding.
        if _wilcoxon_diff(0.0, KAYENTA_Z, x, y) <= 0:
            return False
        mu_min, mu_max = float(x.min() - y.max()), float(x.max() - y.min())

        def root(q: float) -> float:
            lo, hi = _wilcoxon_diff(mu_min, q, x, y), _wilcoxon_diff(mu_max, q, x, y)
            if lo <= 0:
                return mu_min
            if hi >= 0:
                return mu_max
            return float(optimize.brentq(lambda m: _wilcoxon_diff(m, q, x, y), mu_min, mu_max, xtol=1e-15))

        lower = root(KAYENTA_Z)
        estimate = float(optimize.brentq(lambda m: _wilcoxon_diff(m, 0.0, x, y), mu_min, mu_max, xtol=1e-15))
    except (ArithmeticError, ValueError):
        return False  # Kayenta: classification error, not High
    deviation = 1.0 if y.mean() == 0 else x.mean() / y.mean()
    return lower > 0.25 * abs(estimate) and deviation >= 1.0


def kayenta_halt(series: Series) -> Halt:
    """Every hour, the last hour's one-minute failure rates (failures per device) of the canary
    against the baseline sample; the first High fails the canary."""
    size = series.canary_size
    canary = np.where(size > 0, series.canary_fail / np.maximum(size, 1), 0.0)  # NaN -> 0 (nanStrategy none)
    base = series.base_fail / max(series.base_size, 1)
    w = KAYENTA_INTERVAL_MIN
    for k in range(canary.size // w):
        if kayenta_high(canary[k * w:(k + 1) * w], base[k * w:(k + 1) * w]):
            return Halt((k + 1) * w * MINUTE, "kayenta")
    return Halt()


def oracle_halt(world: World, fleet: Fleet) -> Halt:
    """Wald's SPRT that knows lambda0 and the fault's hazard (and which devices it touches), and
    sees every failure of an exposed device at the moment it happens, silent ones included:
    log LR = sum log(lambda1/lambda0) over failures - integral of (lambda1 - lambda0) over the
    exposure. Stops at log((1-beta)/alpha) (halt) or log(beta/(1-alpha)) (accept). For the good
    rollouts it tests the x5 alternative."""
    cfg = fleet.cfg
    lam0, horizon = cfg.baseline_rate, cfg.horizon_h
    if world.fault.good:
        rate, onset, affected = 4 * lam0, 0.0, np.ones(cfg.devices, dtype=bool)
    else:
        rate, onset, affected = world.excess_rate, world.excess_onset, world.affected
    ids = np.nonzero(np.isfinite(world.x) & affected)[0]
    x, f = world.x[ids], world.f[ids]
    starts, ends = x + onset, np.minimum(f, horizon)
    valid = starts < ends
    s_sorted, u_sorted = np.sort(starts[valid]), np.sort(ends[valid])
    s_cum = np.concatenate([[0.0], np.cumsum(s_sorted)])
    u_cum = np.concatenate([[0.0], np.cumsum(u_sorted)])
    failed = np.isfinite(f) & (x <= f)
    t = np.sort(f[failed])
    ages = (f - x)[failed][np.argsort(f[failed])]
    if not t.size:
        return Halt()
    ns, nu = np.searchsorted(s_sorted, t, "right"), np.searchsorted(u_sorted, t, "right")
    compensator = rate * ((ns * t - s_cum[ns]) - (nu * t - u_cum[nu]))
    jumps = np.log((lam0 + rate * (ages >= onset)) / lam0)
    after = np.cumsum(jumps) - compensator
    before = after - jumps
    upper = math.log((1 - cfg.wald_beta) / cfg.alpha)
    lower = math.log(cfg.wald_beta / (1 - cfg.alpha))
    up, low = np.nonzero(after >= upper)[0], np.nonzero(before <= lower)[0]
    if up.size and (not low.size or up[0] < low[0]):
        return Halt(float(t[up[0]]), "sprt")
    return Halt()


def wald_asn(theta: float, cfg: Config) -> float:
    """Wald's approximation of the SPRT's expected exposure (device-hours) under lambda1 = theta lambda0."""
    a, b = cfg.alpha, cfg.wald_beta
    top = (1 - b) * math.log((1 - b) / a) + b * math.log(b / (1 - a))
    return top / (cfg.baseline_rate * (theta * math.log(theta) - theta + 1))


# --------------------------------------------------------------------------------------------
# What a halt cost
# --------------------------------------------------------------------------------------------
def at_halt(world: World, halt: float) -> dict[str, float]:
    """Failed exposed devices by the halt, those the server knew of (loud reports received, and
    silence: since activation, or by ``silence_after``), exposed devices and exposure."""
    x, f = world.x, world.f
    exposed = _exposed_arm(world) & (x < halt)
    failed = int((exposed & (f >= x) & (f < halt)).sum())
    loud = (world.r <= halt) & (x <= f)  # the report that decides the halt included
    quiet = (world.q_kind > 0) & (world.q_event <= halt) & (world.q_end > halt) & (x <= world.q_event)
    hours = np.clip(np.minimum(halt, f) - x, 0.0, None)
    return {"failed": failed, "observed": int((loud | quiet).sum()), "exposed": int(exposed.sum()),
            "exposure": float(hours[exposed & world.affected].sum())}


# --------------------------------------------------------------------------------------------
# Cross-check against the real code path: Track -> tally() -> RolloutJudge / SilenceJudge
# --------------------------------------------------------------------------------------------
def tracks_at(world: World, fleet: Fleet, look: float, base: datetime) -> list[Track]:
    """What the server's store would hand the judges at ``look`` (see store/health.py). A device
    is last heard from at its last check-in or message that arrived by the look, except: one whose
    silence failure is counted, ``silence_after`` before it; an exposed device silent since its
    activation (nothing heard of it since the trial deadline passed), at its intent."""

    def when(hours: float) -> datetime:
        return base + timedelta(hours=float(hours))

    n = fleet.cfg.devices
    heard = last_contact(world, np.arange(n), look)
    rec = Records.of(world, fleet)
    counted = rec.silent & (rec.appear <= look) & (look < rec.end)
    unconfirmed = (world.q_kind == 1) & (world.x <= look) & (look < world.q_end)
    heard[unconfirmed] = world.x[unconfirmed]
    heard[rec.dev[counted]] = rec.event[counted] - world.silence_after_h
    tracks = []
    for i in range(n):
        if not world.entry[i] <= look:
            continue  # not heard from since the start
        reported = world.r[i] <= look and world.f[i] >= world.entry[i]  # a failure while watched
        tracks.append(Track(
            device_id=f"d{i:06d}", stratum=f"s{fleet.stratum[i]:02d}", since=when(world.entry[i]),
            exposed_at=when(world.x[i]) if world.x[i] <= look else None,
            healthy_at=when(world.h_at[i]) if world.h_arr[i] <= look else None,
            last_heard=when(heard[i]) if np.isfinite(heard[i]) else None,
            failed_at=when(world.f[i]) if reported else None,
            failure="crash" if reported else "",
            placebo_at=when(world.placebo_at[i]) if world.placebo_at[i] <= look else None,
            placebo_seen_at=when(world.placebo_seen[i]) if world.placebo_seen[i] <= look else None))
    return tracks


def validate(seed: int, rollouts: int, looks: int) -> dict[str, Any]:
    """On a small fleet (3,000 devices, 10x the failure rate so every stratum has failures),
    compare this file's vectorised judges with the real ones (tally(), then RolloutJudge with 12
    strata, HazardRatioJudge at its share of alpha and SilenceJudge, as engine/health.py builds
    them) at evenly spaced looks and at each judge's halt (and just before it): the rollout's
    log E, each stratum's, the sign test's, and the FAILED verdicts."""
    cfg = Config(devices=3000, baseline_rate=0.01, waves=((0.0, 0.05), (4.0, 0.2)))
    fleet = Fleet.build(cfg)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    rollout = RolloutJudge(alpha=cfg.alpha, strata=len(fleet.sizes))
    judges: list[Judge] = [HazardRatioJudge(alpha=rollout.stratum_alpha(), limit=None), SilenceJudge()]
    out: dict[str, Any] = {}
    threshold = math.log(1 / cfg.alpha)
    for fault in (f for f in FAULTS if f.key in ("F1", "F2", "F3-x5", "F5", "F6")):
        worst = {"rollout": 0.0, "strata": 0.0, "sign": 0.0, "settled": 0.0}
        counts = dict.fromkeys(("looks", "stratum_looks", "rollout_failed_verdicts", "rollout_disagreements",
                                "hazard_ratio_failed_alone", "silence_failed_verdicts", "silence_disagreements"), 0)
        for i in range(rollouts):
            world = simulate(fleet, fault, np.random.default_rng([seed, 99, i]))
            silence = Silence(timedelta(hours=cfg.trial_timeout_h), timedelta(hours=world.silence_after_h))
            halts = [h.time for h in (rollout_judge_halt(world, fleet), silence_judge_halt(world, fleet))
                     if h.time <= cfg.horizon_h]
            times = sorted({*np.linspace(0.4, cfg.horizon_h - 0.1, looks).tolist(), *halts,
                            *(t - 1e-6 for t in halts)})
            for look in times:
                mine, own, sign = rollout_log_e_at(world, fleet, look)
                data = tally(tracks_at(world, fleet, look, base), base + timedelta(hours=look), silence)
                verdicts = judge_all(data.values(), judges, None, rollout)
                theirs = next(v for v in verdicts if v.judge == rollout.name)
                failed = theirs.phase is VerdictPhase.FAILED
                counts["looks"] += 1
                counts["rollout_failed_verdicts"] += failed
                counts["rollout_disagreements"] += failed != (mine >= threshold)
                diff = abs(float(theirs.numbers["log_e"]) - mine)
                worst["rollout"] = max(worst["rollout"], diff)
                if not ((world.f <= look) & (look < world.r) & np.isfinite(world.r)).any():  # no report in flight
                    worst["settled"] = max(worst["settled"], diff)
                counts["hazard_ratio_failed_alone"] += not failed and any(
                    v.phase is VerdictPhase.FAILED for v in verdicts if v.judge == judges[0].name)
                pairs = Pairs()
                for stratum_data in data.values():
                    pairs.add(stratum_data.pairs)
                    if stratum_data.exposed.devices:
                        s = int(stratum_data.stratum[1:])
                        worst["strata"] = max(worst["strata"], abs(logrank_log_e(stratum_data.steps) - float(own[s])))
                        counts["stratum_looks"] += 1
                worst["sign"] = max(worst["sign"], abs(sign_log_e(pairs.exposed_only, pairs.placebo_only) - sign))
                silent = {v.stratum for v in verdicts if v.phase is VerdictPhase.FAILED and v.judge == "silence"}
                mine_silent = {f"s{x:02d}" for x in silence_failed_at(world, fleet, look)}
                counts["silence_failed_verdicts"] += len(silent)
                counts["silence_disagreements"] += len(silent ^ mine_silent)
        out[fault.key] = {**counts, "max_abs_rollout_log_e_diff": worst["rollout"],
                          "max_abs_rollout_log_e_diff_no_report_in_flight": worst["settled"],
                          "max_abs_stratum_log_e_diff": worst["strata"], "max_abs_sign_log_e_diff": worst["sign"]}
    return out


# --------------------------------------------------------------------------------------------
# Running the faults
# --------------------------------------------------------------------------------------------
ARGO_THRESHOLDS = tuple(range(1, 41))


def run_chunk(task: tuple[Config, int, int, int, int]) -> dict[str, Any]:
    """Rollouts [lo, hi) of one fault; every detector on the same worlds (seed = seed, fault, run)."""
    cfg, fault_index, lo, hi, seed = task
    np.seterr(invalid="ignore", over="ignore")
    fleet = Fleet.build(cfg)
    fault = FAULTS[fault_index]
    names = ["ringfence", "flagger", "kayenta", "oracle-sprt"]
    rows: dict[str, list[Any]] = {k: [] for k in names}
    argo: list[list[tuple[float, dict[str, float]]]] = []
    by: dict[str, list[str]] = {"ringfence": []}
    where: list[int] = []
    for i in range(lo, hi):
        world = simulate(fleet, fault, np.random.default_rng([seed, fault_index, i]))
        series = Series.of(world, fleet)
        halts = {"ringfence": ringfence_halt(world, fleet), "flagger": flagger_halt(series),
                 "kayenta": kayenta_halt(series), "oracle-sprt": oracle_halt(world, fleet)}
        by["ringfence"].append(halts["ringfence"].by)
        where.append(halts["ringfence"].stratum)
        for name, halt in halts.items():
            rows[name].append((halt.time, at_halt(world, halt.time)))
        counts = argo_counts(series)
        cache: dict[float, dict[str, float]] = {}
        per_k = []
        for k in ARGO_THRESHOLDS:
            t = argo_halt(counts, k).time
            if t not in cache:
                cache[t] = at_halt(world, t)
            per_k.append((t, cache[t]))
        argo.append(per_k)
    return {"fault": fault_index, "rows": rows, "argo": argo, "by": by, "where": where}


def summarise(rows: Sequence[tuple[float, dict[str, float]]], fault: Fault, cfg: Config) -> dict[str, Any]:
    times = np.array([t for t, _ in rows])
    halted = times <= cfg.horizon_h
    pick = [m for (t, m) in rows if t <= cfg.horizon_h]

    def med(key: str) -> float | None:
        return float(np.median([m[key] for m in pick])) if pick else None

    out: dict[str, Any] = {"runs": len(rows), "halted": int(halted.sum()), "halt_rate": float(halted.mean()),
                           "median_hours_to_halt": float(np.median(times[halted])) if pick else None,
                           "median_failed_devices": med("failed"), "median_failures_observed": med("observed"),
                           "median_exposed_devices": med("exposed"), "median_exposure_device_hours": med("exposure"),
                           "mean_exposure_device_hours": (float(np.mean([m["exposure"] for m in pick]))
                                                          if pick else None)}
    if fault.kind == "hazard":
        asn = wald_asn(fault.theta, cfg)
        out["wald_asn_device_hours"] = asn
        out["median_exposure_over_wald"] = out["median_exposure_device_hours"] / asn if pick else None
        out["mean_exposure_over_wald"] = out["mean_exposure_device_hours"] / asn if pick else None
    return out


def run(cfg: Config, fault_runs: int, good_runs: int, seed: int, jobs: int,
        progress: Callable[[str], None]) -> dict[int, dict[str, Any]]:
    tasks = []
    for fi, fault in enumerate(FAULTS):
        runs = good_runs if fault.good else fault_runs
        step = max(1, math.ceil(runs / (4 * jobs)))
        tasks += [(cfg, fi, lo, min(lo + step, runs), seed) for lo in range(0, runs, step)]
    parts: list[dict[str, Any]] = []
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(jobs) as pool:
            for done, part in enumerate(pool.map(run_chunk, tasks), start=1):
                parts.append(part)
                progress(f"{done}/{len(tasks)} chunks")
    else:
        for done, task in enumerate(tasks, start=1):
            parts.append(run_chunk(task))
            progress(f"{done}/{len(tasks)} chunks")
    merged: dict[int, dict[str, Any]] = {}
    for part in parts:  # pool.map keeps the order of the tasks: runs stay in seed order
        m = merged.setdefault(part["fault"], {"rows": {k: [] for k in part["rows"]}, "argo": [],
                                              "by": {k: [] for k in part["by"]}, "where": []})
        for k, v in part["rows"].items():
            m["rows"][k] += v
        for k, v in part["by"].items():
            m["by"][k] += v
        m["argo"] += part["argo"]
        m["where"] += part["where"]
    return merged


def assemble(cfg: Config, merged: dict[int, dict[str, Any]]) -> dict[str, Any]:
    good = [fi for fi, f in enumerate(FAULTS) if f.good]
    rf_false = max(summarise(merged[fi]["rows"]["ringfence"], FAULTS[fi], cfg)["halt_rate"] for fi in good)
    argo_target = min(rf_false, cfg.alpha)

    def argo_rows(fi: int, k: int) -> list[tuple[float, dict[str, float]]]:
        return [per_k[ARGO_THRESHOLDS.index(k)] for per_k in merged[fi]["argo"]]

    def argo_false(k: int) -> float:
        return max(float(np.mean([t <= cfg.horizon_h for t, _ in argo_rows(fi, k)])) for fi in good)

    tuned = next((k for k in ARGO_THRESHOLDS if argo_false(k) <= argo_target), ARGO_THRESHOLDS[-1])
    results: dict[str, Any] = {}
    for fi, fault in enumerate(FAULTS):
        m = merged[fi]
        per = {"ringfence": summarise(m["rows"]["ringfence"], fault, cfg),
               "argo-common": summarise(argo_rows(fi, ARGO_COMMON_THRESHOLD), fault, cfg),
               "argo-tuned": summarise(argo_rows(fi, tuned), fault, cfg),
               "flagger": summarise(m["rows"]["flagger"], fault, cfg),
               "kayenta": summarise(m["rows"]["kayenta"], fault, cfg),
               "oracle-sprt": summarise(m["rows"]["oracle-sprt"], fault, cfg)}
        by = [b for b in m["by"]["ringfence"] if b]
        per["ringfence"]["halted_by"] = {judge: by.count(judge) for judge in sorted(set(by))}
        if fault.scope == "stratum":
            halted = [s for (t, _), s in zip(m["rows"]["ringfence"], m["where"], strict=True) if t <= cfg.horizon_h]
            per["ringfence"]["halts_in_faulty_stratum"] = sum(s // cfg.split == SMALL for s in halted)
        results[fault.key] = {"label": fault.label, "detectors": per}
    return {"results": results, "argo_tuned_threshold": tuned, "argo_tuned_target": argo_target,
            "argo_tuned_false_halt_rate": argo_false(tuned), "argo_common_threshold": ARGO_COMMON_THRESHOLD,
            "ringfence_false_halt_rate": rf_false}


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------
def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def table(report: dict[str, Any]) -> str:
    head = (f"{'fault':<10} {'detector':<12} {'runs':>5} {'halted':>7} {'hours':>7} {'failed':>7} {'observed':>8} "
            f"{'exposed':>8} {'device-h':>10} {'/Wald':>6}")
    lines = [head, "-" * len(head)]
    for key, entry in report["results"].items():
        for name, row in entry["detectors"].items():
            lines.append(f"{key:<10} {name:<12} {row['runs']:>5} {row['halt_rate']:>7.3f} "
                         f"{_fmt(row['median_hours_to_halt'], 2):>7} {_fmt(row['median_failed_devices'], 0):>7} "
                         f"{_fmt(row['median_failures_observed'], 0):>8} {_fmt(row['median_exposed_devices'], 0):>8} "
                         f"{_fmt(row['median_exposure_device_hours'], 0):>10} "
                         f"{_fmt(row.get('median_exposure_over_wald'), 2):>6}")
        lines.append("")
    return "\n".join(lines)


def headline(report: dict[str, Any], cfg: Config) -> dict[str, Any]:
    res = report["results"]
    rf = {k: v["detectors"]["ringfence"] for k, v in res.items()}
    values = {
        "false_halt_rate": report["ringfence_false_halt_rate"],
        "wald_ratio_x5": rf["F3-x5"].get("median_exposure_over_wald"),
        "single_stratum_detected": rf["F3-x5-s"]["halt_rate"],
        "catastrophic_failures_at_halt": rf["F1"]["median_failures_observed"],
        "silent_detected": rf["F2"]["halt_rate"],
    }
    targets = {"false_halt_rate": ("<=", cfg.alpha), "wald_ratio_x5": ("<=", 1.5),
               "single_stratum_detected": (">=", 0.95), "catastrophic_failures_at_halt": ("<=", 3),
               "silent_detected": (">=", 1.0)}
    met = {k: (v is not None and (v <= targets[k][1] if targets[k][0] == "<=" else v >= targets[k][1]))
           for k, v in values.items()}
    return {**values, "targets": {k: {"value": values[k], "target": f"{op} {t}", "met": met[k]}
                                  for k, (op, t) in targets.items()}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="200 rollouts per fault (good rollouts: still >= 1,000 each)")
    parser.add_argument("--rollouts", type=int, default=None,
                        help="rollouts per fault (default 1,000; --quick: 200); F5/F6 use max(N, 1000)")
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPU count)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    parser.add_argument("--split", type=int, default=1,
                        help="judge each platform x region stratum as this many finer strata (default 1: 12 strata)")
    args = parser.parse_args(argv)

    cfg = Config(split=args.split)
    fault_runs = args.rollouts or (200 if args.quick else 1000)
    good_runs = max(fault_runs, 1000)
    jobs = args.jobs or os.cpu_count() or 1
    started = time.perf_counter()

    def progress(text: str) -> None:
        if not args.json:
            print(f"\r[{time.perf_counter() - started:6.1f}s] {text}", end="", file=sys.stderr, flush=True)

    np.seterr(invalid="ignore", over="ignore")
    check = validate(args.seed, rollouts=1, looks=6 if args.quick else 12)
    merged = run(cfg, fault_runs, good_runs, args.seed, jobs, progress)
    report = assemble(cfg, merged)
    elapsed = time.perf_counter() - started
    if not args.json:
        print(file=sys.stderr)
        print(f"Detection benchmark: {cfg.devices:,} devices, {12 * cfg.split} strata (one platform x region "
              f"holding {cfg.small_share:.0%}), waves "
              + ", ".join(f"{share:.0%} at {start:g} h" for start, share in cfg.waves)
              + f", horizon {cfg.horizon_h:g} h, baseline {cfg.baseline_rate:.1%}/h, alpha {cfg.alpha}")
        print(f"{fault_runs} rollouts per fault, {good_runs} per good rollout (F5, F6); seed {args.seed}; "
              f"Argo thresholds: common {ARGO_COMMON_THRESHOLD}, tuned {report['argo_tuned_threshold']} failures "
              f"per {ARGO_INTERVAL_MIN} min")
        print("halted = false-halt rate (F5, F6) or detection probability; medians over halted runs: hours since "
              "the first wave, failed exposed devices, exposed failures the server knew of, exposed devices, "
              "exposure of affected devices (device-hours) and that over Wald's ASN (F3 only)\n")
        print(table(report))
        print("Wald ASN (alpha = beta = 0.01), device-hours: "
              + ", ".join(f"x{t:g} {wald_asn(t, cfg):,.0f}" for t in (1.5, 2.0, 5.0)))
        res = report["results"]
        print("Ringfence halts that came from the faulty stratum: " + ", ".join(
            f"{k} {v['detectors']['ringfence']['halts_in_faulty_stratum']} of {v['detectors']['ringfence']['halted']}"
            for k, v in res.items() if "halts_in_faulty_stratum" in v["detectors"]["ringfence"]))
        print("Ringfence halts by judge: " + "; ".join(
            f"{k} {v['detectors']['ringfence']['halted_by']}" for k, v in res.items()
            if v["detectors"]["ringfence"]["halted_by"]))
        print(f"Argo tuned: threshold {report['argo_tuned_threshold']} (worst F5/F6 false-halt rate "
              f"{report['argo_tuned_false_halt_rate']:.3f}, target {report['argo_tuned_target']:.3f})")
        for name, t in headline(report, cfg)["targets"].items():
            shown = "-" if t["value"] is None else f"{t['value']:.3g}"
            print(f"target {name}: {shown} (target {t['target']}): {'met' if t['met'] else 'MISSED'}")
        print(f"cross-check against tally() and the judges: {json.dumps(check)}")
        print(f"runtime {elapsed:.1f} s on {jobs} processes")
    out = {**headline(report, cfg), "runtime_s": round(elapsed, 1), "seed": args.seed, "rollouts_per_fault": fault_runs,
           "good_rollouts": good_runs, "argo_tuned_threshold": report["argo_tuned_threshold"],
           "argo_tuned_target": report["argo_tuned_target"],
           "argo_tuned_false_halt_rate": report["argo_tuned_false_halt_rate"],
           "argo_common_threshold": ARGO_COMMON_THRESHOLD, "wald_asn_x5": wald_asn(5.0, cfg),
           "ringfence_weights": {"pooled": DEFAULT_WEIGHTS.pooled, "strata": DEFAULT_WEIGHTS.strata,
                                 "silence": DEFAULT_WEIGHTS.silence},
           "config": {"devices": cfg.devices, "small_stratum_share": cfg.small_share, "waves": cfg.waves,
                      "horizon_h": cfg.horizon_h, "baseline_rate": cfg.baseline_rate, "poll_h": cfg.poll_h,
                      "trial_h": cfg.trial_h, "trial_timeout_h": cfg.trial_timeout_h,
                      "silence_after_h": cfg.silence_after_h, "f6_silence_after_h": F6_SILENCE_AFTER_H,
                      "placebo_wait_h": cfg.placebo_wait_h,
                      "alpha": cfg.alpha},
           "validation": check, "results": report["results"]}
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

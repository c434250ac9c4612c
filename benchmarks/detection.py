"""How fast, and at what cost, each detector halts a bad rollout, and how often it halts a good one.

Seeded simulations of a 100,000-device fleet (12 strata: 3 platforms x 4 regions, one stratum
holding 5 %) taking one release in two waves, with faults F1-F6 from the issue. Every detector
sees the same simulated rollouts (same seeds): Ringfence's judges (the mixture logrank e-process
per stratum from ``ringfence.analysis.hazard`` with the silence rules of
``ringfence.analysis.tallies``, plus the silence judge), an Argo-Rollouts-style count threshold, a
Flagger-style success rate, a replica of Kayenta's NetflixACAJudge, and the oracle SPRT that knows
the true rates (the lower bound). See the "detection.py" section of benchmarks/README.md for the
model, the detectors' assumptions and what each number means.

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

from ringfence.analysis.hazard import DEFAULT_MIXTURE, logrank_log_e
from ringfence.analysis.judges import HazardRatioJudge, SilenceJudge, judge_all
from ringfence.analysis.tallies import Silence, Track, tally
from ringfence.analysis.verdicts import VerdictPhase

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
    horizon_h: float = 24.0
    waves: tuple[tuple[float, float], ...] = ((0.0, 0.01), (4.0, 0.05))  # (start hour, cumulative share)
    alpha: float = 0.01
    wald_beta: float = 0.01


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
    """Devices in stratum order; which wave (if any) each belongs to; the Kayenta baseline sample."""

    cfg: Config
    stratum: np.ndarray
    region: np.ndarray
    sizes: np.ndarray
    wave_start: np.ndarray  # hour the device's wave starts (inf: in no wave)
    baseline_sample: np.ndarray  # bool: the control devices Kayenta compares the canary with
    sham_start: np.ndarray  # --what-if: the same sample, given sham trials when each wave starts

    @classmethod
    def build(cls, cfg: Config) -> Fleet:
        n_strata = len(PLATFORMS) * len(REGIONS)
        small = round(cfg.devices * cfg.small_share)
        rest = cfg.devices - small
        sizes = np.full(n_strata, rest // (n_strata - 1))
        sizes[: rest % (n_strata - 1)] += 1
        sizes[SMALL] = small
        stratum = np.repeat(np.arange(n_strata), sizes)
        pos = np.arange(cfg.devices) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        wave_start = np.full(cfg.devices, INF)
        for start, share in reversed(cfg.waves):  # earlier waves overwrite: cumulative shares
            wave_start[pos < np.round(share * sizes[stratum])] = start
        last = np.round(cfg.waves[-1][1] * sizes[stratum])
        baseline = (pos >= last) & (pos < 2 * last)
        sham_start = np.full(cfg.devices, INF)
        for start, share in reversed(cfg.waves):
            sham_start[baseline & (pos - last < np.round(share * sizes[stratum]))] = start
        return cls(cfg, stratum, stratum % len(REGIONS), sizes, wave_start, baseline, sham_start)


# --------------------------------------------------------------------------------------------
# One simulated rollout
# --------------------------------------------------------------------------------------------
@dataclass
class World:
    """What happened to every device in one rollout, in hours since the first wave started.

    ``f`` is the true failure time; ``r`` when its report reaches the server (inf: never reported).
    ``q_*`` is the device's silence-derived failure as the server's rules see it (kind 1: no
    ``healthy`` within the trial timeout, kind 2: not heard from for ``silence_after``): it is
    counted at ``q_event`` from ``q_event`` on, until ``q_end`` (when the device is heard from
    again; inf: never)."""

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
    sham_x: np.ndarray  # --what-if: when a sham-trial device checked in for its no-op trial (inf: none)
    sham_silent: np.ndarray  # ... and whether it failed to confirm within the trial timeout
    epochs: tuple[float, ...] = ()  # times at which many silence failures clear at once (F5)
    excess_rate: float = 0.0  # the fault's added hazard once active (per hour) ...
    excess_onset: float = 0.0  # ... from this age on (hours since activation)
    details: dict[str, float] = field(default_factory=dict)


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
    starts = np.minimum(fleet.wave_start, fleet.sham_start)  # the real waves, and the sham trials (--what-if)
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
    in_out = fleet.region == outage[2]

    def delivered(t: np.ndarray) -> np.ndarray:
        """When something the device sends at ``t`` arrives (outage: at its end)."""
        return np.where(in_out & (t >= outage[0]) & (t < outage[1]), outage[1], t)

    if cycles is not None:
        x = cycles.next_contact(grid, idx)
    x = delivered(x)
    x[x > horizon] = INF
    act = x.copy()  # exposed devices, and sham-trial devices (--what-if)
    sham = np.isfinite(act) & ~in_wave
    x[sham] = INF
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
    affected = np.ones(n, dtype=bool) if fault.scope == "fleet" else fleet.stratum == SMALL
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
    h_at = np.where(failed & (f < h_at), INF, h_at)
    h_arr = h_at.copy()
    if cycles is not None:
        h_arr = cycles.next_contact(h_arr, idx)
        h_arr = h_arr + np.where(rng.random(n) < 0.05, rng.exponential(3 * MINUTE, n), 0.0)
    h_arr = delivered(h_arr)

    # silence-derived failures as the server counts them
    q_kind = np.zeros(n, dtype=np.int8)
    q_event = np.full(n, INF)
    q_end = np.full(n, INF)
    deadline = act + cfg.trial_timeout_h
    known_by = np.minimum(h_arr, r)  # no trial-timeout failure once healthy or a loud failure is known
    trial = exposed & (known_by > deadline) & (deadline <= horizon)
    q_kind[trial], q_event[trial], q_end[trial] = 1, deadline[trial], known_by[trial]
    sham_x = np.where(sham & (deadline <= horizon), act, INF)
    sham_silent = sham & (known_by > deadline)
    h_at[sham], h_arr[sham] = INF, INF
    silence_after = cfg.silence_after_h
    epochs: tuple[float, ...] = ()
    if fault.kind == "outage":
        t_out, t_back, _ = outage
        last_grid = t_out - np.mod(t_out - phi, poll)
        heard = np.maximum.reduce([last_grid, np.where(x <= t_out, x, -INF), np.where(h_arr <= t_out, h_arr, -INF),
                                   np.where(r <= t_out, r, -INF)])
        quiet = heard + silence_after
        sil = in_out & ~trial & (quiet < t_back) & ~(r < t_out)
        q_kind[sil], q_event[sil], q_end[sil] = 2, quiet[sil], t_back
        epochs = (t_back,)
        details["silenced"] = float(sil.sum())
    elif fault.kind == "cycles":
        silence_after = F6_SILENCE_AFTER_H

    requests = _requests(fleet, x, f, after_exposure, silent_death, h_arr, phi, outage, cycles, cfg)
    return World(fault, silence_after, x, f, r, dup, h_at, h_arr, q_kind, q_event, q_end, affected, requests, sham_x,
                 sham_silent, epochs, excess_rate, excess_onset, details)


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
# Ringfence: the mixture logrank e-process per stratum (looked at after every change) + silence
# --------------------------------------------------------------------------------------------
THETAS = np.array(DEFAULT_MIXTURE.thetas)
LOG_THETAS = np.log(THETAS)
LOG_WEIGHTS = np.array(DEFAULT_MIXTURE.log_weights)


@dataclass
class Records:
    """Every failure the server counts at some look: loud ones from their report on, silence-derived
    ones while they last. Event time, when it is counted from (appear) and until (end)."""

    dev: np.ndarray
    event: np.ndarray
    appear: np.ndarray
    end: np.ndarray
    exposed: np.ndarray
    stratum: np.ndarray

    @classmethod
    def of(cls, world: World, fleet: Fleet, trial_timeouts: bool = True) -> Records:
        """``trial_timeouts=False`` (--what-if): silent-after-activation is left to the sham-controlled
        silence test; a device silent since its activation fails the hazard test only by the
        ``silence_after`` rule, like any other device."""
        horizon = fleet.cfg.horizon_h
        loud = np.nonzero(world.r <= horizon)[0]
        if trial_timeouts:
            quiet = np.nonzero((world.q_kind > 0) & (world.q_event <= horizon))[0]
            q_event, q_end = world.q_event[quiet], world.q_end[quiet]
        else:
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
        return cls(dev, event, appear, end, world.x[dev] <= event, fleet.stratum[dev])


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
    kc = np.sort(s * KEY + np.where(eligible, x, depart))  # leaves control at exposure or failure
    st, at = rec.stratum[ids], rec.event[ids]
    n_e = _count_before(kx, st, at, "right") - _count_before(ke, st, at, "left")
    n_c = fleet.sizes[st] - _count_before(kc, st, at, "left")
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


def ringfence_halt(world: World, fleet: Fleet) -> Halt:
    """The judges as the engine runs them (engine/health.py): HazardRatioJudge and SilenceJudge
    on every stratum with exposure, looked at after every change; any FAILED verdict halts."""
    rec = Records.of(world, fleet)
    threshold = math.log(1 / fleet.cfg.alpha) - 1e-9
    hazard = Halt()
    for b0, b1 in itertools.pairwise(_bounds(world, fleet, rec)):
        path = epoch_path(world, fleet, rec, b0, b1)
        if path is None:
            continue
        cross = np.nonzero((path.log_e >= threshold) & path.last)[0]
        if cross.size:
            j = cross[np.argmin(path.times[cross])]
            hazard = Halt(float(path.times[j]), "hazard-ratio", int(path.strata[j]))
            break
    silence = silence_judge_halt(world, fleet)
    return silence if silence.time < hazard.time else hazard


def _exposed_arm(world: World) -> np.ndarray:
    """Exposed devices whose first failure (if any) came after the exposure: a device that failed
    before it is a control device for tally()."""
    return np.isfinite(world.x) & ~(world.f < world.x)


def silence_judge_halt(world: World, fleet: Fleet) -> Halt:
    """SilenceJudge: failed once every exposed device of a stratum counts as silent."""
    best = Halt()
    exposed = _exposed_arm(world)
    for s in range(len(fleet.sizes)):
        ids = np.nonzero(exposed & (fleet.stratum == s))[0]
        if not ids.size:
            continue
        ids = ids[np.argsort(world.x[ids])]
        quiet = world.q_kind[ids] > 0
        since = np.maximum.accumulate(np.where(quiet, world.q_event[ids], INF))
        until = np.minimum.accumulate(np.where(quiet, world.q_end[ids], -INF))
        nxt = np.append(world.x[ids][1:], INF)
        ok = np.nonzero((since < nxt) & (until > since) & (since <= fleet.cfg.horizon_h))[0]
        if ok.size and since[ok[0]] < best.time:
            best = Halt(float(since[ok[0]]), "silence", s)
    return best


def silence_failed_at(world: World, fleet: Fleet, look: float) -> set[int]:
    """Strata whose SilenceJudge is failed at one look (for the cross-check)."""
    exposed = _exposed_arm(world) & (world.x <= look)
    silent = (world.q_kind > 0) & (world.q_event <= look) & (world.q_end > look)
    return {s for s in range(len(fleet.sizes))
            if exposed[fleet.stratum == s].any() and silent[exposed & (fleet.stratum == s)].all()}


def ringfence_log_e_at(world: World, fleet: Fleet, look: float) -> np.ndarray:
    """log E per stratum at one look, from the same records and terms (for the cross-check)."""
    rec = Records.of(world, fleet)
    bounds = _bounds(world, fleet, rec)
    k = max(i for i, b in enumerate(bounds[:-1]) if b <= look)
    ids, terms = epoch_terms(world, fleet, rec, bounds[k], bounds[k + 1])
    active = (rec.appear[ids] <= look) & (rec.end[ids] > look)
    sums = np.zeros((len(fleet.sizes), len(THETAS)))
    np.add.at(sums, rec.stratum[ids][active], terms[active])
    return special.logsumexp(sums + LOG_WEIGHTS[None, :], axis=1)


# --what-if: the judges this benchmark suggests (not in src/): weights of the averaged e-processes
PROPOSED_WEIGHTS = {"pooled": 0.5, "strata": 0.4, "silence": 0.1}
E_CAP = 60.0  # log E beyond which an e-process has long crossed any threshold (keeps exp() finite)


def silence_test_path(world: World, fleet: Fleet) -> tuple[np.ndarray, np.ndarray]:
    """--what-if: silent-after-activation tested against sham trials. For every exposed device a
    control device of the same stratum and wave checks in for a no-op trial at the same point of
    the wave (the k-th exposed with the k-th sham); a pair is decided when both trial timeouts
    have passed. Under no fault, in a pair where exactly one device failed to confirm, either is
    equally likely: a sign test, mixed over the same odds ratios as the hazard test. Returns the
    decision times and log E after each."""
    wave_of = {start: i for i, (start, _) in enumerate(fleet.cfg.waves)}
    groups = []
    for mask, t in ((np.isfinite(world.x), world.x), (np.isfinite(world.sham_x), world.sham_x)):
        start = np.where(np.isfinite(fleet.wave_start), fleet.wave_start, fleet.sham_start)
        ids = np.nonzero(mask)[0]
        group = fleet.stratum[ids] * 10 + np.array([wave_of[v] for v in start[ids]], dtype=int)
        order = np.lexsort((t[ids], group))
        ids, group = ids[order], group[order]
        rank = np.arange(ids.size) - np.searchsorted(group, group, "left")
        groups.append((ids, group * 1_000_000 + rank))
    (e_ids, e_key), (s_ids, s_key) = groups
    _, ie, js = np.intersect1d(e_key, s_key, return_indices=True)
    e_ids, s_ids = e_ids[ie], s_ids[js]
    decided = np.maximum(world.x[e_ids], world.sham_x[s_ids]) + fleet.cfg.trial_timeout_h
    e_silent, s_silent = world.q_kind[e_ids] == 1, world.sham_silent[s_ids]
    use = (e_silent != s_silent) & (decided <= fleet.cfg.horizon_h)
    order = np.argsort(decided[use])
    times, label = decided[use][order], e_silent[use][order]
    steps = np.where(label[:, None], np.log(2 * THETAS / (1 + THETAS))[None, :], np.log(2 / (1 + THETAS))[None, :])
    return times, special.logsumexp(np.cumsum(steps, axis=0) + LOG_WEIGHTS[None, :], axis=1)


def proposed_halt(world: World, fleet: Fleet) -> Halt:
    """--what-if: one e-process for the whole rollout, the average of (a) the pooled stratified
    logrank (one hazard ratio for all strata: the product of the strata's partial likelihoods,
    mixed over theta), (b) the mean of the per-stratum logranks, (c) the sham-controlled silence
    test; halt when it reaches 1/alpha. An average of e-processes is one, so the false-halt rate
    of the rollout (not of each stratum) is at most alpha. Trial timeouts leave the hazard test;
    the silence judge is not used."""
    cfg = fleet.cfg
    w = PROPOSED_WEIGHTS
    k = len(fleet.sizes)
    rec = Records.of(world, fleet, trial_timeouts=False)
    sil_t, sil_log = silence_test_path(world, fleet)
    target = 1 / cfg.alpha

    def silence_e(at: np.ndarray) -> np.ndarray:
        if not sil_t.size:
            return np.ones(at.size)
        j = np.searchsorted(sil_t, at, "right") - 1
        return np.where(j >= 0, np.exp(np.minimum(sil_log[np.maximum(j, 0)], E_CAP)), 1.0)

    for b0, b1 in itertools.pairwise(_bounds(world, fleet, rec)):
        path = epoch_path(world, fleet, rec, b0, b1)
        in_epoch = (sil_t >= b0) & (sil_t < b1)
        if path is None:
            looks, pooled, strata = sil_t[in_epoch], np.ones(in_epoch.sum()), np.full(in_epoch.sum(), float(k))
        else:
            e_s = np.exp(np.minimum(path.log_e, E_CAP))
            idx = np.arange(e_s.size)
            delta = e_s - np.where(path.first == idx, 1.0, e_s[np.maximum(idx - 1, 0)])
            g = np.argsort(path.times, kind="stable")
            tg = path.times[g]
            sum_s = k + np.cumsum(delta[g])
            pool = np.exp(np.minimum(special.logsumexp(np.cumsum(path.values[g], axis=0) + LOG_WEIGHTS, axis=1), E_CAP))
            last = np.append(tg[1:] != tg[:-1], True)
            tg, sum_s, pool = tg[last], sum_s[last], pool[last]
            extra = sil_t[in_epoch]
            j = np.searchsorted(tg, extra, "right") - 1
            looks = np.concatenate([tg, extra])
            pooled = np.concatenate([pool, np.where(j >= 0, pool[np.maximum(j, 0)], 1.0)])
            strata = np.concatenate([sum_s, np.where(j >= 0, sum_s[np.maximum(j, 0)], float(k))])
        combined = w["pooled"] * pooled + w["strata"] * strata / k + w["silence"] * silence_e(looks)
        hit = np.nonzero(combined >= target)[0]
        if hit.size:
            j = hit[np.argmin(looks[hit])]
            parts = {"pooled": w["pooled"] * pooled[j], "strata": w["strata"] * strata[j] / k,
                     "silence": w["silence"] * float(silence_e(looks[j:j + 1])[0])}
            return Halt(float(looks[j]), max(parts, key=lambda name: parts[name]))
    return Halt()


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
    x, f = world.x, world.f
    exposed = _exposed_arm(world) & (x < halt)
    failed = int((exposed & (f >= x) & (f < halt)).sum())
    loud = (world.r <= halt) & (x <= f)  # the report that decides the halt included
    quiet = (world.q_kind > 0) & (world.q_event <= halt) & (world.q_end > halt) & (x <= world.q_event)
    hours = np.clip(np.minimum(halt, f) - x, 0.0, None)
    return {"failed": failed, "observed": int((loud | quiet).sum()), "exposed": int(exposed.sum()),
            "exposure": float(hours[exposed & world.affected].sum())}


# --------------------------------------------------------------------------------------------
# Cross-check against the real code path: Track -> tally() -> logrank_log_e / judges
# --------------------------------------------------------------------------------------------
def tracks_at(world: World, fleet: Fleet, look: float, base: datetime) -> list[Track]:
    """What the server's store would hand the judges at ``look`` (see store/health.py)."""

    def when(hours: float) -> datetime:
        return base + timedelta(hours=float(hours))

    tracks = []
    for i in range(fleet.cfg.devices):
        silent = world.q_kind[i] == 2 and world.q_event[i] <= look < world.q_end[i]
        dead = world.q_kind[i] == 1 and not np.isfinite(world.q_end[i])  # boot loop: last heard at the intent
        heard = world.q_event[i] - world.silence_after_h if silent else (world.x[i] if dead else look)
        tracks.append(Track(
            device_id=f"d{i}", stratum=f"s{fleet.stratum[i]:02d}", since=base,
            exposed_at=when(world.x[i]) if world.x[i] <= look else None,
            healthy_at=when(world.h_at[i]) if world.h_arr[i] <= look else None,
            last_heard=when(heard), failed_at=when(world.f[i]) if world.r[i] <= look else None,
            failure="crash" if world.r[i] <= look else ""))
    return tracks


def validate(seed: int, rollouts: int, looks: int) -> dict[str, Any]:
    """On a small fleet (3,000 devices, 10x the failure rate so every stratum has failures),
    compare log E per stratum from this file's vectorised records with tally() + logrank_log_e at
    several looks, and the judges' FAILED verdicts with this file's halting rules."""
    cfg = Config(devices=3000, baseline_rate=0.01, waves=((0.0, 0.05), (4.0, 0.2)))
    fleet = Fleet.build(cfg)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    out: dict[str, Any] = {}
    threshold = math.log(1 / cfg.alpha)
    for fault in (f for f in FAULTS if f.key in ("F2", "F3-x5", "F5", "F6")):
        worst, disagree, compared, silence_disagree, silence_failed = 0.0, 0, 0, 0, 0
        for i in range(rollouts):
            world = simulate(fleet, fault, np.random.default_rng([seed, 99, i]))
            silence = Silence(timedelta(hours=cfg.trial_timeout_h), timedelta(hours=world.silence_after_h))
            for look in np.linspace(0.4, cfg.horizon_h - 0.1, looks):
                mine = ringfence_log_e_at(world, fleet, float(look))
                data = tally(tracks_at(world, fleet, float(look), base), base + timedelta(hours=float(look)), silence)
                verdicts = judge_all(data.values(), [HazardRatioJudge(alpha=cfg.alpha, limit=None), SilenceJudge()])
                failed = {v.stratum for v in verdicts if v.phase is VerdictPhase.FAILED and v.judge == "hazard-ratio"}
                silent = {v.stratum for v in verdicts if v.phase is VerdictPhase.FAILED and v.judge == "silence"}
                mine_silent = {f"s{x:02d}" for x in silence_failed_at(world, fleet, float(look))}
                silence_disagree += len(silent ^ mine_silent)
                silence_failed += len(silent)
                for name, stratum_data in data.items():
                    if not stratum_data.exposed.devices:
                        continue
                    s = int(name[1:])
                    theirs = logrank_log_e(stratum_data.steps)
                    worst = max(worst, abs(theirs - float(mine[s])))
                    disagree += (name in failed) != bool(mine[s] >= threshold)
                    compared += 1
        out[fault.key] = {"stratum_looks": compared, "max_abs_log_e_diff": worst, "verdict_disagreements": disagree,
                          "silence_failed_verdicts": silence_failed, "silence_disagreements": silence_disagree}
    return out


# --------------------------------------------------------------------------------------------
# Running the faults
# --------------------------------------------------------------------------------------------
ARGO_THRESHOLDS = tuple(range(1, 41))


def run_chunk(task: tuple[Config, int, int, int, int, bool]) -> dict[str, Any]:
    """Rollouts [lo, hi) of one fault; every detector on the same worlds (seed = seed, fault, run)."""
    cfg, fault_index, lo, hi, seed, what_if = task
    np.seterr(invalid="ignore", over="ignore")
    fleet = Fleet.build(cfg)
    fault = FAULTS[fault_index]
    names = ["ringfence", "flagger", "kayenta", "oracle-sprt"] + (["proposed"] if what_if else [])
    rows: dict[str, list[Any]] = {k: [] for k in names}
    argo: list[list[tuple[float, dict[str, float]]]] = []
    by: dict[str, list[str]] = {"ringfence": [], "proposed": []}
    where: list[int] = []
    for i in range(lo, hi):
        world = simulate(fleet, fault, np.random.default_rng([seed, fault_index, i]))
        series = Series.of(world, fleet)
        halts = {"ringfence": ringfence_halt(world, fleet), "flagger": flagger_halt(series),
                 "kayenta": kayenta_halt(series), "oracle-sprt": oracle_halt(world, fleet)}
        if what_if:
            halts["proposed"] = proposed_halt(world, fleet)
            by["proposed"].append(halts["proposed"].by)
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


def run(cfg: Config, fault_runs: int, good_runs: int, seed: int, jobs: int, what_if: bool,
        progress: Callable[[str], None]) -> dict[int, dict[str, Any]]:
    tasks = []
    for fi, fault in enumerate(FAULTS):
        runs = good_runs if fault.good else fault_runs
        step = max(1, math.ceil(runs / (4 * jobs)))
        tasks += [(cfg, fi, lo, min(lo + step, runs), seed, what_if) for lo in range(0, runs, step)]
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
        if "proposed" in m["rows"]:
            per["proposed"] = summarise(m["rows"]["proposed"], fault, cfg)
        for name in ("ringfence", "proposed"):
            by = [b for b in m["by"][name] if b]
            if name in per:
                per[name]["halted_by"] = {judge: by.count(judge) for judge in sorted(set(by))}
        if fault.scope == "stratum":
            halted = [s for (t, _), s in zip(m["rows"]["ringfence"], m["where"], strict=True) if t <= cfg.horizon_h]
            per["ringfence"]["halts_in_faulty_stratum"] = sum(s == SMALL for s in halted)
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
    parser.add_argument("--what-if", action="store_true",
                        help="also run the judges this benchmark proposes (not in src/; row 'proposed')")
    args = parser.parse_args(argv)

    cfg = Config()
    fault_runs = args.rollouts or (200 if args.quick else 1000)
    good_runs = max(fault_runs, 1000)
    jobs = args.jobs or os.cpu_count() or 1
    started = time.perf_counter()

    def progress(text: str) -> None:
        if not args.json:
            print(f"\r[{time.perf_counter() - started:6.1f}s] {text}", end="", file=sys.stderr, flush=True)

    np.seterr(invalid="ignore", over="ignore")
    check = validate(args.seed, rollouts=1, looks=6 if args.quick else 12)
    merged = run(cfg, fault_runs, good_runs, args.seed, jobs, args.what_if, progress)
    report = assemble(cfg, merged)
    elapsed = time.perf_counter() - started
    if not args.json:
        print(file=sys.stderr)
        print(f"Detection benchmark: {cfg.devices:,} devices, 12 strata (one holding {cfg.small_share:.0%}), waves "
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
        print(f"cross-check against tally()/logrank_log_e: {json.dumps(check)}")
        print(f"runtime {elapsed:.1f} s on {jobs} processes")
    out = {**headline(report, cfg), "runtime_s": round(elapsed, 1), "seed": args.seed, "rollouts_per_fault": fault_runs,
           "good_rollouts": good_runs, "argo_tuned_threshold": report["argo_tuned_threshold"],
           "argo_tuned_target": report["argo_tuned_target"],
           "argo_tuned_false_halt_rate": report["argo_tuned_false_halt_rate"],
           "argo_common_threshold": ARGO_COMMON_THRESHOLD, "wald_asn_x5": wald_asn(5.0, cfg),
           "what_if_weights": PROPOSED_WEIGHTS if args.what_if else None,
           "config": {"devices": cfg.devices, "small_stratum_share": cfg.small_share, "waves": cfg.waves,
                      "horizon_h": cfg.horizon_h, "baseline_rate": cfg.baseline_rate, "poll_h": cfg.poll_h,
                      "trial_h": cfg.trial_h, "trial_timeout_h": cfg.trial_timeout_h,
                      "silence_after_h": cfg.silence_after_h, "f6_silence_after_h": F6_SILENCE_AFTER_H,
                      "alpha": cfg.alpha},
           "validation": check, "results": report["results"]}
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

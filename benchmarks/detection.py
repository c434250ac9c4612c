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
CRASH_ON_LOAD_MEAN_H = 20 * SECOND  # F1: time from activation to the crash
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
        return cls(cfg, stratum, stratum % len(REGIONS), sizes, wave_start, baseline)


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
    grid = np.where(in_wave, fleet.wave_start + np.mod(phi - fleet.wave_start, poll), INF)
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
        x = np.where(in_wave, cycles.next_contact(grid, idx), INF)
    x = delivered(x)
    x[x > horizon] = INF
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
    if fault.kind == "crash-on-load":
        g = rng.exponential(CRASH_ON_LOAD_MEAN_H, n)
        excess_rate = 1 / CRASH_ON_LOAD_MEAN_H
    elif fault.kind == "silent":
        g = rng.uniform(5 * SECOND, 30 * SECOND, n)
        excess_rate = 1 / (17.5 * SECOND)
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
    h_at = np.where(exposed & ~silent_death, x + cfg.trial_h, INF)
    if cycles is not None:  # a workstation switched off mid-trial finishes the trial after waking
        ex = np.nonzero(exposed)[0]
        off = cycles.next_off(x[ex], ex)
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
    deadline = x + cfg.trial_timeout_h
    known_by = np.minimum(h_arr, r)  # no trial-timeout failure once healthy or a loud failure is known
    trial = exposed & (known_by > deadline) & (deadline <= horizon)
    q_kind[trial], q_event[trial], q_end[trial] = 1, deadline[trial], known_by[trial]
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
    return World(fault, silence_after, x, f, r, dup, h_at, h_arr, q_kind, q_event, q_end, affected, requests, epochs,
                 excess_rate, excess_onset, details)


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
    def of(cls, world: World, fleet: Fleet) -> Records:
        horizon = fleet.cfg.horizon_h
        loud = np.nonzero(world.r <= horizon)[0]
        quiet = np.nonzero((world.q_kind > 0) & (world.q_event <= horizon))[0]
        dev = np.concatenate([loud, quiet])
        event = np.concatenate([world.f[loud], world.q_event[quiet]])
        appear = np.concatenate([world.r[loud], world.q_event[quiet]])
        end = np.concatenate([np.full(loud.size, INF), world.q_end[quiet]])
        return cls(dev, event, appear, end, world.x[dev] <= event, fleet.stratum[dev])


def _count_before(keys: np.ndarray, stratum: np.ndarray, at: np.ndarray, side: str) -> np.ndarray:
    """How many sorted ``keys`` of each query's stratum lie before its time (``side`` as numpy's)."""
    return np.searchsorted(keys, stratum * KEY + at, side) - np.searchsorted(keys, stratum * KEY, "left")


def epoch_terms(world: World, fleet: Fleet, rec: Records, b0: float, b1: float) -> tuple[np.ndarray, np.ndarray]:
    """Log likelihood-ratio terms (one row per failure record counted during [b0, b1), one column
    per theta of the mixture), each scored with the risk sets just before it (failing devices
    included). Risk sets come from the failures counted at some point of the epoch: exact while
    failures are only added; a report still in flight, or a silence failure cleared within the
    epoch, shifts them by that one device (see README)."""
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


def ringfence_halt(world: World, fleet: Fleet) -> Halt:
    cfg = fleet.cfg
    rec = Records.of(world, fleet)
    threshold = math.log(1 / cfg.alpha) - 1e-9
    bounds = [0.0, *world.epochs, cfg.horizon_h + 1e-6]
    hazard = Halt()
    for b0, b1 in itertools.pairwise(bounds):
        ids, terms = epoch_terms(world, fleet, rec, b0, b1)
        if not ids.size:
            continue
        start = np.maximum(rec.appear[ids], b0)
        end = rec.end[ids]
        gone = end < b1
        times = np.concatenate([start, end[gone]])
        values = np.concatenate([terms, -terms[gone]])
        strata = np.concatenate([rec.stratum[ids], rec.stratum[ids][gone]])
        keys = strata * KEY + times
        order = np.argsort(keys, kind="stable")
        keys, strata, times = keys[order], strata[order], times[order]
        sums = np.cumsum(values[order], axis=0)
        first = np.searchsorted(strata, strata, "left")
        sums -= np.where((first > 0)[:, None], sums[np.maximum(first - 1, 0)], 0.0)
        log_e = special.logsumexp(sums + LOG_WEIGHTS[None, :], axis=1)
        last = np.append(keys[1:] != keys[:-1], True)  # look once every change at that moment is in
        cross = np.nonzero((log_e >= threshold) & last & (times <= cfg.horizon_h))[0]
        if cross.size:
            j = cross[np.argmin(times[cross])]
            hazard = Halt(float(times[j]), "hazard-ratio", int(strata[j]))
            break
    silence = silence_judge_halt(world, fleet)
    return silence if silence.time < hazard.time else hazard


def silence_judge_halt(world: World, fleet: Fleet) -> Halt:
    """SilenceJudge: failed once every exposed device of a stratum counts as silent."""
    best = Halt()
    exposed = np.isfinite(world.x)
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


def ringfence_log_e_at(world: World, fleet: Fleet, look: float) -> np.ndarray:
    """log E per stratum at one look, from the same records and terms (for the cross-check)."""
    rec = Records.of(world, fleet)
    bounds = [0.0, *world.epochs, fleet.cfg.horizon_h + 1e-6]
    k = max(i for i, b in enumerate(bounds[:-1]) if b <= look)
    ids, terms = epoch_terms(world, fleet, rec, bounds[k], bounds[k + 1])
    active = (rec.appear[ids] <= look) & (rec.end[ids] > look)
    sums = np.zeros((len(fleet.sizes), len(THETAS)))
    np.add.at(sums, rec.stratum[ids][active], terms[active])
    return special.logsumexp(sums + LOG_WEIGHTS[None, :], axis=1)


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
    exposed = x < halt
    failed = int((exposed & (f >= x) & (f < halt)).sum())
    loud = (world.r < halt) & (x <= f)
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
        worst, disagree, compared = 0.0, 0, 0
        for i in range(rollouts):
            world = simulate(fleet, fault, np.random.default_rng([seed, 99, i]))
            silence = Silence(timedelta(hours=cfg.trial_timeout_h), timedelta(hours=world.silence_after_h))
            for look in np.linspace(0.4, cfg.horizon_h - 0.1, looks):
                mine = ringfence_log_e_at(world, fleet, float(look))
                data = tally(tracks_at(world, fleet, float(look), base), base + timedelta(hours=float(look)), silence)
                verdicts = judge_all(data.values(), [HazardRatioJudge(alpha=cfg.alpha, limit=None), SilenceJudge()])
                failed = {v.stratum for v in verdicts if v.phase is VerdictPhase.FAILED and v.judge == "hazard-ratio"}
                for name, stratum_data in data.items():
                    if not stratum_data.exposed.devices:
                        continue
                    s = int(name[1:])
                    theirs = logrank_log_e(stratum_data.steps)
                    worst = max(worst, abs(theirs - float(mine[s])))
                    disagree += (name in failed) != bool(mine[s] >= threshold)
                    compared += 1
        out[fault.key] = {"stratum_looks": compared, "max_abs_log_e_diff": worst, "verdict_disagreements": disagree}
    return out


# --------------------------------------------------------------------------------------------
# Running the faults
# --------------------------------------------------------------------------------------------
DETECTORS = ("ringfence", "argo-common", "argo-tuned", "flagger", "kayenta", "oracle-sprt")
ARGO_THRESHOLDS = tuple(range(1, 16))


def run_chunk(task: tuple[Config, int, int, int, int]) -> dict[str, Any]:
    """Rollouts [lo, hi) of one fault; every detector on the same worlds (seed = seed, fault, run)."""
    cfg, fault_index, lo, hi, seed = task
    fleet = Fleet.build(cfg)
    fault = FAULTS[fault_index]
    rows: dict[str, list[Any]] = {k: [] for k in ("ringfence", "flagger", "kayenta", "oracle-sprt")}
    argo: list[list[tuple[float, dict[str, float]]]] = []
    by: list[str] = []
    for i in range(lo, hi):
        world = simulate(fleet, fault, np.random.default_rng([seed, fault_index, i]))
        series = Series.of(world, fleet)
        halts = {"ringfence": ringfence_halt(world, fleet), "flagger": flagger_halt(series),
                 "kayenta": kayenta_halt(series), "oracle-sprt": oracle_halt(world, fleet)}
        by.append(halts["ringfence"].by)
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
    return {"fault": fault_index, "rows": rows, "argo": argo, "by": by}


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
        progress: Callable[[str], None]) -> dict[str, Any]:
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
    for part in sorted(parts, key=lambda p: p["fault"]):
        m = merged.setdefault(part["fault"], {"rows": {k: [] for k in part["rows"]}, "argo": [], "by": []})
        for k, v in part["rows"].items():
            m["rows"][k] += v
        m["argo"] += part["argo"]
        m["by"] += part["by"]
    return merged


def assemble(cfg: Config, merged: dict[int, dict[str, Any]]) -> dict[str, Any]:
    good = [fi for fi, f in enumerate(FAULTS) if f.good]
    rf_false = max(summarise(merged[fi]["rows"]["ringfence"], FAULTS[fi], cfg)["halt_rate"] for fi in good)

    def argo_rows(fi: int, k: int) -> list[tuple[float, dict[str, float]]]:
        return [per_k[ARGO_THRESHOLDS.index(k)] for per_k in merged[fi]["argo"]]

    def argo_false(k: int) -> float:
        return max(float(np.mean([t <= cfg.horizon_h for t, _ in argo_rows(fi, k)])) for fi in good)

    tuned = next((k for k in ARGO_THRESHOLDS if argo_false(k) <= rf_false), ARGO_THRESHOLDS[-1])
    results: dict[str, Any] = {}
    for fi, fault in enumerate(FAULTS):
        m = merged[fi]
        per = {"ringfence": summarise(m["rows"]["ringfence"], fault, cfg),
               "argo-common": summarise(argo_rows(fi, ARGO_COMMON_THRESHOLD), fault, cfg),
               "argo-tuned": summarise(argo_rows(fi, tuned), fault, cfg),
               "flagger": summarise(m["rows"]["flagger"], fault, cfg),
               "kayenta": summarise(m["rows"]["kayenta"], fault, cfg),
               "oracle-sprt": summarise(m["rows"]["oracle-sprt"], fault, cfg)}
        by = [b for b in m["by"] if b]
        per["ringfence"]["halted_by"] = {name: by.count(name) for name in sorted(set(by))}
        results[fault.key] = {"label": fault.label, "detectors": per}
    return {"results": results, "argo_tuned_threshold": tuned, "argo_common_threshold": ARGO_COMMON_THRESHOLD,
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
    merged = run(cfg, fault_runs, good_runs, args.seed, jobs, progress)
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
        for key in ("F3-x5", "F3-x5-s"):
            theta = next(f.theta for f in FAULTS if f.key == key)
            print(f"Wald ASN for x{theta:g} (alpha = beta = {cfg.alpha}): {wald_asn(theta, cfg):,.0f} device-hours")
        print(f"cross-check against tally()/logrank_log_e: {json.dumps(check)}")
        print(f"runtime {elapsed:.1f} s on {jobs} processes")
    out = {**headline(report, cfg), "runtime_s": round(elapsed, 1), "seed": args.seed, "rollouts_per_fault": fault_runs,
           "good_rollouts": good_runs, "argo_tuned_threshold": report["argo_tuned_threshold"],
           "argo_common_threshold": ARGO_COMMON_THRESHOLD, "wald_asn_x5": wald_asn(5.0, cfg),
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

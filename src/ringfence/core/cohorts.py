"""Cohorts: which devices a wave reaches, deterministically and within its caps.

Invariants (property-tested in ``tests/unit/test_cohorts.py``):

* **Stable membership.** ``bucket(salt, device)`` is a pure hash in [0, 1); a device's place in
  the queue of a rollout never changes, and a device once admitted stays exposed (the caller
  keeps admissions; waves are cumulative).
* **Monotone growth.** With the same population and admissions, everything admissible at wave k
  is admissible at wave k + 1.
* **Never above a cap.** ``max_devices`` caps the devices a wave *adds*, in total and per
  stratum. Caps become bucket thresholds from the stratum counts (so the right devices are
  asked), and :func:`admit` checks the admission counters (so chance, late joiners and a
  changing fleet can never push a wave past its cap).
* **Late joiners** land in the first wave they would have been in, unless that wave's cap is
  already full; then in the next wave that has room.
* **Canary before crowd.** A stratum with fewer confirmed-healthy devices than its canary asks
  for gets no more devices in the later waves than its canary adds (:func:`canary_limit`)
  — a region or platform that was offline or empty during the canary is canaried when it
  appears, not exposed in bulk.
* **In-flight window.** At most the current wave's ``max_in_trial`` devices of a stratum are
  exposed with an undecided trial at once; more are admitted as earlier trials are decided.

A total cap is spread over every stratum the wave reaches (water-filling: equal shares, a
stratum with fewer devices gives its unused share to the others), so a canary of 100 devices
touches every platform x region instead of the largest one.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ringfence.core.models import DeviceAttributes, stratum_key
from ringfence.core.plan import Plan, Wave

_SCALE = float(1 << 53)  # a double holds 53 bits exactly: k / 2**53 < 1 for every k < 2**53


def bucket(salt: str, device_id: str) -> float:
    """The device's position in the rollout's queue: a uniform, stable value in [0, 1)."""
    digest = hashlib.blake2b(f"{salt}\x00{device_id}".encode(), digest_size=8).digest()
    return _fraction(int.from_bytes(digest, "big"))


def _fraction(value: int) -> float:
    """Map a 64-bit integer to [0, 1). Dividing all 64 bits by 2**64 would round the largest
    values up to exactly 1.0 (above any threshold, even share 1.0); keep the top 53 bits."""
    return (value >> 11) / _SCALE


@dataclass(frozen=True, slots=True)
class WaveCohort:
    """One wave turned into numbers for the current fleet.

    ``thresholds``: stratum -> bucket bound (a device below it is asked to join).
    ``default_threshold``: for a stratum that did not exist when the table was built.
    ``stratum_caps``: stratum -> devices this wave may add there (None: no cap).
    ``total_cap``: devices this wave may add in all (None: no cap).
    ``added``: stratum -> devices this wave is expected to add (those its bound asks that earlier
    waves do not, within its caps); a wave that adds nobody anywhere has nobody new to prove on.
    """

    thresholds: Mapping[str, float]
    default_threshold: float
    stratum_caps: Mapping[str, int] | None
    total_cap: int | None
    added: Mapping[str, int] = field(default_factory=dict)

    def threshold(self, stratum: str) -> float:
        return self.thresholds.get(stratum, self.default_threshold)

    def cap(self, stratum: str) -> int | None:
        if self.stratum_caps is None:
            return None
        return self.stratum_caps.get(stratum, 0)


def cohort_table(plan: Plan, population: Mapping[DeviceAttributes, int]) -> tuple[WaveCohort, ...]:
    """Turn every wave of ``plan`` into thresholds and per-stratum caps for ``population`` (a
    count of devices per distinct attribute set; a fleet of millions has only thousands)."""
    groups = [
        (attrs, n, stratum_key(attrs, plan.strata), tuple(w.selector.matches(attrs) for w in plan.waves))
        for attrs, n in population.items() if n > 0
    ]
    table: list[WaveCohort] = []
    for index, wave in enumerate(plan.waves):
        # Per stratum: (devices, bucket bound below which an earlier wave already asks them).
        reach: dict[str, list[tuple[int, float]]] = {}
        for _, n, key, matches in groups:
            if matches[index]:
                taken = max((table[j].threshold(key) for j in range(index) if matches[j]), default=0.0)
                reach.setdefault(key, []).append((n, taken))
        table.append(_wave_cohort(wave, reach))
    return tuple(table)


def _wave_cohort(wave: Wave, reach: Mapping[str, list[tuple[int, float]]]) -> WaveCohort:
    share = wave.share if wave.share is not None else 1.0
    # A cap counts the devices this wave *adds*: those earlier waves do not already ask.
    expected = {key: sum(n * max(0.0, share - taken) for n, taken in group) for key, group in reach.items()}
    if not wave.cap.is_set:
        return WaveCohort(thresholds=dict.fromkeys(reach, share), default_threshold=share, stratum_caps=None,
                          total_cap=None, added={key: math.ceil(n - 1e-9) for key, n in expected.items()})
    available = {key: int(n) for key, n in expected.items()}
    caps = _allot(wave.cap.total, wave.cap.per_stratum, available)
    thresholds = {key: min(share, _cap_threshold(caps[key], group)) for key, group in reach.items()}
    # A stratum that appears after the table was built waits for the next table (its allotment
    # is unknown).
    return WaveCohort(thresholds=thresholds, default_threshold=0.0, stratum_caps=caps, total_cap=wave.cap.total,
                      added={key: min(caps[key], available[key]) for key in reach})


def _cap_threshold(cap: int, group: list[tuple[int, float]]) -> float:
    """The bucket bound that asks slightly more than ``cap`` new devices (three standard
    deviations of the binomial, so the cap fills despite chance; admission clips the rest).

    ``group`` lists (devices, bound already asked by earlier waves); a bound ``t`` asks
    ``sum(n * max(0, t - taken))`` new devices, a piecewise-linear, increasing function of ``t``
    that is solved exactly.
    """
    if cap <= 0:
        return 0.0
    target = cap + 3.0 * math.sqrt(cap) + 1.0
    asked, slope, at = 0.0, 0, 0.0
    for n, taken in sorted(group, key=lambda g: g[1]):
        if slope and asked + slope * (taken - at) >= target:
            break
        asked += slope * (taken - at)
        at, slope = taken, slope + n
    if slope == 0:
        return 1.0
    return min(1.0, at + (target - asked) / slope)


def _allot(total: int | None, per_stratum: int | None, counts: Mapping[str, int]) -> dict[str, int]:
    """Spread ``total`` over strata by water-filling, never above ``per_stratum`` or a stratum's
    own device count. Deterministic: strata are served in sorted order."""
    limit = {k: min(n, per_stratum) if per_stratum is not None else n for k, n in counts.items()}
    if total is None:
        return {k: (per_stratum if per_stratum is not None else n) for k, n in counts.items()}
    allotted = dict.fromkeys(counts, 0)
    remaining = total
    open_keys = sorted(k for k in counts if limit[k] > 0)
    while remaining > 0 and open_keys:
        share = max(1, remaining // len(open_keys))
        still_open = []
        for key in open_keys:
            if remaining == 0:
                break
            give = min(share, limit[key] - allotted[key], remaining)
            allotted[key] += give
            remaining -= give
            if allotted[key] < limit[key]:
                still_open.append(key)
        open_keys = still_open
    return allotted


def canary_limit(table: tuple[WaveCohort, ...], stratum: str) -> tuple[int, int]:
    """The stratum's canary: the first wave that adds devices there, and how many. Until that
    many of them (or the wave's ``min_healthy``, if fewer) confirmed health, the stratum gets no
    more devices in all than its canary adds, whichever later wave admits them — so a region or
    platform that was offline or empty while the canary ran is canaried when it appears. A
    stratum no wave adds to yet (it appeared after the table was built) gets one device."""
    for index, cohort in enumerate(table):
        size = cohort.added.get(stratum, 0)
        if size > 0:
            return index, size
    return 0, 1


@dataclass(frozen=True, slots=True)
class TrialLimits:
    """What holds a stratum's admissions back besides the caps: ``window`` devices in trial at
    once (None: no window), and — until ``canary_healthy`` of them confirmed health — no more
    than ``canary_size`` devices in all."""

    window: int | None
    canary_size: int
    canary_healthy: int


def trial_limits(plan: Plan, table: tuple[WaveCohort, ...], stratum: str, current_wave: int) -> TrialLimits:
    """The in-flight window of the current wave and the stratum's canary (see :func:`admit`);
    the store checks the same limits again when several nodes admit."""
    current = plan.waves[min(current_wave, len(plan.waves) - 1)]
    canary, size = canary_limit(table, stratum)
    return TrialLimits(current.gates.max_in_trial, size, min(plan.waves[canary].gates.min_healthy, size))


@dataclass(frozen=True, slots=True)
class Admissions:
    """Read-only view of who a rollout has admitted so far: per (wave, stratum) and per wave;
    per stratum, admitted devices whose trial is still undecided (``in_trial``) and devices that
    confirmed health (``healthy``)."""

    by_stratum: Mapping[tuple[int, str], int]
    by_wave: Mapping[int, int]
    in_trial: Mapping[str, int] = field(default_factory=dict)
    healthy: Mapping[str, int] = field(default_factory=dict)


def admit(
    plan: Plan,
    table: tuple[WaveCohort, ...],
    attrs: DeviceAttributes,
    position: float,
    current_wave: int,
    admissions: Admissions,
) -> int | None:
    """The wave (index <= ``current_wave``) a not-yet-exposed device joins now, or None.

    The caller records the admission before it hands out the version, so the counters it passes
    next time include this device. Besides the caps, the current wave's in-flight window and the
    canary-before-crowd limit apply (see the module's invariants).
    """
    key = stratum_key(attrs, plan.strata)
    limits = trial_limits(plan, table, key, current_wave)
    if limits.window is not None and admissions.in_trial.get(key, 0) >= limits.window:
        return None  # wait until earlier trials are decided
    unproven = admissions.healthy.get(key, 0) < limits.canary_healthy
    if unproven and sum(n for (_, k), n in admissions.by_stratum.items() if k == key) >= limits.canary_size:
        return None  # not canaried yet: no crowd before a confirmation, whichever wave would take it
    for index in range(min(current_wave, len(plan.waves) - 1) + 1):
        wave = plan.waves[index]
        cohort = table[index]
        if not wave.selector.matches(attrs) or position >= cohort.threshold(key):
            continue
        cap = cohort.cap(key)
        if cap is not None and admissions.by_stratum.get((index, key), 0) >= cap:
            continue
        if cohort.total_cap is not None and admissions.by_wave.get(index, 0) >= cohort.total_cap:
            continue
        return index
    return None

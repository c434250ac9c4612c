"""Simulated hosts as arrays: who they are, when they are on, when they check in.

A fleet of millions is a handful of numpy arrays, one entry per host: platform, OS version,
architecture, region, tenant, whether it is one of the vendor's own (``internal``) machines, whether it is a
workstation (on during the local working day, asleep at night) or a server (always on), its
check-in interval and phase, and its place in a rollout's queue (``bucket``, uniform in [0, 1):
the server's blake2b bucket has this distribution, and the simulator needs no per-host hashing).

Time is seconds since the scenario starts, as float64. Every function takes an index array and
works on all those hosts at once; nothing loops over hosts in Python.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from ringfence.core.models import DeviceAttributes

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

HOUR = 3600.0
DAY = 24 * HOUR


@dataclass(frozen=True, slots=True)
class PlatformSpec:
    hosts: int
    os_versions: dict[str, float]  # version -> share of the platform's hosts
    workstation_share: float  # on during the local working day only; the rest are always on
    arches: dict[str, float] = field(default_factory=lambda: {"x86_64": 1.0})  # architecture -> share


@dataclass(frozen=True, slots=True)
class RegionSpec:
    name: str
    share: float  # of every platform's hosts
    utc_offset_h: float  # for the working day


@dataclass(frozen=True, slots=True)
class FleetSpec:
    platforms: dict[str, PlatformSpec]
    regions: tuple[RegionSpec, ...]
    tenants: int = 200
    internal_hosts: int = 200  # the vendor's own machines (tag ``internal``), spread like the rest
    poll_median_s: float = 300.0  # check-in interval: log-normal around this median ...
    poll_sigma: float = 0.3  # ... with this shape, clipped to [poll_min_s, poll_max_s]
    poll_min_s: float = 60.0
    poll_max_s: float = 3600.0
    day_start_h: float = 8.0  # workstations switch on around this local hour (+- 1.5 h) ...
    day_length_h: tuple[float, float] = (9.0, 13.0)  # ... and stay on this long (uniform)

    @property
    def hosts(self) -> int:
        return sum(p.hosts for p in self.platforms.values())


@dataclass(slots=True)
class Fleet:
    """One entry per host in every array. ``names`` map the small integer codes back."""

    spec: FleetSpec
    start_utc_h: float  # the UTC hour at which the scenario starts (t = 0)
    platform: npt.NDArray[np.int8]
    os: npt.NDArray[np.int16]
    arch: npt.NDArray[np.int8]
    region: npt.NDArray[np.int8]
    tenant: npt.NDArray[np.int32]
    internal: Bools
    workstation: Bools
    on_start_h: npt.NDArray[np.float32]
    on_length_h: npt.NDArray[np.float32]
    poll_s: Floats
    phase_s: Floats
    bucket: Floats
    platforms: tuple[str, ...]
    os_names: tuple[str, ...]
    arch_names: tuple[str, ...]
    regions: tuple[str, ...]
    offsets_h: Floats
    outages: list[tuple[int, float, float]] = field(default_factory=list)  # (region, from, until)

    @property
    def size(self) -> int:
        return int(self.platform.size)

    @classmethod
    def build(cls, spec: FleetSpec, rng: np.random.Generator, start_utc_h: float = 0.0) -> Fleet:
        platforms = tuple(spec.platforms)
        os_names = tuple(sorted({v for p in spec.platforms.values() for v in p.os_versions}))
        arch_names = tuple(sorted({a for p in spec.platforms.values() for a in p.arches}))
        regions = tuple(r.name for r in spec.regions)
        shares = np.array([r.share for r in spec.regions], dtype=float)
        shares = shares / shares.sum()
        parts_platform, parts_os, parts_ws, parts_arch = [], [], [], []
        for code, name in enumerate(platforms):
            p = spec.platforms[name]
            parts_platform.append(np.full(p.hosts, code, dtype=np.int8))
            versions = list(p.os_versions)
            weights = np.array([p.os_versions[v] for v in versions], dtype=float)
            codes = np.array([os_names.index(v) for v in versions], dtype=np.int16)
            parts_os.append(codes[rng.choice(len(versions), size=p.hosts, p=weights / weights.sum())])
            parts_ws.append(rng.random(p.hosts) < p.workstation_share)
            arches = list(p.arches)
            arch_weights = np.array([p.arches[a] for a in arches], dtype=float)
            arch_codes = np.array([arch_names.index(a) for a in arches], dtype=np.int8)
            parts_arch.append(arch_codes[rng.choice(len(arches), size=p.hosts, p=arch_weights / arch_weights.sum())])
        n = spec.hosts
        platform = np.concatenate(parts_platform) if parts_platform else np.zeros(0, dtype=np.int8)
        os_codes = np.concatenate(parts_os) if parts_os else np.zeros(0, dtype=np.int16)
        workstation = np.concatenate(parts_ws) if parts_ws else np.zeros(0, dtype=bool)
        arch = np.concatenate(parts_arch) if parts_arch else np.zeros(0, dtype=np.int8)
        region = rng.choice(len(regions), size=n, p=shares).astype(np.int8)
        tenant = rng.integers(0, max(spec.tenants, 1), size=n).astype(np.int32)
        internal = np.zeros(n, dtype=bool)
        if spec.internal_hosts:
            internal[rng.choice(n, size=min(spec.internal_hosts, n), replace=False)] = True
        poll = np.clip(spec.poll_median_s * np.exp(spec.poll_sigma * rng.standard_normal(n)),
                       spec.poll_min_s, spec.poll_max_s)
        return cls(
            spec=spec, start_utc_h=start_utc_h, platform=platform, os=os_codes, arch=arch, region=region, tenant=tenant,
            internal=internal, workstation=workstation,
            on_start_h=(spec.day_start_h + rng.uniform(-1.5, 1.5, n)).astype(np.float32),
            on_length_h=rng.uniform(*spec.day_length_h, n).astype(np.float32),
            poll_s=poll, phase_s=rng.random(n) * poll, bucket=rng.random(n),
            platforms=platforms, os_names=os_names, arch_names=arch_names, regions=regions,
            offsets_h=np.array([r.utc_offset_h for r in spec.regions], dtype=float))

    # -- who ---------------------------------------------------------------------------------
    def attributes(self, tenants: bool = True) -> tuple[list[DeviceAttributes], Ints]:
        """The distinct attribute sets and, per host, the index of its set (how the server's
        cohort tables see a fleet: thousands of groups, not millions of hosts)."""
        tenant = self.tenant if tenants else np.zeros_like(self.tenant)
        key = ((((self.platform.astype(np.int64) * 1024 + self.os) * 64 + self.arch) * 256 + self.region) * 2
               + self.internal) * (int(tenant.max()) + 1 if tenant.size else 1) + tenant
        uniq, index = np.unique(key, return_inverse=True)
        first = np.zeros(uniq.size, dtype=np.int64)
        first[index[::-1]] = np.arange(self.size)[::-1]
        groups = [DeviceAttributes(platform=self.platforms[self.platform[i]], os_version=self.os_names[self.os[i]],
                                   arch=self.arch_names[self.arch[i]], region=self.regions[self.region[i]],
                                   tenant=f"t{tenant[i]:04d}",
                                   tags=frozenset({"internal"}) if self.internal[i] else frozenset())
                  for i in first]
        return groups, index.astype(np.int64)

    def population(self, groups: list[DeviceAttributes], index: Ints) -> Counter[DeviceAttributes]:
        counts = np.bincount(index, minlength=len(groups))
        return Counter({g: int(c) for g, c in zip(groups, counts, strict=True) if c})

    # -- when --------------------------------------------------------------------------------
    def _since_on_h(self, t: Floats, idx: Ints) -> Floats:
        with np.errstate(invalid="ignore"):  # never (inf) stays never: nan compares false below
            local = np.mod(self.start_utc_h + t / HOUR + self.offsets_h[self.region[idx]], 24.0)
            return np.asarray(np.mod(local - self.on_start_h[idx], 24.0), dtype=float)

    def is_on(self, t: Floats, idx: Ints) -> Bools:
        return ~self.workstation[idx] | (self._since_on_h(t, idx) < self.on_length_h[idx])

    def next_on(self, t: Floats, idx: Ints) -> Floats:
        """The first moment at or after ``t`` at which the host is switched on."""
        since = self._since_on_h(t, idx)
        off = self.workstation[idx] & (since >= self.on_length_h[idx])
        return np.where(off, t + (24.0 - since) * HOUR + 1e-3, t)

    def reachable(self, t: Floats, idx: Ints) -> Floats:
        """When something the host sends at ``t`` reaches the server: at once, or when the
        outage cutting off its region ends."""
        out = t
        for region, start, end in self.outages:
            cut = (self.region[idx] == region) & (out >= start) & (out < end)
            out = np.where(cut, end, out)
        return out

    def next_checkin(self, t: Floats, idx: Ints) -> Floats:
        """The host's first check-in that reaches the server at or after ``t``: its next poll,
        or, if it is asleep then, the moment it wakes (agents check in when they start)."""
        poll = self.poll_s[idx]
        grid = t + np.mod(self.phase_s[idx] - t, poll)
        asleep = ~self.is_on(t, idx)
        at = np.where(asleep, self.next_on(t, idx), grid)
        at = np.where(~asleep & ~self.is_on(at, idx), self.next_on(at, idx), at)
        return self.reachable(at, idx)

    def contact_after(self, t: Floats, idx: Ints) -> Floats:
        """When a host asked at ``t`` to come back (it is online and awake then) next reaches
        the server, if it sends at ``t`` exactly: asleep hosts send on waking."""
        return self.reachable(self.next_on(t, idx), idx)

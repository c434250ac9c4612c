"""Scenarios: a fleet, an update, the faults it carries, and what else goes wrong, in YAML.

A scenario file is validated completely before anything runs; every problem is reported at once
with its dotted field and 1-based line (:class:`ScenarioError`). Schema (every key checked;
durations as ``45s``, ``30m``, ``2h``, ``1d``)::

    name: crowdstrike-2024                  # required
    description: text
    start_utc: "04:09"                      # time of day at t = 0 (drives the working day)
    horizon: 24h                            # how long to simulate (1m .. 7d)
    seed: 2024                              # default seed (the CLI's --seed wins)
    fleet:
      tenants: 500                          # customers, spread uniformly
      internal_hosts: 200                   # the vendor's own machines (tag ``internal``)
      poll: {median: 5m, sigma: 0.3, min: 1m, max: 1h}   # check-in interval, log-normal
      workday: {start_hour: 8, length: [9h, 13h]}          # when workstations are on (local)
      regions:                              # share of every platform, UTC offset (hours)
        us: {share: 0.4, utc_offset: -5}
      platforms:
        windows: {hosts: 8500000, workstation_share: 0.7, os_versions: {"10": 0.7, "11": 0.3},
                  arches: {x86_64: 0.9, arm64: 0.1}}        # architecture shares (default all x86_64)
    update:
      category: rapid-response              # the content type's category (health defaults)
      load: 5s                              # activation -> content loaded
      trial: 1m                             # the agent's trial: ``healthy`` this long after activation
    faults:                                 # what the update does to hosts that load it
      - select: {platform: [windows], region: [...], os_version: [...], arch: [...]}   # all optional
        kind: crash-on-load                 # crash-on-load | hazard | delayed-crash
        probability: 1.0                    # crash-on-load: chance a host crashes as it loads
        boot_loop: true                     # crash-on-load / delayed-crash: crashes on every boot
        silent: true                        # reports nothing while it loops (2024); a loud loop
                                            # reports its crash after the first reboot
        multiplier: 5                       # hazard: failure hazard x this while it runs the update
        after: 6h                           # delayed-crash: how long after activation
    background: {crash_rate: 0.00001}       # crashes per host-hour, whatever it runs
    outages:                                # regions cut off from the server (both arms)
      - {region: eu, at: 2h, duration: 1h}
    agents:
      reboot: 90s                           # one crash -> reboot cycle
      boot_limit: 2                         # Ringfence's crash-loop guard
      report_delay: [30s, 3m]               # a loud failure reaches the server after its reboot
      confirm_delay: [0s, 0s]               # a health confirmation reaches the server this late ...
      lost_reports: 0.0                     # ... and this share of reports (failures and
                                            # confirmations alike) never does
      peer_recovery_per_boot: 0.05          # other strategies' agents: chance per boot that a
                                            # looping host fetches the reverted content in time
      peer_boot_attempts: 15                # ... boots before it stops at a recovery screen
      peer_crash_visibility: 1.0            # share of crashes the other strategies' metrics see
      operator_rollback_after: 15m          # Ringfence: a person rolls back a halted rollout
"""

from __future__ import annotations

from importlib import resources
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ringfence.core.durations import parse_duration
from ringfence.core.errors import DocumentError, InvalidInput
from ringfence.core.models import Category
from ringfence.core.yamlpath import load_document, model_problems
from ringfence.sim.fleet import FleetSpec, PlatformSpec, RegionSpec

BUILT_IN = ("crowdstrike-2024", "good-update", "subtle-regression")


class ScenarioError(DocumentError):
    """A scenario that does not validate: every problem with its dotted field and line."""

    code = "invalid_scenario"


def _seconds(value: Any) -> float:
    """A duration field: ``90s``, ``5m``, ``2h`` or plain seconds. Raises ValueError (what the
    validator turns into a field error), also for the wrong type."""
    if isinstance(value, bool):
        raise ValueError("must be a duration like 45s, 30m, 2h")  # noqa: TRY004
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return parse_duration(value).total_seconds()
    raise ValueError("must be a duration like 45s, 30m, 2h")


def _span(value: Any, example: str) -> tuple[float, float]:
    """A ``[shortest, longest]`` pair of durations."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ValueError(f"must be [shortest, longest], e.g. {example}")
    return _seconds(value[0]), _seconds(value[1])


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Poll(_Model):
    median: float = 300.0
    sigma: float = Field(default=0.3, ge=0, le=3)
    min: float = 60.0
    max: float = 3600.0

    _durations = field_validator("median", "min", "max", mode="before")(_seconds)

    @model_validator(mode="after")
    def _ordered(self) -> Poll:
        if not 0 < self.min <= self.median <= self.max:
            raise ValueError("needs 0 < min <= median <= max")
        return self


class Workday(_Model):
    start_hour: float = Field(default=8.0, ge=0, lt=24)
    length: tuple[float, float] = (9 * 3600.0, 13 * 3600.0)

    @field_validator("length", mode="before")
    @classmethod
    def _length(cls, value: Any) -> tuple[float, float]:
        low, high = _span(value, "[9h, 13h]")
        if not 0 < low <= high <= 24 * 3600:
            raise ValueError("needs 0 < shortest <= longest <= 24h")
        return low, high


class Region(_Model):
    share: float = Field(gt=0)
    utc_offset: float = Field(default=0.0, ge=-12, le=14)


class Platform(_Model):
    hosts: int = Field(ge=0, le=50_000_000)
    workstation_share: float = Field(default=0.5, ge=0, le=1)
    os_versions: dict[str, float] = Field(default_factory=lambda: {"any": 1.0})
    arches: dict[str, float] = Field(default_factory=lambda: {"x86_64": 1.0})

    @field_validator("os_versions", "arches")
    @classmethod
    def _shares(cls, value: dict[str, float]) -> dict[str, float]:
        if not value or any(v < 0 for v in value.values()) or sum(value.values()) <= 0:
            raise ValueError("needs at least one value with a positive share")
        return value


class FleetModel(_Model):
    tenants: int = Field(default=200, ge=1, le=100_000)
    internal_hosts: int = Field(default=200, ge=0)
    poll: Poll = Poll()
    workday: Workday = Workday()
    regions: dict[str, Region]
    platforms: dict[str, Platform]

    @model_validator(mode="after")
    def _not_empty(self) -> FleetModel:
        if not self.regions:
            raise ValueError("needs at least one region")
        if sum(p.hosts for p in self.platforms.values()) <= 0:
            raise ValueError("needs at least one host")
        return self


class Update(_Model):
    category: str = "rapid-response"
    load: float = 5.0
    trial: float = 60.0

    _durations = field_validator("load", "trial", mode="before")(_seconds)

    @field_validator("category")
    @classmethod
    def _category(cls, value: str) -> str:
        Category(value)  # raises ValueError naming the bad value
        return value


class Select(_Model):
    platform: tuple[str, ...] = ()
    region: tuple[str, ...] = ()
    os_version: tuple[str, ...] = ()
    arch: tuple[str, ...] = ()


class Fault(_Model):
    select: Select = Select()
    kind: Literal["crash-on-load", "hazard", "delayed-crash"]
    probability: float = Field(default=1.0, ge=0, le=1)
    boot_loop: bool = True
    silent: bool = False
    multiplier: float = Field(default=1.0, ge=1)
    after: float = 0.0

    _durations = field_validator("after", mode="before")(_seconds)


class Background(_Model):
    crash_rate: float = Field(default=1e-5, ge=0, le=1)  # per host-hour


class Outage(_Model):
    region: str
    at: float
    duration: float

    _durations = field_validator("at", "duration", mode="before")(_seconds)


class Agents(_Model):
    reboot: float = 90.0
    boot_limit: int = Field(default=2, ge=1, le=10)
    report_delay: tuple[float, float] = (30.0, 180.0)
    confirm_delay: tuple[float, float] = (0.0, 0.0)
    lost_reports: float = Field(default=0.0, ge=0, lt=1)
    peer_recovery_per_boot: float = Field(default=0.05, ge=0, le=1)
    peer_boot_attempts: int = Field(default=15, ge=1, le=10_000)
    peer_crash_visibility: float = Field(default=1.0, ge=0, le=1)
    operator_rollback_after: float = 900.0

    _durations = field_validator("reboot", "operator_rollback_after", mode="before")(_seconds)

    @field_validator("report_delay", "confirm_delay", mode="before")
    @classmethod
    def _delay(cls, value: Any) -> tuple[float, float]:
        low, high = _span(value, "[30s, 3m]")
        if not 0 <= low <= high:
            raise ValueError("needs 0 <= shortest <= longest")
        return low, high


class Scenario(_Model):
    name: str = Field(min_length=1)
    description: str = ""
    start_utc: str = "00:00"
    horizon: float = 24 * 3600.0
    seed: int = 1
    fleet: FleetModel
    update: Update = Update()
    faults: tuple[Fault, ...] = ()
    background: Background = Background()
    outages: tuple[Outage, ...] = ()
    agents: Agents = Agents()

    _durations = field_validator("horizon", mode="before")(_seconds)

    @field_validator("start_utc")
    @classmethod
    def _clock(cls, value: str) -> str:
        hours, _, minutes = value.partition(":")
        if not (hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
            raise ValueError(f"{value!r} is not a time of day like 04:09")
        return value

    @field_validator("horizon")
    @classmethod
    def _horizon(cls, value: float) -> float:
        if not 60 <= value <= 7 * 86400:
            raise ValueError("must be between 1m and 7d")
        return value

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        for i, outage in enumerate(self.outages):
            if outage.region not in self.fleet.regions:
                raise ValueError(f"outages[{i}].region {outage.region!r} is not a region of the fleet")
        for i, fault in enumerate(self.faults):
            for name in fault.select.platform:
                if name not in self.fleet.platforms:
                    raise ValueError(f"faults[{i}].select.platform {name!r} is not a platform of the fleet")
            for name in fault.select.region:
                if name not in self.fleet.regions:
                    raise ValueError(f"faults[{i}].select.region {name!r} is not a region of the fleet")
            arches = {a for p in self.fleet.platforms.values() for a in p.arches}
            for name in fault.select.arch:
                if name not in arches:
                    raise ValueError(f"faults[{i}].select.arch {name!r} is not an architecture of the fleet")
        return self

    # -- derived ------------------------------------------------------------------------------
    @property
    def start_utc_h(self) -> float:
        hours, _, minutes = self.start_utc.partition(":")
        return int(hours) + int(minutes) / 60

    @property
    def category(self) -> Category:
        return Category(self.update.category)

    @property
    def good(self) -> bool:
        """No fault at all: an update whose rollout should complete."""
        return not any(f.probability > 0 and (f.kind != "hazard" or f.multiplier > 1) for f in self.faults)

    def fleet_spec(self) -> FleetSpec:
        f = self.fleet
        return FleetSpec(
            platforms={name: PlatformSpec(p.hosts, dict(p.os_versions), p.workstation_share, dict(p.arches))
                       for name, p in f.platforms.items()},
            regions=tuple(RegionSpec(name, r.share, r.utc_offset) for name, r in f.regions.items()),
            tenants=f.tenants, internal_hosts=f.internal_hosts, poll_median_s=f.poll.median,
            poll_sigma=f.poll.sigma, poll_min_s=f.poll.min, poll_max_s=f.poll.max,
            day_start_h=f.workday.start_hour, day_length_h=(f.workday.length[0] / 3600, f.workday.length[1] / 3600))

    def scaled(self, hosts: int) -> Scenario:
        """The same scenario with the fleet scaled to about ``hosts`` hosts (same proportions)."""
        total = sum(p.hosts for p in self.fleet.platforms.values())
        factor = hosts / total
        platforms = {name: p.model_copy(update={"hosts": max(1, round(p.hosts * factor)) if p.hosts else 0})
                     for name, p in self.fleet.platforms.items()}
        internal = min(self.fleet.internal_hosts, max(1, round(hosts * 0.001)))
        fleet = self.fleet.model_copy(update={"platforms": platforms, "internal_hosts": internal})
        return self.model_copy(update={"fleet": fleet})


# -- loading ------------------------------------------------------------------------------------

def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Validate and parse a scenario. Raises :class:`ScenarioError` naming every bad field and
    its line."""
    root, data = load_document(text, source, ScenarioError, "name and fleet")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(model_problems(exc, root), source) from None


def load_scenario(name_or_path: str) -> Scenario:
    """A built-in scenario by name, or a scenario file."""
    from pathlib import Path

    if name_or_path in BUILT_IN:
        text = resources.files("ringfence.sim").joinpath("scenarios", f"{name_or_path}.yaml").read_text("utf-8")
        return parse_scenario(text, f"built-in scenario {name_or_path}")
    path = Path(name_or_path)
    if not path.is_file():
        raise InvalidInput(f"no scenario {name_or_path!r}: not a built-in ({', '.join(BUILT_IN)}) and no such file",
                           scenario=name_or_path)
    return parse_scenario(path.read_text("utf-8"), str(path))

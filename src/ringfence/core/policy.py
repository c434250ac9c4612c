"""Channel policies: the customer's say in when content of a category reaches their devices.

A policy belongs to a tenant, or to a group of its devices (a device tag), and to one content
category. Its ``channel`` is one of:

* ``early``: the devices act as channel ``early`` for that category's rollouts, so a plan reaches
  them with ``selector: {include: {channel: [early]}}`` (their own wave). For that category's
  decisions and cohort populations, the device's channel *is* ``early``.
* ``ga`` (the default): normal waves. With ``delay_hours`` (1, 2, 4, 8, 12, 24, 48 or 72) the
  devices are never admitted to that category's rollouts; they run the newest release that has
  been generally available (completed) for at least that long and is not revoked. Until one is
  old enough they keep what they run, and a device already running a newer completed release
  keeps it (a delay never moves a device backwards).
* ``pause``: never receives a new version of that category; keeps what it runs. Not admitted,
  not counted in a rollout's population. ``system-critical`` content cannot be paused.
* ``pin``: runs ``version`` of ``content_type`` (an artifact of that category) and nothing else;
  the category's other content types follow ``ga``. When the pinned version is revoked (its
  release rolled back), the revocation wins and the device gets the baseline.

``windows`` (``software`` only): weekly maintenance windows in UTC, e.g. Saturday and Sunday
02:00-06:00. Outside them a device is neither admitted to a rollout nor moved to a new version.

**Resolution**, for one device and one category: the policy of a group the device belongs to
(it carries the tag) wins over its tenant's policy, which wins over the default (``ga``, no
delay). When several of its tags have a policy for the category, the group whose name sorts
first wins, so every node resolves alike.

**Safety wins over policy**: whatever its policy, a device follows the rollback of a rollout it
had been admitted to, and a revocation (the check-in's ``revoked``) reaches it.

Everything here is pure: values in, values out; "now" is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from ringfence.core.assignment import Decision, RolloutView, Target
from ringfence.core.clock import utc
from ringfence.core.errors import InvalidInput
from ringfence.core.models import Category, DeviceAttributes, check_content_type_name, check_version, parse_category
from ringfence.core.rollout import Phase


class Channel(StrEnum):
    EARLY = "early"
    GA = "ga"
    PAUSE = "pause"
    PIN = "pin"


class Hold(StrEnum):
    """Why a policy keeps a device out of a rollout (the keys of ``held_by_policy``)."""

    PAUSE = "pause"
    PIN = "pin"
    DELAY = "delay"
    WINDOW = "window"


DELAY_HOURS = (1, 2, 4, 8, 12, 24, 48, 72)
MAX_DELAY = timedelta(hours=max(DELAY_HOURS))
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_WINDOWS = 28
WINDOW_CATEGORIES = frozenset({Category.SOFTWARE})
UNPAUSABLE = frozenset({Category.SYSTEM_CRITICAL})
_CLOCK = re.compile(r"^([01]\d|2[0-4]):([0-5]\d)$")
_WINDOW_TEXT = re.compile(r"^\s*(?P<days>[A-Za-z,\-]+)\s+(?P<start>\d\d:\d\d)\s*-\s*(?P<end>\d\d:\d\d)\s*$")
_WINDOW_KEYS = frozenset({"days", "start", "end"})


# -- maintenance windows ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Window:
    """A weekly window in UTC: on each of ``days`` (0 = Monday) from ``start`` to ``end``
    (minutes after midnight). An ``end`` at or before ``start`` runs past midnight into the next
    day; ``end`` 1440 is midnight at the end of the day."""

    days: tuple[int, ...]
    start: int
    end: int

    def contains(self, now: datetime) -> bool:
        now = utc(now)
        day = now.weekday()
        seconds = now.hour * 3600 + now.minute * 60 + now.second + now.microsecond / 1e6
        start, end = self.start * 60, self.end * 60
        if start < end:
            return day in self.days and start <= seconds < end
        return (day in self.days and seconds >= start) or ((day - 1) % 7 in self.days and seconds < end)

    def as_dict(self) -> dict[str, Any]:
        return {"days": [DAYS[d] for d in self.days], "start": _clock(self.start), "end": _clock(self.end)}

    def __str__(self) -> str:
        return f"{','.join(DAYS[d] for d in self.days)} {_clock(self.start)}-{_clock(self.end)}"


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def in_windows(windows: Sequence[Window], now: datetime) -> bool:
    """True when there are no windows (always open) or ``now`` falls in one of them."""
    return not windows or any(w.contains(now) for w in windows)


def window_from_json(value: object, field: str = "windows[0]") -> Window:
    """A window from ``{"days": ["sat", "sun"], "start": "02:00", "end": "06:00"}``."""
    if not isinstance(value, Mapping):
        raise InvalidInput(f'{field} must be an object like {{"days": ["sat"], "start": "02:00", "end": "06:00"}}',
                           field=field, value=str(value))
    unknown = sorted(str(k) for k in value if k not in _WINDOW_KEYS)
    if unknown:
        raise InvalidInput(f"{field}: unknown key {unknown[0]!r}; a window has days, start and end",
                           field=f"{field}.{unknown[0]}", value=unknown[0])
    for key in ("days", "start", "end"):
        if key not in value:
            raise InvalidInput(f"{field}.{key} is required", field=f"{field}.{key}", value=None)
    days = value["days"]
    if isinstance(days, str):
        days = days.split(",")
    if not isinstance(days, list | tuple):
        raise InvalidInput(f"{field}.days must be a list of days ({', '.join(DAYS)})", field=f"{field}.days",
                           value=str(days))
    return _window(days, value["start"], value["end"], field)


def parse_window(text: str, field: str = "windows[0]") -> Window:
    """A window from its short form: ``"sat,sun 02:00-06:00"`` (days may be ranges: ``mon-fri``)."""
    match = _WINDOW_TEXT.fullmatch(text)
    if match is None:
        raise InvalidInput(f"{field}: {text!r} is not a window; write days and hours in UTC like 'sat,sun 02:00-06:00'",
                           field=field, value=text)
    return _window(match["days"].split(","), match["start"], match["end"], field)


def _window(days: Sequence[object], start: object, end: object, field: str) -> Window:
    chosen: set[int] = set()
    for item in days:
        chosen.update(_days(item, f"{field}.days"))
    if not chosen:
        raise InvalidInput(f"{field}.days names no day", field=f"{field}.days", value=[])
    begin = _minutes(start, f"{field}.start")
    finish = _minutes(end, f"{field}.end")
    if begin == 24 * 60:
        raise InvalidInput(f"{field}.start must be before 24:00", field=f"{field}.start", value=str(start))
    if begin == finish:
        raise InvalidInput(f"{field}: start and end are the same time; for a whole day write 00:00-24:00",
                           field=f"{field}.end", value=str(end))
    return Window(tuple(sorted(chosen)), begin, finish)


def _days(item: object, field: str) -> Iterable[int]:
    name = str(item).strip().lower()
    first, sep, last = name.partition("-")
    if first not in DAYS or (sep and last not in DAYS):
        raise InvalidInput(f"{field}: unknown day {item!r}; expected {', '.join(DAYS)} (or a range like mon-fri)",
                           field=field, value=str(item))
    if not sep:
        return (DAYS.index(first),)
    a, b = DAYS.index(first), DAYS.index(last)
    return [(a + i) % 7 for i in range((b - a) % 7 + 1)]


def _minutes(value: object, field: str) -> int:
    match = _CLOCK.fullmatch(str(value)) if isinstance(value, str) else None
    if match is None or (match[1] == "24" and match[2] != "00"):
        raise InvalidInput(f"{field} must be a UTC time HH:MM (00:00 to 24:00), not {value!r}", field=field,
                           value=str(value))
    return int(match[1]) * 60 + int(match[2])


# -- the policy ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ChannelPolicy:
    """One customer choice for a tenant (``group`` None) or a group of its devices, and a
    category. Build it with :func:`make_policy`, which checks every rule."""

    tenant: str
    group: str | None
    category: Category
    channel: Channel = Channel.GA
    delay_hours: int | None = None
    content_type: str | None = None  # pin only
    version: str | None = None  # pin only
    windows: tuple[Window, ...] = ()

    @property
    def joins_rollouts(self) -> bool:
        """Admitted to this category's rollouts (when inside its windows, if any)?"""
        return self.channel in (Channel.EARLY, Channel.GA) and not self.delay_hours

    @property
    def delay(self) -> timedelta | None:
        return timedelta(hours=self.delay_hours) if self.delay_hours else None

    def for_content_type(self, content_type: str) -> ChannelPolicy | None:
        """The policy as it applies to one content type of its category: a pin covers only its
        own content type, so the others follow ``ga`` (keeping any windows). None: the default."""
        if self.channel is not Channel.PIN or content_type == self.content_type:
            return self
        if not self.windows:
            return None
        return replace(self, channel=Channel.GA, content_type=None, version=None)

    def as_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "group": self.group, "category": self.category.value,
                "channel": self.channel.value, "delay_hours": self.delay_hours,
                "content_type": self.content_type, "version": self.version,
                "windows": [w.as_dict() for w in self.windows]}

    def describe(self) -> str:
        """One line a person reads: ``pin sensor/x 291.1``, ``ga +24h``, ``early, sat 02:00-06:00``."""
        what = self.channel.value
        if self.delay_hours:
            what += f" +{self.delay_hours}h"
        if self.channel is Channel.PIN:
            what += f" {self.content_type} {self.version}"
        if self.windows:
            what += ", windows " + "; ".join(str(w) for w in self.windows)
        return what


def check_tenant(tenant: str) -> str:
    tenant = tenant.strip()
    if not tenant or len(tenant) > 200:
        raise InvalidInput("tenant must be a non-empty name of at most 200 characters", field="tenant", value=tenant)
    return tenant


def check_group(group: str | None) -> str | None:
    """A device group is a device tag; None (or empty) means the whole tenant."""
    if group is None or not group.strip():
        return None
    if len(group) > 128 or group != group.strip():
        raise InvalidInput("group must be a device tag of at most 128 characters, without surrounding spaces",
                           field="group", value=group)
    return group


def make_policy(
    *,
    tenant: str,
    category: str | Category,
    channel: str | Channel = Channel.GA,
    group: str | None = None,
    delay_hours: int | None = None,
    content_type: str | None = None,
    version: str | None = None,
    windows: Sequence[object] | None = None,
) -> ChannelPolicy:
    """Check a policy's values; raises :class:`InvalidInput` naming the first bad field.

    Whether a pinned version exists is for the store to check (:mod:`ringfence.store.policies`).
    """
    tenant = check_tenant(tenant)
    group = check_group(group)
    cat = category if isinstance(category, Category) else parse_category(category)
    try:
        chan = Channel(channel)
    except ValueError:
        raise InvalidInput(f"unknown channel {channel!r}; expected one of {', '.join(c.value for c in Channel)}",
                           field="channel", value=str(channel)) from None
    if chan is Channel.PAUSE and cat in UNPAUSABLE:
        raise InvalidInput(f"{cat.value} content cannot be paused: it carries fixes a device must not miss; "
                           "choose ga with a delay, a pin or maintenance windows instead", field="channel",
                           value=chan.value)
    if delay_hours is not None:
        if chan is not Channel.GA:
            raise InvalidInput(f"delay_hours applies to channel ga, not {chan.value}", field="delay_hours",
                               value=delay_hours)
        if delay_hours not in DELAY_HOURS:
            raise InvalidInput(f"delay_hours must be one of {', '.join(map(str, DELAY_HOURS))}, not {delay_hours}",
                               field="delay_hours", value=delay_hours)
    if chan is Channel.PIN:
        if version is None or not version.strip():
            raise InvalidInput("a pin needs the version to run", field="version", value=version)
        check_version(version)
        if content_type is None or not content_type.strip():
            raise InvalidInput(f"a pin needs the content type (of category {cat.value}) the version belongs to",
                               field="content_type", value=content_type)
        check_content_type_name(content_type)
    else:
        if version is not None:
            raise InvalidInput(f"version applies to channel pin, not {chan.value}", field="version", value=version)
        if content_type is not None:
            raise InvalidInput(f"content_type applies to channel pin, not {chan.value}", field="content_type",
                               value=content_type)
    parsed: tuple[Window, ...] = ()
    if windows:
        if cat not in WINDOW_CATEGORIES:
            raise InvalidInput(f"maintenance windows apply to software content, not {cat.value}: other "
                               "categories carry protection that must not wait for a window", field="windows",
                               value=len(windows))
        if chan is Channel.PAUSE:
            raise InvalidInput("a paused device never moves, so windows would change nothing", field="windows",
                               value=len(windows))
        if len(windows) > MAX_WINDOWS:
            raise InvalidInput(f"at most {MAX_WINDOWS} windows", field="windows", value=len(windows))
        parsed = tuple(w if isinstance(w, Window) else
                       parse_window(w, f"windows[{i}]") if isinstance(w, str) else
                       window_from_json(w, f"windows[{i}]") for i, w in enumerate(windows))
    return ChannelPolicy(tenant=tenant, group=group, category=cat, channel=chan, delay_hours=delay_hours,
                         content_type=content_type, version=version, windows=parsed)


# -- resolution ------------------------------------------------------------------------------------
class PolicyBook:
    """Every policy, indexed for resolution on the check-in path (a few dictionary lookups)."""

    def __init__(self, policies: Iterable[ChannelPolicy] = ()) -> None:
        self._all = tuple(sorted(policies, key=lambda p: (p.tenant, p.category.value, p.group or "")))
        self._tenant: dict[tuple[str, Category], ChannelPolicy] = {}
        groups: dict[tuple[str, Category], list[ChannelPolicy]] = {}
        for p in self._all:
            if p.group is None:
                self._tenant[(p.tenant, p.category)] = p
            else:
                groups.setdefault((p.tenant, p.category), []).append(p)
        # sorted by group name: the first one a device carries wins
        self._groups = {k: tuple((p.group or "", p) for p in v) for k, v in groups.items()}

    def __bool__(self) -> bool:
        return bool(self._all)

    def __iter__(self) -> Iterator[ChannelPolicy]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def resolve(self, tenant: str, tags: Container[str], category: Category) -> ChannelPolicy | None:
        """The policy that governs a device of ``tenant`` carrying ``tags``; None: the default
        (``ga``, no delay)."""
        for group, policy in self._groups.get((tenant, category), ()):
            if group in tags:
                return policy
        return self._tenant.get((tenant, category))

    def pins(self) -> set[tuple[str, str]]:
        """(content type, version) of every pin."""
        return {(p.content_type, p.version) for p in self._all
                if p.channel is Channel.PIN and p.content_type is not None and p.version is not None}

    def has_delays(self) -> bool:
        return any(p.delay_hours for p in self._all)


def effective_attributes(attrs: DeviceAttributes, policy: ChannelPolicy | None) -> DeviceAttributes:
    """The device as a rollout of the policy's category sees it: channel ``early`` for an early
    policy."""
    if policy is not None and policy.channel is Channel.EARLY and attrs.channel != Channel.EARLY.value:
        return replace(attrs, channel=Channel.EARLY.value)
    return attrs


def rollout_population(population: Mapping[DeviceAttributes, int], book: PolicyBook, category: Category,
                       content_type: str) -> Mapping[DeviceAttributes, int]:
    """The devices a rollout of ``content_type`` (of ``category``) may admit, counted per
    effective attribute set: held devices (pause, pin, delay) are left out and early ones count
    as channel ``early``. Devices with windows count: they join when their window opens."""
    if not book:
        return population
    out: dict[DeviceAttributes, int] = {}
    for attrs, n in population.items():
        if n <= 0:
            continue
        policy = book.resolve(attrs.tenant, attrs.tags, category)
        if policy is not None:
            policy = policy.for_content_type(content_type)
        if policy is not None and not policy.joins_rollouts:
            continue
        key = effective_attributes(attrs, policy)
        out[key] = out.get(key, 0) + n
    return out


def hold_of(policy: ChannelPolicy | None, now: datetime | None) -> Hold | None:
    """Why ``policy`` (already narrowed with :meth:`ChannelPolicy.for_content_type`) keeps a
    device out of a rollout at ``now``, or None (without ``now``, windows are not judged)."""
    if policy is None:
        return None
    if policy.channel is Channel.PAUSE:
        return Hold.PAUSE
    if policy.channel is Channel.PIN:
        return Hold.PIN
    if policy.delay_hours:
        return Hold.DELAY
    if now is not None and not in_windows(policy.windows, now):
        return Hold.WINDOW
    return None


def joins_now(policy: ChannelPolicy | None, now: datetime) -> bool:
    """May a device under ``policy`` be admitted to a rollout (and moved) at ``now``?"""
    return policy is None or (policy.joins_rollouts and in_windows(policy.windows, now))


# -- what a held device gets ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GeneralRelease:
    """A completed release: generally available since ``since``."""

    target: Target
    since: datetime


def aged_target(history: Sequence[GeneralRelease], delay: timedelta, now: datetime, revoked: Container[str],
                running: str | None) -> Target | None:
    """For a delayed device: the newest completed release (``history`` newest first) that has
    been generally available for ``delay`` and is not revoked. None (keep what it runs) when
    none is old enough, or when the device already runs a newer completed release."""
    for entry in history:
        if entry.target.version in revoked:
            continue
        if entry.since + delay <= now:
            return entry.target
        if entry.target.version == running:
            return None
    return None


@dataclass(frozen=True, slots=True)
class Holding:
    """What the store knows that a held device's answer depends on, for one content type."""

    baseline: Target | None = None
    pinned: Target | None = None
    history: Sequence[GeneralRelease] = ()
    revoked: Container[str] = frozenset()


def held_decision(policy: ChannelPolicy, view: RolloutView | None, admitted_wave: int | None, running: str | None,
                  now: datetime, holding: Holding) -> Decision:
    """What a device gets when ``policy`` (narrowed to the content type) keeps it out of
    rollouts now: paused, pinned, delayed, or outside its windows. ``Decision(None)`` means
    "keep what you run". Never admits."""
    if view is not None and admitted_wave is not None and view.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK):
        return Decision(view.baseline, rollback_from=view.target.version)  # safety first
    if policy.channel is Channel.PIN and policy.version in holding.revoked:
        return Decision(holding.baseline)  # the revocation wins, inside a window or not
    if not in_windows(policy.windows, now):
        return Decision(None)
    if policy.channel is Channel.PIN:
        return Decision(holding.pinned)
    if policy.channel is Channel.PAUSE or admitted_wave is not None:
        return Decision(None)  # an admission from before the policy keeps what it got
    delay = policy.delay
    if delay is not None:
        return Decision(aged_target(holding.history, delay, now, holding.revoked, running))
    return Decision(None)

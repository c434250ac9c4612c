"""Plans: how a release reaches the fleet, as ordered, cumulative waves.

A plan file is YAML. :func:`parse_plan` validates all of it and raises one :class:`PlanError`
listing every problem with its dotted field path and 1-based line, so an engineer fixes a plan in
one pass. A parsed :class:`Plan` is immutable; the server stores the source text and re-parses it,
so what runs is always what was reviewed.

Schema (every key is checked; unknown keys are errors, so typos never pass silently)::

    name: rapid-content          # required
    description: text            # optional
    strata: [platform, region]   # optional; dimensions judged separately (default platform, region)
    health:                      # optional; how the judges decide (defaults by category, see HEALTH_DEFAULTS)
      alpha: 0.01                # halt when the rollout's e-value of harm reaches 1/alpha (any look)
      hazard_ratio_limit: 2.0    # promotion also needs the hazard ratio's upper bound below this
      trial_timeout: 30m         # an exposed device that has not confirmed health by then is silent
      placebo_after: 15m         # placebo devices are asked back after this (default trial_timeout / 2;
                                 # at least the agent's trial, at most 3/4 of trial_timeout)
      silence_after: 6h          # a device not heard from for this long has failed (both arms)
      baseline_rate: 0.001       # failures per device-hour, for strata with too small a control group
      error_pause_after: 15m     # a judge that cannot run holds the wave; this long after, it pauses for a person
    activation:                  # optional; what agents do before switching to this release
      require_intent_ack: true   # never activate before the server acknowledged the intent (default)
      intent_ack_timeout: 30s    # how long an agent waits for that acknowledgement (1s..10m)
    waves:                       # required, at least one, in order
      - name: canary             # required, unique
        selector:                # optional; default: every device
          include: {platform: [windows], region: [eu-*], tags: [internal]}
          exclude: {channel: [pause]}
        share: 0.01              # cumulative fraction of the eligible fleet, 0 < share <= 1
        max_devices: 100         # devices this wave may add: an int (total) or {total: N, per_stratum: M}
        soak: 30m                # minimum time in the wave: 45s, 30m, 2h, 1d, 1h30m
        gates:
          failure_budget: 2      # halt when more distinct devices than this have failed;
                                 # or {total: 5, per_stratum: 2}
          min_devices: 50        # do not promote before this many of the wave's devices are exposed
          min_healthy: 3         # every stratum the wave exposed needs this many confirmed-healthy trials
                                 # (all of its exposed devices, where it exposed fewer)
          max_undecided: 0.25    # ... and at most this fraction of its exposed devices still in trial
          max_in_trial: 10       # per stratum: devices exposed with an undecided trial at once

A wave needs ``share`` or ``max_devices`` (or both: the smaller wins in every stratum). The gates
``min_healthy``, ``max_undecided`` and ``max_in_trial`` default by category (see GATE_DEFAULTS):
promotion always needs confirmed health, never only elapsed time.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import yaml

from ringfence.core.durations import format_duration, parse_duration
from ringfence.core.errors import PlanError, PlanProblem
from ringfence.core.models import DEFAULT_STRATA, STRATUM_DIMENSIONS, Category, DeviceAttributes

# Selector keys as written in plans, mapped to device attributes.
SELECTOR_KEYS: Mapping[str, str] = {
    "platform": "platform",
    "os": "os_version",
    "arch": "arch",
    "region": "region",
    "tenant": "tenant",
    "channel": "channel",
    "tags": "tags",
}
MAX_WAVES = 64


@dataclass(frozen=True, slots=True)
class Selector:
    """Which devices a wave may reach. Within ``include`` every listed dimension must match
    (one of its patterns, shell-style globs allowed); any match in ``exclude`` rules a device
    out. An empty selector matches every device."""

    include: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    exclude: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def matches(self, attrs: DeviceAttributes) -> bool:
        for key, patterns in self.include.items():
            if not _dimension_matches(attrs, key, patterns):
                return False
        return not any(_dimension_matches(attrs, k, p) for k, p in self.exclude.items())

    def as_dict(self) -> dict[str, Any]:
        return {
            "include": {k: list(v) for k, v in self.include.items()},
            "exclude": {k: list(v) for k, v in self.exclude.items()},
        }


def _dimension_matches(attrs: DeviceAttributes, key: str, patterns: tuple[str, ...]) -> bool:
    if key == "tags":
        return any(fnmatch.fnmatchcase(tag, p) for tag in attrs.tags for p in patterns)
    value: str = getattr(attrs, SELECTOR_KEYS[key])
    return any(fnmatch.fnmatchcase(value, p) for p in patterns)


@dataclass(frozen=True, slots=True)
class Cap:
    """Absolute blast-radius caps: the devices this wave may *add* (beyond those earlier waves
    exposed), in total and in each stratum. Shares are cumulative; caps are not, so the most
    devices exposed by the end of wave k is the sum of the caps of waves 0..k."""

    total: int | None = None
    per_stratum: int | None = None

    @property
    def is_set(self) -> bool:
        return self.total is not None or self.per_stratum is not None


@dataclass(frozen=True, slots=True)
class Gates:
    """What must hold for a wave to stay open, and to be promoted.

    ``failure_budget``: the number of distinct failed devices the rollout may have while this
    wave is current; one more halts it. Written ``{total: N, per_stratum: M}``, it also caps the
    failed exposed devices of any one stratum (silent ones included) at M. ``min_devices``:
    devices of this wave that must have announced intent (be exposed) before it may be promoted,
    so a canary that soaked with nobody in it proves nothing and waits instead.

    Evidence, never elapsed time: ``min_healthy`` devices of every stratum the wave exposed must
    have confirmed health (all of them, where the stratum has fewer), and at most ``max_undecided``
    (a fraction) of its exposed devices may still be in trial. ``max_in_trial`` caps, per stratum,
    how many devices are exposed with an undecided trial at once (None: only the caps): it bounds
    how many machines load a bad version before its first report can arrive.
    """

    failure_budget: int | None = None
    min_devices: int | None = None
    failure_budget_per_stratum: int | None = None
    min_healthy: int = 1
    max_undecided: float = 0.25
    max_in_trial: int | None = None


@dataclass(frozen=True, slots=True)
class Wave:
    name: str
    selector: Selector
    share: float | None
    cap: Cap
    soak: timedelta
    gates: Gates

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "selector": self.selector.as_dict(),
            "share": self.share,
            "max_devices": {"total": self.cap.total, "per_stratum": self.cap.per_stratum},
            "soak_s": self.soak.total_seconds(),
            "gates": {"failure_budget": self.gates.failure_budget, "min_devices": self.gates.min_devices,
                      "failure_budget_per_stratum": self.gates.failure_budget_per_stratum,
                      "min_healthy": self.gates.min_healthy, "max_undecided": self.gates.max_undecided,
                      "max_in_trial": self.gates.max_in_trial},
        }


@dataclass(frozen=True, slots=True)
class Health:
    """Settings of the health judges. ``hazard_ratio_limit`` None means promotion waits for the
    soak, the wave's confirmations and no failed, error or inconclusive verdict, but not for a
    bound on the hazard ratio; ``baseline_rate`` None means strata with too small a control group
    have no comparison (the confirmations and budgets still gate them). ``error_pause_after``: a
    judge that cannot run holds the wave at once and pauses the rollout for a person after this."""

    alpha: float = 0.01
    hazard_ratio_limit: float | None = None
    trial_timeout: timedelta = timedelta(minutes=30)
    silence_after: timedelta = timedelta(hours=6)
    baseline_rate: float | None = None
    placebo_after: timedelta | None = None  # None: half the trial timeout
    error_pause_after: timedelta = timedelta(minutes=15)  # a judge error holds the wave, then pauses it

    @property
    def placebo_wait(self) -> timedelta:
        """How long a placebo device is asked to stay away before it comes back."""
        return self.placebo_after if self.placebo_after is not None else self.trial_timeout / 2

    def as_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "hazard_ratio_limit": self.hazard_ratio_limit,
                "trial_timeout_s": self.trial_timeout.total_seconds(),
                "placebo_after_s": self.placebo_wait.total_seconds(),
                "silence_after_s": self.silence_after.total_seconds(), "baseline_rate": self.baseline_rate,
                "error_pause_after_s": self.error_pause_after.total_seconds()}


# What a plan without (part of) a ``health:`` section gets, by the content type's category.
# Rapid content loads in seconds and its harm comes fast: short trials, and promotion on the
# soak and the wave's confirmations without a hazard-ratio bound (speed matters; the judges
# still halt at any look). Fleets include
# workstations that sleep 10-14 hours a night, so "not heard from" becomes a failure only after
# 16 hours (the placebo test, not this rule, catches a device that dies while it loads).
# Software installs, may reboot, and runs for weeks: longer trials, and promotion waits until
# the hazard ratio is bounded below 2.
HEALTH_DEFAULTS: dict[Category | None, Health] = {
    None: Health(),
    Category.RAPID_RESPONSE: Health(trial_timeout=timedelta(minutes=10), silence_after=timedelta(hours=16)),
    Category.SYSTEM_CRITICAL: Health(trial_timeout=timedelta(minutes=10), silence_after=timedelta(hours=16)),
    Category.CONFIGURATION: Health(trial_timeout=timedelta(minutes=15), silence_after=timedelta(hours=16)),
    Category.SOFTWARE: Health(hazard_ratio_limit=2.0, trial_timeout=timedelta(hours=1),
                              silence_after=timedelta(hours=24)),
}


@dataclass(frozen=True, slots=True)
class GateDefaults:
    """The evidence gates a wave gets where its plan is silent."""

    min_healthy: int
    max_undecided: float
    max_in_trial: int | None


# Rapid content reaches the fleet within the hour, so its windows are wide enough for a fleet of
# millions in the late waves; the canary's own cap is smaller still. Software runs for weeks and
# may reboot: more confirmations, fewer devices in trial at once.
GATE_DEFAULTS: dict[Category | None, GateDefaults] = {
    None: GateDefaults(min_healthy=1, max_undecided=0.25, max_in_trial=None),
    Category.RAPID_RESPONSE: GateDefaults(min_healthy=3, max_undecided=0.25, max_in_trial=200_000),
    Category.SYSTEM_CRITICAL: GateDefaults(min_healthy=3, max_undecided=0.2, max_in_trial=100_000),
    Category.CONFIGURATION: GateDefaults(min_healthy=2, max_undecided=0.25, max_in_trial=200_000),
    Category.SOFTWARE: GateDefaults(min_healthy=5, max_undecided=0.1, max_in_trial=20_000),
}


@dataclass(frozen=True, slots=True)
class Activation:
    """The agent's policy for announcing itself before it switches to the new version.

    With ``require_intent_ack`` (the default) an agent that cannot get its intent acknowledged
    within ``intent_ack_timeout`` keeps its last-known-good version and tries again later: no
    device runs the release without being counted as exposed.
    """

    require_intent_ack: bool = True
    intent_ack_timeout: timedelta = timedelta(seconds=30)

    def as_dict(self) -> dict[str, Any]:
        return {"require_intent_ack": self.require_intent_ack,
                "intent_ack_timeout_s": self.intent_ack_timeout.total_seconds()}


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    waves: tuple[Wave, ...]
    strata: tuple[str, ...] = DEFAULT_STRATA
    description: str = ""
    activation: Activation = Activation()
    health: Health = Health()

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "strata": list(self.strata),
            "activation": self.activation.as_dict(),
            "health": self.health.as_dict(),
            "waves": [w.as_dict() for w in self.waves],
        }


def parse_plan(text: str, source: str = "<plan>", category: Category | None = None) -> Plan:
    """Validate and parse a plan. Raises :class:`PlanError` naming every bad field and line.
    ``category``: the content type's, whose health defaults fill what the plan leaves out."""
    checker = _Checker(HEALTH_DEFAULTS[category], GATE_DEFAULTS[category])
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise PlanError([PlanProblem("<yaml>", f"not valid YAML: {problem}", line)], source) from None
    plan = checker.plan(root)
    if checker.problems or plan is None:
        raise PlanError(checker.problems or [PlanProblem("<plan>", "empty plan", 1)], source)
    return plan


def _numbers_as_text(node: yaml.Node) -> yaml.Node:
    """Selector values are labels: ``os: [11, 10.15]`` means the strings "11" and "10.15", as
    written (YAML would make numbers of them and drop the trailing zero of 10.10)."""

    def text(item: yaml.Node) -> yaml.Node:
        if isinstance(item, yaml.ScalarNode) and item.style is None and item.tag in (_INT_TAG, _FLOAT_TAG):
            return yaml.ScalarNode(_STR_TAG, item.value, item.start_mark, item.end_mark, style="'")
        return item

    if isinstance(node, yaml.SequenceNode):
        return yaml.SequenceNode(node.tag, [text(i) for i in node.value], node.start_mark, node.end_mark)
    return text(node)


_INT_TAG, _FLOAT_TAG, _STR_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float", "tag:yaml.org,2002:str"


class _Checker:
    """Walks the YAML node tree, collecting problems instead of stopping at the first."""

    def __init__(self, health_defaults: Health, gate_defaults: GateDefaults) -> None:
        self.problems: list[PlanProblem] = []
        self.health_defaults = health_defaults
        self.gate_defaults = gate_defaults

    def fail(self, path: str, node: yaml.Node | None, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None else None
        self.problems.append(PlanProblem(path or "<plan>", message, line))

    def mapping(
        self,
        node: yaml.Node | None,
        path: str,
        allowed: set[str],
        required: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        if not isinstance(node, yaml.MappingNode):
            self.fail(path, node, "must be a mapping")
            return None
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                self.fail(path, key_node, "keys must be strings")
                continue
            where = f"{path}.{key}" if path else key
            if key in out:
                self.fail(where, key_node, "appears twice")
            elif key not in allowed:
                self.fail(where, key_node, f"unknown field; expected one of {', '.join(sorted(allowed))}")
            else:
                out[key] = (key_node, value_node)
        for key in sorted(required - out.keys()):
            self.fail(f"{path}.{key}" if path else key, node, "is required")
        return out

    def scalar(self, node: yaml.Node, path: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.fail(path, node, "must be a single value")
            return None
        return yaml.constructor.SafeConstructor().construct_object(node, deep=True)

    def string(self, node: yaml.Node, path: str) -> str | None:
        value = self.scalar(node, path)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(path, node, f"must be a non-empty string, got {value!r}")
            return None
        return value

    def string_items(self, node: yaml.Node, path: str) -> list[tuple[str, yaml.Node, str]]:
        """The valid strings of a value or a list of values, each with its own path and node
        (so a later check can name the right index and line)."""
        is_list = isinstance(node, yaml.SequenceNode)
        items = node.value if is_list else [node]
        out: list[tuple[str, yaml.Node, str]] = []
        for i, item in enumerate(items):
            where = f"{path}[{i}]" if is_list else path
            value = self.string(item, where)
            if value is not None:
                out.append((where, item, value))
        if not items:
            self.fail(path, node, "must list at least one value")
        return out

    def string_list(self, node: yaml.Node, path: str) -> tuple[str, ...] | None:
        return tuple(value for _, _, value in self.string_items(node, path))

    def positive_int(self, node: yaml.Node, path: str, minimum: int = 1) -> int | None:
        value = self.scalar(node, path)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(path, node, f"must be an integer >= {minimum}, got {value!r}")
            return None
        return value

    def plan(self, root: yaml.Node | None) -> Plan | None:
        if root is None:
            return None  # an empty document: parse_plan reports "empty plan"
        fields = self.mapping(root, "", {"name", "description", "strata", "activation", "health", "waves"},
                              {"name", "waves"})
        if fields is None:
            return None
        name = self.string(fields["name"][1], "name") if "name" in fields else None
        description = ""
        if "description" in fields:
            description = self.string(fields["description"][1], "description") or ""
        strata = DEFAULT_STRATA
        if "strata" in fields:
            strata = self.strata(fields["strata"][1])
        activation = self.activation(fields["activation"][1]) if "activation" in fields else Activation()
        health = self.health(fields["health"][1]) if "health" in fields else self.health_defaults
        waves: list[Wave] = []
        if "waves" in fields:
            node = fields["waves"][1]
            if not isinstance(node, yaml.SequenceNode) or not node.value:
                self.fail("waves", node, "must be a non-empty list of waves")
            elif len(node.value) > MAX_WAVES:
                self.fail("waves", node, f"has {len(node.value)} waves; at most {MAX_WAVES}")
            else:
                seen: dict[str, int] = {}
                for i, wave_node in enumerate(node.value):
                    wave = self.wave(wave_node, f"waves[{i}]")
                    if wave is None:
                        continue
                    if wave.name in seen:
                        name_node = next(
                            (v for k, v in wave_node.value if isinstance(k, yaml.ScalarNode) and k.value == "name"),
                            wave_node,
                        )
                        self.fail(
                            f"waves[{i}].name",
                            name_node,
                            f"{wave.name!r} is already the name of waves[{seen[wave.name]}]",
                        )
                    seen[wave.name] = i
                    waves.append(wave)
        if self.problems or name is None:
            return None
        return Plan(name=name, waves=tuple(waves), strata=strata, description=description, activation=activation,
                    health=health)

    def health(self, node: yaml.Node) -> Health:
        fields = self.mapping(node, "health", {"alpha", "hazard_ratio_limit", "trial_timeout", "silence_after",
                                               "baseline_rate", "placebo_after", "error_pause_after"})
        default = self.health_defaults
        if fields is None:
            return default
        alpha = self.number(fields, "alpha", lambda v: 0 < v < 1, "a probability with 0 < alpha < 1")
        limit = self.number(fields, "hazard_ratio_limit", lambda v: v > 1, "a ratio greater than 1")
        rate = self.number(fields, "baseline_rate", lambda v: v > 0, "a positive rate (failures per device-hour)")
        durations = {}
        for key in ("trial_timeout", "silence_after", "placebo_after", "error_pause_after"):
            if key in fields:
                value = self.duration(fields[key][1], f"health.{key}")
                if value is not None and value <= timedelta(0):
                    self.fail(f"health.{key}", fields[key][1], "must be longer than 0s")
                elif value is not None:
                    durations[key] = value
        trial = durations.get("trial_timeout", default.trial_timeout)
        placebo = durations.get("placebo_after")
        if placebo is not None and placebo > trial * 3 / 4:
            self.fail("health.placebo_after", fields["placebo_after"][1],
                      f"must be at most 3/4 of trial_timeout ({format_duration(trial * 3 / 4)}), so a placebo "
                      "device can come back before the timeout")
        return Health(alpha=default.alpha if alpha is None else alpha,
                      hazard_ratio_limit=default.hazard_ratio_limit if "hazard_ratio_limit" not in fields else limit,
                      trial_timeout=trial,
                      silence_after=durations.get("silence_after", default.silence_after),
                      baseline_rate=default.baseline_rate if rate is None else rate, placebo_after=placebo,
                      error_pause_after=durations.get("error_pause_after", default.error_pause_after))

    def number(self, fields: dict[str, tuple[yaml.Node, yaml.Node]], key: str, ok: Any, expected: str
               ) -> float | None:
        if key not in fields:
            return None
        node = fields[key][1]
        value = self.scalar(node, f"health.{key}")
        if isinstance(value, bool) or not isinstance(value, int | float) or not ok(value):
            self.fail(f"health.{key}", node, f"must be {expected}, got {value!r}")
            return None
        return float(value)

    def activation(self, node: yaml.Node) -> Activation:
        fields = self.mapping(node, "activation", {"require_intent_ack", "intent_ack_timeout"})
        if fields is None:
            return Activation()
        default = Activation()
        require = default.require_intent_ack
        if "require_intent_ack" in fields:
            value_node = fields["require_intent_ack"][1]
            value = self.scalar(value_node, "activation.require_intent_ack")
            if not isinstance(value, bool):
                self.fail("activation.require_intent_ack", value_node, f"must be true or false, got {value!r}")
            else:
                require = value
        timeout = default.intent_ack_timeout
        if "intent_ack_timeout" in fields:
            parsed = self.duration(fields["intent_ack_timeout"][1], "activation.intent_ack_timeout")
            if parsed is not None and not timedelta(seconds=1) <= parsed <= timedelta(minutes=10):
                self.fail("activation.intent_ack_timeout", fields["intent_ack_timeout"][1],
                          f"must be between 1s and 10m, got {format_duration(parsed)}")
            elif parsed is not None:
                timeout = parsed
        return Activation(require_intent_ack=require, intent_ack_timeout=timeout)

    def duration(self, node: yaml.Node, path: str) -> timedelta | None:
        if not isinstance(node, yaml.ScalarNode):
            self.fail(path, node, "must be a duration like 45s, 30m, 2h, 1d or 1h30m")
            return None
        try:  # the source text, so YAML never reads 1:30 as base-60 seconds
            return parse_duration(node.value)
        except ValueError as exc:
            self.fail(path, node, str(exc))
            return None

    def strata(self, node: yaml.Node) -> tuple[str, ...]:
        items = self.string_items(node, "strata")
        dims = tuple(dim for _, _, dim in items)
        for where, item, dim in items:
            if dim not in STRATUM_DIMENSIONS:
                self.fail(
                    where,
                    item,
                    f"unknown dimension {dim!r}; expected some of {', '.join(STRATUM_DIMENSIONS)}",
                )
        if len(set(dims)) != len(dims):
            self.fail("strata", node, "lists a dimension twice")
        return dims or DEFAULT_STRATA

    def wave(self, node: yaml.Node, path: str) -> Wave | None:
        fields = self.mapping(
            node, path, {"name", "selector", "share", "max_devices", "soak", "gates"}, {"name", "soak"}
        )
        if fields is None:
            return None
        before = len(self.problems)
        name = self.string(fields["name"][1], f"{path}.name") if "name" in fields else None
        selector = (
            self.selector(fields["selector"][1], f"{path}.selector") if "selector" in fields else Selector()
        )
        share = None
        if "share" in fields:
            share_node = fields["share"][1]
            value = self.scalar(share_node, f"{path}.share")
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
                self.fail(
                    f"{path}.share",
                    share_node,
                    f"must be a fraction with 0 < share <= 1 (1% is 0.01), got {value!r}",
                )
            else:
                share = float(value)
        cap = Cap()
        if "max_devices" in fields:
            cap = self.cap(fields["max_devices"][1], f"{path}.max_devices")
        if share is None and not cap.is_set and "share" not in fields and "max_devices" not in fields:
            self.fail(path, node, "needs share, max_devices or both: how many devices this wave reaches")
        soak = timedelta(0)
        if "soak" in fields:
            soak = self.duration(fields["soak"][1], f"{path}.soak") or timedelta(0)
        gates = self.gates(fields["gates"][1] if "gates" in fields else None, f"{path}.gates")
        if len(self.problems) > before or name is None:
            return None
        return Wave(name=name, selector=selector, share=share, cap=cap, soak=soak, gates=gates)

    def selector(self, node: yaml.Node, path: str) -> Selector:
        fields = self.mapping(node, path, {"include", "exclude", *SELECTOR_KEYS})
        if fields is None:
            return Selector()
        shorthand = {k: v for k, v in fields.items() if k in SELECTOR_KEYS}
        if shorthand and ("include" in fields or "exclude" in fields):
            key_node = next(iter(shorthand.values()))[0]
            self.fail(path, key_node, "use either include/exclude or plain keys, not both")
            return Selector()
        if shorthand:
            return Selector(include=self.criteria_fields(shorthand, path))
        include = self.criteria(fields["include"][1], f"{path}.include") if "include" in fields else {}
        exclude = self.criteria(fields["exclude"][1], f"{path}.exclude") if "exclude" in fields else {}
        return Selector(include=include, exclude=exclude)

    def criteria(self, node: yaml.Node, path: str) -> dict[str, tuple[str, ...]]:
        fields = self.mapping(node, path, set(SELECTOR_KEYS))
        return self.criteria_fields(fields or {}, path)

    def criteria_fields(
        self, fields: dict[str, tuple[yaml.Node, yaml.Node]], path: str
    ) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for key, (_, value_node) in fields.items():
            values = self.string_list(_numbers_as_text(value_node), f"{path}.{key}")
            if values:
                out[key] = values
        return out

    def cap(self, node: yaml.Node, path: str) -> Cap:
        if isinstance(node, yaml.ScalarNode):
            total = self.positive_int(node, path)
            return Cap(total=total)
        fields = self.mapping(node, path, {"total", "per_stratum"})
        if fields is None:
            return Cap()
        if not fields:
            self.fail(path, node, "needs total, per_stratum or both")
        total = self.positive_int(fields["total"][1], f"{path}.total") if "total" in fields else None
        per = (
            self.positive_int(fields["per_stratum"][1], f"{path}.per_stratum")
            if "per_stratum" in fields
            else None
        )
        return Cap(total=total, per_stratum=per)

    def gates(self, node: yaml.Node | None, path: str) -> Gates:
        default = self.gate_defaults
        defaults = Gates(min_healthy=default.min_healthy, max_undecided=default.max_undecided,
                         max_in_trial=default.max_in_trial)
        if node is None:
            return defaults
        fields = self.mapping(node, path, {"failure_budget", "min_devices", "min_healthy", "max_undecided",
                                           "max_in_trial"})
        if fields is None:
            return defaults
        budget = minimum = per_stratum = None
        if "failure_budget" in fields:
            node = fields["failure_budget"][1]
            if isinstance(node, yaml.MappingNode):
                parts = self.mapping(node, f"{path}.failure_budget", {"total", "per_stratum"}) or {}
                if not parts:
                    self.fail(f"{path}.failure_budget", node, "needs total, per_stratum or both")
                if "total" in parts:
                    budget = self.positive_int(parts["total"][1], f"{path}.failure_budget.total", minimum=0)
                if "per_stratum" in parts:
                    per_stratum = self.positive_int(parts["per_stratum"][1], f"{path}.failure_budget.per_stratum",
                                                    minimum=0)
            else:
                budget = self.positive_int(node, f"{path}.failure_budget", minimum=0)
        if "min_devices" in fields:
            minimum = self.positive_int(fields["min_devices"][1], f"{path}.min_devices")
        healthy = defaults.min_healthy
        if "min_healthy" in fields:
            healthy = self.positive_int(fields["min_healthy"][1], f"{path}.min_healthy") or healthy
        undecided = defaults.max_undecided
        if "max_undecided" in fields:
            value_node = fields["max_undecided"][1]
            value = self.scalar(value_node, f"{path}.max_undecided")
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
                self.fail(f"{path}.max_undecided", value_node,
                          f"must be a fraction with 0 <= max_undecided < 1 (10% is 0.1), got {value!r}")
            else:
                undecided = float(value)
        in_trial = defaults.max_in_trial
        if "max_in_trial" in fields:
            in_trial = self.positive_int(fields["max_in_trial"][1], f"{path}.max_in_trial") or in_trial
        return Gates(failure_budget=budget, min_devices=minimum, failure_budget_per_stratum=per_stratum,
                     min_healthy=healthy, max_undecided=undecided, max_in_trial=in_trial)

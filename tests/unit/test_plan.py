"""Plans: parsing, validation with field paths and lines, durations, selectors."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ringfence.core.errors import InvalidInput, PlanError
from ringfence.core.models import DEFAULT_STRATA, Category, DeviceAttributes
from ringfence.core.plan import (
    GATE_DEFAULTS,
    HEALTH_DEFAULTS,
    MAX_WAVES,
    Selector,
    format_duration,
    parse_duration,
    parse_plan,
)

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples" / "plans").glob("*.yaml"))


def plan_text(body: str) -> str:
    return textwrap.dedent(body).lstrip("\n")


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """The 1-based line of the ``occurrence``-th line containing ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    assert len(hits) >= occurrence, f"{needle!r} occurs {len(hits)} times in the plan"
    return hits[occurrence - 1]


def problems_of(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(PlanError) as info:
        parse_plan(text)
    return [(p.field, p.line, p.message) for p in info.value.problems]


def only_problem(text: str) -> tuple[str, int | None, str]:
    found = problems_of(text)
    assert len(found) == 1, found
    return found[0]


# -- valid plans ---------------------------------------------------------------------------


def test_there_are_example_plans() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_plan_parses_to_what_its_file_says(path: Path) -> None:
    text = path.read_text()
    raw: dict[str, Any] = yaml.safe_load(text)
    plan = parse_plan(text, source=str(path))

    assert plan.name == raw["name"]
    assert plan.description == raw.get("description", "")
    assert plan.strata == tuple(raw.get("strata", DEFAULT_STRATA))
    assert [w.name for w in plan.waves] == [w["name"] for w in raw["waves"]]
    for wave, spec in zip(plan.waves, raw["waves"], strict=True):
        assert wave.share == (float(spec["share"]) if "share" in spec else None)
        assert wave.soak == parse_duration(str(spec["soak"]))
        cap = spec.get("max_devices")
        if isinstance(cap, int):
            assert (wave.cap.total, wave.cap.per_stratum) == (cap, None)
        else:
            cap = cap or {}
            assert (wave.cap.total, wave.cap.per_stratum) == (cap.get("total"), cap.get("per_stratum"))
        gates = spec.get("gates", {})
        assert wave.gates.failure_budget == gates.get("failure_budget")
        assert wave.gates.min_devices == gates.get("min_devices")
        include = spec.get("selector", {}).get("include", {})
        assert {k: list(v) for k, v in wave.selector.include.items()} == include


def test_minimal_plan_gets_defaults() -> None:
    plan = parse_plan(
        plan_text(
            """
            name: tiny
            waves:
              - name: all
                share: 1
                soak: 90
            """
        )
    )
    assert plan.strata == DEFAULT_STRATA
    assert plan.description == ""
    (wave,) = plan.waves
    assert wave.share == 1.0
    assert isinstance(wave.share, float)
    assert wave.soak == timedelta(seconds=90)
    assert not wave.cap.is_set
    assert wave.gates.failure_budget is None
    assert wave.gates.min_devices is None
    assert wave.selector.include == {}
    assert wave.selector.exclude == {}


def test_max_devices_forms_and_zero_failure_budget() -> None:
    plan = parse_plan(
        plan_text(
            """
            name: caps
            waves:
              - name: a
                max_devices: 7
                soak: 1m
                gates: {failure_budget: 0, min_devices: 1}
              - name: b
                max_devices: {per_stratum: 3}
                soak: 1m
              - name: c
                share: 0.5
                max_devices: {total: 40, per_stratum: 4}
                soak: 1m
            """
        )
    )
    a, b, c = plan.waves
    assert (a.cap.total, a.cap.per_stratum) == (7, None)
    assert a.gates.failure_budget == 0
    assert (b.cap.total, b.cap.per_stratum, b.share) == (None, 3, None)
    assert (c.cap.total, c.cap.per_stratum, c.share) == (40, 4, 0.5)


def test_selector_shorthand_and_include_exclude_forms() -> None:
    plan = parse_plan(
        plan_text(
            """
            name: sel
            strata: [platform, os_version]
            waves:
              - name: short
                selector: {platform: windows, region: [eu-*, us-east]}
                share: 0.1
                soak: 1m
              - name: long
                selector:
                  include: {tags: [internal]}
                  exclude: {channel: [pause]}
                share: 1.0
                soak: 1m
            """
        )
    )
    short, long = plan.waves
    assert plan.strata == ("platform", "os_version")
    assert dict(short.selector.include) == {"platform": ("windows",), "region": ("eu-*", "us-east")}
    assert short.selector.exclude == {}
    assert dict(long.selector.include) == {"tags": ("internal",)}
    assert dict(long.selector.exclude) == {"channel": ("pause",)}


def test_as_dict_carries_every_field() -> None:
    plan = parse_plan(EXAMPLES[0].read_text())
    data = plan.as_dict()
    assert data["name"] == plan.name
    assert data["strata"] == list(plan.strata)
    assert [w["name"] for w in data["waves"]] == [w.name for w in plan.waves]
    assert [w["soak_s"] for w in data["waves"]] == [w.soak.total_seconds() for w in plan.waves]


# -- one problem, named by field and line -----------------------------------------------------

VALID = plan_text(
    """
    name: ok
    waves:
      - name: canary
        share: 0.01
        soak: 30m
    """
)


def wave_plan(*wave_lines: str, strata: str | None = None) -> str:
    """A one-wave plan whose wave body is ``wave_lines`` (already indented for the wave)."""
    head = ["name: p"]
    if strata is not None:
        head.append(strata)
    head.append("waves:")
    return "\n".join([*head, "  - name: canary", *(f"    {line}" for line in wave_lines)]) + "\n"


def test_the_valid_baseline_parses() -> None:
    assert parse_plan(VALID).waves[0].name == "canary"


SINGLE_PROBLEMS = [
    # (id, text, field, needle for the line, message fragment)
    ("unknown-root-key", VALID + "colour: red\n", "colour", "colour", "unknown field"),
    ("unknown-wave-key", wave_plan("share: 0.1", "shares: 0.2", "soak: 1m"), "waves[0].shares", "shares:",
     "unknown field"),
    ("unknown-gate-key", wave_plan("share: 0.1", "soak: 1m", "gates:", "  failure_budgt: 1"),
     "waves[0].gates.failure_budgt", "failure_budgt", "unknown field"),
    ("unknown-cap-key", wave_plan("max_devices:", "  total: 5", "  each: 1", "soak: 1m"),
     "waves[0].max_devices.each", "each:", "unknown field"),
    ("unknown-selector-dimension", wave_plan("selector:", "  include:", "    colour: [red]", "share: 1", "soak: 1m"),
     "waves[0].selector.include.colour", "colour", "unknown field"),
    ("duplicate-root-key", VALID + "name: again\n", "name", "name: again", "appears twice"),
    ("duplicate-wave-key", wave_plan("share: 0.1", "soak: 1m", "soak: 2m"), "waves[0].soak", "soak: 2m",
     "appears twice"),
    ("missing-name", "waves:\n  - name: a\n    share: 1\n    soak: 1m\n", "name", "waves:", "is required"),
    ("missing-waves", "name: p\ndescription: nothing\n", "waves", "name: p", "is required"),
    ("missing-wave-soak", wave_plan("share: 0.1"), "waves[0].soak", "- name: canary", "is required"),
    ("missing-wave-name", "name: p\nwaves:\n  - share: 1\n    soak: 1m\n", "waves[0].name", "- share", "is required"),
    ("empty-waves", "name: p\nwaves: []\n", "waves", "waves:", "non-empty list"),
    ("waves-not-a-list", "name: p\nwaves:\n  name: a\n", "waves", "name: a", "non-empty list"),
    ("wave-not-a-mapping", "name: p\nwaves:\n  - canary\n", "waves[0]", "- canary", "must be a mapping"),
    ("name-empty", "name: ''\nwaves: [{name: a, share: 1, soak: 1m}]\n", "name", "name:", "non-empty string"),
    ("name-not-a-string", "name: 12\nwaves: [{name: a, share: 1, soak: 1m}]\n", "name", "name:",
     "non-empty string"),
    ("share-zero", wave_plan("share: 0", "soak: 1m"), "waves[0].share", "share:", "0 < share <= 1"),
    ("share-above-one", wave_plan("share: 1.5", "soak: 1m"), "waves[0].share", "share:", "0 < share <= 1"),
    ("share-percent", wave_plan("share: 10", "soak: 1m"), "waves[0].share", "share:", "1% is 0.01"),
    ("share-negative", wave_plan("share: -0.1", "soak: 1m"), "waves[0].share", "share:", "0 < share <= 1"),
    ("share-bool", wave_plan("share: true", "soak: 1m"), "waves[0].share", "share:", "got True"),
    ("share-string", wave_plan("share: half", "soak: 1m"), "waves[0].share", "share:", "got 'half'"),
    ("share-nan", wave_plan("share: .nan", "soak: 1m"), "waves[0].share", "share:", "0 < share <= 1"),
    ("share-null", wave_plan("share:", "soak: 1m"), "waves[0].share", "share:", "got None"),
    ("soak-fraction", wave_plan("share: 1", "soak: 1.5h"), "waves[0].soak", "soak:", "not a duration"),
    ("soak-words", wave_plan("share: 1", "soak: 30 minutes"), "waves[0].soak", "soak:", "not a duration"),
    ("soak-negative", wave_plan("share: 1", "soak: -5m"), "waves[0].soak", "soak:", "not a duration"),
    ("soak-units-out-of-order", wave_plan("share: 1", "soak: 30m2h"), "waves[0].soak", "soak:", "not a duration"),
    ("soak-unknown-unit", wave_plan("share: 1", "soak: 2w"), "waves[0].soak", "soak:", "not a duration"),
    ("soak-bool", wave_plan("share: 1", "soak: yes"), "waves[0].soak", "soak:", "not a duration"),
    ("soak-empty-string", wave_plan("share: 1", "soak: ''"), "waves[0].soak", "soak:", "not a duration"),
    ("cap-zero", wave_plan("max_devices: 0", "soak: 1m"), "waves[0].max_devices", "max_devices", ">= 1"),
    ("cap-negative", wave_plan("max_devices: -3", "soak: 1m"), "waves[0].max_devices", "max_devices", ">= 1"),
    ("cap-float", wave_plan("max_devices: 2.5", "soak: 1m"), "waves[0].max_devices", "max_devices", ">= 1"),
    ("cap-bool", wave_plan("max_devices: true", "soak: 1m"), "waves[0].max_devices", "max_devices", "got True"),
    ("cap-string", wave_plan("max_devices: '10'", "soak: 1m"), "waves[0].max_devices", "max_devices", "got '10'"),
    ("cap-empty-mapping", wave_plan("max_devices: {}", "soak: 1m"), "waves[0].max_devices", "max_devices",
     "needs total, per_stratum or both"),
    ("cap-list", wave_plan("max_devices: [10]", "soak: 1m"), "waves[0].max_devices", "max_devices",
     "must be a mapping"),
    ("cap-total-zero", wave_plan("max_devices:", "  total: 0", "soak: 1m"), "waves[0].max_devices.total",
     "total: 0", ">= 1"),
    ("cap-per-stratum-negative", wave_plan("max_devices:", "  per_stratum: -1", "soak: 1m"),
     "waves[0].max_devices.per_stratum", "per_stratum", ">= 1"),
    ("failure-budget-negative", wave_plan("share: 1", "soak: 1m", "gates:", "  failure_budget: -1"),
     "waves[0].gates.failure_budget", "failure_budget", ">= 0"),
    ("failure-budget-string", wave_plan("share: 1", "soak: 1m", "gates:", "  failure_budget: two"),
     "waves[0].gates.failure_budget", "failure_budget", "got 'two'"),
    ("min-devices-zero", wave_plan("share: 1", "soak: 1m", "gates:", "  min_devices: 0"),
     "waves[0].gates.min_devices", "min_devices", ">= 1"),
    ("gates-not-a-mapping", wave_plan("share: 1", "soak: 1m", "gates: strict"), "waves[0].gates", "gates:",
     "must be a mapping"),
    ("needs-share-or-cap", wave_plan("soak: 1m"), "waves[0]", "- name: canary", "needs share, max_devices"),
    ("strata-unknown-flow", wave_plan("share: 1", "soak: 1m", strata="strata: [platform, colour]"),
     "strata[1]", "strata:", "unknown dimension 'colour'"),
    ("strata-unknown-block", "name: p\nstrata:\n  - platform\n  - region\n  - colour\n"
     "waves: [{name: a, share: 1, soak: 1m}]\n", "strata[2]", "- colour", "unknown dimension 'colour'"),
    ("strata-twice", wave_plan("share: 1", "soak: 1m", strata="strata: [region, region]"), "strata", "strata:",
     "twice"),
    ("strata-empty", wave_plan("share: 1", "soak: 1m", strata="strata: []"), "strata", "strata:",
     "at least one"),
    ("selector-mixed", wave_plan("selector:", "  include:", "    region: [eu-*]", "  platform: [windows]",
                                 "share: 1", "soak: 1m"),
     "waves[0].selector", "platform: [windows]", "either include/exclude or plain keys"),
    ("selector-mixed-exclude", wave_plan("selector:", "  tags: [internal]", "  exclude:", "    channel: [pause]",
                                         "share: 1", "soak: 1m"),
     "waves[0].selector", "tags: [internal]", "either include/exclude or plain keys"),
    ("selector-empty-list", wave_plan("selector:", "  platform: []", "share: 1", "soak: 1m"),
     "waves[0].selector.platform", "platform: []", "at least one value"),
    ("selector-bool-item", wave_plan("selector:", "  include:", "    region: [eu-west, true]", "share: 1",
                                       "soak: 1m"),
     "waves[0].selector.include.region[1]", "region:", "non-empty string"),
    ("selector-not-a-mapping", wave_plan("selector: windows", "share: 1", "soak: 1m"), "waves[0].selector",
     "selector:", "must be a mapping"),
    ("root-not-a-mapping", "- name: p\n", "<plan>", "- name", "must be a mapping"),
]


@pytest.mark.parametrize(
    ("text", "field", "needle", "fragment"),
    [pytest.param(*case[1:], id=case[0]) for case in SINGLE_PROBLEMS],
)
def test_a_bad_field_is_named_with_its_line(text: str, field: str, needle: str, fragment: str) -> None:
    got_field, got_line, message = only_problem(text)
    assert got_field == field
    assert got_line == line_of(text, needle)
    assert fragment in message


def test_duplicate_wave_names_point_at_the_second_name() -> None:
    text = plan_text(
        """
        name: p
        waves:
          - name: canary
            share: 0.1
            soak: 1m
          - soak: 1m
            share: 0.5
            name: canary
        """
    )
    field, line, message = only_problem(text)
    assert field == "waves[1].name"
    assert line == line_of(text, "name: canary", occurrence=2)
    assert "'canary'" in message
    assert "waves[0]" in message


def test_strata_problems_keep_their_own_index_and_line() -> None:
    text = "name: p\nstrata:\n  - platform\n  - 5\n  - colour\nwaves: [{name: a, share: 1, soak: 1m}]\n"
    found = problems_of(text)
    assert [(f, line) for f, line, _ in found] == [("strata[1]", 4), ("strata[2]", 5)]


def test_too_many_waves() -> None:
    waves = "".join(f"  - {{name: w{i}, share: 1, soak: 1m}}\n" for i in range(MAX_WAVES + 1))
    field, line, message = only_problem("name: p\nwaves:\n" + waves)
    assert field == "waves"
    assert line == 3
    assert str(MAX_WAVES) in message


def test_exactly_max_waves_is_fine() -> None:
    waves = "".join(f"  - {{name: w{i}, share: 1, soak: 1m}}\n" for i in range(MAX_WAVES))
    assert len(parse_plan("name: p\nwaves:\n" + waves).waves) == MAX_WAVES


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        pytest.param("name: p\nwaves:\n  - name: a: b\n", 3, "mapping values are not allowed", id="colon"),
        pytest.param("name: p\nwaves:\n  - name: a\n\tsoak: 1m\n", 4, "'\\t'", id="tab"),
        pytest.param("name: p\ndescription: x\nwaves: [{name: a, soak: [1m}\n", 3, "but got '}'", id="unclosed"),
        pytest.param("name: p\n---\nname: q\n", 2, "another document", id="two-documents"),
    ],
)
def test_invalid_yaml_reports_its_line(text: str, line: int, fragment: str) -> None:
    field, got_line, message = only_problem(text)
    assert field == "<yaml>"
    assert got_line == line
    assert message.startswith("not valid YAML")
    assert fragment in message


@pytest.mark.parametrize("text", ["", "\n\n", "# just a comment\n"])
def test_an_empty_plan_says_so(text: str) -> None:
    assert only_problem(text) == ("<plan>", 1, "empty plan")


def test_every_problem_is_reported_at_once() -> None:
    text = plan_text(
        """
        name: many
        strata: [platform, colour]
        waves:
          - name: canary
            share: 2
            soak: soon
          - name: wide
            max_devices: {total: 0}
            soak: 1h
            gates:
              failure_budget: -1
              min_devices: 0
          - name: canary
            share: 0.5
            soak: 1h
            colour: blue
        """
    )
    with pytest.raises(PlanError) as info:
        parse_plan(text, source="plans/many.yaml")
    error = info.value
    got = {(p.field, p.line) for p in error.problems}
    assert got == {
        ("strata[1]", line_of(text, "strata:")),
        ("waves[0].share", line_of(text, "share: 2")),
        ("waves[0].soak", line_of(text, "soak: soon")),
        ("waves[1].max_devices.total", line_of(text, "max_devices")),
        ("waves[1].gates.failure_budget", line_of(text, "failure_budget")),
        ("waves[1].gates.min_devices", line_of(text, "min_devices")),
        ("waves[2].colour", line_of(text, "colour: blue")),
    }
    # The exception is an InvalidInput whose message leads with the first problem and counts the rest.
    assert isinstance(error, InvalidInput)
    first = error.problems[0]
    assert error.message == f"plans/many.yaml:{first.line}: {first.field}: {first.message} (and 6 more)"
    assert error.source == "plans/many.yaml"
    assert error.details["problems"] == [p.as_dict() for p in error.problems]


def test_one_problem_has_no_and_more() -> None:
    with pytest.raises(PlanError) as info:
        parse_plan(wave_plan("share: 3", "soak: 1m"))
    assert "more)" not in info.value.message
    assert info.value.message.startswith("<plan>:4: waves[0].share: ")


# -- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("45s", 45),
        ("30m", 1800),
        ("2h", 7200),
        ("1d", 86400),
        ("1h30m", 5400),
        ("1d2h3m4s", 86400 + 7200 + 180 + 4),
        ("90", 90),
        ("0", 0),
        ("0s", 0),
        (" 5m ", 300),
        ("36h", 129600),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", " ", "m", "1.5h", "5 m", "1m1h", "-1s", "1w", "1h 30m", "1H", "abc"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59, "59s"), (60, "1m"), (3600, "1h"), (5400, "1h30m"), (86400, "1d"), (90061, "1d1h1m1s")],
)
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**9))
def test_format_then_parse_round_trips(seconds: int) -> None:
    delta = timedelta(seconds=seconds)
    text = format_duration(delta)
    assert parse_duration(text) == delta
    assert text == text.strip()
    assert text[-1] in "dhms"


@settings(max_examples=200, deadline=None)
@given(
    st.tuples(
        st.none() | st.integers(0, 400),
        st.none() | st.integers(0, 100),
        st.none() | st.integers(0, 1000),
        st.none() | st.integers(0, 100_000),
    ).filter(lambda parts: any(p is not None for p in parts))
)
def test_parse_then_format_normalises(parts: tuple[int | None, ...]) -> None:
    text = "".join(f"{n}{unit}" for n, unit in zip(parts, "dhms", strict=True) if n is not None)
    delta = parse_duration(text)
    d, h, m, s = (n or 0 for n in parts)
    assert delta == timedelta(days=d, hours=h, minutes=m, seconds=s)
    canonical = format_duration(delta)
    assert parse_duration(canonical) == delta
    assert format_duration(parse_duration(canonical)) == canonical


# -- selectors -------------------------------------------------------------------------------

WIN_EU = DeviceAttributes(platform="windows", os_version="11", arch="x64", region="eu-west",
                          tenant="acme", channel="ga", tags=frozenset({"internal", "lab-3"}))
MAC_US = DeviceAttributes(platform="macos", os_version="14.4", arch="arm64", region="us-east",
                          tenant="globex", channel="early")
LINUX_EU = DeviceAttributes(platform="linux", os_version="6.8", region="eu-north", channel="pause",
                            tags=frozenset({"server"}))
FLEET = (WIN_EU, MAC_US, LINUX_EU)


def selected(selector: Selector) -> set[str]:
    return {a.platform for a in FLEET if selector.matches(a)}


def sel(include: dict[str, tuple[str, ...]] | None = None,
        exclude: dict[str, tuple[str, ...]] | None = None) -> Selector:
    return Selector(include=include or {}, exclude=exclude or {})


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        pytest.param(sel(), {"windows", "macos", "linux"}, id="empty-matches-all"),
        pytest.param(sel({"platform": ("windows",)}), {"windows"}, id="exact"),
        pytest.param(sel({"platform": ("Windows",)}), set(), id="case-sensitive"),
        pytest.param(sel({"platform": ("windows", "linux")}), {"windows", "linux"}, id="any-pattern"),
        pytest.param(sel({"region": ("eu-*",)}), {"windows", "linux"}, id="glob-star"),
        pytest.param(sel({"region": ("eu-???t",)}), {"windows"}, id="glob-question"),
        pytest.param(sel({"region": ("[ue][us]-*",)}), {"windows", "macos", "linux"}, id="glob-class"),
        pytest.param(sel({"os": ("1?",)}), {"windows"}, id="os-means-os-version"),
        pytest.param(sel({"arch": ("arm*",)}), {"macos"}, id="arch"),
        pytest.param(sel({"tenant": ("acme", "globex")}), {"windows", "macos"}, id="tenant"),
        pytest.param(sel({"region": ("eu-*",), "platform": ("linux",)}), {"linux"}, id="include-all-dimensions"),
        pytest.param(sel({"region": ("eu-*",), "platform": ("macos",)}), set(), id="include-no-overlap"),
        pytest.param(sel(exclude={"channel": ("pause",)}), {"windows", "macos"}, id="exclude"),
        pytest.param(sel({"region": ("eu-*",)}, {"channel": ("pause",)}), {"windows"}, id="include-then-exclude"),
        pytest.param(sel(exclude={"channel": ("pause",), "platform": ("macos",)}), {"windows"},
                     id="exclude-any-dimension"),
        pytest.param(sel({"tags": ("internal",)}), {"windows"}, id="tag"),
        pytest.param(sel({"tags": ("lab-*",)}), {"windows"}, id="tag-glob"),
        pytest.param(sel({"tags": ("nope", "server")}), {"linux"}, id="tag-any"),
        pytest.param(sel(exclude={"tags": ("internal",)}), {"macos", "linux"}, id="exclude-tag"),
        pytest.param(sel({"tags": ("*",)}), {"windows", "linux"}, id="untagged-never-matches-tags"),
    ],
)
def test_selector_matches(selector: Selector, expected: set[str]) -> None:
    assert selected(selector) == expected


def test_parsed_selector_matches_like_it_reads() -> None:
    plan = parse_plan(
        wave_plan("selector:", "  include: {region: [eu-*], tags: [internal, server]}", "  exclude: {os: ['6.*']}",
                  "share: 1", "soak: 1m")
    )
    assert selected(plan.waves[0].selector) == {"windows"}


@settings(max_examples=150, deadline=None)
@given(
    platform=st.sampled_from(["windows", "macos", "linux"]),
    region=st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12),
)
def test_exclude_always_wins_over_include(platform: str, region: str) -> None:
    attrs = DeviceAttributes(platform=platform, region=region)
    assert Selector(include={"region": ("*",)}).matches(attrs)
    assert not Selector(include={"region": ("*",)}, exclude={"platform": (platform,)}).matches(attrs)
    assert Selector(include={"region": (region,)}).matches(attrs)


def test_selector_numbers_are_labels_as_written() -> None:
    plan = parse_plan("name: p\nwaves:\n  - name: a\n    selector: {os: [11, 10.10]}\n    share: 1\n    soak: 90\n")
    assert plan.waves[0].selector.include == {"os": ("11", "10.10")}
    assert plan.waves[0].soak.total_seconds() == 90


def test_soak_is_never_read_as_base_60() -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan("name: p\nwaves:\n  - name: a\n    share: 1\n    soak: 1:30\n")
    assert caught.value.problems[0].field == "waves[0].soak"
    assert caught.value.problems[0].line == 5


def test_health_settings_and_a_per_stratum_failure_budget() -> None:
    plan = parse_plan(plan_text("""
        name: judged
        health: {alpha: 0.05, hazard_ratio_limit: 1.5, trial_timeout: 15m, silence_after: 2h, baseline_rate: 0.002}
        waves:
          - name: all
            share: 1.0
            soak: 1h
            gates: {failure_budget: {total: 10, per_stratum: 2}}
        """))
    assert plan.health.as_dict() == {"alpha": 0.05, "hazard_ratio_limit": 1.5, "trial_timeout_s": 900.0,
                                     "placebo_after_s": 450.0, "silence_after_s": 7200.0, "baseline_rate": 0.002,
                                     "error_pause_after_s": 900.0}
    assert (plan.waves[0].gates.failure_budget, plan.waves[0].gates.failure_budget_per_stratum) == (10, 2)
    default = parse_plan(plan_text("""
        name: plain
        waves:
          - name: all
            share: 1.0
            soak: 1h
        """)).health
    assert (default.alpha, default.hazard_ratio_limit, default.baseline_rate) == (0.01, None, None)


PLAIN = """
    name: plain
    health: {alpha: 0.05}
    waves:
      - name: all
        share: 1.0
        soak: 1h
    """


def test_health_defaults_follow_the_content_category() -> None:
    rapid = parse_plan(plan_text(PLAIN), category=Category.RAPID_RESPONSE).health
    assert (rapid.alpha, rapid.trial_timeout, rapid.silence_after, rapid.hazard_ratio_limit) == (
        0.05, timedelta(minutes=10), timedelta(hours=16), None)  # the plan's alpha, the category's rest
    software = parse_plan(plan_text(PLAIN), category=Category.SOFTWARE).health
    assert (software.trial_timeout, software.silence_after, software.hazard_ratio_limit) == (
        timedelta(hours=1), timedelta(hours=24), 2.0)
    assert software.placebo_wait == timedelta(minutes=30)
    no_section = parse_plan(plan_text(PLAIN.replace("    health: {alpha: 0.05}\n", "")),
                            category=Category.SOFTWARE).health
    assert no_section == HEALTH_DEFAULTS[Category.SOFTWARE]
    explicit = parse_plan(plan_text(PLAIN.replace("{alpha: 0.05}", "{trial_timeout: 20m, placebo_after: 12m}")),
                          category=Category.SOFTWARE).health
    assert (explicit.trial_timeout, explicit.placebo_wait) == (timedelta(minutes=20), timedelta(minutes=12))


def test_a_placebo_wait_too_close_to_the_trial_timeout_is_refused() -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(plan_text(PLAIN.replace("{alpha: 0.05}", "{trial_timeout: 20m, placebo_after: 16m}")))
    [problem] = caught.value.problems
    assert (problem.field, problem.line) == ("health.placebo_after", 2)
    assert "at most 3/4 of trial_timeout (15m)" in problem.message


def test_bad_health_settings_name_field_and_line() -> None:
    with pytest.raises(PlanError) as caught:
        parse_plan(plan_text("""
            name: judged
            health:
              alpha: 1.5
              hazard_ratio_limit: 0.5
              trial_timeout: soon
              baseline_rate: -1
              typo: 1
            waves:
              - name: all
                share: 1.0
                soak: 1h
                gates: {failure_budget: {per_stratum: -1}}
            """))
    problems = {(p.field, p.line) for p in caught.value.problems}
    assert problems == {("health.alpha", 3), ("health.hazard_ratio_limit", 4), ("health.trial_timeout", 5),
                        ("health.baseline_rate", 6), ("health.typo", 7),
                        ("waves[0].gates.failure_budget.per_stratum", 12)}


def test_evidence_gates_default_by_category_and_can_be_set_per_wave() -> None:
    text = plan_text("""
        name: gated
        waves:
          - name: canary
            max_devices: {per_stratum: 5}
            soak: 1m
            gates: {min_healthy: 4, max_undecided: 0.05, max_in_trial: 3}
          - name: all
            share: 1.0
            soak: 1m
        """)
    plan = parse_plan(text, category=Category.RAPID_RESPONSE)
    canary, rest = plan.waves[0].gates, plan.waves[1].gates
    assert (canary.min_healthy, canary.max_undecided, canary.max_in_trial) == (4, 0.05, 3)
    rapid = GATE_DEFAULTS[Category.RAPID_RESPONSE]
    assert (rest.min_healthy, rest.max_undecided, rest.max_in_trial) == (
        rapid.min_healthy, rapid.max_undecided, rapid.max_in_trial)
    software = parse_plan(text, category=Category.SOFTWARE).waves[1].gates
    assert software.min_healthy == GATE_DEFAULTS[Category.SOFTWARE].min_healthy > rapid.min_healthy
    assert plan.waves[0].as_dict()["gates"]["max_in_trial"] == 3


@pytest.mark.parametrize(("gates", "field", "message"), [
    ("{min_healthy: 0}", "waves[0].gates.min_healthy", "must be an integer >= 1, got 0"),
    ("{max_undecided: 1.5}", "waves[0].gates.max_undecided", "must be a fraction with 0 <= max_undecided < 1"),
    ("{max_in_trial: -2}", "waves[0].gates.max_in_trial", "must be an integer >= 1, got -2"),
    ("{max_inflight: 2}", "waves[0].gates.max_inflight", "unknown field"),
])
def test_bad_evidence_gates_name_field_and_line(gates: str, field: str, message: str) -> None:
    with pytest.raises(PlanError) as err:
        parse_plan(f"name: p\nwaves:\n  - name: w\n    share: 1.0\n    soak: 1m\n    gates: {gates}\n")
    problems = {p.field: p for p in err.value.problems}
    assert field in problems, problems
    assert message in problems[field].message
    assert problems[field].line == 6

"""Channel policies, pure: checking values (every refusal names its field), resolution (group
over tenant over default), maintenance windows, the rollout population, and what a device its
policy holds back gets."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ringfence.core.assignment import Decision, RolloutView, Target
from ringfence.core.errors import InvalidInput
from ringfence.core.models import Category, DeviceAttributes
from ringfence.core.plan import parse_plan
from ringfence.core.policy import (
    Channel,
    ChannelPolicy,
    GeneralRelease,
    Hold,
    Holding,
    PolicyBook,
    Window,
    aged_target,
    effective_attributes,
    held_decision,
    hold_of,
    in_windows,
    joins_now,
    make_policy,
    parse_window,
    rollout_population,
    window_from_json,
)
from ringfence.core.rollout import Phase

CT = "sensor/templates"
SW = "agent/binary"
FRIDAY = datetime(2024, 7, 19, 4, 0, tzinfo=UTC)  # a Friday
SATURDAY_3AM = datetime(2024, 7, 20, 3, 0, tzinfo=UTC)
V1 = Target(CT, "1.0", "a" * 64, 10, "rel-1")
V2 = Target(CT, "2.0", "b" * 64, 10, "rel-2")
V3 = Target(CT, "3.0", "c" * 64, 10, "rel-3")
PINNED = Target(CT, "0.9", "d" * 64, 10, None)


def refused(field: str, **values: Any) -> str:
    with pytest.raises(InvalidInput) as caught:
        make_policy(**{"tenant": "acme", "category": "rapid-response", **values})
    assert caught.value.details["field"] == field, caught.value.message
    return caught.value.message


# -- checking values -------------------------------------------------------------------------------
def test_a_valid_policy_of_each_channel() -> None:
    assert make_policy(tenant="acme", category="rapid-response", channel="early").channel is Channel.EARLY
    delayed = make_policy(tenant=" acme ", category="software", channel="ga", delay_hours=24, group="lab")
    assert (delayed.tenant, delayed.group, delayed.delay, delayed.joins_rollouts) == (
        "acme", "lab", timedelta(hours=24), False)
    pin = make_policy(tenant="acme", category="rapid-response", channel="pin", content_type=CT, version="0.9")
    assert (pin.content_type, pin.version, pin.describe()) == (CT, "0.9", f"pin {CT} 0.9")
    assert make_policy(tenant="acme", category="configuration", channel="pause").channel is Channel.PAUSE
    assert make_policy(tenant="acme", category="rapid-response", group="").group is None  # empty: whole tenant


def test_refusals_name_the_field() -> None:
    assert "expected one of early, ga, pause, pin" in refused("channel", channel="slow")
    assert "system-critical content cannot be paused" in refused("channel", category="system-critical",
                                                                 channel="pause")
    refused("category", category="firmware")
    refused("tenant", tenant=" ")
    refused("group", group=" lab")
    assert "one of 1, 2, 4, 8, 12, 24, 48, 72" in refused("delay_hours", delay_hours=3)
    assert "applies to channel ga" in refused("delay_hours", channel="early", delay_hours=24)
    refused("version", channel="pin", content_type=CT)
    refused("content_type", channel="pin", version="1.0")
    refused("version", channel="pin", content_type=CT, version="bad version!")
    refused("version", channel="ga", version="1.0")
    refused("content_type", channel="early", content_type=CT)


def test_windows_are_for_software_only_and_checked_field_by_field() -> None:
    window = {"days": ["sat", "sun"], "start": "02:00", "end": "06:00"}
    assert "apply to software content, not rapid-response" in refused("windows", windows=[window])
    assert make_policy(tenant="acme", category="software", windows=[window]).windows == (
        Window((5, 6), 120, 360),)
    assert "would change nothing" in refused("windows", category="software", channel="pause", windows=[window])
    refused("windows[0].days", category="software", windows=[{**window, "days": ["caturday"]}])
    refused("windows[1].start", category="software", windows=[window, {**window, "start": "2am"}])
    refused("windows[0].end", category="software", windows=[{**window, "end": "24:30"}])
    refused("windows[0].end", category="software", windows=[{**window, "end": "02:00"}])
    refused("windows[0].start", category="software", windows=[{**window, "start": "24:00"}])
    refused("windows[0].until", category="software", windows=[{**window, "until": "x"}])
    refused("windows[0].end", category="software", windows=[{"days": ["sat"], "start": "02:00"}])
    refused("windows[0]", category="software", windows=[42])
    assert window_from_json({"days": "sat,sun", "start": "02:00", "end": "06:00"}) == Window((5, 6), 120, 360)


# -- windows ---------------------------------------------------------------------------------------
def test_a_window_holds_its_days_and_hours_in_utc() -> None:
    weekend = parse_window("sat,sun 02:00-06:00")
    assert str(weekend) == "sat,sun 02:00-06:00"
    assert weekend.as_dict() == {"days": ["sat", "sun"], "start": "02:00", "end": "06:00"}
    assert not weekend.contains(FRIDAY)
    assert weekend.contains(SATURDAY_3AM)
    assert weekend.contains(datetime(2024, 7, 20, 2, 0, tzinfo=UTC))  # start included
    assert not weekend.contains(datetime(2024, 7, 20, 6, 0, tzinfo=UTC))  # end excluded
    # the same instant in another zone is the same instant
    assert weekend.contains(datetime(2024, 7, 20, 5, 0, tzinfo=UTC).astimezone(ZoneInfo("America/New_York")))


def test_a_window_may_run_past_midnight_and_days_may_be_ranges() -> None:
    nights = parse_window("mon-fri 22:00-02:00")
    assert nights.days == (0, 1, 2, 3, 4)
    assert nights.contains(datetime(2024, 7, 19, 23, 0, tzinfo=UTC))  # Friday night
    assert nights.contains(datetime(2024, 7, 20, 1, 0, tzinfo=UTC))  # ... into Saturday morning
    assert not nights.contains(datetime(2024, 7, 20, 23, 0, tzinfo=UTC))  # Saturday night: not listed
    assert not nights.contains(datetime(2024, 7, 15, 1, 0, tzinfo=UTC))  # Monday 01:00: Sunday's night
    assert parse_window("fri-mon 00:00-24:00").days == (0, 4, 5, 6)
    whole = parse_window("sun 00:00-24:00")
    assert whole.contains(datetime(2024, 7, 21, 23, 59, 59, tzinfo=UTC))
    assert not whole.contains(datetime(2024, 7, 22, 0, 0, tzinfo=UTC))
    with pytest.raises(InvalidInput) as caught:
        parse_window("weekends at two", "--window[0]")
    assert caught.value.details["field"] == "--window[0]"
    assert in_windows((), FRIDAY), "no windows: always open"


# -- resolution ------------------------------------------------------------------------------------
def policy(channel: str = "ga", *, tenant: str = "acme", group: str | None = None,
           category: str = "rapid-response", **more: Any) -> ChannelPolicy:
    return make_policy(tenant=tenant, group=group, category=category, channel=channel, **more)


def test_a_group_policy_wins_over_the_tenant_policy_over_the_default() -> None:
    tenant_wide = policy("early")
    lab = policy("pause", group="lab")
    book = PolicyBook([lab, tenant_wide, policy("pause", tenant="globex")])
    rr = Category.RAPID_RESPONSE
    assert book.resolve("acme", frozenset({"lab", "x"}), rr) == lab
    assert book.resolve("acme", frozenset({"x"}), rr) == tenant_wide
    assert book.resolve("initech", frozenset({"lab"}), rr) is None  # the default
    assert book.resolve("acme", frozenset({"lab"}), Category.SOFTWARE) is None  # another category
    # without a tenant policy, a device outside the group gets the default
    assert PolicyBook([lab]).resolve("acme", frozenset(), rr) is None


def test_of_two_groups_the_name_that_sorts_first_wins() -> None:
    book = PolicyBook([policy("pause", group="zeta"), policy("early", group="alpha")])
    winner = book.resolve("acme", frozenset({"zeta", "alpha"}), Category.RAPID_RESPONSE)
    assert winner is not None and winner.group == "alpha"


def test_a_pin_covers_its_content_type_only() -> None:
    pin = policy("pin", content_type=CT, version="0.9")
    assert pin.for_content_type(CT) is pin
    assert pin.for_content_type("sensor/other") is None  # the category's other types: ga
    timed = make_policy(tenant="acme", category="software", channel="pin", content_type=SW, version="1",
                        windows=["sat 02:00-06:00"])
    other = timed.for_content_type("agent/other")
    assert other is not None and other.channel is Channel.GA and other.windows == timed.windows


# -- who joins a rollout, and the population it is planned on --------------------------------------
def test_who_joins_rollouts_and_why_the_others_are_held() -> None:
    weekend = make_policy(tenant="acme", category="software", windows=["sat,sun 02:00-06:00"])
    assert joins_now(None, FRIDAY) and joins_now(policy("early"), FRIDAY)
    assert not joins_now(weekend, FRIDAY) and joins_now(weekend, SATURDAY_3AM)
    for held in (policy("pause"), policy("pin", content_type=CT, version="1"), policy(delay_hours=1)):
        assert not joins_now(held, SATURDAY_3AM)
    assert [hold_of(p, FRIDAY) for p in (None, policy("early"), policy("pause"),
                                          policy("pin", content_type=CT, version="1"),
                                          policy(delay_hours=8), weekend)] == [
        None, None, Hold.PAUSE, Hold.PIN, Hold.DELAY, Hold.WINDOW]
    assert hold_of(weekend, SATURDAY_3AM) is None
    assert hold_of(weekend, None) is None  # windows not judged without a time


def test_the_rollout_population_leaves_out_held_devices_and_counts_early_ones_as_early() -> None:
    def attrs(tenant: str, *tags: str) -> DeviceAttributes:
        return DeviceAttributes(platform="windows", region="eu-west", tenant=tenant, tags=frozenset(tags))

    population = Counter({attrs("acme"): 5, attrs("acme", "lab"): 2, attrs("globex"): 7, attrs("initech"): 3,
                          attrs("hooli"): 4, attrs("umbrella"): 0})
    book = PolicyBook([policy("early"), policy("pause", group="lab"), policy("pause", tenant="globex"),
                       policy(tenant="initech", delay_hours=24),
                       policy("pin", tenant="hooli", content_type="sensor/other", version="1")])
    counted = rollout_population(population, book, Category.RAPID_RESPONSE, CT)
    early = effective_attributes(attrs("acme"), policy("early"))
    assert early.channel == "early"
    assert counted == {early: 5, attrs("hooli"): 4}  # hooli's pin is of another content type
    assert rollout_population(population, book, Category.SOFTWARE, SW) == {k: v for k, v in population.items() if v}
    assert rollout_population(population, PolicyBook(), Category.RAPID_RESPONSE, CT) is population


# -- what a held device gets -----------------------------------------------------------------------
def history(*entries: tuple[Target, int]) -> tuple[GeneralRelease, ...]:
    """(target, hours before FRIDAY it completed), newest first."""
    return tuple(GeneralRelease(t, FRIDAY - timedelta(hours=h)) for t, h in entries)


def test_a_delay_picks_the_newest_release_old_enough_and_never_moves_backwards() -> None:
    done = history((V3, 2), (V2, 30), (V1, 100))
    day = timedelta(hours=24)
    assert aged_target(done, day, FRIDAY, set(), None) == V2
    assert aged_target(done, timedelta(hours=1), FRIDAY, set(), "1.0") == V3
    assert aged_target(done, day, FRIDAY + timedelta(hours=22), set(), "2.0") == V3  # 3.0 now GA for 24h
    assert aged_target(done, day, FRIDAY, {"2.0"}, None) == V1  # revoked: skipped
    assert aged_target(done, day, FRIDAY, set(), "3.0") is None  # runs a newer GA release: keeps it
    assert aged_target(done, timedelta(hours=72), FRIDAY - timedelta(hours=50), set(), None) is None  # none yet
    assert aged_target((), day, FRIDAY, set(), None) is None


def rollout(phase: Phase = Phase.ROLLING) -> RolloutView:
    plan = parse_plan("name: all\nwaves:\n  - name: all\n    share: 1.0\n    soak: 1m\n")
    return RolloutView("rel-3", CT, V3, V2, phase, 0, plan, "salt", ())


HOLDING = Holding(baseline=V2, pinned=PINNED, history=history((V2, 30), (V1, 100)), revoked=frozenset())


def test_pause_keeps_what_it_runs_and_pin_runs_its_version() -> None:
    assert held_decision(policy("pause"), rollout(), None, "1.0", FRIDAY, HOLDING) == Decision(None)
    assert held_decision(policy("pause"), None, None, "1.0", FRIDAY, HOLDING) == Decision(None)
    pin = policy("pin", content_type=CT, version="0.9")
    assert held_decision(pin, rollout(), None, "2.0", FRIDAY, HOLDING) == Decision(PINNED)
    assert held_decision(pin, None, None, None, FRIDAY, HOLDING) == Decision(PINNED)


def test_a_revoked_pin_gives_way_to_the_baseline() -> None:
    pin = policy("pin", content_type=CT, version="0.9")
    revoked = Holding(baseline=V2, pinned=PINNED, revoked=frozenset({"0.9"}))
    assert held_decision(pin, None, None, "0.9", FRIDAY, revoked) == Decision(V2)


def test_a_delayed_device_gets_the_aged_release_and_keeps_an_earlier_admission() -> None:
    delayed = policy(delay_hours=24)
    assert held_decision(delayed, rollout(), None, "1.0", FRIDAY, HOLDING) == Decision(V2)
    assert held_decision(delayed, rollout(), 0, "3.0", FRIDAY, HOLDING) == Decision(None)


def test_safety_wins_a_device_admitted_before_its_policy_follows_the_rollback() -> None:
    back = Decision(V2, rollback_from="3.0")
    for held in (policy("pause"), policy(delay_hours=72), policy("pin", content_type=CT, version="0.9")):
        assert held_decision(held, rollout(Phase.ROLLING_BACK), 0, "3.0", FRIDAY, HOLDING) == back
        assert held_decision(held, rollout(Phase.ROLLING_BACK), None, "2.0", FRIDAY, HOLDING) != back


def test_outside_its_window_a_device_keeps_what_it_runs() -> None:
    weekend = make_policy(tenant="acme", category="software", channel="ga", delay_hours=24,
                          windows=["sat,sun 02:00-06:00"])
    assert held_decision(weekend, None, None, "1.0", FRIDAY, HOLDING) == Decision(None)
    assert held_decision(weekend, None, None, "1.0", SATURDAY_3AM, HOLDING) == Decision(V2)

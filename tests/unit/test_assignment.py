"""Assignment: what a device should run, for each phase of its content type's rollout."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from ringfence.core.assignment import Decision, RolloutView, Target, decide
from ringfence.core.cohorts import Admissions, bucket, cohort_table
from ringfence.core.models import DeviceAttributes, stratum_key
from ringfence.core.plan import parse_plan
from ringfence.core.rollout import Phase

PLAN = parse_plan(
    """
name: assign
waves:
  - name: five-percent
    share: 0.05
    soak: 1m
  - name: capped-half
    share: 0.5
    max_devices: {total: 40}
    soak: 1m
  - name: everyone
    share: 1.0
    soak: 1m
"""
)
SALT = "release-123"
ATTRS = DeviceAttributes(platform="windows", region="eu-west")
FLEET = [f"device-{i}" for i in range(300)]
NEW = Target("sensor/templates", "291", "a" * 64, 41_000, "release-123")
BASELINE = Target("sensor/templates", "290", "b" * 64, 40_000, "release-100")
NOBODY = Admissions(by_stratum={}, by_wave={})
STRATUM = stratum_key(ATTRS, PLAN.strata)


def view(phase: Phase = Phase.ROLLING, wave: int = 0, baseline: Target | None = BASELINE) -> RolloutView:
    return RolloutView(
        release_id="release-123",
        content_type="sensor/templates",
        target=NEW,
        baseline=baseline,
        phase=phase,
        wave=wave,
        plan=PLAN,
        salt=SALT,
        table=cohort_table(PLAN, {ATTRS: len(FLEET)}),
    )


def position(device_id: str) -> float:
    return bucket(SALT, device_id)


def test_fleet_has_devices_on_both_sides_of_the_first_share() -> None:
    inside = [d for d in FLEET if position(d) < 0.05]
    assert 5 <= len(inside) <= 30


def test_rolling_admits_exactly_the_devices_below_the_share() -> None:
    v = view(Phase.ROLLING, wave=0)
    for device_id in FLEET:
        decision = decide(v, device_id, ATTRS, None, NOBODY)
        if position(device_id) < 0.05:
            assert decision == Decision(NEW, admit_wave=0)
        else:
            assert decision == Decision(BASELINE)


def test_rolling_only_admits_up_to_the_current_wave() -> None:
    second = view(wave=1).table[1].threshold(STRATUM)
    assert 0.05 < second <= 0.5
    device_id = next(d for d in FLEET if 0.05 <= position(d) < second)
    assert decide(view(wave=0), device_id, ATTRS, None, NOBODY) == Decision(BASELINE)
    assert decide(view(wave=1), device_id, ATTRS, None, NOBODY) == Decision(NEW, admit_wave=1)


def test_rolling_admits_within_the_cap() -> None:
    """Devices check in one by one and the caller records each admission, as the server does."""
    v = view(wave=1)
    by_stratum: Counter[tuple[int, str]] = Counter()
    by_wave: Counter[int] = Counter()
    admitted: dict[str, int] = {}
    for device_id in FLEET:
        # the stratum's canary confirmed health: only the caps hold admissions back here
        decision = decide(v, device_id, ATTRS, admitted.get(device_id),
                          Admissions(by_stratum, by_wave, healthy={STRATUM: 5}))
        if decision.admit_wave is not None:
            assert decision.target == NEW
            admitted[device_id] = decision.admit_wave
            by_stratum[(decision.admit_wave, STRATUM)] += 1
            by_wave[decision.admit_wave] += 1
        else:
            assert decision.target == BASELINE
    assert by_wave[1] == 40
    assert by_wave[0] == sum(1 for d in FLEET if position(d) < 0.05)
    # The cap is full: a device that would fit the wave's share is not admitted any more.
    waiting = [d for d in FLEET if d not in admitted and 0.05 <= position(d) < 0.5]
    assert waiting
    canaried = Admissions(by_stratum, by_wave, healthy={STRATUM: 5})
    for device_id in waiting:
        assert decide(v, device_id, ATTRS, None, canaried) == Decision(BASELINE)
    # The next wave takes them.
    for device_id in waiting:
        assert decide(view(wave=2), device_id, ATTRS, None, canaried) == Decision(
            NEW, admit_wave=2
        )


@pytest.mark.parametrize("phase", [Phase.ROLLING, Phase.PAUSED, Phase.HALTED])
def test_admitted_devices_keep_the_target(phase: Phase) -> None:
    far = next(d for d in FLEET if position(d) > 0.9)  # admitted before, whatever its bucket now says
    for wave in (0, 1):
        assert decide(view(phase, wave), far, ATTRS, wave, NOBODY) == Decision(NEW)


@pytest.mark.parametrize("phase", [Phase.PAUSED, Phase.HALTED])
def test_paused_and_halted_admit_nobody_new(phase: Phase) -> None:
    v = view(phase, wave=2)
    for device_id in FLEET:
        assert decide(v, device_id, ATTRS, None, NOBODY) == Decision(BASELINE)


@pytest.mark.parametrize("phase", [Phase.ROLLING_BACK, Phase.ROLLED_BACK])
def test_rolling_back_sends_exposed_devices_to_their_lkg_and_others_to_the_baseline(phase: Phase) -> None:
    v = view(phase, wave=2)
    for device_id in FLEET[:50]:
        assert decide(v, device_id, ATTRS, None, NOBODY) == Decision(BASELINE)
        assert decide(v, device_id, ATTRS, 0, NOBODY) == Decision(BASELINE, rollback_from=NEW.version)


@pytest.mark.parametrize("phase", [Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.PAUSED, Phase.HALTED])
def test_without_a_baseline_new_devices_get_nothing(phase: Phase) -> None:
    v = view(phase, wave=2, baseline=None)
    assert decide(v, FLEET[0], ATTRS, None, NOBODY) == Decision(None)


def test_first_release_outside_the_wave_gets_nothing() -> None:
    device_id = next(d for d in FLEET if position(d) >= 0.05)
    assert decide(view(wave=0, baseline=None), device_id, ATTRS, None, NOBODY) == Decision(None)


def test_a_device_outside_every_selector_gets_the_baseline() -> None:
    plan = parse_plan("name: win\nwaves: [{name: w, share: 1, soak: 1m, selector: {platform: windows}}]\n")
    linux = DeviceAttributes(platform="linux", region="eu-west")
    v = replace(view(), plan=plan, table=cohort_table(plan, {ATTRS: 10, linux: 10}))
    assert decide(v, FLEET[0], linux, None, NOBODY) == Decision(BASELINE)
    assert decide(v, FLEET[0], ATTRS, None, NOBODY) == Decision(NEW, admit_wave=0)


def test_decisions_are_deterministic() -> None:
    v = view(wave=1)
    first = [decide(v, d, ATTRS, None, NOBODY) for d in FLEET]
    again = [decide(view(wave=1), d, ATTRS, None, NOBODY) for d in FLEET]
    assert first == again


def test_another_salt_picks_other_devices() -> None:
    v = view(wave=0)
    other = replace(v, salt="release-456")
    mine = {d for d in FLEET if decide(v, d, ATTRS, None, NOBODY).admit_wave is not None}
    theirs = {d for d in FLEET if decide(other, d, ATTRS, None, NOBODY).admit_wave is not None}
    assert mine
    assert theirs
    assert mine != theirs

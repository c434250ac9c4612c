"""Failure curves, as the dashboard draws them: at each moment, how many devices were exposed
and control, and how many of each had failed; a failure counts in the arm the device was in when
it failed, silence counts as the judges count it, and the exposed failures agree with the judges'
tallies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringfence.analysis.curves import failure_curves
from ringfence.analysis.tallies import Silence, Track, tally

T0 = datetime(2024, 7, 19, 4, 9, tzinfo=UTC)
SILENCE = Silence(trial_timeout=timedelta(minutes=10), silence_after=timedelta(minutes=30))
W, L = "windows/eu-west", "linux/eu-west"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_each_moment_counts_devices_by_the_arm_they_were_in_and_failures_where_they_happened() -> None:
    tracks = [
        Track("a", W, since=at(0), exposed_at=at(2), last_heard=at(9), failed_at=at(4), failure="crash"),
        Track("b", W, since=at(0), exposed_at=at(6), healthy_at=at(7), last_heard=at(9)),
        Track("c", W, since=at(0), last_heard=at(9), failed_at=at(3), failure="crash"),  # control, failed
        Track("d", W, since=at(0), last_heard=at(9)),
        Track("e", L, since=at(0), exposed_at=at(1), healthy_at=at(2), last_heard=at(9)),
    ]
    curves = failure_curves(tracks, at(0), at(8), SILENCE, points=5)  # moments 0', 2', 4', 6', 8'

    assert [c.stratum for c in curves] == [L, W]
    windows = [p.as_list() for p in curves[1].points]
    #            at_s exposed failed control failed
    assert windows == [[0.0, 0, 0, 4, 0],
                       [120.0, 1, 0, 3, 0],
                       [240.0, 1, 1, 3, 1],
                       [360.0, 2, 1, 2, 1],
                       [480.0, 2, 1, 2, 1]]
    assert [p.as_list() for p in curves[0].points][-1] == [480.0, 1, 0, 0, 0]


def test_silence_is_a_failure_from_when_the_judges_say_it_began() -> None:
    quiet = Track("q", W, since=at(0), exposed_at=at(1))  # never heard from after its intent
    [curve] = failure_curves([quiet], at(0), at(60), SILENCE, points=3)  # 0', 30', 60'
    assert [(p.exposed, p.exposed_failed) for p in curve.points] == [(0, 0), (1, 0), (1, 1)]  # silent at 31'


def test_a_device_that_failed_before_its_exposure_leaves_the_control_arm_with_its_failure() -> None:
    track = Track("x", W, since=at(0), exposed_at=at(5), last_heard=at(9), failed_at=at(2), failure="crash")
    [curve] = failure_curves([track], at(0), at(6), SILENCE, points=4)  # 0', 2', 4', 6'
    assert [(p.control, p.control_failed, p.exposed, p.exposed_failed) for p in curve.points] == [
        (1, 0, 0, 0), (1, 1, 0, 0), (1, 1, 0, 0), (0, 0, 1, 0)]


def test_a_rollout_that_has_not_started_has_one_point_and_a_curve_needs_one() -> None:
    [curve] = failure_curves([Track("a", W, since=at(0))], at(0), at(0), SILENCE, points=40)
    assert len(curve.points) == 1
    with pytest.raises(ValueError, match="at least one point"):
        failure_curves([], at(0), at(1), SILENCE, points=0)


moments = st.floats(min_value=0, max_value=120, allow_nan=False)


@given(st.lists(st.tuples(moments, st.none() | moments, st.none() | moments, moments), min_size=1, max_size=30))
def test_the_exposed_failures_agree_with_the_judges_and_no_arm_fails_more_devices_than_it_has(
        devices: list[tuple[float, float | None, float | None, float]]) -> None:
    tracks = []
    for i, (since, exposed, failed, heard) in enumerate(devices):
        exposed_at = at(since + exposed) if exposed is not None else None
        tracks.append(Track(f"d{i}", W, since=at(since), exposed_at=exposed_at,
                            failed_at=at(since + failed) if failed is not None else None, failure="crash",
                            last_heard=max(at(since + heard), exposed_at or at(since))))
    end = at(300)
    [curve] = failure_curves(tracks, at(0), end, SILENCE, points=7)
    for p in curve.points:
        assert 0 <= p.exposed_failed <= p.exposed
        assert 0 <= p.control_failed <= p.control
    last = curve.points[-1]
    judged = tally(tracks, end, SILENCE)[W]
    assert last.exposed_failed == judged.exposed.failures
    # a device that failed as control and was exposed later has left the control arm by then
    assert last.control_failed <= judged.control.failures

"""From device timelines to verdicts: silence is a failure, risk sets are counted at each
failure, an outage that hits both arms cancels out, and every judge says what it saw."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ringfence.analysis.hazard import RiskStep
from ringfence.analysis.judges import (
    BaselineJudge,
    FailureBudgetJudge,
    HazardRatioJudge,
    SilenceJudge,
    judge_all,
    overall,
)
from ringfence.analysis.tallies import Silence, Track, outcome, tally
from ringfence.analysis.verdicts import VerdictPhase

T0 = datetime(2024, 7, 19, 4, 9, tzinfo=UTC)
SILENCE = Silence(trial_timeout=timedelta(minutes=10), silence_after=timedelta(minutes=30))
W = "windows/eu-west"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_an_exposed_device_that_never_confirms_health_fails_when_its_trial_times_out() -> None:
    track = Track("d1", W, since=at(0), exposed_at=at(5))
    assert outcome(track, at(14), SILENCE).failed_at is None
    result = outcome(track, at(16), SILENCE)
    assert (result.failed_at, result.cause, result.exposed) == (at(15), "silent-after-activation", True)


def test_a_device_that_goes_quiet_fails_after_the_silence_window() -> None:
    track = Track("d1", W, since=at(0), exposed_at=at(5), healthy_at=at(7), last_heard=at(20))
    assert outcome(track, at(49), SILENCE).failed_at is None
    assert outcome(track, at(51), SILENCE).failed_at == at(50)
    control = Track("c1", W, since=at(0), last_heard=at(2))
    result = outcome(control, at(40), SILENCE)
    assert (result.failed_at, result.cause, result.exposed) == (at(32), "silent", False)


def test_a_reported_failure_before_exposure_belongs_to_the_control_arm() -> None:
    track = Track("d1", W, since=at(0), exposed_at=at(20), last_heard=at(25), failed_at=at(10), failure="crash")
    result = outcome(track, at(30), SILENCE)
    assert (result.failed_at, result.cause, result.exposed) == (at(10), "crash", False)


def test_risk_sets_at_each_failure_and_device_hours() -> None:
    tracks = [
        Track("e1", W, since=at(0), exposed_at=at(0), healthy_at=at(1), last_heard=at(50), failed_at=at(30),
              failure="crash"),
        Track("e2", W, since=at(0), exposed_at=at(0), healthy_at=at(1), last_heard=at(59)),
        Track("c1", W, since=at(0), last_heard=at(59), failed_at=at(40), failure="crash"),
        Track("c2", W, since=at(0), last_heard=at(59)),
        Track("c3", W, since=at(0), exposed_at=at(45), healthy_at=at(46), last_heard=at(59)),
    ]
    data = tally(tracks, at(60), SILENCE)[W]
    # At 30': e1, e2 exposed; c1, c2, c3 control. At 40': e2 exposed; c1, c2, c3 control.
    assert data.steps == [RiskStep(1, 0, 2, 3), RiskStep(0, 1, 1, 3)]
    assert (data.exposed.devices, data.exposed.failures, data.exposed.healthy) == (3, 1, 3)
    assert (data.control.devices, data.control.failures) == (2, 1)
    assert data.exposed.device_hours == (30 + 60 + 15) / 60
    assert data.control.device_hours == (40 + 60 + 45) / 60


def test_an_outage_that_silences_a_whole_stratum_does_not_fail_the_hazard_test() -> None:
    # Everybody last heard at the same moment: one tied step, scored with one risk set.
    tracks = [Track(f"e{i}", W, since=at(0), exposed_at=at(1), healthy_at=at(2), last_heard=at(5)) for i in range(10)]
    tracks += [Track(f"c{i}", W, since=at(0), last_heard=at(5)) for i in range(90)]
    data = tally(tracks, at(60), SILENCE)[W]
    assert data.steps == [RiskStep(10, 90, 10, 90)]
    verdict = HazardRatioJudge(alpha=0.01, limit=None).judge(data)
    assert verdict.phase is VerdictPhase.PASSED, verdict.sentence


def test_a_silent_boot_loop_fails_the_hazard_test_and_the_silence_judge() -> None:
    # The 2024 case: exposed devices announce intent, then are never heard from again.
    tracks = [Track(f"e{i}", W, since=at(0), exposed_at=at(i * 0.1)) for i in range(5)]
    tracks += [Track(f"c{i}", W, since=at(0), last_heard=at(11)) for i in range(500)]
    data = tally(tracks, at(11), SILENCE)[W]
    verdicts = judge_all([data], [HazardRatioJudge(alpha=0.01), SilenceJudge(), FailureBudgetJudge(budget=2)])
    by_judge = {v.judge: v for v in verdicts}
    assert by_judge["hazard-ratio"].phase is VerdictPhase.FAILED
    assert "e-value" in by_judge["hazard-ratio"].sentence and ">= 100" in by_judge["hazard-ratio"].sentence
    assert by_judge["silence"].phase is VerdictPhase.FAILED
    assert by_judge["silence"].sentence == f"{W}: no health confirmation or heartbeat from any of the 5 exposed devices"
    assert by_judge["failure-budget"].phase is VerdictPhase.FAILED
    assert by_judge["failure-budget"].numbers == {"failed": 5, "budget": 2, "exposed": 5}
    assert overall(verdicts) is VerdictPhase.FAILED


def test_a_healthy_wave_passes_once_the_bound_is_below_the_limit() -> None:
    # Background failures in both arms at the same rate, spread over time.
    tracks = []
    for i in range(200):
        exposed = i < 100
        failed = at(1 + i * 0.2) if i % 5 == 0 else None
        tracks.append(Track(f"d{i}", W, since=at(0), exposed_at=at(0) if exposed else None, healthy_at=at(0.5),
                            last_heard=at(59), failed_at=failed, failure="crash"))
    data = tally(tracks, at(60), SILENCE)[W]
    strict = HazardRatioJudge(alpha=0.05, limit=1.2, min_control=20).judge(data)
    assert strict.phase is VerdictPhase.RUNNING
    assert "not yet below 1.2" in strict.sentence


def test_a_small_control_group_hands_over_to_the_baseline_judge() -> None:
    tracks = [Track(f"e{i}", W, since=at(0), exposed_at=at(0), healthy_at=at(1), last_heard=at(59)) for i in range(50)]
    tracks += [Track("c0", W, since=at(0), last_heard=at(59))]
    data = tally(tracks, at(60), SILENCE)[W]
    hazard = HazardRatioJudge(min_control=20)
    assert hazard.judge(data).phase is VerdictPhase.INCONCLUSIVE
    verdicts = judge_all([data], [hazard], baseline=BaselineJudge(baseline_rate=0.001, limit=None))
    assert [(v.judge, v.phase) for v in verdicts] == [("baseline", VerdictPhase.PASSED)]
    assert "0 of 50 exposed failed in 50.0 device-hours, 0.05 expected" in verdicts[0].sentence


def test_no_exposure_no_verdict_and_no_confirmation_is_inconclusive() -> None:
    idle = tally([Track("c0", W, since=at(0), last_heard=at(5))], at(6), SILENCE)
    assert judge_all(idle.values(), [SilenceJudge()]) == []
    waiting = tally([Track("e0", W, since=at(0), exposed_at=at(1), last_heard=at(2))], at(3), SILENCE)
    verdicts = judge_all(waiting.values(), [SilenceJudge()])
    assert [v.phase for v in verdicts] == [VerdictPhase.INCONCLUSIVE]
    assert overall(verdicts) is VerdictPhase.INCONCLUSIVE
    assert overall([]) is VerdictPhase.PASSED

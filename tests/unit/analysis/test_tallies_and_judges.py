"""From device timelines to verdicts: silence is a failure, risk sets are counted at each
failure, an outage that hits both arms cancels out, silence after activation is compared with
placebo devices, and every judge says what it saw."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from ringfence.analysis.hazard import Mixture, RiskStep, logrank_log_e, sign_log_e
from ringfence.analysis.judges import (
    BaselineJudge,
    FailureBudgetJudge,
    HazardRatioJudge,
    RolloutJudge,
    SilenceJudge,
    Weights,
    judge_all,
    overall,
)
from ringfence.analysis.tallies import Pairs, Silence, Track, outcome, silent_after_activation, tally
from ringfence.analysis.verdicts import VerdictPhase

T0 = datetime(2024, 7, 19, 4, 9, tzinfo=UTC)
SILENCE = Silence(trial_timeout=timedelta(minutes=10), silence_after=timedelta(minutes=30))
W = "windows/eu-west"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_an_exposed_device_that_never_confirms_health_is_silent_once_its_trial_times_out() -> None:
    track = Track("d1", W, since=at(0), exposed_at=at(5))
    assert silent_after_activation(track, at(14), SILENCE) is None  # its deadline (15') is ahead
    assert silent_after_activation(track, at(16), SILENCE) is True
    # ... which is not a hazard-test failure (a control device has no trial to miss) ...
    assert outcome(track, at(16), SILENCE).failed_at is None
    # ... until it has not been heard from for silence_after since its intent.
    assert outcome(track, at(36), SILENCE).failed_at == at(35)
    confirmed = Track("d2", W, since=at(0), exposed_at=at(5), healthy_at=at(9))
    assert silent_after_activation(confirmed, at(16), SILENCE) is False
    late = Track("d3", W, since=at(0), exposed_at=at(5), healthy_at=at(17))
    assert silent_after_activation(late, at(20), SILENCE) is True  # confirmed after its deadline
    crashed = Track("d4", W, since=at(0), exposed_at=at(5), failed_at=at(6), failure="crash")
    assert silent_after_activation(crashed, at(20), SILENCE) is False  # it said something: loud, not silent


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


def boot_loop(exposed: int, placebos: int, control: int, now: float = 11) -> list[Track]:
    """The 2024 case: exposed devices announce intent, then are never heard from again; placebo
    devices asked at the same moments come back after 5 minutes; other control devices check in."""
    tracks = [Track(f"e{i}", W, since=at(0), exposed_at=at(i * 0.1)) for i in range(exposed)]
    tracks += [Track(f"p{i}", W, since=at(0), last_heard=at(now), placebo_at=at(i * 0.1),
                     placebo_seen_at=at(i * 0.1 + 5)) for i in range(placebos)]
    tracks += [Track(f"c{i}", W, since=at(0), last_heard=at(now)) for i in range(control)]
    return tracks


def test_a_silent_boot_loop_fails_the_silence_judge_and_the_budget() -> None:
    data = tally(boot_loop(5, 0, 500), at(11), SILENCE)[W]
    assert (data.exposed.unconfirmed, data.exposed.failures, data.control.heard_since) == (5, 0, 500)
    verdicts = judge_all([data], [HazardRatioJudge(alpha=0.01), SilenceJudge(), FailureBudgetJudge(budget=2)])
    by_judge = {v.judge: v for v in verdicts}
    assert by_judge["hazard-ratio"].phase is VerdictPhase.RUNNING  # no failure the hazard test counts yet
    assert by_judge["silence"].phase is VerdictPhase.FAILED
    assert by_judge["silence"].sentence == (f"{W}: no health confirmation or heartbeat from any of the 5 exposed "
                                            "devices while 500 of 500 control devices were heard from")
    assert by_judge["failure-budget"].phase is VerdictPhase.FAILED
    assert by_judge["failure-budget"].numbers == {"failed": 5, "silent_since_activation": 5, "budget": 2,
                                                  "exposed": 5}
    assert overall(verdicts) is VerdictPhase.FAILED


def test_an_outage_silencing_exposed_and_control_alike_is_not_a_silence_verdict() -> None:
    tracks = [Track(f"e{i}", W, since=at(0), exposed_at=at(i * 0.1)) for i in range(5)]
    tracks += [Track(f"c{i}", W, since=at(0), last_heard=at(1)) for i in range(100)]  # quiet since 1'
    verdict = SilenceJudge().judge(tally(tracks, at(11), SILENCE)[W])
    assert verdict.phase is VerdictPhase.INCONCLUSIVE
    assert "only 0 of 100 control devices: an outage?" in verdict.sentence
    # Too few exposed devices to call it (min_silent 3): still running, and said.
    few = SilenceJudge().judge(tally(tracks[:2] + tracks[5:], at(11), SILENCE)[W])
    assert few.phase is VerdictPhase.RUNNING and "no heartbeats from 2 of 2 exposed devices" in few.sentence


def test_placebo_pairs_are_matched_in_order_and_decided_after_both_timeouts() -> None:
    data = tally(boot_loop(6, 4, 100), at(10.35), SILENCE)[W]
    # Exposed e0..e5 at 0'..0.5', placebos p0..p3 at the same moments; at 10.35' the pairs of
    # e0..e3 are decided (deadlines 10'..10.3'); e4 and e5 wait (no placebo, or not yet due).
    assert data.pairs == Pairs(exposed_only=4, placebo_only=0, both=0, neither=0, waiting=2)
    tracks = [Track("e0", W, since=at(0), exposed_at=at(0), healthy_at=at(3), last_heard=at(3)),
              Track("p0", W, since=at(0), placebo_at=at(0), last_heard=at(1))]  # the placebo never came back
    assert tally(tracks, at(11), SILENCE)[W].pairs == Pairs(placebo_only=1)


def test_the_placebo_sign_test_exact_values() -> None:
    # One alternative theta = 3 with weight 1: (2*3/4)^a * (2/4)^b.

    one = Mixture(thetas=(3.0,), weights=(1.0,))
    assert math.isclose(sign_log_e(3, 1, one), 3 * math.log(1.5) + math.log(0.5))
    assert sign_log_e(0, 0, one) == 0.0
    # Under the null, each discordant pair is a fair coin: the expected factor is exactly 1.
    for theta in (1.5, 10.0, 1000.0):
        m = Mixture(thetas=(theta,), weights=(1.0,))
        assert math.isclose(0.5 * math.exp(sign_log_e(1, 0, m)) + 0.5 * math.exp(sign_log_e(0, 1, m)), 1.0)


def test_the_rollout_judge_halts_a_silent_boot_loop_against_placebos() -> None:
    data = tally(boot_loop(40, 40, 400, now=15), at(15), SILENCE)[W]
    judge = RolloutJudge(alpha=0.01, strata=12)
    verdict = judge.judge([data])
    assert verdict.phase is VerdictPhase.FAILED, verdict.sentence
    assert verdict.stratum == "*"
    assert "silent after activation: 40 exposed vs 0 placebo devices" in verdict.sentence
    assert "mostly the silence against placebo devices" in verdict.sentence
    weights = Weights()
    expected = math.log(weights.pooled + weights.strata + weights.silence * math.exp(sign_log_e(40, 0)))
    assert math.isclose(verdict.numbers["log_e"], expected)
    # With placebos as silent as the exposed devices (an outage), there is no evidence.
    quiet = [Track(f"p{i}", W, since=at(0), last_heard=at(0), placebo_at=at(i * 0.1)) for i in range(40)]
    data = tally(boot_loop(40, 0, 400, now=15) + quiet, at(15), SILENCE)[W]
    assert data.pairs == Pairs(both=40)
    assert judge.judge([data]).phase is VerdictPhase.PASSED


def test_the_rollout_judge_averages_strata_and_the_pooled_test() -> None:
    # Two strata, each with 3 exposed failures among 10 exposed and none among 90 control devices.
    def stratum(name: str) -> list[Track]:
        tracks = [Track(f"{name}e{i}", name, since=at(0), exposed_at=at(0), healthy_at=at(1), last_heard=at(59),
                        failed_at=at(10 + i) if i < 3 else None, failure="crash") for i in range(10)]
        return tracks + [Track(f"{name}c{i}", name, since=at(0), last_heard=at(59)) for i in range(90)]

    data = tally(stratum("a") + stratum("b"), at(60), SILENCE)
    per = [logrank_log_e(d.steps) for d in data.values()]
    verdict = RolloutJudge(alpha=0.01, strata=4).judge(list(data.values()))
    pooled = logrank_log_e(data["a"].steps + data["b"].steps)  # one common ratio: the steps multiply
    w = Weights()
    mean = (math.exp(per[0]) + math.exp(per[1]) + 2) / 4  # strata c and d: no exposure, E = 1
    assert math.isclose(verdict.numbers["log_e"], math.log(w.pooled * math.exp(pooled) + w.strata * mean + w.silence))
    assert RolloutJudge(alpha=0.01, strata=4).stratum_alpha() == 0.01 * w.strata / 4


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
    alone = hazard.judge(data)
    assert alone.phase is VerdictPhase.RUNNING  # no comparison is possible: never a pass
    assert "1 control devices, fewer than 20" in alone.sentence
    verdicts = judge_all([data], [hazard], baseline=BaselineJudge(baseline_rate=0.001, limit=None))
    assert [(v.judge, v.phase) for v in verdicts] == [("baseline", VerdictPhase.PASSED)]
    assert "0 of 50 exposed failed in 50.0 device-hours, 0.05 expected" in verdicts[0].sentence


def test_no_exposure_no_verdict_and_no_confirmation_is_inconclusive() -> None:
    idle = tally([Track("c0", W, since=at(0), last_heard=at(5))], at(6), SILENCE)
    assert judge_all(idle.values(), [SilenceJudge()]) == []
    waiting = tally([Track("e0", W, since=at(0), exposed_at=at(1), last_heard=at(2))], at(3), SILENCE)
    verdicts = judge_all(waiting.values(), [SilenceJudge()], rollout=RolloutJudge())
    assert [(v.judge, v.phase) for v in verdicts] == [("rollout", VerdictPhase.PASSED),
                                                      ("silence", VerdictPhase.INCONCLUSIVE)]
    assert overall(verdicts) is VerdictPhase.INCONCLUSIVE
    assert overall([]) is VerdictPhase.PASSED

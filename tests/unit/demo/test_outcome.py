"""The demo's own check: the story told is the story that happened, or ``untold`` says what
did not (and ``ringfence demo`` exits 1)."""

from __future__ import annotations

from ringfence.demo.outcome import Outcome, untold


def told() -> Outcome:
    return Outcome(good_release="g", good_release_phase="completed", bad_release="b", bad_release_phase="rolled_back",
                   bad_halted_wave="canary", bad_first_wave="canary", bad_canary_admitted=30, bad_exposed=30,
                   bad_failed=10, bad_reverted=30)


def test_the_story_as_told_has_nothing_untold() -> None:
    assert untold(told()) == []
    assert told().as_dict()["ok"] is True


def test_a_bad_release_that_left_its_canary_is_not_the_story() -> None:
    later = told()
    later.bad_halted_wave = "quarter"
    assert untold(later) == ["the bad release left its canary: halted in wave 'quarter', not 'canary'"]
    beyond = told()
    beyond.bad_beyond_canary = 81
    assert untold(beyond) == ["the bad release reached 81 devices beyond its canary's 30"]
    assert beyond.as_dict()["ok"] is False


def test_a_bad_release_that_completed_is_not_the_story() -> None:
    completed = told()
    completed.bad_release_phase = "completed"
    assert untold(completed) == ["the bad release ended completed, not halted and rolled back"]

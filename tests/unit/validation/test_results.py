"""Results and status semantics: a report is ok only when every result passed; a validator that
raises, returns nothing, or outlives its timeout is an error, never a pass."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from ringfence.core.errors import InvalidInput
from ringfence.validation import Context, Limits, Report, ValidationResult, parse_definition, validate
from ringfence.validation.fuzz import mutations

GOOD = Path(__file__).resolve().parents[3] / "examples" / "sensor" / "instances" / "good.json"


def definition(required: str, commands: str = "[]") -> str:
    return f"""\
name: test/commands
category: configuration
format: json
schema: {{type: object}}
validators:
  required: {required}
  commands: {commands}
"""


class Raising:
    name = "schema"

    def __call__(self, context: Context) -> Sequence[ValidationResult]:
        raise RuntimeError("the validator itself broke")


class Silent:
    name = "schema"

    def __call__(self, context: Context) -> Sequence[ValidationResult]:
        return []


def test_a_report_is_ok_only_when_every_result_passed() -> None:
    passed = ValidationResult("schema", None, "passed", "fine")
    error = ValidationResult("matrix", "windows", "error", "hung")
    failed = ValidationResult("contract", "291-d", "failed", "reads field 20")
    assert Report((passed,)).ok
    assert not Report(()).ok  # nothing judged is not a pass
    assert not Report((passed, error)).ok
    report = Report((passed, error, failed))
    assert [r.status for r in report.ordered()] == ["failed", "error", "passed"]
    assert report.problems == (failed, error)
    assert report.as_dict()["ok"] is False


@pytest.mark.parametrize(("validator", "says"), [(Raising(), "crashed: RuntimeError"), (Silent(), "no result")])
def test_a_validator_that_raises_or_says_nothing_is_an_error(validator: object, says: str) -> None:
    spec = parse_definition(definition("[schema]"))
    report = validate(spec, GOOD, validators={"schema": validator})  # type: ignore[dict-item]
    [result] = report.results
    assert result.status == "error"
    assert says in result.message
    assert not report.ok


def test_a_command_that_outlives_its_timeout_is_an_error_never_a_pass() -> None:
    commands = '[{name: slow, argv: ["{python}", "-c", "import time; time.sleep(30)"], timeout_s: 0.5}]'
    report = validate(parse_definition(definition("[command]", commands)), GOOD)
    [result] = report.results
    assert (result.status, result.target) == ("error", "slow")
    assert "did not finish within 0.5s" in result.message
    assert result.details["timed_out"] is True


def test_a_command_that_exits_non_zero_fails_and_one_that_exits_zero_passes() -> None:
    commands = ('[{name: lint, argv: ["{python}", "-c", "import sys; print(\'bad indent\', file=sys.stderr);'
                ' sys.exit(4)"]}, {name: size, argv: ["{python}", "-c", "import sys, os;'
                ' sys.exit(os.path.getsize(sys.argv[1]) > 41000)", "{artifact}"]}]')
    report = validate(parse_definition(definition("[command]", commands)), GOOD)
    assert [(r.target, r.status) for r in report.results] == [("lint", "failed"), ("size", "passed")]
    assert report.results[0].message == "lint exited 4: bad indent"


def test_a_consumer_that_cannot_be_started_makes_its_validators_errors() -> None:
    text = """\
name: test/missing-consumer
category: rapid-response
format: sample-channel
consumer: {command: [/nonexistent/sensor], describe: [describe], check: [check], versions: ["1"]}
validators: {required: [schema, contract]}
"""
    report = validate(parse_definition(text), GOOD)
    assert {r.validator: r.status for r in report.results} == {"schema": "passed", "contract": "error"}
    assert "cannot run '/nonexistent/sensor'" in report.errors[0].message


def test_only_required_validators_can_be_skipped_and_skips_are_reported() -> None:
    spec = parse_definition(definition("[schema]"))
    with pytest.raises(InvalidInput, match="cannot skip fuzz"):
        validate(spec, GOOD, skip=["fuzz"])
    report = validate(spec, GOOD, skip=["schema"])
    assert report.skipped == ("schema",)
    assert not report.ok  # nothing was judged


def test_fuzz_mutations_are_repeatable_for_a_seed_and_start_with_the_original() -> None:
    doc = {"format": "ringfence-sample-channel/1", "template_types": {"ipc-pipe": {"fields": 21}},
           "instances": [{"id": "a", "template": "ipc-pipe", "criteria": {"0": "*", "20": "*", "3": "x"}}]}
    first = [m.name for m in mutations(doc, seed=1, limit=100)]
    assert first == [m.name for m in mutations(doc, seed=1, limit=100)]
    assert first[0] == "original"
    assert {"wildcard-to-value: instance a field 20", "shift-indexes-up: instance a", "drop-field: instance a field 3",
            "duplicate-instance: instance a"} <= set(first)
    assert all(n.startswith("wildcard-to-value") for n in first[1:3])  # the 2024 edit comes first
    assert len(mutations(doc, seed=1, limit=2)) == 3
    assert doc["instances"][0]["criteria"]["20"] == "*"  # the original is never changed


def test_limits_have_conservative_defaults() -> None:
    limits = Limits()
    assert limits.fuzz_mutations > 0 and limits.fuzz_seed == 0

"""The contract validator's logic, on values: the 2024 field-count mismatch, template types a
version does not know, versions nobody described, and the wildcard-only warning."""

from __future__ import annotations

from typing import Any

import pytest

from ringfence.validation import check_contract
from ringfence.validation.channel import parse
from ringfence.validation.consumer import ConsumerInterface, TemplateInterface
from ringfence.validation.contract import ordinal

SENSOR = ConsumerInterface({
    "7.11": {"ipc-pipe": TemplateInterface(20, ("windows",)), "file-write": TemplateInterface(12, ("windows",))},
    "8.0": {"ipc-pipe": TemplateInterface(21, ("windows",)), "file-write": TemplateInterface(12, ("windows",))},
})


def channel(fields: int, *instances: tuple[str, str, dict[str, str]]) -> Any:
    return parse({"format": "ringfence-sample-channel/1", "template_types": {"ipc-pipe": {"fields": fields}},
                  "instances": [{"id": i, "template": t, "criteria": c} for i, t, c in instances]})


def test_the_2024_mismatch_fails_naming_instance_template_field_and_versions() -> None:
    doc = channel(21, ("291-a", "ipc-pipe", {"0": "*", "20": "*"}), ("291-d", "ipc-pipe", {"0": "*", "20": "evil"}))

    results = check_contract(doc, SENSOR, ["7.11", "8.0"], consumer="sensor")

    assert [(r.status, r.target) for r in results] == [("failed", "291-d")]
    assert results[0].message == ("instance 291-d of template ipc-pipe reads field 20 (the 21st), but sensor 7.11"
                                  " supplies only 20 fields (0-19) for ipc-pipe")
    assert results[0].details["versions_missing_it"] == ["7.11"]


def test_content_within_every_version_passes() -> None:
    doc = channel(20, ("291-a", "ipc-pipe", {"3": "x", "19": "y"}))
    results = check_contract(doc, SENSOR, ["7.11", "8.0"])
    assert [r.status for r in results] == ["passed"]
    assert results[0].details["warnings"] == []


def test_a_declared_field_only_wildcards_touch_is_a_warning_not_a_failure() -> None:
    doc = channel(21, ("291-a", "ipc-pipe", {"0": "x", "20": "*"}))
    results = check_contract(doc, SENSOR, ["7.11", "8.0"], consumer="sensor")
    assert [r.status for r in results] == ["passed"]
    assert results[0].details["warnings"] == [
        "template ipc-pipe declares 21 fields but sensor 7.11 supplies 20; only wildcards touch field 20 today"]
    assert "1 warning" in results[0].message


def test_a_template_a_version_does_not_know_fails() -> None:
    doc = parse({"format": "ringfence-sample-channel/1", "template_types": {"dns-query": {"fields": 4}},
                 "instances": [{"id": "q", "template": "dns-query", "criteria": {"1": "evil.example"}}]})
    results = check_contract(doc, SENSOR, ["7.11", "8.0"], consumer="sensor")
    assert [r.status for r in results] == ["failed"]
    assert "sensor 7.11 does not know template dns-query, and sensor 8.0 does not know template dns-query" \
        in results[0].message


def test_a_covered_version_nobody_described_is_an_error_never_a_pass() -> None:
    doc = channel(20, ("291-a", "ipc-pipe", {"3": "x"}))
    results = check_contract(doc, SENSOR, ["7.11", "9.1"], consumer="sensor")
    statuses = {r.target: r.status for r in results}
    assert statuses["sensor 9.1"] == "error"
    assert "9.1 is a covered version" in next(r.message for r in results if r.status == "error")


@pytest.mark.parametrize(("n", "text"), [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"),
                                         (12, "12th"), (13, "13th"), (21, "21st"), (22, "22nd"), (111, "111th")])
def test_ordinals(n: int, text: str) -> None:
    assert ordinal(n) == text

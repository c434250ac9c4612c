"""Content-type definitions: the sample sensor's parses; every problem names its field and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringfence.validation import DefinitionError, load_definition, parse_definition

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "sensor" / "ipc-templates.yaml"

VALID = """\
name: sensor/ipc-templates
category: rapid-response
format: sample-channel
consumer:
  name: sensor
  command: ["{python}", sensor.py]
  describe: [describe, --json]
  check: [check, --content, "{artifact}"]
  versions: ["7.11", "8.0"]
targets:
  - {os: windows, os_version: "11", arch: x86_64, consumer_version: "7.11"}
validators:
  required: [schema, contract, matrix]
"""


def problems(text: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text, "def.yaml")
    return [(p.field, p.line, p.message) for p in caught.value.problems]


def test_the_sample_sensor_definition_parses_and_runs_from_its_directory() -> None:
    definition = load_definition(EXAMPLE)
    assert definition.name == "sensor/ipc-templates"
    assert definition.base_dir == EXAMPLE.parent.resolve()
    assert definition.covered_versions() == ("7.11", "8.0")
    assert {(t.os, t.consumer_version) for t in definition.targets} >= {("windows", "7.11"), ("windows", "8.0"),
                                                                         ("linux", "7.11"), ("macos", "7.11")}


def test_live_versions_are_covered_too_each_once() -> None:
    definition = parse_definition(VALID)
    assert definition.covered_versions(["8.0", "7.9"]) == ("7.11", "8.0", "7.9")


def test_an_unknown_field_names_its_path_and_line() -> None:
    text = VALID.replace("  name: sensor\n", "  name: sensor\n  timeout: 5\n")
    assert problems(text) == [("consumer.timeout", 6, "unknown field")]


def test_an_unquoted_version_is_refused_at_its_line() -> None:
    text = VALID.replace('versions: ["7.11", "8.0"]', "versions: [7.10, \"8.0\"]")
    [(field, line, message)] = problems(text)
    assert (field, line) == ("consumer.versions.0", 9)
    assert "quotes" in message


def test_every_problem_is_reported_at_once() -> None:
    text = VALID.replace("os: windows", "os: beos").replace("required: [schema, contract, matrix]",
                                                            "required: [schema, vibes]")
    found = problems(text)
    assert ("validators.required.1", 13) in [(f, line) for f, line, _ in found]
    assert ("targets.0.os", 11) in [(f, line) for f, line, _ in found]
    assert any("unknown validator 'vibes'" in m for _, _, m in found)


def test_a_missing_field_and_an_unknown_format() -> None:
    text = VALID.replace("category: rapid-response\n", "").replace("format: sample-channel", "format: xml")
    found = {f: line for f, line, _ in problems(text)}
    assert found == {"category": 1, "format": 2}


def test_validators_that_need_a_consumer_or_targets_say_so() -> None:
    no_targets = VALID.split("targets:", 1)[0] + "validators:\n  required: [matrix]\n"
    assert any("no platform targets" in m for _, _, m in problems(no_targets))
    no_command = VALID.replace("required: [schema, contract, matrix]", "required: [command]")
    assert any("declares no command" in m for _, _, m in problems(no_command))


def test_an_invalid_inline_schema_is_a_field_error() -> None:
    text = VALID.replace("format: sample-channel", "format: json\nschema: {type: 12}")
    [(field, line, message)] = problems(text)
    assert (field, line) == ("schema", 4)
    assert message.startswith("not a valid JSON Schema")


def test_yaml_that_does_not_parse_names_its_line() -> None:
    assert problems("name: [unclosed\ncategory: x\n")[0][0:2] == ("<yaml>", 2)

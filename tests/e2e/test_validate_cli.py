"""``ringfence validate`` on the sample sensor's content type, as a release engineer runs it: the
2024 file is stopped with a sentence a person understands, the platform matrix catches it on its
own, a latent instance is found only by fuzzing, and good content passes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support import Publisher, own_server, run_cli

pytestmark = pytest.mark.e2e

SENSOR = Path(__file__).resolve().parents[2] / "examples" / "sensor"
DEFINITION = str(SENSOR / "ipc-templates.yaml")


def validate_json(name: str, *options: str) -> tuple[int, dict[str, Any]]:
    proc = run_cli("validate", str(SENSOR / "instances" / f"{name}.json"), "--type-file", DEFINITION, "--json",
                   *options)
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def not_passed(report: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    return [(r["validator"], r["target"], r["status"]) for r in report["results"] if r["status"] != "passed"]


def test_good_content_passes_every_validator() -> None:
    code, report = validate_json("good")
    assert code == 0
    assert report["ok"] is True
    assert {r["validator"] for r in report["results"]} == {"schema", "contract", "fuzz", "matrix"}
    assert len([r for r in report["results"] if r["validator"] == "matrix"]) == 6


def test_the_2024_file_fails_with_one_line_a_person_understands() -> None:
    # Given the 21st ipc-pipe field read by a non-wildcard criterion, while sensor 7.11 supplies 20
    proc = run_cli("validate", str(SENSOR / "instances" / "bad-field-count.json"), "--type-file", DEFINITION)
    # Then it is not released, and the first line says why
    assert proc.returncode == 1
    first = proc.stdout.splitlines()[0]
    assert first.startswith("failed")
    assert ("instance 291-d of template ipc-pipe reads field 20 (the 21st), but sensor 7.11 supplies only 20 fields"
            " (0-19) for ipc-pipe") in first
    assert "NOT OK" in proc.stdout.splitlines()[-1]


def test_without_the_contract_validator_the_matrix_crashes_on_windows_with_7_11_only() -> None:
    code, report = validate_json("bad-field-count", "--skip", "contract")
    assert code == 1
    assert report["skipped"] == ["contract"]
    matrix = {r["target"]: r for r in report["results"] if r["validator"] == "matrix"}
    failed = sorted(t for t, r in matrix.items() if r["status"] != "passed")
    assert failed == ["windows 10 x86_64 / 7.11", "windows 11 x86_64 / 7.11"]
    assert all(matrix[t]["details"]["signal"] == "SIGABRT" for t in failed)
    assert "crashed (killed by SIGABRT)" in matrix[failed[0]]["message"]
    assert len(matrix) == 6  # every target was run and judged


def test_a_latent_instance_is_found_only_by_fuzzing() -> None:
    code, report = validate_json("latent")
    assert code == 1
    problems = not_passed(report)
    assert problems == [("fuzz", "wildcard-to-value: instance 291-a field 20", "failed")]
    contract = next(r for r in report["results"] if r["validator"] == "contract")
    assert contract["status"] == "passed" and contract["details"]["warnings"]  # passed, but warned
    assert "crashes sensor 7.11 on windows (killed by SIGABRT)" in report["results"][0]["message"]


def test_a_content_type_registered_on_the_server_is_validated_with_its_definition(tmp_path: Path) -> None:
    for server in own_server(tmp_path):
        publisher = Publisher(server)
        publisher._ok(publisher.http.post("/v1/content-types", json={
            "name": "sensor/ipc-templates", "category": "rapid-response",
            "definition": (SENSOR / "ipc-templates.yaml").read_text(), "definition_dir": str(SENSOR)}))
        publisher.content_type("sensor/plain")
        bad = run_cli("validate", str(SENSOR / "instances" / "bad-field-count.json"), "--type",
                      "sensor/ipc-templates", env=server.cli_env())
        assert bad.returncode == 1, bad.stderr
        assert bad.stdout.startswith("failed  contract  instance 291-d of template ipc-pipe reads field 20 (the 21st)")
        plain = run_cli("validate", str(SENSOR / "instances" / "good.json"), "--type", "sensor/plain",
                        env=server.cli_env())
        assert plain.returncode == 2
        assert "content type 'sensor/plain' has no definition on the server" in plain.stderr
        unknown = run_cli("validate", str(SENSOR / "instances" / "good.json"), "--type", "sensor/none",
                          env=server.cli_env())
        assert unknown.returncode != 0 and "sensor/none" in unknown.stderr
    down = run_cli("validate", str(SENSOR / "instances" / "good.json"), "--type", "sensor/ipc-templates",
                   "--server", "http://127.0.0.1:9")
    assert down.returncode == 6 and "cannot reach the Ringfence server" in down.stderr


def test_a_definition_short_of_its_categorys_validators_fails_locally(tmp_path: Path) -> None:
    short = tmp_path / "short.yaml"
    short.write_text(Path(DEFINITION).read_text().replace("[schema, contract, fuzz, matrix]", "[schema, contract]"))
    proc = run_cli("validate", str(SENSOR / "instances" / "good.json"), "--type-file", str(short))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith("failed  category  category rapid-response also requires fuzz, matrix, which "
                                  "sensor/ipc-templates's definition does not run; the server refuses it")


def test_a_release_engineer_defines_validates_and_starts_from_the_command_line(tmp_path: Path) -> None:
    for server in own_server(tmp_path):
        env = server.cli_env()
        # Given a content type registered without validation, and a release of it
        created = run_cli("content-type", "create", "sensor/ipc-templates", "--category", "rapid-response",
                          "--unvalidated", "later", env=env)
        assert created.returncode == 2 and "unvalidated_reason" in created.stderr
        run_cli("content-type", "create", "sensor/ipc-templates", "--category", "rapid-response",
                "--unvalidated", "migrated from the old pipeline", env=env, check=True)
        listed = run_cli("content-type", "list", env=env, check=True)
        assert "none: migrated from the old pipeline" in listed.stdout
        run_cli("artifact", "push", str(SENSOR / "instances" / "good.json"), "--type", "sensor/ipc-templates",
                "--version", "291.2", env=env, check=True)
        plan = tmp_path / "plan.yaml"
        plan.write_text("name: one\nwaves:\n  - {name: all, share: 1.0, soak: 1m}\n")
        rid = run_cli("release", "create", "--type", "sensor/ipc-templates", "--version", "291.2", "--plan",
                      str(plan), env=env, check=True).stdout.strip()
        # When it gets a definition, Then the release must be validated again before it starts
        run_cli("content-type", "define", "sensor/ipc-templates", "--definition", DEFINITION, env=env, check=True)
        refused = run_cli("rollout", "start", rid, env=env)
        assert refused.returncode == 5 and "no validation results were recorded" in refused.stderr
        again = run_cli("release", "validate", rid, env=env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "validation gate: passed" in again.stdout
        run_cli("rollout", "start", rid, "--reason", "validated", env=env, check=True)
        shown = run_cli("rollout", "status", rid, env=env, check=True).stdout
        assert "validation gate: passed" in shown and "contract" in shown


def test_a_broken_definition_names_field_and_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(Path(DEFINITION).read_text().replace("arch: arm64", "arch: arm64, cpu: m3"))
    proc = run_cli("validate", str(SENSOR / "instances" / "good.json"), "--type-file", str(broken))
    assert proc.returncode == 2
    assert f"{broken}:" in proc.stderr and ": targets.5.cpu: unknown field" in proc.stderr

"""The validation gate in process, on SQLite and PostgreSQL: a content type registered with the
example sensor definition validates every release when it is created (the real validators, the
real reference consumer), records every result, and refuses to start a release that failed unless
an emergency override with a reason is given, which the history and the status keep."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from ringfence.store import validations
from ringfence.validation import ValidationResult
from tests.integration.conftest import CT, Api, error_of
from tests.integration.test_api import TWO_WAVES, status
from tests.support import UNVALIDATED

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sensor"
DEFINITION = EXAMPLE / "ipc-templates.yaml"


@pytest.fixture
def gated(api: Api) -> Api:
    """The example content type, registered with its definition."""
    r = api.http.post("/v1/content-types", json={
        "name": CT, "category": "rapid-response", "definition": DEFINITION.read_text(),
        "definition_dir": str(EXAMPLE)})
    assert r.status_code == 201, r.text
    return api


def release_of(api: Api, instance: str, version: str) -> dict[str, Any]:
    data = (EXAMPLE / "instances" / instance).read_bytes()
    pushed = api.http.post("/v1/artifacts", content=data, headers={"Content-Type": "application/octet-stream"},
                           params={"content_type": CT, "version": version,
                                   "sha256": hashlib.sha256(data).hexdigest()})
    assert pushed.status_code == 201, pushed.text
    r = api.http.post("/v1/releases", json={"content_type": CT, "version": version, "plan": TWO_WAVES})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    assert body["phase"] == "ready"
    return body


def test_a_content_type_is_registered_with_its_definition(gated: Api) -> None:
    assert gated.http.get("/v1/content-types").json()["content_types"] == [
        {"name": CT, "category": "rapid-response", "team": None, "validated": True,
         "definition_dir": str(EXAMPLE)}]
    one = gated.http.get(f"/v1/content-types/{CT}").json()
    assert one["required_validators"] == ["schema", "contract", "fuzz", "matrix"]


def test_a_definition_short_of_its_categorys_validators_is_refused(api: Api) -> None:
    text = DEFINITION.read_text().replace("required: [schema, contract, fuzz, matrix]", "required: [schema, matrix]")
    r = api.http.post("/v1/content-types", json={"name": CT, "category": "rapid-response", "definition": text,
                                                  "definition_dir": str(EXAMPLE)})
    assert r.status_code == 400
    problem = error_of(r)["details"]["problems"][0]
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.strip().startswith("required:"))
    assert (problem["field"], problem["line"]) == ("validators.required", line)
    assert problem["message"] == ("category rapid-response requires schema, contract, fuzz, matrix; "
                                  "missing: contract, fuzz")
    assert api.http.get("/v1/content-types").json()["content_types"] == []


def test_a_bad_definition_is_refused_naming_field_and_line(api: Api) -> None:
    text = DEFINITION.read_text().replace("format: sample-channel", "format: spreadsheet")
    r = api.http.post("/v1/content-types", json={"name": CT, "category": "rapid-response", "definition": text,
                                                  "definition_dir": str(EXAMPLE)})
    assert r.status_code == 400
    err = error_of(r)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith("format:"))
    assert err["code"] == "invalid_content_type_definition"
    assert f":{line}: format:" in err["message"]
    assert {"field": "format", "line": line} == {k: err["details"]["problems"][0][k] for k in ("field", "line")}

    other = DEFINITION.read_text().replace(f"name: {CT}", "name: sensor/other")
    wrong = api.http.post("/v1/content-types", json={"name": CT, "category": "rapid-response", "definition": other,
                                                      "definition_dir": str(EXAMPLE)})
    assert wrong.status_code == 400 and error_of(wrong)["details"]["problems"][0]["field"] == "name"
    nowhere = api.http.post("/v1/content-types", json={"name": CT, "category": "rapid-response",
                                                        "definition": DEFINITION.read_text(),
                                                        "definition_dir": "relative/dir"})
    assert nowhere.status_code == 400 and error_of(nowhere)["details"]["field"] == "definition_dir"
    assert api.http.get("/v1/content-types").json()["content_types"] == []


def test_a_release_that_failed_validation_starts_only_by_emergency_override(gated: Api) -> None:
    # Given a release of an artifact whose instance reads a field sensor 7.11 does not supply
    rid = release_of(gated, "bad-field-count.json", "291.1")["release"]
    validation = status(gated, rid)["validation"]
    assert validation["ok"] is False
    failed = {r["validator"] for r in validation["results"] if r["status"] == "failed"}
    assert {"contract", "matrix"} <= failed

    # When it is started, Then it is refused, naming the contract check
    refused = gated.http.post(f"/v1/rollouts/{rid}/start", json={"reason": "go"})
    assert refused.status_code == 409
    err = error_of(refused)
    assert err["message"].startswith("validation failed: contract: instance 291-d of template ipc-pipe reads field 20")
    assert any(c.startswith("matrix: ") for c in err["details"]["checks"])
    assert status(gated, rid)["phase"] == "ready"

    # An override needs a reason
    bare = gated.http.post(f"/v1/rollouts/{rid}/start", json={"emergency": True})
    assert bare.status_code == 400 and error_of(bare)["details"]["field"] == "reason"

    # Nor without another person's emergency approval; its author may not give it
    alone = gated.http.post(f"/v1/rollouts/{rid}/start", json={"emergency": True, "reason": "outage fix"})
    assert alone.status_code == 403 and "needs an emergency approval by somebody other" in error_of(alone)["message"]
    own = gated.http.post(f"/v1/releases/{rid}/approve", json={"emergency": True, "reason": "mine"})
    assert own.status_code == 403 and "may not approve it" in error_of(own)["message"]
    approver = gated.as_token(gated.token_for("approver"))
    assert approver.post(f"/v1/releases/{rid}/approve", json={"emergency": True}).status_code == 400  # no reason
    ok = approver.post(f"/v1/releases/{rid}/approve", json={"emergency": True, "reason": "customers down"})
    assert ok.status_code == 200, ok.text
    assert [a["approver"] for a in ok.json()["approvals"]["emergency"]] == ["approver-user"]

    # When it is started as an emergency with a reason, Then it rolls and the override is kept
    started = gated.http.post(f"/v1/rollouts/{rid}/start", json={"emergency": True, "reason": "outage fix"})
    assert started.status_code == 200, started.text
    body = started.json()
    assert body["phase"] == "rolling"
    start = body["history"][-1]
    assert start["intent"] == "start"
    assert start["reason"].startswith("emergency override of failed validation: contract: instance 291-d")
    assert start["reason"].endswith("reason: outage fix")
    assert "approved by approver-user (customers down)" in start["reason"]
    assert start["details"]["emergency"] is True and start["details"]["approved_by"] == "approver-user"
    override = body["validation"]["emergency_override"]
    assert override["reason"] == "outage fix" and override["checks"] == err["details"]["checks"]
    assert override["approved_by"] == "approver-user"


def test_a_release_that_passed_validation_starts_normally(gated: Api) -> None:
    rid = release_of(gated, "good.json", "291.2")["release"]
    assert status(gated, rid)["validation"]["ok"] is True
    started = gated.http.post(f"/v1/rollouts/{rid}/start", json={"reason": "weekly content"})
    assert started.status_code == 200, started.text
    assert started.json()["phase"] == "rolling"
    assert started.json()["history"][-1]["reason"] == "weekly content"
    assert started.json()["validation"]["emergency_override"] is None


def test_a_content_type_registered_without_validation_says_so_where_its_rollouts_show(
        setup: tuple[Api, str]) -> None:
    api, _ = setup
    data = b"anything"
    api.http.post("/v1/artifacts", content=data, params={"content_type": CT, "version": "1.0",
                                                         "sha256": hashlib.sha256(data).hexdigest()})
    created = api.http.post("/v1/releases", json={"content_type": CT, "version": "1.0", "plan": TWO_WAVES})
    rid = created.json()["release"]
    validation = status(api, rid)["validation"]
    assert validation["ok"] is False and validation["results"] == [] and validation["required"] == []
    assert validation["unvalidated_reason"] == UNVALIDATED
    started = api.http.post(f"/v1/rollouts/{rid}/start", json={"reason": "drill"}).json()
    assert started["phase"] == "rolling"
    assert started["history"][-1]["details"] == {"unvalidated_reason": UNVALIDATED, "approved_by": []}
    again = api.http.post(f"/v1/releases/{rid}/validate")
    assert again.status_code == 409 and "started" in error_of(again)["message"]


def test_a_required_validator_without_results_keeps_the_gate_closed(gated: Api) -> None:
    rid = release_of(gated, "good.json", "291.2")["release"]
    with gated.db.session() as s:
        kept = [ValidationResult(r.validator, r.target, "passed", r.message)
                for r in validations.results(s, rid) if r.validator != "fuzz"]
        validations.replace(s, rid, kept, gated.clock.now())
    problems = status(gated, rid)["validation"]["problems"]
    assert problems == ["fuzz: not run, but required by the definition of sensor/ipc-templates"]
    refused = gated.http.post(f"/v1/rollouts/{rid}/start", json={"reason": "go"})
    assert refused.status_code == 409 and error_of(refused)["details"]["checks"] == problems


def test_a_release_is_validated_again_after_its_content_type_gets_a_definition(setup: tuple[Api, str]) -> None:
    # Given a release of an unvalidated content type
    api, _ = setup
    data = (EXAMPLE / "instances" / "good.json").read_bytes()
    api.http.post("/v1/artifacts", content=data, params={"content_type": CT, "version": "291.2",
                                                         "sha256": hashlib.sha256(data).hexdigest()})
    rid = api.http.post("/v1/releases", json={"content_type": CT, "version": "291.2",
                                              "plan": TWO_WAVES}).json()["release"]
    # When the content type gets a definition, Then the release may not start until validated
    bad = api.http.put(f"/v1/content-types/{CT}/definition", json={
        "definition": DEFINITION.read_text().replace("format: sample-channel", "format: nope"),
        "definition_dir": str(EXAMPLE)})
    assert bad.status_code == 400 and error_of(bad)["details"]["problems"][0]["field"] == "format"
    defined = api.http.put(f"/v1/content-types/{CT}/definition", json={
        "definition": DEFINITION.read_text(), "definition_dir": str(EXAMPLE)})
    assert defined.status_code == 200 and defined.json()["validated"] is True
    refused = api.http.post(f"/v1/rollouts/{rid}/start", json={"reason": "go"})
    assert refused.status_code == 409 and error_of(refused)["details"]["checks"] == [validations.NO_RESULTS]
    # When it is validated again, Then its results are recorded, noted in the history, and it starts
    again = api.http.post(f"/v1/releases/{rid}/validate")
    assert again.status_code == 200, again.text
    assert again.json()["validation"]["ok"] is True
    assert again.json()["history"][-1]["intent"] == "validate"
    assert again.json()["history"][-1]["reason"].startswith("validated again: ")
    assert api.http.post(f"/v1/rollouts/{rid}/start", json={"reason": "go"}).json()["phase"] == "rolling"

"""The CLI end to end, as an operator types it, against a real server process on each backend:
init, server, content type, enrolment token, artifact push, release, start, status, halt,
rollback — with devices speaking the agent API over real HTTP."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import Device, ServerProcess, run_cli

pytestmark = pytest.mark.e2e

CT = "sensor/ipc-templates"
PLAN = """
name: e2e
waves:
  - name: canary
    max_devices: {total: 3}
    soak: 1s
    gates: {failure_budget: 0, min_devices: 3}
  - name: everyone
    share: 1.0
    soak: 1h
    gates: {failure_budget: 1}
"""


def cli(server: ServerProcess, *args: str) -> Any:
    proc = run_cli(*args, "--json", env=server.cli_env(), check=True)
    return json.loads(proc.stdout)


def wait_status(server: ServerProcess, release_id: str, check: Any, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = cli(server, "rollout", "status", release_id)
        if check(last):
            return last
        time.sleep(0.2)
    raise AssertionError(f"rollout never reached the expected state; last: {json.dumps(last, indent=1)}")


def test_operator_drives_a_rollout_with_the_cli(server: ServerProcess, tmp_path: Path) -> None:
    # Given a content type, an enrolment token and six devices on two platforms
    assert cli(server, "content-type", "create", CT, "--category", "rapid-response",
               "--unvalidated", "rollout mechanics only")["category"] == "rapid-response"
    enroll = cli(server, "enroll-token", "create", "--tenant", "acme")["token"]
    devices = [Device(server.url, platform=p, region=r).enroll(enroll)
               for p in ("windows", "linux") for r in ("eu-west", "us-east", "ap-south")]
    listed = cli(server, "devices")
    assert listed["total"] == 6
    assert {d["tenant"] for d in listed["devices"]} == {"acme"}

    # When an artifact is pushed and released with a plan
    artifact = tmp_path / "channel-291.bin"
    artifact.write_bytes(b"\xaa" * 41_000)
    pushed = cli(server, "artifact", "push", str(artifact), "--type", CT, "--version", "291.1")
    assert pushed["size"] == 41_000
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    release_id = cli(server, "release", "create", "--type", CT, "--version", "291.1", "--plan", str(plan))["release"]
    plain = run_cli("rollout", "status", release_id, env=server.cli_env(), check=True)
    assert "ready" in plain.stdout
    started = cli(server, "rollout", "start", release_id, "--reason", "ship it")
    assert started["phase"] == "rolling"
    assert started["wave"] == 0

    # Then the canary takes exactly three devices once the fleet is counted
    time.sleep(2.5)  # the server recounts the fleet every 2 s
    running = [d.update(CT) for d in devices]
    assert running.count("291.1") == 3
    # and, soaked with three exposed devices, the rollout moves on to everyone
    status = wait_status(server, release_id, lambda s: s["wave"] == 1)
    assert status["waves"][0]["exposed"] == 3
    assert status["waves"][0]["state"] == "done"
    for d in devices:
        d.update(CT)
    assert all(d.versions.get(CT) == "291.1" for d in devices)

    # When an operator halts it, the history says who and why
    halted = cli(server, "rollout", "halt", release_id, "--reason", "customer reports")
    assert halted["phase"] == "halted"
    assert halted["history"][-1]["actor"] == "admin"
    assert halted["history"][-1]["reason"] == "customer reports"

    # And a rollback sends every device back to the baseline (none: nothing completed before),
    rolled = cli(server, "rollout", "rollback", release_id, "--reason", "undo")
    assert rolled["phase"] == "rolling_back"
    status = cli(server, "rollout", "status", release_id)
    assert set(status) >= {"release", "phase", "wave", "waves", "history"}
    assert {"at", "from", "to", "actor", "reason"} <= set(status["history"][0])
    assert [w["name"] for w in status["waves"]] == ["canary", "everyone"]
    assert all({"name", "exposed", "failed", "state"} <= set(w) for w in status["waves"])


def test_cli_errors_are_one_line_with_an_exit_code(server: ServerProcess, tmp_path: Path) -> None:
    missing = run_cli("rollout", "status", "rel-nope", env=server.cli_env())
    assert missing.returncode == 4
    assert missing.stderr.strip() == "error: no release 'rel-nope'"

    wrong = run_cli("devices", env={**server.cli_env(), "RINGFENCE_TOKEN": "rft_wrong"})
    assert wrong.returncode == 3
    assert "unknown, revoked or expired" in wrong.stderr

    flag = run_cli("devices", "--server", server.url, "--token", server.token, "--json",
                   env={"RINGFENCE_SERVER": "http://127.0.0.1:1", "RINGFENCE_TOKEN": "x"})
    assert flag.returncode == 0, flag.stderr  # flags win over the environment

    down = run_cli("devices", env={"RINGFENCE_SERVER": "http://127.0.0.1:1", "RINGFENCE_TOKEN": "x"})
    assert down.returncode == 6
    assert "cannot reach the Ringfence server at http://127.0.0.1:1" in down.stderr

    bad_plan = tmp_path / "bad.yaml"
    bad_plan.write_text("name: p\nwaves:\n  - name: a\n    share: 0\n    soak: 1m\n    colour: red\n")
    checked = run_cli("plan", "check", str(bad_plan))
    assert checked.returncode == 2
    assert f"{bad_plan}:4: waves[0].share:" in checked.stderr
    assert f"{bad_plan}:6: waves[0].colour: unknown field" in checked.stderr

    cli(server, "content-type", "create", CT, "--category", "software", "--unvalidated", "rollout mechanics only")
    artifact = tmp_path / "a.bin"
    artifact.write_bytes(b"x")
    cli(server, "artifact", "push", str(artifact), "--type", CT, "--version", "1")
    again = run_cli("artifact", "push", str(artifact), "--type", CT, "--version", "1", env=server.cli_env())
    assert again.returncode == 5
    assert "immutable" in again.stderr
    nofile = run_cli("artifact", "push", str(tmp_path / "nope.bin"), "--type", CT, "--version", "2",
                     env=server.cli_env())
    assert nofile.returncode == 2
    assert "nope.bin" in nofile.stderr

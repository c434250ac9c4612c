"""The agent's promises for bad input and failures, with real processes, a real server and real
files: a corrupt or truncated download, a full disk, an unusable or busy state directory, a
damaged journal, a hung probe, a server that is not there yet, a refused enrolment, a bad
config, an operator's rollback, and an intent the server never acknowledged.

Each ends with the device on a version that ran here before (or the new one fully committed), a
clear line in the agent's log, and an event for the server once it is reachable.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.support import (
    FIRST_PLAN,
    PROBED_AGENT_CONFIG,
    ROLLING_PLAN,
    AgentProcess,
    LimitedAgentProcess,
    Partition,
    Publisher,
    ServerProcess,
    own_server,
    run_cli,
    server_events,
)

pytestmark = pytest.mark.e2e

FIRST = FIRST_PLAN
ROLLING = ROLLING_PLAN
ACK_2S = ROLLING.replace("name: rolling", "name: ack-2s\nactivation: {intent_ack_timeout: 2s}")
NO_ACK = ROLLING.replace("name: rolling", "name: no-ack\nactivation: {require_intent_ack: false, "
                                          "intent_ack_timeout: 1s}")

AGENT_CONFIG = PROBED_AGENT_CONFIG
HUNG_PROBE_CONFIG = """
heartbeat: 1s
content_types:
  default:
    trial: 1s
    probe:
      command: ["sleep", "30"]
      timeout: 1s
"""
INTENT = rb'"kind":\s*"intent"'  # a check-in that carries an intent event


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from own_server(tmp_path)


@pytest.fixture
def publisher(server: ServerProcess) -> Publisher:
    return Publisher(server)


def config_file(tmp_path: Path, text: str = AGENT_CONFIG) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def content(agent: AgentProcess, content_type: str) -> dict[str, Any]:
    state: dict[str, Any] = agent.journal()["content"][content_type]
    return state


def settled(agent: AgentProcess, content_type: str, version: str) -> dict[str, Any] | None:
    """The journal once ``version`` is committed, nothing is in flight and every event was
    acknowledged."""
    journal = agent.journal()
    c = journal["content"].get(content_type)
    if c is None or c["update"] is not None or journal["outbox"] or not c["active"] == c["lkg"] == version:
        return None
    return journal


def on_version_1(agent: AgentProcess, publisher: Publisher, content_type: str) -> str:
    """Given a fresh device whose last-known-good is version 1 (the agent stopped afterwards).
    Returns the device id."""
    publisher.content_type(content_type)
    release = publisher.release(content_type, "1", b"ok 1\n", FIRST)
    agent.start()
    journal = agent.wait_for(lambda: settled(agent, content_type, "1"), what=f"{content_type} 1 committed")
    publisher.wait_status(release, lambda s: s["phase"] == "completed", what="the first release completed")
    assert agent.stop() == 0
    device_id: str = journal["device_id"]
    return device_id


def assert_on(agent: AgentProcess, content_type: str, version: str) -> None:
    """The device runs ``version`` as its last-known-good, in the journal and on disk."""
    c = content(agent, content_type)
    assert (c["active"], c["lkg"], agent.current(content_type)) == (version, version, version), (c, agent.log())


def blob_path(server: ServerProcess, data: bytes) -> Path:
    digest = hashlib.sha256(data).hexdigest()
    return server.data_dir / "blobs" / "sha256" / digest[:2] / digest


def wait_checkins(agent: AgentProcess, publisher: Publisher, device_id: str, count: int) -> None:
    """Wait until the server has seen ``count`` more check-ins from the device."""
    seen: list[str | None] = [publisher.device(device_id)["last_seen_at"]]

    def more() -> bool:
        last = publisher.device(device_id)["last_seen_at"]
        if last != seen[-1]:
            seen.append(last)
        return len(seen) > count
    agent.wait_for(more, timeout=20, what=f"{count} more check-ins")


def log_times(log: str, needle: str) -> list[float]:
    """The timestamps (seconds) of the log lines that contain ``needle``."""
    out = []
    for line in log.splitlines():
        if needle in line:
            stamp = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ", line)
            assert stamp is not None, line
            out.append(datetime.fromisoformat(stamp[1]).timestamp() + int(stamp[2]) / 1000)
    return out


def one_line_error(proc: Any) -> str:
    """The one error line a refused ``ringfence agent run`` prints last on stderr (log lines
    may come before it)."""
    lines = proc.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    line: str = errors[0]
    return line


# -- 1. corrupt and truncated downloads -------------------------------------------------------
@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_a_damaged_artifact_is_refused_and_given_up_after_three_attempts(
        damage: str, server: ServerProcess, publisher: Publisher, tmp_path: Path) -> None:
    content_type = f"t/{damage}"
    agent = AgentProcess(tmp_path / "agent", server.url, publisher.enroll_token(), config=config_file(tmp_path))
    device_id = on_version_1(agent, publisher, content_type)

    # Given version 2 is released, and its bytes on the server are then damaged
    data = b"ok 2\n" + bytes(range(256)) * 20
    release = publisher.release(content_type, "2", data, ROLLING)
    served = bytes(b ^ 0xFF for b in data) if damage == "corrupt" else data[: len(data) // 2]
    blob_path(server, data).write_bytes(served)

    # When the agent downloads it
    agent.start()
    agent.wait_for(lambda: "2" in content(agent, content_type)["blocked"]
                   and f"{content_type} 2 will not be tried again here" in agent.log(), what="version 2 blocked")

    # Then it refused every copy, three times, and gave the version up
    log = agent.log()
    expected = f"expected {hashlib.sha256(data).hexdigest()} ({len(data)} bytes), " \
               f"got {hashlib.sha256(served).hexdigest()} ({len(served)} bytes)"
    attempts = [line for line in log.splitlines() if f"{content_type} 2: hash mismatch: {expected}" in line]
    assert [a.rsplit("(", 1)[1] for a in attempts] == ["attempt 1 of 3)", "attempt 2 of 3)", "attempt 3 of 3)"], log
    assert f"{content_type} 2 will not be tried again here" in log
    assert "hash mismatch" in content(agent, content_type)["blocked"]["2"]
    # And the device stays on version 1, with nothing half-downloaded left behind
    assert_on(agent, content_type, "1")
    assert content(agent, content_type)["update"] is None
    assert list((agent.state_dir / "downloads").iterdir()) == []
    assert not (agent.state_dir / "content" / content_type.replace("/", "+") / "versions" / "2").exists()

    # And the server learns it: three failed events, the last one final; the device failed, and it
    # was never exposed (no intent was sent)
    status = publisher.wait_status(release, lambda s: s["totals"]["failed"] == 1 and not agent.journal()["outbox"],
                                   what="the failure counted")
    assert (status["totals"]["exposed"], status["totals"]["activated"], status["totals"]["healthy"]) == (0, 0, 0)
    mine = [e for e in server_events(server, device_id) if e["version"] == "2"]
    assert [e["kind"] for e in mine] == ["failed"] * 3, mine
    assert all("hash mismatch" in e["details"]["reason"] and e["release_id"] == release for e in mine)
    assert mine[-1]["details"].get("final") is True

    # And no further download is attempted, however often the server still offers version 2
    wait_checkins(agent, publisher, device_id, 2)
    assert agent.log().count("(attempt ") == 3
    assert_on(agent, content_type, "1")
    assert agent.stop() == 0


# -- 2. a full disk -------------------------------------------------------------------------
def test_a_full_disk_during_download_keeps_the_device_on_its_version(
        server: ServerProcess, publisher: Publisher, tmp_path: Path) -> None:
    content_type = "t/full-disk"
    limit = 512 * 1024
    agent = LimitedAgentProcess(tmp_path / "agent", server.url, publisher.enroll_token(),
                                config=config_file(tmp_path), max_file_bytes=limit)
    # The small files (journal, credential, version 1) fit
    device_id = on_version_1(agent, publisher, content_type)

    # When a 2 MB version 2 is released and cannot be written
    release = publisher.release(content_type, "2", b"ok 2\n" + os.urandom(2 * 1024 * 1024), ROLLING)
    agent.start()

    def download_failure() -> list[dict[str, Any]]:
        return [e for e in server_events(server, device_id) if e["version"] == "2" and e["kind"] == "failed"]
    reported = agent.wait_for(download_failure, timeout=30, what="the download failure reported")
    assert agent.running
    assert agent.stop() == 0

    # Then the failure named the download and the disk's error, and reached the server
    assert reported[0]["details"]["step"] == "download"
    assert reported[0]["details"]["reason"] == "download: File too large", reported
    assert reported[0]["release_id"] == release
    log = agent.log()
    assert f"download of {content_type} 2 failed on disk" in log
    assert "File too large" in log
    # And the device stays on version 1; nothing partial is left in the downloads directory
    assert_on(agent, content_type, "1")
    assert list((agent.state_dir / "downloads").iterdir()) == []
    # A full disk is not the artifact's fault: the version is not blocked, it is tried again later
    assert "2" not in content(agent, content_type)["blocked"]
    status = publisher.status(release)
    assert (status["totals"]["exposed"], status["totals"]["failed"]) == (0, 1)


# -- 3. the state directory -----------------------------------------------------------------
def test_a_state_dir_under_a_regular_file_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("precious\n")
    state_dir = blocker / "state"
    proc = run_cli("agent", "run", "--server", f"http://127.0.0.1:{free_port()}", "--enroll-token", "x",
                   "--state-dir", str(state_dir), "--once")
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc)
    assert f"cannot use the state directory {state_dir}" in line
    assert "Not a directory" in line
    assert blocker.read_text() == "precious\n"


def test_a_second_agent_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens: the first agent keeps retrying
    first = AgentProcess(tmp_path / "agent", url, "some-token").start()
    first.wait_for(lambda: "enrolment: server unreachable" in first.log(), what="the first agent running")
    journal_before = first.journal()

    second = run_cli("agent", "run", "--server", url, "--enroll-token", "some-token", "--state-dir",
                     str(first.state_dir), "--once")
    assert second.returncode == 2, second.stderr
    line = one_line_error(second)
    assert f"another agent is running on {first.state_dir}" in line

    assert first.running
    assert first.journal()["boot"] == journal_before["boot"]  # the second one never booted
    assert first.stop() == 0


# -- 4. a damaged journal -------------------------------------------------------------------
def newest_slot(state_dir: Path) -> Path:
    slots = [state_dir / "journal.a.json", state_dir / "journal.b.json"]
    return max(slots, key=lambda p: json.loads(p.read_bytes())["body"]["generation"])


def test_a_damaged_journal_slot_and_then_both(server: ServerProcess, publisher: Publisher,
                                              tmp_path: Path) -> None:
    content_type = "t/journal"
    agent = AgentProcess(tmp_path / "agent", server.url, publisher.enroll_token(), config=config_file(tmp_path))
    device_id = on_version_1(agent, publisher, content_type)

    # When the newest slot is torn (half of it is gone)
    boot = agent.journal()["boot"]
    torn = newest_slot(agent.state_dir)
    torn.write_bytes(torn.read_bytes()[: torn.stat().st_size // 2])
    agent.start()

    # Then the agent starts from the other slot: same device, same version, and says so
    agent.wait_for(lambda: f"journal slot {torn} is damaged" in agent.log(), what="the damaged slot reported")
    agent.wait_for(lambda: agent.journal()["boot"] == boot + 1 and settled(agent, content_type, "1"),
                   what="the agent settled on the other slot")
    assert agent.journal()["device_id"] == device_id
    assert_on(agent, content_type, "1")
    assert not list(agent.state_dir.glob("*.damaged-*"))
    assert agent.stop() == 0

    # When both slots are damaged
    for name in ("journal.a.json", "journal.b.json"):
        slot = agent.state_dir / name
        slot.write_bytes(slot.read_bytes()[:-40] + b"garbage")
    agent.start()

    # Then the agent moves them aside for a person and starts from the version switched in on disk
    aside = agent.wait_for(lambda: len(list(agent.state_dir.glob("journal.*.json.damaged-*"))) == 2,
                           what="both slots moved aside")
    assert aside
    agent.wait_for(lambda: settled(agent, content_type, "1"), what="the agent running from the disk")
    boot = agent.log().rsplit("--- boot", 1)[1]
    assert "every journal slot" in boot and "starting over from the versions switched in on disk" in boot
    assert_on(agent, content_type, "1")
    assert agent.journal()["device_id"] == device_id

    # And it still takes the next update, and the server hears every step of it
    release = publisher.release(content_type, "2", b"ok 2\n", ROLLING)
    agent.wait_for(lambda: settled(agent, content_type, "2"), what="version 2 committed")
    assert_on(agent, content_type, "2")
    status = publisher.wait_status(release, lambda s: s["totals"]["healthy"] == 1, timeout=15,
                                   what="the server counted the update")
    assert (status["totals"]["exposed"], status["totals"]["activated"]) == (1, 1)
    kinds = [e["kind"] for e in server_events(server, device_id) if e["version"] == "2"]
    assert kinds[0] == "intent" and kinds[-1] == "healthy", kinds
    assert agent.stop() == 0


# -- 5. a hung probe ------------------------------------------------------------------------
def test_a_hung_probe_fails_the_trial_at_its_timeout(server: ServerProcess, publisher: Publisher,
                                                     tmp_path: Path) -> None:
    content_type = "t/hung-probe"
    config = config_file(tmp_path)
    agent = AgentProcess(tmp_path / "agent", server.url, publisher.enroll_token(), config=config)
    on_version_1(agent, publisher, content_type)

    # Given the probe now hangs for 30 s, with a 1 s timeout
    config.write_text(HUNG_PROBE_CONFIG)
    agent.start()
    started = time.monotonic()
    release = publisher.release(content_type, "2", b"ok 2\n", ROLLING)

    # Then version 2 is rolled back at the probe's timeout, not after the probe's 30 s
    agent.wait_for(lambda: f"{content_type}: left 2 for 1" in agent.log(), timeout=25, what="version 2 rolled back")
    elapsed = time.monotonic() - started
    assert elapsed < 15, elapsed
    reason = content(agent, content_type)["blocked"]["2"]
    assert reason == "health probe failed: health command sleep did not answer within 1s", reason
    assert f"{content_type}: left 2 for 1: {reason}" in agent.log()
    assert_on(agent, content_type, "1")
    status = publisher.wait_status(release, lambda s: s["totals"]["reverted"] == 1, what="the rollback counted")
    assert (status["totals"]["exposed"], status["totals"]["healthy"]) == (1, 0)
    assert agent.stop() == 0


# -- 6. a server that is not there ----------------------------------------------------------
def test_an_unreachable_server_at_first_enrolment_is_retried_with_backoff(
        server: ServerProcess, publisher: Publisher, tmp_path: Path) -> None:
    content_type = "t/late-server"
    publisher.content_type(content_type)
    token = publisher.enroll_token()
    publisher.release(content_type, "1", b"ok 1\n", ROLLING)
    server.stop()  # nothing listens at server.url now

    # When a brand-new agent starts while the server is away
    agent = AgentProcess(tmp_path / "agent", server.url, token, config=config_file(tmp_path)).start()
    agent.wait_for(lambda: agent.log().count("enrolment: server unreachable") >= 2, timeout=20,
                   what="two failed enrolment attempts")

    # Then it keeps running, unenrolled, and waits longer between attempts
    assert agent.running
    assert not (agent.state_dir / "credential.json").exists()
    first, second = log_times(agent.log(), "enrolment: server unreachable")[:2]
    assert second - first >= 0.95, (first, second)  # the first backoff is 1-2 s

    # And once the server is there, it enrolls and takes version 1
    server.start()
    agent.wait_for(lambda: settled(agent, content_type, "1"), timeout=40, what="enrolled and on version 1")
    assert "enrolled as device" in agent.log()
    assert_on(agent, content_type, "1")
    assert agent.stop() == 0


def test_once_with_no_server_exits_6(tmp_path: Path) -> None:
    proc = run_cli("agent", "run", "--server", f"http://127.0.0.1:{free_port()}", "--enroll-token", "x",
                   "--state-dir", str(tmp_path / "agent"), "--once")
    assert proc.returncode == 6, proc.stderr
    assert one_line_error(proc) == "error: the server could not be reached"
    assert not (tmp_path / "agent" / "credential.json").exists()


# -- 7. enrolment ---------------------------------------------------------------------------
def test_a_wrong_enrolment_token_is_refused_and_a_good_one_writes_a_private_credential(
        server: ServerProcess, publisher: Publisher, tmp_path: Path) -> None:
    state_dir = tmp_path / "agent"

    def enroll(token: str) -> Any:
        return run_cli("agent", "run", "--server", server.url, "--enroll-token", token, "--state-dir",
                       str(state_dir), "--once")

    refused = enroll("rf_not-a-real-token")
    assert refused.returncode == 3, refused.stderr
    assert one_line_error(refused).startswith("error: enrolment refused")
    assert not (state_dir / "credential.json").exists()

    accepted = enroll(publisher.enroll_token())
    assert accepted.returncode == 0, accepted.stderr
    credential = state_dir / "credential.json"
    assert credential.stat().st_mode & 0o777 == 0o600
    device_id = json.loads(credential.read_text())["device_id"]
    assert publisher.device(device_id)["id"] == device_id


# -- 8. bad config and attributes -----------------------------------------------------------
@pytest.mark.parametrize(("config", "attributes", "expected"), [
    ("heartbeat: 1s\nfrobnicate: 2\n", None,
     r"agent config \S+agent\.yaml: frobnicate: unknown field; expected one of"),
    ("content_types:\n  default:\n    applier: magic\n", None,
     r"agent config \S+agent\.yaml: content_types\.default\.applier: must be content or command"),
    (None, "missing.yaml", r"cannot read the attributes file \S+missing\.yaml: No such file or directory"),
], ids=["unknown-key", "bad-applier", "missing-attributes-file"])
def test_bad_config_or_attributes_exit_2_naming_the_field(config: str | None, attributes: str | None,
                                                          expected: str, tmp_path: Path) -> None:
    state_dir = tmp_path / "agent"
    argv = ["agent", "run", "--server", f"http://127.0.0.1:{free_port()}", "--enroll-token", "x",
            "--state-dir", str(state_dir), "--once"]
    if config is not None:
        argv += ["--config", str(config_file(tmp_path, config))]
    if attributes is not None:
        argv += ["--attributes", str(tmp_path / attributes)]
    proc = run_cli(*argv)
    assert proc.returncode == 2, proc.stderr
    assert re.fullmatch(f"error: {expected}.*", one_line_error(proc)), proc.stderr
    assert proc.stdout == ""
    assert not state_dir.exists()  # nothing was written: no journal, no credential


# -- 9. an operator's rollback --------------------------------------------------------------
def test_a_rollback_is_honoured_while_the_agent_runs(server: ServerProcess, publisher: Publisher,
                                                     tmp_path: Path) -> None:
    content_type = "t/rollback"
    agent = AgentProcess(tmp_path / "agent", server.url, publisher.enroll_token(), config=config_file(tmp_path))
    on_version_1(agent, publisher, content_type)
    agent.start()
    release = publisher.release(content_type, "2", b"ok 2\n", ROLLING)
    agent.wait_for(lambda: settled(agent, content_type, "2"), what="version 2 committed")
    assert agent.proc is not None
    pid, boot = agent.proc.pid, agent.journal()["boot"]

    # When the operator halts the release and rolls it back
    publisher.action(release, "halt", "customers report trouble")
    publisher.action(release, "rollback", "customers report trouble")

    # Then the running agent returns to version 1, without a restart, and never takes 2 again
    agent.wait_for(lambda: f"{content_type}: left 2 for 1" in agent.log(), what="back on version 1")
    assert agent.running and agent.proc.pid == pid
    journal = agent.journal()
    assert journal["boot"] == boot
    assert "server" in journal["content"][content_type]["blocked"]["2"]  # revoked by it, or rolled back
    assert_on(agent, content_type, "1")
    # And the rollback completes once the device confirmed it left version 2
    status = publisher.wait_status(release, lambda s: s["phase"] == "rolled_back", what="the rollback confirmed")
    assert status["totals"]["reverted"] == 1
    assert agent.log().count("--- boot") == 2  # the boot that took version 1, and this one
    assert agent.stop() == 0


# -- 10. the intent must be acknowledged ----------------------------------------------------
def test_no_activation_before_the_intent_is_acknowledged(server: ServerProcess, publisher: Publisher,
                                                         tmp_path: Path) -> None:
    content_type = "t/intent"
    network = Partition(server.port)
    try:
        agent = AgentProcess(tmp_path / "agent", network.url, publisher.enroll_token(),
                             config=config_file(tmp_path))
        on_version_1(agent, publisher, content_type)
        release = publisher.release(content_type, "2", b"ok 2\n", ACK_2S)

        # Given the agent staged version 2 and died there
        agent.start(kill_at="staged")
        assert agent.wait_exit() == -9, agent.log()
        assert content(agent, content_type)["update"]["step"] == "staged"
        assert "intent" not in agent.journal()["outbox_kinds"]  # journaled only with a fresh answer

        # When it restarts and the server goes away the moment its intent is sent
        network.cut_on(INTENT)
        agent.start()
        assert network.tripped.wait(30), agent.log()
        server.stop()

        # Then it does not switch: it stays on version 1 with the intent waiting in its outbox
        agent.wait_for(lambda: f"{content_type} 2: the intent was not acknowledged within 2s; staying on 1"
                       in agent.log(), what="the agent giving up on the acknowledgement")
        journal = agent.journal()
        assert journal["content"][content_type]["update"]["step"] == "intent"
        assert "intent" in journal["outbox_kinds"]
        assert_on(agent, content_type, "1")
        assert f"{content_type} 2 activated" not in agent.log()

        # And when the server is back, the intent is delivered, acknowledged, and only then is
        # version 2 activated and committed
        server.start()
        assert publisher.status(release)["totals"]["exposed"] == 0  # still cut off: nothing arrived
        network.heal()
        agent.wait_for(lambda: settled(agent, content_type, "2"), what="version 2 committed")
        assert_on(agent, content_type, "2")
        status = publisher.wait_status(release, lambda s: s["totals"]["healthy"] == 1, what="the update counted")
        assert (status["totals"]["exposed"], status["totals"]["activated"]) == (1, 1)
        kinds = [e["kind"] for e in server_events(server) if e["version"] == "2"]
        assert kinds.index("intent") < kinds.index("activated"), kinds
        assert agent.stop() == 0
    finally:
        network.close()


def test_a_plan_may_allow_activation_without_the_acknowledgement(server: ServerProcess, publisher: Publisher,
                                                                 tmp_path: Path) -> None:
    content_type = "t/no-ack"
    network = Partition(server.port)
    try:
        agent = AgentProcess(tmp_path / "agent", network.url, publisher.enroll_token(),
                             config=config_file(tmp_path))
        on_version_1(agent, publisher, content_type)
        agent.start()

        # When version 2's plan does not require the acknowledgement, and the server becomes
        # unreachable the moment the intent is sent
        network.cut_on(INTENT)
        release = publisher.release(content_type, "2", b"ok 2\n", NO_ACK)
        assert network.tripped.wait(30), agent.log()

        # Then the agent activates and commits version 2 anyway, keeping the intent for later
        agent.wait_for(lambda: content(agent, content_type)["lkg"] == "2", what="version 2 committed")
        assert f"{content_type} 2: activating without an acknowledged intent, as the plan allows" in agent.log()
        assert_on(agent, content_type, "2")
        kinds = agent.journal()["outbox_kinds"]
        assert {"intent", "activated", "healthy"} <= set(kinds), kinds
        assert publisher.status(release)["totals"]["exposed"] == 0

        # And once the server is reachable it hears all of it: the device counts as exposed
        network.heal()
        agent.wait_for(lambda: settled(agent, content_type, "2"), what="the outbox delivered")
        status = publisher.wait_status(release, lambda s: s["totals"]["healthy"] == 1, what="the update counted")
        assert (status["totals"]["exposed"], status["totals"]["activated"]) == (1, 1)
        assert agent.stop() == 0
    finally:
        network.close()

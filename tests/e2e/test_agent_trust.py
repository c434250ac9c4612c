"""Signed delivery end to end: a real server (``ringfence init`` made its TUF keys) and real agent
processes started with ``--trusted-root``, the root ``ringfence init`` printed.

Each test reads Given / When / Then: the agent installs what the release process signed and
nothing else, refuses to go back to an older artifact unless the one it runs is revoked in the
signed revocations, follows a signed rollback, and keeps verifying across key rotations without
being enrolled again.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ringfence.agent.journal import Journal
from tests.support import (
    FIRST_PLAN,
    PROBED_AGENT_CONFIG,
    Publisher,
    ServerProcess,
    TrustedAgentProcess,
    own_server,
    run_cli,
    server_events,
    shipped_root,
)

pytestmark = pytest.mark.e2e

# Completes after a second whatever its devices report: a refusal must not keep it active.
TOLERANT_PLAN = FIRST_PLAN.replace("soak: 1s", "soak: 1s\n    gates: {failure_budget: 100}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from own_server(tmp_path)


@pytest.fixture
def publisher(server: ServerProcess) -> Publisher:
    return Publisher(server)


@pytest.fixture
def agent(server: ServerProcess, publisher: Publisher, tmp_path: Path) -> TrustedAgentProcess:
    config = tmp_path / "agent.yaml"
    config.write_text(PROBED_AGENT_CONFIG)
    return TrustedAgentProcess(tmp_path / "agent", server.url, publisher.enroll_token(), config=config,
                               trusted_root=shipped_root(server))


def settled(agent: TrustedAgentProcess, content_type: str, version: str) -> dict[str, Any] | None:
    """The journal once ``version`` is committed, nothing is in flight and every event was
    acknowledged."""
    journal = agent.journal()
    c = journal["content"].get(content_type)
    if c is None or c["update"] is not None or journal["outbox"] or not c["active"] == c["lkg"] == version:
        return None
    return journal


def release_and_settle(agent: TrustedAgentProcess, publisher: Publisher, content_type: str, version: str,
                       data: bytes | None = None) -> str:
    """Release ``version`` to everyone and wait until the agent committed it and the rollout
    completed. Pushes the artifact unless ``data`` is None (it was pushed before)."""
    if data is None:
        release: str = publisher._ok(publisher.http.post("/v1/releases", json={
            "content_type": content_type, "version": version, "plan": FIRST_PLAN}))["release"]
        publisher.action(release, "start")
    else:
        release = publisher.release(content_type, version, data, FIRST_PLAN)
    agent.wait_for(lambda: settled(agent, content_type, version), what=f"{content_type} {version} committed")
    publisher.wait_status(release, lambda s: s["phase"] == "completed", what=f"release of {version} completed")
    return release


def artifact_seq(server: ServerProcess, content_type: str, version: str) -> int:
    """The artifact's row id: the ``seq`` the server signs it with."""
    conn = sqlite3.connect(server.data_dir / "ringfence.db", timeout=10)
    try:
        row = conn.execute("SELECT id FROM artifacts WHERE content_type = ? AND version = ?",
                           (content_type, version)).fetchone()
    finally:
        conn.close()
    return int(row[0])


def signed_seqs(agent: TrustedAgentProcess, content_type: str) -> dict[str, int]:
    return dict(Journal.open(agent.state_dir).state.of(content_type).seqs)


def reasons(server: ServerProcess, device_id: str, version: str, kind: str = "failed") -> list[str]:
    return [e["details"]["reason"] for e in server_events(server, device_id)
            if e["version"] == version and e["kind"] == kind]


def test_a_signed_release_is_verified_and_installed(server: ServerProcess, publisher: Publisher,
                                                    agent: TrustedAgentProcess) -> None:
    # Given a content type and an agent that trusts only its server's shipped root
    content_type = "t/signed"
    publisher.content_type(content_type)

    # When version 1 is released
    agent.start()
    release_and_settle(agent, publisher, content_type, "1", b"ok 1\n")

    # Then the agent verified it with TUF before installing it, and kept its signed seq
    log = agent.log()
    assert "signed delivery: every artifact is verified with TUF from the root" in log
    assert "not verified with TUF" not in log
    assert signed_seqs(agent, content_type) == {"1": artifact_seq(server, content_type, "1")}
    assert (agent.state_dir / "tuf" / "root.json").is_file()
    device_id = agent.journal()["device_id"]
    assert reasons(server, device_id, "1") == []
    assert agent.stop() == 0


def test_an_artifact_swapped_behind_the_signature_is_refused(server: ServerProcess, publisher: Publisher,
                                                            agent: TrustedAgentProcess) -> None:
    """Someone who can write the server's database and blob store, but does not hold its signing
    keys, swaps version 2 after it was pushed and signed: new bytes in the blob store, and the
    artifact row changed to their sha256 and size. The check-in answer now names the swapped
    bytes' own hash, so the sha256 check the agent always made passes; only the signed target
    shows that these are not the bytes the release process pushed."""
    content_type = "t/swapped"
    publisher.content_type(content_type)
    agent.start()
    release_and_settle(agent, publisher, content_type, "1", b"ok 1\n")
    device_id = agent.journal()["device_id"]

    # Given version 2 pushed (and signed) and released, then swapped in the database and the blob store
    publisher.push(content_type, "2", b"ok 2\n")
    release: str = publisher._ok(publisher.http.post("/v1/releases", json={
        "content_type": content_type, "version": "2", "plan": TOLERANT_PLAN}))["release"]
    swapped = b"ok 2, or so the database says\n"
    digest = hashlib.sha256(swapped).hexdigest()
    blob = server.data_dir / "blobs" / "sha256" / digest[:2] / digest
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(swapped)
    conn = sqlite3.connect(server.data_dir / "ringfence.db", timeout=10)
    try:
        with conn:
            changed = conn.execute("UPDATE artifacts SET sha256 = ?, size = ? WHERE content_type = ? AND version = ?",
                                   (digest, len(swapped), content_type, "2")).rowcount
    finally:
        conn.close()
    assert changed == 1

    # (A release created from the swapped row now is refused: the server checks it against its signature)
    again = publisher.http.post("/v1/releases", json={"content_type": content_type, "version": "2",
                                                      "plan": TOLERANT_PLAN})
    assert again.status_code == 409 and "is not what was signed when it was pushed" in again.text

    # When the release made before the swap is started
    publisher.action(release, "start")

    # Then the agent refuses it three times, as it would a corrupt download, and gives it up
    agent.wait_for(lambda: "2" in agent.journal()["content"][content_type]["blocked"]
                   and not agent.journal()["outbox"], what="version 2 given up")
    refused = reasons(server, device_id, "2")
    assert len(refused) == 3, refused
    assert all(r.startswith(f"TUF: target '{content_type.replace('/', '~')}/2' differs from what targets v1 / "
                            "releases v") for r in refused), refused
    log = agent.log()
    assert "hash mismatch" not in log  # the bytes were what the answer named
    # And it still runs version 1; nothing of version 2 was staged, no intent was sent
    state = agent.journal()["content"][content_type]
    assert (state["active"], state["lkg"], agent.current(content_type)) == ("1", "1", "1")
    assert not (agent.state_dir / "content" / content_type.replace("/", "+") / "versions" / "2").exists()
    assert [e["kind"] for e in server_events(server, device_id) if e["version"] == "2"] == ["failed"] * 3
    assert agent.stop() == 0


def on_two_then_three(server: ServerProcess, publisher: Publisher, agent: TrustedAgentProcess,
                      content_type: str) -> tuple[str, str]:
    """Given a device that ran version 2, then version 3 (pushed after 2: a higher signed seq);
    returns the release of 3 and the device id."""
    publisher.content_type(content_type)
    agent.start()
    release_and_settle(agent, publisher, content_type, "2", b"ok 2\n")
    third = release_and_settle(agent, publisher, content_type, "3", b"ok 3\n")
    assert artifact_seq(server, content_type, "2") < artifact_seq(server, content_type, "3")
    device_id: str = agent.journal()["device_id"]
    return third, device_id


def test_a_downgrade_is_refused_and_its_rollout_proves_nothing(server: ServerProcess, publisher: Publisher,
                                                               agent: TrustedAgentProcess) -> None:
    content_type = "t/downgrade"
    _, device_id = on_two_then_three(server, publisher, agent, content_type)

    # When version 2 is released again, while 3 is not revoked
    again: str = publisher._ok(publisher.http.post("/v1/releases", json={
        "content_type": content_type, "version": "2", "plan": TOLERANT_PLAN}))["release"]
    publisher.action(again, "start")

    # Then the agent refuses to go back, says so once, and stays on 3
    refusal = "downgrade from 3 to 2 refused: 3 is not revoked"
    agent.wait_for(lambda: reasons(server, device_id, "2") == [refusal], what="the refusal reported")
    state = agent.journal()["content"][content_type]
    assert (state["active"], state["lkg"], agent.current(content_type)) == ("3", "3", "3")
    assert agent.log().count(refusal) == 1
    # And the rollout of 2, which nobody runs, is not completed on the absence of bad news: it
    # waits, and says for what
    status = publisher.wait_status(again, lambda s: bool(s["waiting"]), what="the rollout of 2 waiting")
    assert status["phase"] == "rolling" and status["totals"]["exposed"] == 0
    assert any("proven nothing" in line for line in status["waiting"]), status["waiting"]
    assert agent.stop() == 0


def test_a_signed_rollback_is_followed_back_to_the_older_version(server: ServerProcess, publisher: Publisher,
                                                                 agent: TrustedAgentProcess) -> None:
    content_type = "t/rollback"
    third, device_id = on_two_then_three(server, publisher, agent, content_type)

    # When the rollout of 3 is rolled back (the server signs 3 into revocations.json)
    publisher.action(third, "rollback", reason="3 corrupts the channel files")

    # Then the agent follows: 3 is left for 2, its way back on disk
    journal = agent.wait_for(lambda: settled(agent, content_type, "2"), what="back on 2")
    assert "3" in journal["content"][content_type]["blocked"]
    assert agent.current(content_type) == "2"
    assert reasons(server, device_id, "3", kind="recalled") == [
        "revoked by the server: 3 corrupts the channel files"]
    assert reasons(server, device_id, "2") == []  # nothing refused on the way
    assert agent.stop() == 0


def test_key_rotations_are_followed_without_re_enrolment(server: ServerProcess, publisher: Publisher,
                                                         agent: TrustedAgentProcess) -> None:
    content_type = "t/rotation"
    publisher.content_type(content_type)
    agent.start()
    release_and_settle(agent, publisher, content_type, "1", b"ok 1\n")
    device_id = agent.journal()["device_id"]

    # Given the timestamp key, then the root keys, rotated offline and handed to the server
    keys = server.data_dir / "keys"
    run_cli("keys", "rotate", str(keys), "--role", "timestamp", check=True)
    run_cli("keys", "rotate", str(keys), "--role", "root", check=True)
    reloaded = publisher._ok(publisher.http.post("/v1/tuf/reload"))
    assert reloaded["accepted"] == ["2.root.json", "3.root.json"]

    # When a release follows, to the agent that kept running
    release_and_settle(agent, publisher, content_type, "2", b"ok 2\n")

    # Then it was verified under the new keys: the agent walked the root chain from its shipped root
    assert (agent.state_dir / "tuf" / "root_history" / "3.root.json").is_file()
    assert reasons(server, device_id, "2") == []

    # And after a restart on the same state directory (no enrolment token needed) the next one too
    assert agent.stop() == 0
    agent.enroll_token = ""
    agent.start()
    release_and_settle(agent, publisher, content_type, "3", b"ok 3\n")
    assert agent.journal()["device_id"] == device_id
    assert set(signed_seqs(agent, content_type)) >= {"2", "3"}
    assert reasons(server, device_id, "3") == []
    assert agent.stop() == 0

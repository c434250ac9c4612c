"""The agent as a real process, killed with SIGKILL at every step of an update.

Given a device whose last-known-good is version 1, a release of version 2 (one that passes its
health probe, or one that fails it), and an agent that dies at a named step: after a restart the
device runs either version 1 or version 2 fully committed — never something in between — and the
server's counts agree with what the device did.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    FIRST_PLAN,
    PROBED_AGENT_CONFIG,
    ROLLING_PLAN,
    AgentProcess,
    Publisher,
    ServerProcess,
    own_server,
)

pytestmark = pytest.mark.e2e

FIRST = FIRST_PLAN
PLAN = ROLLING_PLAN

AGENT_CONFIG = PROBED_AGENT_CONFIG

GOOD_STEPS = ["downloaded", "staged", "intent-journaled", "intent-acked", "activating", "switched", "activated",
              "loaded", "probed", "committed"]
BAD_STEPS = ["probed", "reverting", "switched-back", "reverted"]
AFTER_INTENT = {"intent-acked", "activating", "switched", "activated", "loaded", "probed", "committed",
                "reverting", "switched-back", "reverted"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from own_server(tmp_path)


@pytest.fixture
def publisher(server: ServerProcess) -> Publisher:
    return Publisher(server)


def settled(agent: AgentProcess, content_type: str) -> dict[str, Any] | None:
    """The journal once nothing is in flight and every event was acknowledged."""
    journal = agent.journal()
    c = journal["content"].get(content_type)
    if c is None or c["update"] is not None or journal["outbox"] or c["active"] != c["lkg"]:
        return None
    return journal


def device_on(agent: AgentProcess, publisher: Publisher, content_type: str, version: str, tmp_path: Path) -> str:
    """Bring a fresh device to ``version`` committed as its LKG; returns the release id."""
    release = publisher.release(content_type, version, f"ok {version}\n".encode(), FIRST)
    agent.start()
    agent.wait_for(lambda: (settled(agent, content_type) or {}).get("content", {}).get(content_type, {})
                   .get("lkg") == version, what=f"{content_type} {version} committed")
    publisher.wait_status(release, lambda s: s["phase"] == "completed", what="first release completed")
    assert agent.stop() == 0
    return release


@pytest.mark.parametrize(("outcome", "step"), [("good", s) for s in GOOD_STEPS] + [("bad", s) for s in BAD_STEPS])
def test_sigkill_at_every_step_leaves_the_device_on_a_version_that_ran(
        outcome: str, step: str, server: ServerProcess, publisher: Publisher, tmp_path: Path) -> None:
    content_type = f"t/{outcome}-{step}"
    publisher.content_type(content_type)
    agent = AgentProcess(tmp_path / "agent", server.url, publisher.enroll_token(), config=tmp_path / "agent.yaml")
    (tmp_path / "agent.yaml").write_text(AGENT_CONFIG)

    # Given a device whose LKG is version 1
    device_on(agent, publisher, content_type, "1", tmp_path)
    device_id = agent.journal()["device_id"]

    # When version 2 is released and the agent dies at the step
    body = b"ok 2\n" if outcome == "good" else b"broken 2\n"
    release = publisher.release(content_type, "2", body, PLAN)
    agent.start(kill_at=step)
    assert agent.wait_exit() == -9, agent.log()
    assert f"fault injection: killed at {step}" in agent.log()

    # Then at that moment the disk holds version 1 or version 2, nothing else
    assert agent.current(content_type) in ("1", "2")
    if step in AFTER_INTENT:  # the server counted the device before it switched (or died trying)
        assert publisher.status(release)["totals"]["exposed"] == 1

    # And after a restart the device settles on 1 or on 2 fully committed
    agent.start()
    journal = agent.wait_for(lambda: settled(agent, content_type), what="the agent to settle")
    state = journal["content"][content_type]
    expected = "2" if outcome == "good" else "1"
    assert (state["active"], state["lkg"], agent.current(content_type)) == (expected, expected, expected)
    if outcome == "bad":
        assert "2" in state["blocked"]
        assert "health probe failed" in state["blocked"]["2"]

    # And the server agrees: exposed once, healthy or reverted, and the version the device reports
    def counted(status: dict[str, Any]) -> bool:
        totals = status["totals"]
        done = totals["healthy"] == 1 if outcome == "good" else totals["reverted"] == 1
        return totals["exposed"] == 1 and done
    status = publisher.wait_status(release, counted, what="the server's counts")
    assert status["totals"]["admitted"] == 1
    if outcome == "bad":
        assert status["totals"]["healthy"] == 0
        assert status["totals"]["failed"] >= 1
    assert agent.wait_for(lambda: publisher.device(device_id)["versions"].get(content_type) == expected,
                          what="the device's reported version")
    assert agent.stop() == 0


def test_a_failing_trial_rolls_back_and_is_never_retried(server: ServerProcess, publisher: Publisher,
                                                          tmp_path: Path) -> None:
    content_type = "t/no-retry"
    publisher.content_type(content_type)
    (tmp_path / "agent.yaml").write_text(AGENT_CONFIG)
    agent = AgentProcess(tmp_path / "agent", server.url, publisher.enroll_token(), config=tmp_path / "agent.yaml")
    device_on(agent, publisher, content_type, "1", tmp_path)

    release = publisher.release(content_type, "2", b"broken\n", PLAN)
    agent.start()
    agent.wait_for(lambda: "2" in agent.journal()["content"][content_type]["blocked"], what="version 2 blocked")
    status = publisher.wait_status(release, lambda s: s["totals"]["reverted"] == 1, what="the rollback counted")
    assert status["totals"]["healthy"] == 0
    # The server still asks for 2 (a device exposed to a rolling release keeps being offered it):
    # the agent says no.
    time.sleep(3)  # a few more check-ins (one a second), each of which asks for version 2 again
    journal = agent.journal()
    assert journal["content"][content_type]["active"] == "1"
    assert agent.log().count("activated; trial") == 2  # version 1 once, version 2 once: no retry
    assert agent.stop() == 0

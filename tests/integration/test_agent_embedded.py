"""The agent as a library, embedded in process the way the simulator's live mode uses it: its
own transport client, a Python callable as the health probe, and ``tick()`` driven by the caller
— against the real app on each backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ringfence.agent import Agent, AgentConfig, CallableProbe, ContentTypeSpec, HttpTransport, ProbeResult
from tests.integration.conftest import CT, Api
from tests.integration.test_api import release, status, wait_for

# The agent sets a timeout per request; Starlette's test client ignores it and says so.
pytestmark = pytest.mark.filterwarnings("ignore:You should not use the 'timeout' argument")

FIRST = "name: all\nwaves:\n  - name: all\n    share: 1.0\n    soak: 1m\n"
ROLLING = "name: all\nwaves:\n  - name: all\n    share: 1.0\n    soak: 1h\n    gates: {failure_budget: 10}\n"


def test_embedded_agent_commits_a_healthy_version_and_rolls_back_a_sick_one(setup: tuple[Api, str],
                                                                           tmp_path: Path) -> None:
    api, enroll = setup
    healthy: dict[str, bool] = {"1.0": True, "2.0": False}
    probed: list[str] = []

    def probe() -> ProbeResult:
        version = agent.state.of(CT).active.version  # type: ignore[union-attr]
        probed.append(version)
        return ProbeResult(healthy[version], f"self-test of {version}")

    config = AgentConfig(server="http://testserver", state_dir=tmp_path / "agent", enroll_token=enroll,
                         attributes={"platform": "linux", "region": "eu-west"}, heartbeat_s=0.05,
                         default=ContentTypeSpec(trial_s=0.2))
    agent = Agent(config, transport=HttpTransport("http://testserver", client=api.http),
                  probes={CT: CallableProbe(probe, timeout_s=2)})
    agent.start()
    try:
        assert agent.tick()  # enrols and checks in: nothing to do yet
        device_id = agent.state.device_id
        assert device_id is not None
        assert (tmp_path / "agent" / "credential.json").stat().st_mode & 0o777 == 0o600
        wait_for(lambda: api.http.get("/v1/server").json()["devices"] == 1)

        first = release(api, "1.0", FIRST)
        api.http.post(f"/v1/rollouts/{first}/start")
        wait_for(lambda: agent.tick() and agent.state.of(CT).lkg is not None)
        assert agent.status()["content"][CT] == {"active": "1.0", "lkg": "1.0", "previous": [], "blocked": {},
                                                  "update": None}
        counts = wait_for(lambda: (t := status(api, first)["totals"])["healthy"] == 1 and t)
        assert (counts["exposed"], counts["activated"], counts["failed"]) == (1, 1, 0)

        api.clock.advance(61)
        wait_for(lambda: status(api, first)["phase"] == "completed")
        second = release(api, "2.0", ROLLING)
        assert api.http.post(f"/v1/rollouts/{second}/start").status_code == 200
        wait_for(lambda: agent.tick() and "2.0" in agent.state.of(CT).blocked)
        state = agent.status()["content"][CT]
        assert (state["active"], state["lkg"]) == ("1.0", "1.0")
        assert state["blocked"]["2.0"] == "health probe failed: self-test of 2.0"
        assert probed == ["1.0", "2.0"]
        assert (agent.state_dir / "content" / "sensor+ipc-templates" / "current").resolve().name == "1.0"
        agent.tick()  # delivers the rollback; the server keeps offering 2.0 and the agent declines
        counts = wait_for(lambda: (t := status(api, second)["totals"])["reverted"] == 1 and t)
        assert (counts["exposed"], counts["activated"], counts["healthy"], counts["failed"]) == (1, 1, 0, 1)
        assert probed == ["1.0", "2.0"]
        assert not agent.state.outbox
    finally:
        agent.shutdown()


def test_the_agent_numbers_its_checkins_so_a_replay_is_refused_across_restarts(setup: tuple[Api, str],
                                                                              tmp_path: Path) -> None:
    api, enroll = setup
    sent: list[int] = []

    class Recording(HttpTransport):
        def checkin(self, credential: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
            sent.append(body["sequence"])
            return super().checkin(credential, body, timeout)

    def run(checkins: int) -> None:
        config = AgentConfig(server="http://testserver", state_dir=tmp_path / "agent", enroll_token=enroll,
                             attributes={"platform": "linux", "region": "eu-west"})
        agent = Agent(config, transport=Recording("http://testserver", client=api.http))
        agent.start()
        try:
            for _ in range(checkins):
                assert agent.tick()
        finally:
            agent.shutdown()

    run(3)
    run(2)  # a restart: the numbers go on rising (past the block reserved before it)
    assert sent[:3] == [1, 2, 3] and sent[3] > 3 and sent == sorted(set(sent))
    # And a captured check-in sent again is refused
    credential = (tmp_path / "agent" / "credential.json").read_text()
    secret = json.loads(credential)["credential"]
    replayed = api.as_token(secret).post("/v1/agent/checkin", json={"sequence": sent[-1]})
    assert replayed.status_code == 409 and replayed.json()["error"]["code"] == "replayed_checkin"

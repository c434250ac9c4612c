"""The server as a process: it refuses to start on a database it cannot use, and a SIGKILL in
the middle of a rollout loses nothing — it restarts into the same state and keeps every cap."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.support import UNVALIDATED, Device, ServerProcess, run_cli

pytestmark = pytest.mark.e2e

CT = "agent/binary"
PLAN = """
name: capped
waves:
  - name: canary
    max_devices: {total: 4}
    soak: 1h
    gates: {failure_budget: 5}
  - name: everyone
    share: 1.0
    soak: 1h
"""


def test_server_refuses_an_unreachable_database(tmp_path: Path) -> None:
    env = {"RINGFENCE_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/nothing"}
    init = run_cli("init", "--data-dir", str(tmp_path), env=env)
    assert init.returncode == 6
    assert "cannot reach the database at postgresql+psycopg://postgres@127.0.0.1:1/nothing" in init.stderr
    serve = run_cli("server", "--data-dir", str(tmp_path), "--port", "1", env=env)
    assert serve.returncode == 6
    assert "cannot reach the database" in serve.stderr


def test_server_refuses_an_uninitialised_data_dir(tmp_path: Path) -> None:
    serve = run_cli("server", "--data-dir", str(tmp_path))
    assert serve.returncode == 6
    assert "not initialised" in serve.stderr
    assert "ringfence init --data-dir" in serve.stderr


def test_init_twice_keeps_the_first_admin_token(tmp_path: Path) -> None:
    first = run_cli("init", "--data-dir", str(tmp_path), "--json", check=True)
    assert json.loads(first.stdout)["admin_token"].startswith("rft_")
    second = run_cli("init", "--data-dir", str(tmp_path), "--json")
    assert second.returncode == 2
    assert "already initialised" in second.stderr


def test_sigkill_mid_rollout_restarts_into_the_same_state(server: ServerProcess) -> None:
    with server.client() as admin:
        admin.post("/v1/content-types", json={"name": CT, "category": "software",
                                                     "unvalidated_reason": UNVALIDATED}).raise_for_status()
        enroll = admin.post("/v1/enroll-tokens", json={}).json()["token"]
        admin.post("/v1/artifacts", params={"content_type": CT, "version": "2.0"}, content=b"agent 2.0",
                   headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        release_id = admin.post("/v1/releases", json={"content_type": CT, "version": "2.0",
                                                      "plan": PLAN}).json()["release"]
        devices = [Device(server.url, platform=p, region=r).enroll(enroll)
                   for p in ("windows", "macos") for r in ("eu", "us") for _ in range(3)]
        time.sleep(2.5)  # let the server count the fleet
        admin.post(f"/v1/rollouts/{release_id}/start").raise_for_status()
        told = [d.update(CT) for d in devices[:6]]
        assert told.count("2.0") <= 4
        before = admin.get(f"/v1/rollouts/{release_id}").json()
    # Crashes reported just before the kill are durable (acknowledged = stored).
    exposed = [d for d in devices if d.versions.get(CT) == "2.0"]
    assert exposed, "the canary admitted nobody"
    acked = exposed[0].checkin([Device.event("crash", CT, "2.0")])["acked"]
    assert len(acked) == 1

    server.kill()
    server.start()

    with server.client() as admin:
        after = admin.get(f"/v1/rollouts/{release_id}").json()
        assert (after["phase"], after["wave"], after["revision"]) == (before["phase"], before["wave"],
                                                                      before["revision"])
        assert after["history"] == before["history"]
        assert after["waves"][0]["admitted"] == before["waves"][0]["admitted"]
        assert after["waves"][0]["failed"] == 1
        # Every device asks again: the canary never exceeds its cap of 4, and devices already
        # admitted are still told the new version.
        time.sleep(2.5)
        for d in devices:
            d.update(CT)
        final = admin.get(f"/v1/rollouts/{release_id}").json()
        assert final["waves"][0]["admitted"] == 4
        assert sum(1 for d in devices if d.versions.get(CT) == "2.0") == 4
        assert all(d.versions.get(CT) == "2.0" for d in exposed)
        assert admin.get("/v1/server").json()["devices"] == len(devices)
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}


@pytest.fixture
def two_nodes(pg_url: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two server processes on one PostgreSQL database, as behind a load balancer."""
    first = ServerProcess(tmp_path / "a", database_url=pg_url)
    first.init()
    second = ServerProcess(tmp_path / "b", database_url=pg_url)
    second.token = first.token
    first.start()
    second.start()
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def _release(admin: httpx.Client, plan: str, version: str) -> tuple[str, str]:
    """A content type, an enrolment token and a started release: (release id, enrol token)."""
    admin.post("/v1/content-types", json={"name": CT, "category": "software",
                                                     "unvalidated_reason": UNVALIDATED}).raise_for_status()
    enroll = admin.post("/v1/enroll-tokens", json={}).json()["token"]
    admin.post("/v1/artifacts", params={"content_type": CT, "version": version}, content=f"agent {version}".encode(),
               headers={"Content-Type": "application/octet-stream"}).raise_for_status()
    release_id = admin.post("/v1/releases", json={"content_type": CT, "version": version,
                                                  "plan": plan}).json()["release"]
    return release_id, enroll


@pytest.mark.pg
def test_two_nodes_share_one_reconciler_and_see_each_others_halts(
        two_nodes: tuple[ServerProcess, ServerProcess]) -> None:
    first, second = two_nodes
    with first.client() as a, second.client() as b:
        release_id, enroll = _release(a, "name: all\nwaves:\n  - name: all\n    share: 1.0\n    soak: 1h\n", "3.0")
        a.post(f"/v1/rollouts/{release_id}/start").raise_for_status()
        # Exactly one node runs the reconciler.
        time.sleep(1.5)
        ticks = [a.get("/v1/server").json()["reconciler"]["ticks"],
                 b.get("/v1/server").json()["reconciler"]["ticks"]]
        assert sorted(t > 0 for t in ticks) == [False, True], ticks
        # A device enrolled through node A is known to node B, which learns of the start made
        # on node A, then of the halt made on node A.
        device = Device(first.url).enroll(enroll)
        device.base_url = second.url
        deadline = time.monotonic() + 10
        while device.update(CT) != "3.0" and time.monotonic() < deadline:
            time.sleep(0.3)
        assert device.versions.get(CT) == "3.0"
        a.post(f"/v1/rollouts/{release_id}/halt", json={"reason": "stop"}).raise_for_status()
        time.sleep(2.5)
        late = Device(second.url).enroll(enroll)
        assert late.checkin()["desired"] == {}, "a halted rollout admitted a device on the other node"


@pytest.mark.pg
def test_two_nodes_admitting_at_once_never_exceed_a_cap(two_nodes: tuple[ServerProcess, ServerProcess]) -> None:
    first, second = two_nodes
    with first.client() as a:
        release_id, enroll = _release(a, PLAN, "4.0")  # canary: at most 4 devices
        devices = [Device(first.url, platform=p, region=r).enroll(enroll)
                   for p in ("windows", "macos") for r in ("eu", "us") for _ in range(4)]
        time.sleep(3)  # both nodes count the fleet (node B reads it at its first sight of each device)
        for d in devices:  # node B meets every device once before the race
            Device(second.url, credential=d.credential).checkin()
        time.sleep(2.5)
        a.post(f"/v1/rollouts/{release_id}/start").raise_for_status()
        time.sleep(1.5)

        def both(d: Device) -> list[str | None]:
            answers = []
            for url in (first.url, second.url):
                d.base_url = url
                desired = d.checkin()["desired"].get(CT)
                answers.append(desired["version"] if desired else None)
            return answers

        with ThreadPoolExecutor(8) as pool:
            told = list(pool.map(both, devices))
        admitted = {i for i, answers in enumerate(told) if "4.0" in answers}
        status = a.get(f"/v1/rollouts/{release_id}").json()
        assert status["waves"][0]["admitted"] <= 4
        assert len(admitted) <= 4, told
        assert len(admitted) == status["waves"][0]["admitted"]

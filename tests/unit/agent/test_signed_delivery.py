"""Signed delivery in the agent: a real agent over an in-memory control plane, verifying against a
real TUF repository (built by ``init_keys`` in a temporary directory) through the in-memory
fetcher. The rules under test are in :mod:`ringfence.agent.signed`."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ringfence.agent import Agent, AgentConfig, ContentTypeSpec, SignedDelivery
from ringfence.agent.journal import ContentState, Journal, Update, VersionRef
from ringfence.agent.signed import (
    Downgrades,
    RepositoryUnreachable,
    Revoked,
    Unverified,
    Verdict,
    downgrade_refusal,
    is_downgrade,
    parse_revocations,
)
from ringfence.agent.transport import Unreachable
from ringfence.trust import rotate_online, rotate_root, target_path
from tests.unit.trust.conftest import BASE, ScriptedFetcher, World, make_world

CT = "sensor/channel-files"


class Plane:
    """The in-memory twin of the agent API: what it offers, what it revoked (unsigned), and
    everything the agent sent."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.desired: dict[str, Any] = {}
        self.revoked: dict[str, set[str]] = {}  # the server's unsigned word
        self.events: list[dict[str, Any]] = []
        self.downloads: list[str] = []
        self.revocation_calls: list[float] = []
        self.on_checkin: Callable[[dict[str, Any]], None] | None = None
        self.down = False

    # -- the Transport protocol -----------------------------------------------------------
    def enroll(self, token: str, attributes: dict[str, Any]) -> dict[str, Any]:
        return {"device_id": "dev-1", "credential": "cred-1", "poll_interval_s": 1}

    def checkin(self, credential: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self.down:
            raise Unreachable("the plane is down")
        self.events += body["events"]
        if self.on_checkin is not None:
            self.on_checkin(body)
        return {"acked": [e["id"] for e in body["events"]], "desired": dict(self.desired),
                "revoked": self._revoked(body["versions"])}

    def revocations(self, credential: str, versions: dict[str, str], timeout: float) -> dict[str, Any]:
        self.revocation_calls.append(timeout)
        if self.down:
            raise Unreachable("the plane is down")
        return {"revoked": self._revoked(versions)}

    def download(self, credential: str, url: str, part: Path, limit: int, timeout: float) -> None:
        self.downloads.append(url)
        part.write_bytes(self.blobs[url])

    # -- scripting ------------------------------------------------------------------------
    def _revoked(self, versions: dict[str, str]) -> dict[str, Any]:
        return {ct: {"version": v, "reason": "rolled back by the operator"} for ct, v in versions.items()
                if v in self.revoked.get(ct, set())}

    def offer(self, version: str, data: bytes, **extra: Any) -> None:
        """Ask for ``version`` with ``data``'s hash and size, served at its URL."""
        sha = hashlib.sha256(data).hexdigest()
        self.blobs[f"/v1/artifacts/{sha}"] = data
        self.desired[CT] = {"version": version, "sha256": sha, "size": len(data), "url": f"/v1/artifacts/{sha}",
                            "release": f"rel-{version}", **extra}

    def failures(self) -> list[str]:
        return [e["details"]["reason"] for e in self.events if e["kind"] == "failed"]

    def kinds(self, version: str) -> list[str]:
        return [e["kind"] for e in self.events if e["version"] == version and e["kind"] != "heartbeat"]


def sign(world: World, version: str, data: bytes, seq: int) -> None:
    world.add(target_path(CT, version), data, {"content_type": CT, "version": version, "seq": seq})


def body(version: str) -> bytes:
    return f"ok {version}\n".encode()


@pytest.fixture
def plane() -> Plane:
    return Plane()


class Device:
    """Boots agents over one state directory (each ``boot`` is a new process's agent)."""

    def __init__(self, tmp_path: Path, world: World, plane: Plane) -> None:
        self.state_dir = tmp_path / "agent"
        self.world = world
        self.plane = plane
        self.agent: Agent | None = None

    def boot(self, *, trusted: bool = True, fetcher: ScriptedFetcher | None = None, timeout_s: float = 2.0,
             trial_s: float = 0.01) -> Agent:
        config = AgentConfig(server="http://plane.invalid", state_dir=self.state_dir, enroll_token="tok",
                             heartbeat_s=0.01, revocation_timeout_s=timeout_s, default=ContentTypeSpec(trial_s=trial_s),
                             trusted_root=self.world.shipped_root if trusted else None)
        signed = SignedDelivery(self.state_dir / "tuf", self.world.shipped_root, BASE,
                                fetcher or self.world.fetcher) if trusted else None
        self.agent = Agent(config, transport=self.plane, signed=signed, sleep=lambda _s: None)
        self.agent.start()
        return self.agent

    def halt(self) -> None:
        if self.agent is not None:
            self.agent.shutdown()
            self.agent = None

    def on(self, version: str) -> bool:
        assert self.agent is not None
        c = self.agent.state.of(CT)
        return c.active is not None and c.lkg is not None and c.active.version == c.lkg.version == version

    def install(self, version: str, seq: int) -> None:
        """Sign, offer and install ``version`` (committed when this returns)."""
        sign(self.world, version, body(version), seq)
        self.plane.offer(version, body(version))
        assert self.agent is not None
        assert self.agent.tick()
        assert self.on(version), self.agent.status()


@pytest.fixture
def device(tmp_path: Path, plane: Plane) -> Iterator[Device]:
    d = Device(tmp_path, make_world(tmp_path / "repo"), plane)
    try:
        yield d
    finally:
        d.halt()


# -- every artifact is a signed target -------------------------------------------------------

def test_a_signed_artifact_is_verified_then_installed_and_its_seq_kept(device: Device, plane: Plane) -> None:
    agent = device.boot()

    device.install("1", seq=7)

    assert plane.kinds("1") == ["intent", "activated", "healthy"]
    assert agent.state.of(CT).seqs == {"1": 7}
    assert Journal.open(device.state_dir).state.of(CT).seqs == {"1": 7}  # durable
    assert (device.state_dir / "tuf" / "root.json").is_file()  # the metadata cache is the agent's


@pytest.mark.parametrize(("how", "expected"), [
    ("different-bytes", "TUF: target 'sensor~channel-files/2' differs from what targets v1 / releases v"),
    ("not-signed", "TUF: target 'sensor~channel-files/2' is not signed: targets v1 / releases v"),
    ("signed-as-another-version", "TUF: target 'sensor~channel-files/2' is signed as sensor/channel-files 3, "
                                  "not as sensor/channel-files 2"),
])
def test_bytes_the_repository_does_not_vouch_for_are_refused_like_a_corrupt_download(
        device: Device, plane: Plane, how: str, expected: str) -> None:
    agent = device.boot()
    device.install("1", seq=1)
    # The server names bytes whose sha256 it computed itself: the hash check passes, TUF does not.
    served = b"ok 2, but not what was signed\n"
    if how == "different-bytes":
        sign(device.world, "2", body("2"), seq=2)
    elif how == "signed-as-another-version":
        device.world.add(target_path(CT, "2"), served, {"content_type": CT, "version": "3", "seq": 2})
    plane.offer("2", served)

    for _ in range(3):
        agent.tick()
    agent.exchange()  # delivers the last report

    assert len(plane.failures()) == 3
    assert all(reason.startswith(expected) for reason in plane.failures()), plane.failures()
    c = agent.state.of(CT)
    assert c.blocked["2"].startswith(expected)
    assert device.on("1") and c.update is None
    assert plane.kinds("2") == ["failed"] * 3  # no intent: nothing unverified was ever staged
    assert not (device.state_dir / "content" / "sensor+channel-files" / "versions" / "2").exists()
    assert list((device.state_dir / "downloads").iterdir()) == []


def test_an_unreachable_repository_is_retried_at_the_next_check_in_without_events(
        device: Device, plane: Plane) -> None:
    agent = device.boot()
    device.install("1", seq=1)
    sign(device.world, "2", body("2"), seq=2)
    plane.offer("2", body("2"))
    device.world.fetcher.status = 503

    agent.tick()
    agent.tick()

    assert plane.failures() == []
    assert device.on("1")
    update = agent.state.of(CT).update
    assert update is not None and (update.step, update.download_failures) == ("download", 0)

    device.world.fetcher.status = None
    agent.tick()

    assert device.on("2")
    assert plane.kinds("2") == ["intent", "activated", "healthy"]


# -- no downgrade without a signed revocation ------------------------------------------------

def test_a_downgrade_is_refused_once_and_the_device_stays(device: Device, plane: Plane) -> None:
    agent = device.boot()
    device.install("1", seq=1)
    sign(device.world, "2", body("2"), seq=2)  # pushed before 3, released after it
    device.install("3", seq=3)

    plane.offer("2", body("2"))
    agent.tick()
    agent.exchange()  # delivers the report

    assert plane.failures() == ["downgrade from 3 to 2 refused: 3 is not revoked"]
    assert device.on("3")
    assert agent.state.of(CT).refused == {"2": "3"}

    downloads = len(plane.downloads)
    agent.tick()
    agent.tick()

    assert plane.failures() == ["downgrade from 3 to 2 refused: 3 is not revoked"]  # said once
    assert len(plane.downloads) == downloads  # and not downloaded again
    assert device.on("3")


def test_a_downgrade_of_a_version_already_on_disk_is_judged_by_its_kept_seq(device: Device, plane: Plane) -> None:
    agent = device.boot()
    device.install("1", seq=1)
    device.install("3", seq=3)  # 1 stays on disk as the way back
    downloads = len(plane.downloads)

    plane.offer("1", body("1"))
    agent.tick()
    agent.exchange()

    assert plane.failures() == ["downgrade from 3 to 1 refused: 3 is not revoked"]
    assert len(plane.downloads) == downloads
    assert device.on("3")


def test_a_downgrade_is_followed_when_the_signed_revocations_list_the_active_version(
        device: Device, plane: Plane) -> None:
    agent = device.boot()
    sign(device.world, "2", body("2"), seq=2)
    device.install("3", seq=3)

    device.world.repository.set_revocations({"revoked": {CT: {"3": {"release": "rel-3", "phase": "rolled_back",
                                                                    "reason": "crashes on boot"}}}})
    plane.offer("2", body("2"))
    agent.tick()

    assert plane.failures() == []
    assert device.on("2")


def test_a_rollback_of_a_committed_version_waits_for_the_signed_revocation(device: Device, plane: Plane) -> None:
    agent = device.boot()
    device.install("1", seq=1)
    device.install("2", seq=2)
    plane.offer("1", body("1"), rollback_from="2")
    plane.revoked[CT] = {"2"}  # the server's unsigned word; revocations.json does not list 2

    agent.tick()
    agent.exchange()
    assert plane.failures() == []  # the first time may be the moment before the server re-signs
    agent.tick()
    agent.exchange()
    assert plane.failures() == ["downgrade from 2 to 1 refused: 2 is not revoked"]
    agent.tick()
    agent.exchange()
    assert plane.failures() == ["downgrade from 2 to 1 refused: 2 is not revoked"]
    assert device.on("2")

    device.world.repository.set_revocations({"revoked": {CT: {"2": {"reason": "rolled back"}}}})
    agent.tick()
    agent.exchange()

    assert device.on("1")
    assert plane.kinds("2")[-1] == "recalled"
    assert "2" in agent.state.of(CT).blocked


def test_a_version_in_trial_is_left_on_the_servers_unsigned_word(device: Device, plane: Plane) -> None:
    agent = device.boot(trial_s=0.5)
    device.install("1", seq=1)
    sign(device.world, "2", body("2"), seq=2)
    plane.offer("2", body("2"))

    def roll_back_once_activated(checkin: dict[str, Any]) -> None:
        if any(e["kind"] == "activated" and e["version"] == "2" for e in checkin["events"]):
            plane.offer("1", body("1"), rollback_from="2")
    plane.on_checkin = roll_back_once_activated

    agent.tick()
    agent.exchange()

    assert device.on("1")
    assert plane.kinds("2") == ["intent", "activated", "recalled"]
    assert plane.failures() == []


# -- start-up ---------------------------------------------------------------------------------

def on_2_then_reboot(device: Device, plane: Plane, **boot: Any) -> Agent:
    device.boot()
    device.install("1", seq=1)
    device.install("2", seq=2)
    device.halt()
    plane.revoked[CT] = {"2"}
    return device.boot(**boot)


def test_at_start_up_the_signed_revocations_decide_before_anything_loads(device: Device, plane: Plane) -> None:
    device.world.repository.set_revocations({"revoked": {CT: {"2": {"reason": "crashes on boot"}}}})
    plane.revoked.clear()

    agent = on_2_then_reboot(device, plane)

    assert device.on("1")
    assert "revoked by the server: crashes on boot (found before loading it)" in agent.state.of(CT).blocked["2"]
    assert plane.revocation_calls == []  # the signed answer was the whole answer


def test_at_start_up_an_unreachable_repository_falls_back_to_the_servers_answer(
        device: Device, plane: Plane) -> None:
    device.world.fetcher.status = None
    fetcher = ScriptedFetcher(device.world.repository)
    fetcher.status = 503

    agent = on_2_then_reboot(device, plane, fetcher=fetcher)

    assert device.on("1")
    assert len(plane.revocation_calls) == 1 and plane.revocation_calls[0] > 1.5  # nearly all of the 2 s left
    assert "2" in agent.state.of(CT).blocked


def test_at_start_up_metadata_that_fails_to_verify_is_loud_and_the_unsigned_word_keeps_the_committed_version(
        device: Device, plane: Plane, caplog: pytest.LogCaptureFixture) -> None:
    fetcher = ScriptedFetcher(device.world.repository)
    fetcher.replace["timestamp.json"] = b'{"signed": "not metadata"}'

    with caplog.at_level(logging.ERROR, logger="ringfence.agent"):
        on_2_then_reboot(device, plane, fetcher=fetcher)

    assert device.on("2")
    assert any("SIGNED REVOCATIONS DO NOT VERIFY" in r.getMessage() for r in caplog.records)


class SlowFetcher(ScriptedFetcher):
    def serve(self, url: str) -> bytes:
        time.sleep(0.2)
        return super().serve(url)


def test_the_start_up_check_as_a_whole_keeps_to_its_budget(device: Device, plane: Plane) -> None:
    """A repository too slow to answer within the budget leaves nothing of it for the unsigned
    question: the device goes on with its local decision rather than wait longer."""
    device.boot()
    device.install("1", seq=1)
    device.install("2", seq=2)
    device.halt()
    plane.revoked[CT] = {"2"}

    started = time.monotonic()
    device.boot(fetcher=SlowFetcher(device.world.repository), timeout_s=0.3)
    took = time.monotonic() - started

    assert took < 1.0
    assert plane.revocation_calls == []
    assert device.on("2")


# -- key rotation, across restarts -----------------------------------------------------------

def test_root_and_online_key_rotations_are_followed_without_re_enrolment(device: Device, plane: Plane) -> None:
    device.boot()
    device.install("1", seq=1)
    device.halt()

    rotate_online(device.world.keys, "timestamp", clock=device.world.clock)
    rotate_root(device.world.keys, clock=device.world.clock)
    device.world.publish()
    device.world.repository.reload_keys()
    device.world.repository.refresh_timestamp()

    agent = device.boot()  # same state directory, same credential, the root shipped at version 1
    device.install("2", seq=2)

    assert agent.state.device_id == "dev-1"
    assert [e for e in plane.events if e["kind"] == "failed"] == []
    assert (device.state_dir / "tuf" / "root_history" / "3.root.json").is_file()


# -- without a trusted root -------------------------------------------------------------------

def test_without_a_trusted_root_artifacts_are_installed_unverified_with_one_warning(
        device: Device, plane: Plane, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ringfence.agent"):
        agent = device.boot(trusted=False)
        plane.offer("1", b"never signed\n")
        agent.tick()
        agent.tick()

    assert device.on("1")
    warnings = [r.getMessage() for r in caplog.records if "not verified with TUF" in r.getMessage()]
    assert len(warnings) == 1
    assert agent.state.of(CT).seqs == {}


# -- the pure rules ---------------------------------------------------------------------------

@pytest.mark.parametrize(("active", "target", "expected"), [
    (None, 1, False), (None, None, False), (3, 2, True), (3, 3, False), (3, 4, False), (3, None, True),
])
def test_is_downgrade(active: int | None, target: int | None, expected: bool) -> None:
    assert is_downgrade(active, target) is expected


def test_downgrade_refusal() -> None:
    revoked = {CT: {"3": "crashes"}}
    assert downgrade_refusal(CT, "3", "2", revoked) is None
    assert downgrade_refusal(CT, "4", "2", revoked) == "downgrade from 4 to 2 refused: 4 is not revoked"
    assert downgrade_refusal("other/type", "3", None, revoked) == \
        "downgrade from 3 to no content refused: 3 is not revoked"


def test_parse_revocations() -> None:
    doc = {"revoked": {CT: {"3": {"release": "r", "phase": "rolled_back", "reason": "crashes"}, "4": {}}}}
    assert parse_revocations(doc) == {CT: {"3": "crashes", "4": "rolled back"}}
    assert parse_revocations({}) == {}
    with pytest.raises(Unverified, match="'revoked' is not an object"):
        parse_revocations({"revoked": []})
    with pytest.raises(Unverified, match="is not an object"):
        parse_revocations({"revoked": {CT: "3"}})


class Revocations:
    """A scripted source of signed revocations that counts its reads."""

    def __init__(self, answer: Revoked | Exception) -> None:
        self.answer = answer
        self.reads = 0

    def revoked(self, budget_s: float | None = None) -> Revoked:
        self.reads += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def committed_on(version: str, seqs: dict[str, int]) -> ContentState:
    ref = VersionRef(version, "0" * 64)
    return ContentState(active=ref, lkg=ref, history=[VersionRef("1", "1" * 64)], seqs=seqs)


def test_leaving_a_committed_version_is_refused_and_reported_once_after_two_answers() -> None:
    source = Revocations({})
    gate = Downgrades(source)
    c = committed_on("2", {"1": 1, "2": 2})

    verdicts: list[Verdict] = []
    for _ in range(3):
        gate.next_answer()
        verdicts += [gate.leave(CT, c, "2", "1"), gate.leave(CT, c, "2", "1")]  # revoked and rollback_from

    refusal = "downgrade from 2 to 1 refused: 2 is not revoked"
    assert [v.outcome for v in verdicts] == ["refused"] * 6
    assert {v.reason for v in verdicts} == {refusal}
    assert [v.report for v in verdicts] == [False, False, True, False, False, False]
    assert source.reads == 3  # once per answer


def test_leaving_is_free_in_trial_and_forward_and_follows_the_signed_list() -> None:
    gate = Downgrades(Revocations({CT: {"2": "crashes"}}))
    c = committed_on("2", {"1": 1, "2": 2, "3": 3})

    assert gate.leave(CT, c, "2", "1") == Verdict("go")  # listed
    assert gate.leave(CT, c, "2", "3") == Verdict("go")  # forward
    c.update = Update(target=VersionRef("4", "4" * 64), release=None, size=1, step="trial")
    c.active = c.update.target
    assert gate.leave(CT, c, "4", "2") == Verdict("go")  # in trial: back to what was committed


def test_an_unreachable_repository_is_later_and_bad_revocations_prove_nothing() -> None:
    c = committed_on("3", {"2": 2, "3": 3})

    later = Downgrades(Revocations(RepositoryUnreachable("TUF: timestamp.json: the repository answered HTTP 503")))
    assert later.update(CT, c, "2") == Verdict("later", "TUF: timestamp.json: the repository answered HTTP 503")

    bad = Downgrades(Revocations(Unverified("TUF: timestamp.json rejected: expired")))
    verdict = bad.update(CT, c, "2")
    assert (verdict.outcome, verdict.report) == ("refused", True)
    assert verdict.reason == "downgrade from 3 to 2 refused: 3 is not revoked (the signed revocations do not " \
                             "verify: TUF: timestamp.json rejected: expired)"


def test_a_move_without_a_known_active_seq_is_not_judged() -> None:
    source = Revocations({})
    verdict = Downgrades(source).update(CT, committed_on("3", {"2": 2}), "2")

    assert verdict.outcome == "go" and "no signed seq is known for the active 3" in verdict.reason
    assert source.reads == 0

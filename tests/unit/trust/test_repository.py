"""The server's repository: it accepts offline-signed metadata only when clients would, signs with
online keys only, and serves immutable versioned files plus one mutable timestamp."""

from __future__ import annotations

import hashlib
import shutil
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from ringfence.trust import Expiries, KeyDirError, NotPublished, PublishError, TrustRepository, rotate_online
from ringfence.trust._files import read_signer, sign
from ringfence.trust._tuf import Metadata, Targets
from tests.unit.trust.conftest import World, make_world

DIGEST = hashlib.sha256(b"x").hexdigest()


def test_accepting_what_init_published_makes_the_repository_ready(tmp_path: Path) -> None:
    world = make_world(tmp_path)

    assert world.repository.ready
    assert world.repository.versions() == {"root": 1, "targets": 1, "releases": 1, "snapshot": 1, "timestamp": 1}
    assert world.publish() == []  # accepting the same directory again changes nothing
    assert world.repository.metadata_bytes("1.root.json") == (world.keys / "publish" / "1.root.json").read_bytes()
    assert world.repository.metadata_bytes("root.json") == world.repository.metadata_bytes("1.root.json")
    assert world.repository.metadata_bytes("releases.json") == world.repository.metadata_bytes("1.releases.json")


@pytest.mark.parametrize("name", ["2.root.json", "../keys/online/releases.key", "0.snapshot.json", "x.json",
                                  "timestamp.json/../1.root.json", "3.timestamp.json"])
def test_names_that_are_not_published_are_not_published(world: World, name: str) -> None:
    with pytest.raises(NotPublished):
        world.repository.metadata_bytes(name)


def test_target_files_are_served_by_hash_and_current_path(world: World) -> None:
    target = world.repository.set_revocations({"agent/binary": ["7.1.0"]})
    digest = target.hashes["sha256"]

    assert world.repository.target_bytes(f"{digest}.revocations.json") == b'{"agent/binary":["7.1.0"]}'
    assert world.repository.target_bytes("revocations.json") == b'{"agent/binary":["7.1.0"]}'
    with pytest.raises(NotPublished):
        world.repository.target_bytes("../repository/timestamp.json")
    with pytest.raises(NotPublished):
        world.repository.target_bytes(f"{'0' * 64}.revocations.json")


def test_nothing_is_served_or_signed_before_root_and_targets(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    empty = TrustRepository(tmp_path / "empty", world.keys / "online", world.clock)

    assert not empty.ready
    assert empty.versions()["root"] == 0
    with pytest.raises(NotPublished):
        empty.metadata_bytes("timestamp.json")
    with pytest.raises(PublishError, match="publish root before targets"):
        empty.publish_targets((world.keys / "publish" / "targets.json").read_bytes())
    with pytest.raises(PublishError, match="not ready"):
        empty.add_target("a", DIGEST, 1)


def test_the_first_root_must_be_version_1(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    rotate_online(world.keys, "timestamp", clock=world.clock)
    empty = TrustRepository(tmp_path / "empty", world.keys / "online", world.clock)

    with pytest.raises(PublishError, match="the first root published must be version 1"):
        empty.publish_root((world.keys / "publish" / "2.root.json").read_bytes())


def test_a_root_must_be_the_next_version(world: World) -> None:
    rotate_online(world.keys, "timestamp", clock=world.clock)
    rotate_online(world.keys, "snapshot", clock=world.clock)

    with pytest.raises(PublishError, match=r"root v3: expected version 2"):
        world.repository.publish_root((world.keys / "publish" / "3.root.json").read_bytes())


def test_a_root_naming_an_online_key_the_server_lacks_is_refused(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    server_keys = tmp_path / "server-online"
    shutil.copytree(world.keys / "online", server_keys)
    repository = TrustRepository(tmp_path / "server", server_keys, world.clock)
    repository.accept_published(world.keys / "publish")
    rotate_online(world.keys, "timestamp", clock=world.clock)

    with pytest.raises(PublishError, match=r"root v2 names timestamp key.*holds 0 of the 1 needed"):
        repository.accept_published(world.keys / "publish")
    assert repository.versions()["root"] == 1

    shutil.copy(world.keys / "online" / "timestamp.key", server_keys / "timestamp.key")
    assert repository.accept_published(world.keys / "publish") == ["2.root.json"]


def test_an_expired_root_is_refused(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    rotate_online(world.keys, "snapshot", clock=world.clock, expiries=Expiries(root=timedelta(hours=1)))
    world.clock.advance(timedelta(hours=2))

    with pytest.raises(PublishError, match=r"root v2 expired at"):
        world.publish()


def test_targets_not_signed_by_the_targets_keys_are_refused(world: World) -> None:
    targets = Metadata[Targets].from_bytes((world.keys / "publish" / "targets.json").read_bytes())
    targets.signed.version = 2
    root_key = next((world.keys / "root").glob("*.key"))
    forged = sign(targets, [read_signer(root_key)])

    with pytest.raises(PublishError, match=r"targets v2 is not signed by the targets keys of root v1"):
        world.repository.publish_targets(forged)


def test_targets_must_move_forward(world: World) -> None:
    targets = Metadata[Targets].from_bytes((world.keys / "publish" / "targets.json").read_bytes())
    targets.signed.expires = targets.signed.expires - timedelta(days=1)
    signers = [read_signer(p) for p in (world.keys / "targets").glob("*.key")]

    with pytest.raises(PublishError, match=r"targets v1: targets v1 is published"):
        world.repository.publish_targets(sign(targets, signers))


def test_adding_a_target_bumps_releases_snapshot_and_timestamp(world: World) -> None:
    before = world.repository.versions()

    target = world.repository.add_target("sensor/ipc-templates/291", DIGEST, 1, {"version": "291"})

    after = world.repository.versions()
    assert {role: after[role] - before[role] for role in after} == {
        "root": 0, "targets": 0, "releases": 1, "snapshot": 1, "timestamp": 1}
    assert world.repository.signed_target("sensor/ipc-templates/291") == target
    assert target.custom == {"version": "291"}


def test_targets_are_immutable_and_adding_one_again_is_a_no_op(world: World) -> None:
    world.repository.add_target("a/1", DIGEST, 1)
    versions = world.repository.versions()

    world.repository.add_target("a/1", DIGEST, 1)
    assert world.repository.versions() == versions
    with pytest.raises(PublishError, match=r"'a/1' is already signed with sha256 2d711642.*immutable"):
        world.repository.add_target("a/1", "0" * 64, 1)


@pytest.mark.parametrize(("path", "sha256", "length", "problem"), [
    ("revocations.json", DIGEST, 1, "reserved"),
    ("/abs", DIGEST, 1, "relative path"),
    ("a/../b", DIGEST, 1, "relative path"),
    ("a//b", DIGEST, 1, "relative path"),
    ("a/1", "ABC", 1, "64 lowercase hex"),
    ("a/1", DIGEST, -1, "non-negative"),
    ("a/b/c/d/e", DIGEST, 1, "not delegated to releases"),
])
def test_malformed_targets_are_refused(world: World, path: str, sha256: str, length: int, problem: str) -> None:
    with pytest.raises(PublishError, match=problem):
        world.repository.add_target(path, sha256, length)


def test_refresh_timestamp_re_signs_only_what_needs_it(world: World) -> None:
    start = world.repository.versions()

    world.repository.refresh_timestamp()
    assert world.repository.versions() == start | {"timestamp": start["timestamp"] + 1}

    world.clock.advance(timedelta(days=4))  # past half the snapshot's 7 days
    world.repository.refresh_timestamp()
    assert world.repository.versions() == start | {"timestamp": start["timestamp"] + 2,
                                                   "snapshot": start["snapshot"] + 1}

    world.clock.advance(timedelta(days=12))  # past half the releases' 30 days
    world.repository.refresh_timestamp()
    assert world.repository.versions() == start | {"timestamp": start["timestamp"] + 3,
                                                   "snapshot": start["snapshot"] + 2,
                                                   "releases": start["releases"] + 1}


def test_signing_needs_the_online_key(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    (world.keys / "online" / "releases.key").unlink()
    world.repository.reload_keys()

    with pytest.raises(KeyDirError, match=r"releases key.*holds 0 of the 1 needed"):
        world.repository.add_target("a/1", DIGEST, 1)


def test_old_versions_are_pruned_and_roots_kept(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    repository = TrustRepository(tmp_path / "repository", world.keys / "online", world.clock, keep_versions=3)
    for i in range(6):
        repository.add_target(f"a/{i}", DIGEST, 1)

    served = sorted(p.name for p in (tmp_path / "repository").glob("*.json"))
    assert served == ["1.root.json", "1.targets.json", "5.releases.json", "5.snapshot.json", "6.releases.json",
                      "6.snapshot.json", "7.releases.json", "7.snapshot.json", "timestamp.json"]


def test_concurrent_additions_all_land(world: World) -> None:
    def add(worker: int) -> None:
        for i in range(4):
            world.repository.add_target(f"w{worker}/{i}", DIGEST, 1)

    threads = [threading.Thread(target=add, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    releases = Metadata[Targets].from_bytes(world.repository.metadata_bytes("releases.json")).signed
    assert {p for p in releases.targets if p.startswith("w")} == {f"w{w}/{i}" for w in range(3) for i in range(4)}
    assert world.repository.versions()["releases"] == 1 + 12

"""The offline key directory: layout and file modes, thresholds, and rotations that clients can
follow (every new root verifies against the previous one)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ringfence.trust import KeyDirError, describe_keys, init_keys, rotate_online, rotate_root
from ringfence.trust._files import read_signer
from ringfence.trust._tuf import Metadata, Root, Targets
from ringfence.trust.keys import RELEASES_PATHS


def _root(keys: Path, name: str = "root.json") -> Root:
    return Metadata[Root].from_bytes((keys / "publish" / name).read_bytes()).signed


def _chains(keys: Path, version: int) -> bool:
    previous, new = _root(keys, f"{version - 1}.root.json"), Metadata[Root].from_bytes(
        (keys / "publish" / f"{version}.root.json").read_bytes())
    return new.signed.get_root_verification_result(previous, new.signed_bytes, new.signatures).verified


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_lays_out_offline_and_online_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"

    change = init_keys(keys, root_keys=3, root_threshold=2, targets_keys=2, targets_threshold=1)

    assert len(list((keys / "root").glob("*.key"))) == 3
    assert len(list((keys / "targets").glob("*.key"))) == 2
    assert sorted(p.name for p in (keys / "online").glob("*.key")) == ["releases.key", "snapshot.key", "timestamp.key"]
    for key in keys.rglob("*.key"):
        assert _mode(key) == 0o600, key
    for private in ("", "root", "targets", "online"):
        assert _mode(keys / private) == 0o700
    assert change.publish == (keys / "publish/1.root.json", keys / "publish/root.json", keys / "publish/targets.json")
    root = _root(keys)
    assert (root.version, root.roles["root"].threshold, len(root.roles["root"].keyids)) == (1, 2, 3)
    assert root.consistent_snapshot
    assert root.roles["timestamp"].keyids == [read_signer(keys / "online/timestamp.key").public_key.keyid]


def test_top_level_targets_delegates_everything_to_the_online_releases_key(tmp_path: Path) -> None:
    init_keys(tmp_path / "keys")

    targets = Metadata[Targets].from_bytes((tmp_path / "keys/publish/targets.json").read_bytes())
    _root(tmp_path / "keys").verify_delegate("targets", targets.signed_bytes, targets.signatures)
    delegations = targets.signed.delegations
    assert delegations is not None and delegations.roles is not None
    releases = delegations.roles["releases"]
    assert releases.paths == RELEASES_PATHS
    assert releases.keyids == [read_signer(tmp_path / "keys/online/releases.key").public_key.keyid]
    assert targets.signed.targets == {}


def test_init_never_overwrites(tmp_path: Path) -> None:
    init_keys(tmp_path / "keys")
    with pytest.raises(KeyDirError, match="already exists and is not empty"):
        init_keys(tmp_path / "keys")
    (tmp_path / "empty").mkdir()
    init_keys(tmp_path / "empty")


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"root_keys": 2, "root_threshold": 3}, "root threshold must be between 1 and its 2 keys, not 3"),
    ({"targets_keys": 1, "targets_threshold": 0}, "targets threshold must be between 1 and its 1 keys, not 0"),
    ({"root_keys": 0, "root_threshold": 0}, "root needs at least 1 key"),
])
def test_thresholds_must_fit_the_keys(tmp_path: Path, kwargs: dict[str, int], problem: str) -> None:
    with pytest.raises(KeyDirError, match=problem):
        init_keys(tmp_path / "keys", **kwargs)
    assert not (tmp_path / "keys").exists()


def test_rotate_root_is_signed_by_old_and_new_keys_and_archives_the_old(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    init_keys(keys)
    old = set(_root(keys).roles["root"].keyids)

    change = rotate_root(keys, root_keys=5, root_threshold=3)

    new = _root(keys)
    assert (change.root_version, new.version, new.roles["root"].threshold) == (2, 2, 3)
    assert len(new.roles["root"].keyids) == 5 and not old & set(new.roles["root"].keyids)
    assert _chains(keys, 2)
    assert {read_signer(p).public_key.keyid for p in (keys / "root" / "archive").glob("*.key")} == old
    assert {read_signer(p).public_key.keyid for p in (keys / "root").glob("*.key")} == set(new.roles["root"].keyids)


def test_rotate_root_needs_a_threshold_of_the_current_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    init_keys(keys)
    for key in sorted((keys / "root").glob("*.key"))[:2]:
        key.unlink()

    with pytest.raises(KeyDirError, match=r"holds 1 of the root v1 keys, 2 needed to sign"):
        rotate_root(keys)
    with pytest.raises(KeyDirError, match=r"root threshold must be between 1 and its 3 keys, not 4"):
        rotate_root(keys, root_threshold=4)
    assert not (keys / "publish" / "2.root.json").exists()


@pytest.mark.parametrize("role", ["timestamp", "snapshot"])
def test_rotate_timestamp_or_snapshot_makes_a_new_root(tmp_path: Path, role: str) -> None:
    keys = tmp_path / "keys"
    init_keys(keys)
    old_keyid = read_signer(keys / "online" / f"{role}.key").public_key.keyid

    change = rotate_online(keys, role)

    new_keyid = read_signer(keys / "online" / f"{role}.key").public_key.keyid
    assert new_keyid != old_keyid
    assert _root(keys).roles[role].keyids == [new_keyid]
    assert change.root_version == 2 and _chains(keys, 2)
    assert (keys / "online" / "archive" / f"{role}-{old_keyid}.key").is_file()


def test_rotate_releases_makes_a_new_targets(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    init_keys(keys)

    change = rotate_online(keys, "releases")

    targets = Metadata[Targets].from_bytes((keys / "publish/targets.json").read_bytes())
    _root(keys).verify_delegate("targets", targets.signed_bytes, targets.signatures)
    assert (change.root_version, change.targets_version) == (1, 2)
    assert targets.signed.delegations is not None and targets.signed.delegations.roles is not None
    assert targets.signed.delegations.roles["releases"].keyids == [
        read_signer(keys / "online/releases.key").public_key.keyid]


def test_rotate_online_refuses_other_roles_and_other_directories(tmp_path: Path) -> None:
    with pytest.raises(KeyDirError, match="role must be one of timestamp, snapshot, releases"):
        rotate_online(tmp_path, "root")
    with pytest.raises(KeyDirError, match=r"publish/root\.json not found: .* is not a key directory"):
        rotate_online(tmp_path, "timestamp")


def test_describe_reports_versions_and_problems(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    init_keys(keys)
    assert describe_keys(keys)["problems"] == []

    (keys / "online" / "snapshot.key").unlink()
    next((keys / "targets").glob("*.key")).unlink()
    next((keys / "targets").glob("*.key")).unlink()
    report = describe_keys(keys)

    assert report["root"]["version"] == 1 and report["root"]["keys_present"] == 3
    assert report["targets"]["keys_present"] == 0
    assert report["snapshot"]["key_matches"] is False
    assert any("holds 0 of the targets keys" in p for p in report["problems"])
    assert any("online snapshot key is missing" in p for p in report["problems"])

"""A real TUF client against a real repository, and every attack the design names: tampered
artifacts and metadata, expiry (freeze), rollback, keys the delegator does not name, and a server
that does not answer."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ringfence.trust import BadMetadata, BadTarget, TrustClient, Unreachable
from ringfence.trust._files import read_signer, sign
from ringfence.trust._tuf import CryptoSigner, Metadata, MetaFile, Timestamp
from tests.unit.trust.conftest import BASE, World

ARTIFACT = b"template v1: 21 fields\n" * 40


def _flip(data: bytes, after: bytes) -> bytes:
    """``data`` with the digit right after ``after`` changed: still valid JSON and TUF metadata,
    no longer what was signed."""
    at = data.index(after) + len(after)
    return data[:at] + (b"1" if data[at:at + 1] != b"1" else b"2") + data[at + 1:]


def test_a_signed_artifact_verifies_with_what_the_server_attached(world: World, tmp_path: Path) -> None:
    world.add("sensor/ipc-templates/1.0.0", ARTIFACT, {"content_type": "sensor/ipc-templates", "version": "1.0.0"})
    client = world.client()

    info = client.verify("sensor/ipc-templates/1.0.0", ARTIFACT)

    assert info.length == len(ARTIFACT)
    assert info.hashes == {"sha256": hashlib.sha256(ARTIFACT).hexdigest()}
    assert info.custom == {"content_type": "sensor/ipc-templates", "version": "1.0.0"}
    staged = tmp_path / "staged.bin"
    staged.write_bytes(ARTIFACT)
    assert client.verify("sensor/ipc-templates/1.0.0", staged).path == "sensor/ipc-templates/1.0.0"


def test_each_call_costs_one_timestamp_download_when_nothing_changed(world: World) -> None:
    world.add("a/1", ARTIFACT)
    client = world.client()
    client.verify("a/1", ARTIFACT)
    world.fetcher.fetched.clear()

    client.verify("a/1", ARTIFACT)

    assert world.fetcher.fetched == [f"{BASE}/metadata/2.root.json", f"{BASE}/metadata/timestamp.json"]


def test_a_new_target_is_seen_without_a_new_client(world: World) -> None:
    client = world.client()
    client.refresh()
    world.add("a/2", b"two")

    assert client.verify("a/2", b"two").length == 3


def test_tampered_artifact_bytes_are_a_bad_target_naming_the_path(world: World) -> None:
    world.add("sensor/ipc-templates/1.0.0", ARTIFACT)
    client = world.client()
    same_length = ARTIFACT[:-1] + b"!"

    with pytest.raises(BadTarget, match=r"sensor/ipc-templates/1\.0\.0.*hash"):
        client.verify("sensor/ipc-templates/1.0.0", same_length)
    with pytest.raises(BadTarget, match=r"sensor/ipc-templates/1\.0\.0.*length"):
        client.verify("sensor/ipc-templates/1.0.0", ARTIFACT + b"\x00")


def test_an_unsigned_target_is_a_bad_target(world: World) -> None:
    with pytest.raises(BadTarget, match=r"'nobody/signed/this' is not signed: targets v1 / releases v\d+"):
        world.client().verify("nobody/signed/this", b"x")


def test_tampered_releases_metadata_is_bad_metadata_naming_role_and_version(world: World) -> None:
    world.add("a/1", ARTIFACT)
    releases = world.served("releases")
    world.fetcher.replace[releases] = lambda real: _flip(real, b'"sha256":"')

    with pytest.raises(BadMetadata) as caught:
        world.client().verify("a/1", ARTIFACT)

    version = world.repository.versions()["releases"]
    assert f"{releases} (releases v{version}" in caught.value.message
    assert caught.value.details["role"] == "releases"


def test_tampered_top_level_targets_is_bad_metadata(world: World) -> None:
    world.fetcher.replace["1.targets.json"] = lambda real: _flip(real, b'"expires":"2')

    with pytest.raises(BadMetadata, match=r"1\.targets\.json"):
        world.client().refresh()


def test_tampered_timestamp_fails_its_signature(world: World) -> None:
    world.fetcher.replace["timestamp.json"] = lambda real: _flip(real, b'"expires":"2')

    with pytest.raises(BadMetadata, match=r"timestamp\.json \(timestamp v1,.*signed by 0/1 keys"):
        world.client().refresh()


def test_expired_timestamp_is_refused_until_the_server_refreshes_it(stale_world: World) -> None:
    stale_world.add("a/1", ARTIFACT)
    client = stale_world.client()

    with pytest.raises(BadMetadata, match=r"timestamp\.json \(timestamp v\d+, expires .*\) rejected: .*expired"):
        client.verify("a/1", ARTIFACT)

    stale_world.clock.set(datetime.now(UTC))
    stale_world.repository.refresh_timestamp()
    assert client.verify("a/1", ARTIFACT).length == len(ARTIFACT)


def test_a_rolled_back_timestamp_is_refused(world: World) -> None:
    old = world.repository.metadata_bytes("timestamp.json")
    world.add("a/1", ARTIFACT)
    client = world.client()
    client.refresh()
    world.fetcher.replace["timestamp.json"] = old

    with pytest.raises(BadMetadata, match=r"timestamp\.json \(timestamp v1,.*version 1 must be >= 2"):
        client.refresh()


def test_a_timestamp_pointing_at_an_older_snapshot_is_refused(world: World) -> None:
    """Even signed with the real timestamp key (a stolen server), a timestamp cannot take a
    client back to a snapshot older than one it has seen."""
    old_version = world.repository.versions()["snapshot"]
    old_snapshot = world.repository.metadata_bytes(f"{old_version}.snapshot.json")
    world.add("a/1", ARTIFACT)
    client = world.client()
    client.refresh()
    forged = Timestamp(version=world.repository.versions()["timestamp"] + 1,
                       expires=datetime.now(UTC) + timedelta(hours=1),
                       snapshot_meta=MetaFile.from_data(old_version, old_snapshot, ["sha256"]))
    world.fetcher.replace["timestamp.json"] = sign(Metadata(forged), [read_signer(world.keys / "online/timestamp.key")])

    with pytest.raises(BadMetadata, match=f"snapshot version must be >= {old_version + 1}"):
        client.refresh()


def test_a_timestamp_signed_by_a_key_root_does_not_name_is_refused(world: World) -> None:
    forged = Timestamp(version=99, expires=datetime.now(UTC) + timedelta(hours=1),
                       snapshot_meta=MetaFile(world.repository.versions()["snapshot"]))
    world.fetcher.replace["timestamp.json"] = sign(Metadata(forged), [CryptoSigner.generate_ed25519()])

    with pytest.raises(BadMetadata, match=r"timestamp v99.*timestamp was signed by 0/1 keys"):
        world.client().refresh()


def test_releases_signed_by_a_key_targets_does_not_delegate_to_is_refused(world: World) -> None:
    """A thief with the snapshot and timestamp keys but not the releases key cannot add an
    artifact: the delegation names the releases key."""
    evil = b"not what the release process signed"
    world.serve_forged_releases({"a/evil": evil}, read_signer(world.keys / "online" / "snapshot.key"))
    forged_version = world.repository.versions()["releases"] + 1

    with pytest.raises(BadMetadata, match=rf"{forged_version}\.releases\.json .*releases was signed by 0/1 keys"):
        world.client().verify("a/evil", evil)


def test_a_server_that_does_not_answer_is_unreachable(world: World) -> None:
    client = world.client()
    world.fetcher.status = 503

    with pytest.raises(Unreachable, match="HTTP 503") as caught:
        client.refresh()
    assert caught.value.details["status"] == 503


def test_revocations_are_signed_and_start_empty(world: World) -> None:
    client = world.client()
    assert client.revocations() == {}

    world.repository.set_revocations({"sensor/ipc-templates": ["291"]})

    assert client.revocations() == {"sensor/ipc-templates": ["291"]}


def test_tampered_revocations_are_a_bad_target(world: World) -> None:
    target = world.repository.set_revocations({"sensor/ipc-templates": ["291"]})
    world.fetcher.replace[f"{target.hashes['sha256']}.revocations.json"] = b'{"sensor/ipc-templates":["292"]}'

    with pytest.raises(BadTarget, match=r"revocations\.json' differs"):
        world.client().revocations()


def test_the_shipped_root_is_cached_and_a_second_client_reuses_the_cache(world: World) -> None:
    world.add("a/1", ARTIFACT)
    world.client("agent").verify("a/1", ARTIFACT)

    again = TrustClient(world.tmp / "clients" / "agent", world.shipped_root.read_bytes(), BASE, world.fetcher)

    assert (world.tmp / "clients" / "agent" / "root.json").is_file()
    assert again.trusted_versions()["releases"] == world.repository.versions()["releases"]
    assert again.verify("a/1", ARTIFACT).length == len(ARTIFACT)


def test_a_trusted_root_that_does_not_verify_is_refused(world: World, tmp_path: Path) -> None:
    tampered = _flip(world.shipped_root.read_bytes(), b'"expires":"2')
    with pytest.raises(BadMetadata, match="the trusted root rejected"):
        TrustClient(tmp_path / "fresh", tampered, BASE, world.fetcher)


# -- any target, by the specification's URL -------------------------------------------------------

def test_any_signed_target_is_fetched_by_name_from_the_specifications_url(world: World) -> None:
    data = b"channel file 291"
    releases_key = read_signer(world.keys / "online" / "releases.key")
    world.serve_forged_releases({"sensor~ipc-templates/291.1": data}, releases_key)
    digest = hashlib.sha256(data).hexdigest()
    world.fetcher.replace[f"{digest}.291.1"] = data

    info, got = world.client().fetch("sensor~ipc-templates/291.1")

    assert got == data and info.length == len(data)
    # consistent snapshots: the hash goes before the basename, not before the whole path
    assert world.fetcher.fetched[-1] == f"{BASE}/targets/sensor~ipc-templates/{digest}.291.1"


def test_a_target_listed_with_another_hash_algorithm_is_fetched_and_verified(world: World) -> None:
    data, tampered = b"signed with sha512 only", b"signed with sha512 onlY"
    world.serve_forged_releases({"a/file": data}, read_signer(world.keys / "online" / "releases.key"),
                                algorithms=("sha512",))
    digest = hashlib.sha512(data).hexdigest()
    world.fetcher.replace[f"{digest}.file"] = data
    client = world.client()

    info, got = client.fetch("a/file")
    assert got == data and set(info.hashes) == {"sha512"}
    assert client.verify("a/file", data).length == len(data)

    world.fetcher.replace[f"{digest}.file"] = tampered
    with pytest.raises(BadTarget, match="'a/file' differs from what"):
        client.fetch("a/file")
    with pytest.raises(BadTarget, match="'a/file' differs from what"):
        client.verify("a/file", tampered)


# -- durable cache ---------------------------------------------------------------------------------

def test_the_verified_metadata_is_fsynced_before_it_replaces_the_old_and_the_directory_after(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a power cut can leave of the cache is the old file or the new one: the bytes are on
    disk before the rename, and the rename is on disk (directory fsync) before the next file."""
    client = world.client()
    steps: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        real_fsync(fd)
        target = os.readlink(f"/proc/self/fd/{fd}")
        steps.append(("fsync", target))

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        real_replace(src, dst)
        steps.append(("replace", os.fspath(dst)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    client.revocations()  # the whole chain, the delegated releases included

    cache = str(world.tmp / "clients" / "agent")
    written = [dst for kind, dst in steps if kind == "replace"]
    assert {Path(w).name for w in written} >= {"timestamp.json", "snapshot.json", "targets.json", "releases.json"}
    for dst in written:
        i = steps.index(("replace", dst))
        synced = [t for kind, t in steps[:i] if kind == "fsync"]
        assert synced and Path(synced[-1]).parent == Path(dst).parent, f"{dst}: the bytes were not fsynced first"
        assert steps[i + 1] == ("fsync", str(Path(dst).parent)), f"{dst}: the directory was not fsynced after"
    assert all(d.startswith(cache) for d in written)


def test_a_cache_that_cannot_be_written_is_unreachable_naming_the_cache(world: World) -> None:
    """A full disk or a broken cache must not stop the agent's start-up: it is a repository that
    cannot be asked now, not an exception out of the revocation check."""
    client = world.client()
    cache = world.tmp / "clients" / "agent"
    (cache / "timestamp.json").unlink(missing_ok=True)
    (cache / "timestamp.json").mkdir()  # the new timestamp cannot be renamed over it, even by root

    with pytest.raises(Unreachable, match=r"TUF cache in .*agent cannot be written"):
        client.revocations()

"""Key rotations reach agents that are already enrolled: they follow the root chain (and the new
delegation) through their normal update, never re-bootstrapped, and an agent still on the root it
shipped with walks every version to the newest."""

from __future__ import annotations

import pytest

from ringfence.trust import BadMetadata, PublishError, rotate_online, rotate_root
from ringfence.trust._files import read_signer, sign
from ringfence.trust._tuf import CryptoSigner, Metadata, Root
from tests.unit.trust.conftest import World

V1 = b"content v1"
V2 = b"content v2"


def _enrolled(world: World) -> None:
    world.add("c/1", V1)
    world.client().verify("c/1", V1)


def test_an_enrolled_client_follows_a_root_rotation(world: World) -> None:
    _enrolled(world)
    client = world.client()

    rotate_root(world.keys, root_keys=4, root_threshold=3, clock=world.clock)
    assert world.publish() == ["2.root.json"]
    world.add("c/2", V2)

    assert client.verify("c/2", V2).length == len(V2)
    assert client.trusted_versions()["root"] == 2


def test_a_client_on_its_shipped_root_walks_several_rotations(world: World) -> None:
    _enrolled(world)
    for _ in range(2):
        rotate_root(world.keys, clock=world.clock)
    rotate_online(world.keys, "timestamp", clock=world.clock)
    rotate_online(world.keys, "snapshot", clock=world.clock)
    assert world.publish() == ["2.root.json", "3.root.json", "4.root.json", "5.root.json"]

    fresh = world.client("installed-from-an-old-image")

    assert fresh.verify("c/1", V1).length == len(V1)
    assert fresh.trusted_versions()["root"] == 5


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "releases"])
def test_an_enrolled_client_follows_an_online_key_rotation(world: World, role: str) -> None:
    _enrolled(world)
    client = world.client()
    before = client.trusted_versions()

    change = rotate_online(world.keys, role, clock=world.clock)
    world.publish()
    world.add("c/2", V2)

    assert client.verify("c/2", V2).length == len(V2)
    after = client.trusted_versions()
    changed = "targets" if role == "releases" else "root"
    assert after[changed] == before[changed] + 1
    assert change.online_keys == (world.keys / "online" / f"{role}.key",)


def test_after_a_releases_rotation_the_old_key_signs_nothing(world: World) -> None:
    """The old releases key, kept by a thief, no longer verifies: what it signs is refused."""
    _enrolled(world)
    stolen = read_signer(world.keys / "online" / "releases.key")
    rotate_online(world.keys, "releases", clock=world.clock)
    world.publish()
    client = world.client()
    client.refresh()

    world.serve_forged_releases({"c/evil": b"evil"}, stolen)

    with pytest.raises(BadMetadata, match=r"releases\.json \(releases v\d+.*releases was signed by 0/1 keys"):
        client.verify("c/evil", b"evil")


def test_a_root_not_signed_by_the_previous_keys_is_refused_by_server_and_client(world: World) -> None:
    _enrolled(world)
    client = world.client()
    current = Metadata[Root].from_bytes(world.repository.metadata_bytes("1.root.json"))
    usurper = CryptoSigner.generate_ed25519()
    root = current.signed
    for keyid in list(root.roles["root"].keyids):
        root.revoke_key(keyid, "root")
    root.add_key(usurper.public_key, "root")
    root.roles["root"].threshold = 1
    root.version = 2
    forged = sign(Metadata(root), [usurper])

    with pytest.raises(PublishError, match=r"root v2 is signed by 0/2 keys of root v1 and 1/1 of its own"):
        world.repository.publish_root(forged)

    world.fetcher.replace["2.root.json"] = forged
    with pytest.raises(BadMetadata, match=r"2\.root\.json \(root v2.*root was signed by 0/2 keys"):
        client.refresh()

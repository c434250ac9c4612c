"""A key directory, a repository on disk that took what the key tooling published, and clients
that reach it through the in-memory fetcher (python-tuf's RepositorySimulator idea: a real client
against a real repository, no sockets, every fetch recorded).

The repository's clock starts at the real time because python-tuf's client judges expiry by the
host's clock; a test that needs stale metadata starts the repository's clock in the past.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tuf.api.exceptions import DownloadHTTPError

from ringfence.core.clock import ManualClock
from ringfence.trust import LoopbackFetcher, TrustClient, TrustRepository, init_keys
from ringfence.trust._files import read_signer, sign
from ringfence.trust._tuf import CryptoSigner, Metadata, MetaFile, Snapshot, TargetFile, Targets, Timestamp

BASE = "http://repository.invalid/tuf"


class ScriptedFetcher(LoopbackFetcher):
    """Serves the repository, except what a test scripted: ``replace[name]`` is the bytes to serve
    for file ``name`` instead, or a function of the real bytes; ``status`` answers every request
    with that HTTP status (a server that is down)."""

    def __init__(self, repository: TrustRepository) -> None:
        super().__init__(repository, BASE)
        self.replace: dict[str, bytes | Callable[[bytes], bytes]] = {}
        self.status: int | None = None

    def serve(self, url: str) -> bytes:
        if self.status is not None:
            raise DownloadHTTPError(f"GET {url}: HTTP {self.status}", self.status)
        name = url.rsplit("/", 1)[-1]
        scripted = self.replace.get(name)
        if isinstance(scripted, bytes):
            return scripted
        real = super().serve(url)
        return scripted(real) if scripted is not None else real


@dataclass
class World:
    tmp: Path
    keys: Path
    clock: ManualClock
    repository: TrustRepository
    fetcher: ScriptedFetcher
    clients: list[TrustClient] = field(default_factory=list)

    @property
    def shipped_root(self) -> Path:
        """The root agents ship with: version 1, whatever rotations came later."""
        return self.keys / "publish" / "1.root.json"

    def client(self, name: str = "agent") -> TrustClient:
        return TrustClient(self.tmp / "clients" / name, self.shipped_root, BASE, self.fetcher)

    def publish(self) -> list[str]:
        return self.repository.accept_published(self.keys / "publish")

    def add(self, path: str, data: bytes, custom: dict[str, Any] | None = None) -> TargetFile:
        return self.repository.add_target(path, hashlib.sha256(data).hexdigest(), len(data), custom)

    def served(self, role: str) -> str:
        """The served file name of ``role``'s current version (``4.releases.json``)."""
        return "timestamp.json" if role == "timestamp" else f"{self.repository.versions()[role]}.{role}.json"

    def serve_forged_releases(self, add: dict[str, bytes], signer: CryptoSigner,
                              algorithms: tuple[str, ...] = ("sha256",)) -> None:
        """Serve a next releases version that adds ``add`` (path -> content, hashed with
        ``algorithms``) signed by ``signer``, with snapshot and timestamp re-signed by the genuine
        online keys: what a thief holding the server's snapshot and timestamp keys, but not the
        releases key, could serve (or, signed with the releases key, what a repository listing
        other hash algorithms serves)."""
        versions = self.repository.versions()
        releases = Metadata[Targets].from_bytes(self.repository.metadata_bytes(self.served("releases"))).signed
        releases.version += 1
        for path, content in add.items():
            releases.targets[path] = TargetFile.from_data(path, content, list(algorithms))
        releases_bytes = sign(Metadata(releases), [signer])
        targets_bytes = self.repository.metadata_bytes(self.served("targets"))
        soon = datetime.now(UTC) + timedelta(hours=1)
        snapshot = Snapshot(version=versions["snapshot"] + 1, expires=soon, meta={
            "targets.json": MetaFile.from_data(versions["targets"], targets_bytes, ["sha256"]),
            "releases.json": MetaFile.from_data(releases.version, releases_bytes, ["sha256"]),
        })
        snapshot_bytes = sign(Metadata(snapshot), [read_signer(self.keys / "online" / "snapshot.key")])
        timestamp = Timestamp(version=versions["timestamp"] + 1, expires=soon,
                              snapshot_meta=MetaFile.from_data(snapshot.version, snapshot_bytes, ["sha256"]))
        self.fetcher.replace |= {
            "timestamp.json": sign(Metadata(timestamp), [read_signer(self.keys / "online" / "timestamp.key")]),
            f"{snapshot.version}.snapshot.json": snapshot_bytes,
            f"{releases.version}.releases.json": releases_bytes,
        }


def make_world(tmp: Path, start: datetime | None = None) -> World:
    keys = tmp / "keys"
    clock = ManualClock(start or datetime.now(UTC))
    init_keys(keys, clock=clock)
    repository = TrustRepository(tmp / "repository", keys / "online", clock)
    world = World(tmp, keys, clock, repository, ScriptedFetcher(repository))
    world.publish()
    return world


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


@pytest.fixture
def stale_world(tmp_path: Path) -> World:
    """A repository whose online metadata was signed two days ago and never refreshed."""
    return make_world(tmp_path, datetime.now(UTC) - timedelta(days=2))

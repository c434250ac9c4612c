"""The files a :class:`~ringfence.trust.repository.TrustRepository` publishes: their names, how
the current state is read back, how they are written, pruned and served. No signing here.

The timestamp names the snapshot, which names the versions of targets and releases; so what is
current is whatever ``timestamp.json`` leads to, and writing it last makes every update atomic.
"""

from __future__ import annotations

import fcntl
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ringfence.trust._files import RELEASES, parse, write_atomic
from ringfence.trust._tuf import Metadata, Root, Snapshot, TargetFile, Targets, Timestamp
from ringfence.trust.errors import NotPublished, TrustError

TIMESTAMP = "timestamp.json"
VERSIONED = re.compile(r"^(?:(?P<version>[1-9][0-9]{0,9})\.)?(?P<role>root|targets|releases|snapshot)\.json$")
_TARGET_FILE = re.compile(r"^(?:(?P<digest>[0-9a-f]{64})\.)?(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)$")


@dataclass
class State:
    """What is published now. Only root exists until targets is accepted; then all of them do."""

    root: Metadata[Root]
    root_bytes: bytes
    timestamp: Metadata[Timestamp] | None = None
    snapshot: Metadata[Snapshot] | None = None
    snapshot_bytes: bytes = b""
    targets: Metadata[Targets] | None = None
    targets_bytes: bytes = b""
    releases: Metadata[Targets] | None = None
    releases_bytes: bytes = b""

    def versions(self) -> dict[str, int]:
        return {
            "root": self.root.signed.version,
            "targets": self.targets.signed.version if self.targets else 0,
            RELEASES: self.releases.signed.version if self.releases else 0,
            "snapshot": self.snapshot.signed.version if self.snapshot else 0,
            "timestamp": self.timestamp.signed.version if self.timestamp else 0,
        }


class MetadataStore:
    """``directory`` laid out as the repository module describes; ``keep`` versions of snapshot,
    targets and releases, and of each repository-served target, stay on disk."""

    def __init__(self, directory: Path, keep: int) -> None:
        self.directory = Path(directory)
        self._targets = self.directory / "targets"
        self._keep = keep
        self._lock = threading.Lock()
        self._targets.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """One writer at a time: threads of this process, and processes sharing the directory."""
        with self._lock, open(self.directory / ".lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def state(self) -> State | None:
        """The published state, or None before the first root."""
        roots = [int(m["version"]) for p in self.directory.glob("*.root.json")
                 if (m := VERSIONED.match(p.name)) and m["version"]]
        if not roots:
            return None
        root_name = f"{max(roots)}.root.json"
        root_bytes = self.read(root_name)
        state = State(parse(root_bytes, Root, root_name, TrustError), root_bytes)
        if not (self.directory / TIMESTAMP).is_file():
            return state
        state.timestamp = parse(self.read(TIMESTAMP), Timestamp, TIMESTAMP, TrustError)
        snapshot_name = f"{state.timestamp.signed.snapshot_meta.version}.snapshot.json"
        state.snapshot_bytes = self.read(snapshot_name)
        state.snapshot = parse(state.snapshot_bytes, Snapshot, snapshot_name, TrustError)
        meta = state.snapshot.signed.meta
        targets_name = f"{meta['targets.json'].version}.targets.json"
        state.targets_bytes = self.read(targets_name)
        state.targets = parse(state.targets_bytes, Targets, targets_name, TrustError)
        releases_name = f"{meta[f'{RELEASES}.json'].version}.{RELEASES}.json"
        state.releases_bytes = self.read(releases_name)
        state.releases = parse(state.releases_bytes, Targets, releases_name, TrustError)
        return state

    def read(self, name: str) -> bytes:
        try:
            return (self.directory / name).read_bytes()
        except FileNotFoundError:
            raise NotPublished(f"{name} is not published", name=name) from None

    def write(self, name: str, data: bytes) -> None:
        write_atomic(self.directory / name, data)

    def metadata_bytes(self, name: str) -> bytes:
        if name == TIMESTAMP:
            return self.read(TIMESTAMP)
        match = VERSIONED.match(name)
        if match is None:
            raise NotPublished(f"no metadata named {name!r}", name=name)
        if match["version"]:
            return self.read(name)
        state = self.state()
        version = state.versions()[match["role"]] if state is not None else 0
        if version == 0:
            raise NotPublished(f"{name} is not published yet", name=name)
        return self.read(f"{version}.{name}")

    def store_target(self, path: str, data: bytes) -> TargetFile:
        """Keep ``data`` to serve as target ``path`` and return its signed-to-be entry."""
        target = TargetFile.from_data(path, data, ["sha256"])
        write_atomic(self._targets / f"{target.hashes['sha256']}.{path}", data)
        return target

    def target_bytes(self, path: str) -> bytes:
        match = _TARGET_FILE.match(path)
        if match is None:
            raise NotPublished(f"no target named {path!r}", path=path)
        digest = match["digest"]
        if digest is None:
            state = self.state()
            signed = state.releases.signed.targets.get(path) if state and state.releases else None
            if signed is None or "sha256" not in signed.hashes:
                raise NotPublished(f"target {path!r} is not served by the repository", path=path)
            digest = signed.hashes["sha256"]
        try:
            return (self._targets / f"{digest}.{match['name']}").read_bytes()
        except FileNotFoundError:
            raise NotPublished(f"target {path!r} is not served by the repository", path=path) from None

    def prune(self, role: str, newest: int) -> None:
        """Delete versions of ``role`` that no recent timestamp leads to."""
        for path in self.directory.glob(f"*.{role}.json"):
            match = VERSIONED.match(path.name)
            if match and match["version"] and int(match["version"]) <= newest - self._keep:
                path.unlink(missing_ok=True)

    def prune_target_files(self, name: str) -> None:
        """Keep the newest ``keep`` files served as target ``name``."""
        files = sorted(self._targets.glob(f"*.{name}"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for path in files[self._keep:]:
            path.unlink(missing_ok=True)

"""The server's side of TUF: the metadata agents verify artifacts with, signed only with the online
keys (timestamp, snapshot, and the delegated ``releases`` role).

Root and top-level targets arrive signed offline (:mod:`ringfence.trust.keys`). The repository
accepts a new version only if a client that trusts the current one would accept it too, so a
mistake on the server can never publish metadata that strands enrolled agents.

Consistent snapshots are on. Every version of root, targets, releases and snapshot is served
under its versioned name (``3.snapshot.json``) and never changes; ``timestamp.json`` is the one
mutable file and is written last, so it is the commit point. A client reading while an artifact
is added sees the old set or the new one, never a mix, and a cache may keep everything but
``timestamp.json`` forever. Files in ``metadata_dir``::

    N.root.json        every root version, kept forever (clients walk the chain)
    N.targets.json     top-level targets, the exact offline-signed bytes accepted
    N.releases.json    the online releases role: artifacts and revocations.json
    N.snapshot.json    versions and hashes of targets and releases
    timestamp.json     version and hash of the newest snapshot
    targets/H.NAME     target files the repository serves itself (revocations.json), H = sha256

What to serve (a client built by :class:`~ringfence.trust.client.TrustClient` asks for exactly
these URLs)::

    GET {base}/metadata/{name}   -> metadata_bytes(name)   2.root.json, timestamp.json, 4.releases.json
    GET {base}/targets/{path}    -> target_bytes(path)     <sha256>.revocations.json

Writes run under a thread lock and an ``flock`` on ``metadata_dir/.lock`` (processes on one host
may share the directory); each file is written atomically. Versions of snapshot, targets and
releases older than the newest ``keep_versions`` are pruned: enough for any client that read a
recent timestamp to finish its update.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuf.api.exceptions import UnsignedMetadataError

from ringfence.core.clock import Clock
from ringfence.trust._files import RELEASES, REVOCATIONS, S, now_utc, parse, short, sign, signers_in
from ringfence.trust._store import TIMESTAMP, VERSIONED, MetadataStore, State
from ringfence.trust._tuf import (
    CryptoSigner,
    DelegatedRole,
    Metadata,
    MetaFile,
    Role,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from ringfence.trust.errors import KeyDirError, PublishError, TrustError
from ringfence.trust.expiries import Expiries

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class _Ready:
    """A state that can be signed onward: targets and releases exist (snapshot and timestamp do
    too, except while the first ones are written)."""

    root: Metadata[Root]
    targets: Metadata[Targets]
    targets_bytes: bytes
    releases: Metadata[Targets]
    releases_bytes: bytes
    snapshot: Metadata[Snapshot] | None
    snapshot_bytes: bytes
    timestamp_version: int


class TrustRepository:
    """The published TUF repository, signed with online keys only.

    Args:
        metadata_dir: where published metadata and repository-served targets live.
        online_keys_dir: the online private keys (``DIR/online/`` of the key directory); keys are
            matched to roles by key id, so file names do not matter.
        clock: the one clock; every expiry is computed from it.
        expiries: lifetimes of the online roles' metadata.
        keep_versions: how many versions of snapshot, targets and releases stay served.
    """

    def __init__(self, metadata_dir: Path, online_keys_dir: Path, clock: Clock, expiries: Expiries | None = None,
                 *, keep_versions: int = 16) -> None:
        if keep_versions < 2:
            raise ValueError(f"keep_versions must be at least 2, not {keep_versions}")
        self._store = MetadataStore(Path(metadata_dir), keep_versions)
        self._keys_dir = Path(online_keys_dir)
        self._clock = clock
        self._expiries = expiries or Expiries()
        self._signers = self._load_signers()

    # -- state ----------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True once root and top-level targets are published, so clients can update."""
        return (self._store.directory / TIMESTAMP).is_file()

    def versions(self) -> dict[str, int]:
        """The published version of each role, 0 for none yet."""
        state = self._store.state()
        if state is None:
            return dict.fromkeys(("root", "targets", RELEASES, "snapshot", "timestamp"), 0)
        return state.versions()

    def signed_target(self, path: str) -> TargetFile | None:
        """What ``releases`` signs for ``path``, or None."""
        state = self._store.state()
        if state is None or state.releases is None:
            return None
        return state.releases.signed.targets.get(path)

    def reload_keys(self) -> None:
        """Read the online keys again (after an operator copied in a rotated one)."""
        with self._store.exclusive():
            self._signers = self._load_signers()

    # -- offline-signed metadata ----------------------------------------------------------------------
    def publish_root(self, data: bytes) -> int:
        """Accept a root version signed offline and return its version.

        The first root must be version 1 (it becomes the repository's anchor, like the one shipped
        with agents); each later one must be the next version, signed by a threshold of the current
        root's keys and of its own. Snapshot and timestamp are re-signed with the keys it names.
        Publishing the current root again is a no-op.

        Raises:
            PublishError: naming the version and what is wrong: not the next version, too few
                signatures, expired, consistent snapshots off, an online key the server does not
                hold, or the published targets would no longer verify.
        """
        return self.publish_roots([data])

    def publish_roots(self, chain: list[bytes]) -> int:
        """Accept consecutive root versions at once, all or none, and return the newest version.
        Only the newest must be unexpired and name online keys the server holds: clients step
        through the others on their way to it, as the TUF client workflow allows."""
        with self._store.exclusive():
            self._signers = self._load_signers()
            state = self._store.state()
            previous = state.root if state is not None else None
            previous_bytes = state.root_bytes if state is not None else b""
            accepted: list[tuple[Metadata[Root], bytes]] = []
            for data in chain:
                new = parse(data, Root, "root.json", PublishError)
                if previous is not None and new.signed.version == previous.signed.version and data == previous_bytes:
                    continue
                self._check_next_root(previous, new)
                accepted.append((new, data))
                previous, previous_bytes = new, data
            if previous is None:
                raise PublishError("no root given", role="root")
            if not accepted:
                return previous.signed.version
            newest = previous.signed
            self._refuse_expired(newest, "root")
            for role in ("timestamp", "snapshot"):
                self._require_keys(newest.roles[role], role, f"root v{newest.version}", PublishError)
            if state is not None and state.targets is not None:
                try:
                    newest.verify_delegate("targets", state.targets.signed_bytes, state.targets.signatures)
                except UnsignedMetadataError as exc:
                    raise PublishError(f"root v{newest.version} would reject the published targets "
                                       f"v{state.targets.signed.version} ({exc})", role="root",
                                       version=newest.version) from None
            for md, data in accepted:
                self._store.write(f"{md.signed.version}.root.json", data)
            if state is not None and state.timestamp is not None:
                state.root, state.root_bytes = previous, previous_bytes
                self._publish(self._ready(state))
            return newest.version

    def _check_next_root(self, previous: Metadata[Root] | None, new: Metadata[Root]) -> None:
        version = new.signed.version
        if previous is None and version != 1:
            raise PublishError(f"root v{version}: the first root published must be version 1 (publish the chain "
                               "from 1.root.json)", role="root", version=version)
        if previous is not None and version != previous.signed.version + 1:
            raise PublishError(f"root v{version}: expected version {previous.signed.version + 1} (root "
                               f"v{previous.signed.version} is the newest)", role="root", version=version)
        before = previous.signed if previous is not None else None
        result = new.signed.get_root_verification_result(before, new.signed_bytes, new.signatures)
        if not result.verified:
            old = f"{len(result.first.signed)}/{result.first.threshold} keys of root v{version - 1} and " \
                if before is not None else ""
            raise PublishError(f"root v{version} is signed by {old}{len(result.second.signed)}/"
                               f"{result.second.threshold} of its own keys; clients would reject it",
                               role="root", version=version)
        if not new.signed.consistent_snapshot:
            raise PublishError(f"root v{version} turns consistent snapshots off; Ringfence needs them on",
                               role="root", version=version)

    def publish_targets(self, data: bytes) -> int:
        """Accept a top-level targets version signed offline and return its version. It must be
        newer than the published one, signed by the targets keys root names, and delegate to
        ``releases`` with a key the server holds. ``releases`` is re-signed (with that key), then
        snapshot and timestamp. Publishing the current targets again is a no-op.

        Raises:
            PublishError: naming the version and what is wrong.
        """
        with self._store.exclusive():
            self._signers = self._load_signers()
            state = self._store.state()
            if state is None:
                raise PublishError("no root is published yet: publish root before targets", role="targets")
            new = parse(data, Targets, "targets.json", PublishError)
            version = new.signed.version
            if state.targets is not None:
                current = state.targets.signed.version
                if version == current and data == state.targets_bytes:
                    return version
                if version <= current:
                    raise PublishError(f"targets v{version}: targets v{current} is published; a new targets needs "
                                       "a higher version", role="targets", version=version)
            try:
                state.root.signed.verify_delegate("targets", new.signed_bytes, new.signatures)
            except UnsignedMetadataError as exc:
                raise PublishError(f"targets v{version} is not signed by the targets keys of root "
                                   f"v{state.root.signed.version} ({exc})", role="targets", version=version) from None
            self._refuse_expired(new.signed, "targets")
            self._require_keys(_releases_role(new.signed, PublishError), RELEASES, f"targets v{version}",
                               PublishError)
            self._store.write(f"{version}.targets.json", data)
            state.targets, state.targets_bytes = new, data
            if state.releases is None:
                releases = Targets()
                releases.version = 0  # the first one signed is version 1
                releases.targets[REVOCATIONS] = self._store.store_target(REVOCATIONS, _canonical({}))
                state.releases = Metadata(releases)
            self._publish(self._ready(state), releases=copy.deepcopy(state.releases.signed))
            self._store.prune("targets", version)
            return version

    def accept_published(self, publish_dir: Path) -> list[str]:
        """Publish what the key tooling left in ``publish_dir`` (``DIR/publish/``): every root newer
        than the published one in version order, then ``targets.json`` if newer. Returns the
        names of the files accepted."""
        publish_dir = Path(publish_dir)
        if not publish_dir.is_dir():
            raise PublishError(f"{publish_dir}: no such directory", path=str(publish_dir))
        roots = sorted((int(m["version"]), path) for path in publish_dir.glob("*.root.json")
                       if (m := VERSIONED.match(path.name)) and m["version"])
        accepted: list[str] = []
        newer = [(version, path) for version, path in roots if version > self.versions()["root"]]
        if newer:
            self.publish_roots([path.read_bytes() for _, path in newer])
            accepted += [path.name for _, path in newer]
        targets = publish_dir / "targets.json"
        if targets.is_file():
            data = targets.read_bytes()
            md = parse(data, Targets, str(targets), PublishError)
            if md.signed.version > self.versions()["targets"]:
                self.publish_targets(data)
                accepted.append(targets.name)
        return accepted

    # -- online signing -------------------------------------------------------------------------------
    def add_target(self, path: str, sha256: str, length: int, custom: Mapping[str, Any] | None = None) -> TargetFile:
        """Sign an artifact into ``releases`` (new version), then snapshot and timestamp.

        Targets are immutable: adding the same path with the same hash, length and custom data
        again is a no-op; with different ones it is refused.

        Raises:
            PublishError: a malformed path, hash or length, a reserved or already used path, or
                the repository is not ready.
        """
        _check_target(path, sha256, length)
        fields = {"custom": json.loads(_canonical(custom, f"custom of {path!r}"))} if custom is not None else None
        target = TargetFile(length, {"sha256": sha256}, path, fields)
        with self._store.exclusive():
            ready = self._ready(self._store.state())
            role = _releases_role(ready.targets.signed, KeyDirError)
            if not role.is_delegated_path(path):
                raise PublishError(f"target path {path!r} is not delegated to {RELEASES} by targets "
                                   f"v{ready.targets.signed.version}", path=path)
            existing = ready.releases.signed.targets.get(path)
            if existing == target:
                return existing
            if existing is not None:
                raise PublishError(f"target {path!r} is already signed with sha256 "
                                   f"{existing.hashes.get('sha256')} and length {existing.length}; targets are "
                                   "immutable, publish new content under a new path", path=path)
            releases = copy.deepcopy(ready.releases.signed)
            releases.targets[path] = target
            self._publish(ready, releases=releases)
            return target

    def set_revocations(self, doc: Mapping[str, Any]) -> TargetFile:
        """Publish ``doc`` (revoked versions per content type, read by agents at start-up) as the
        signed target ``revocations.json``. Publishing the same document again is a no-op."""
        if not isinstance(doc, Mapping):
            raise PublishError(f"revocations must be a JSON object, not {type(doc).__name__}", path=REVOCATIONS)
        data = _canonical(doc, REVOCATIONS)
        with self._store.exclusive():
            ready = self._ready(self._store.state())
            target = self._store.store_target(REVOCATIONS, data)
            if ready.releases.signed.targets.get(REVOCATIONS) == target:
                return target
            releases = copy.deepcopy(ready.releases.signed)
            releases.targets[REVOCATIONS] = target
            self._publish(ready, releases=releases)
            self._store.prune_target_files(REVOCATIONS)
            return target

    def refresh_timestamp(self) -> int:
        """Sign a new timestamp with a fresh expiry and return its version; call periodically,
        well within ``Expiries.timestamp``. Snapshot and releases are re-signed too when past half
        their lifetime, or when the keys root or targets name for them have changed."""
        with self._store.exclusive():
            ready = self._ready(self._store.state())
            if ready.snapshot is None:
                return self._publish(ready)
            now = now_utc(self._clock)
            root, targets = ready.root.signed, ready.targets.signed
            releases_stale = ready.releases.signed.expires - now < self._expiries.releases / 2 or not \
                targets.get_verification_result(RELEASES, ready.releases.signed_bytes, ready.releases.signatures)
            snapshot_stale = ready.snapshot.signed.expires - now < self._expiries.snapshot / 2 or not \
                root.get_verification_result("snapshot", ready.snapshot.signed_bytes, ready.snapshot.signatures)
            if releases_stale:
                return self._publish(ready, releases=copy.deepcopy(ready.releases.signed))
            if snapshot_stale:
                return self._publish(ready)
            return self._write_timestamp(ready, ready.snapshot.signed.version, ready.snapshot_bytes)

    # -- serving --------------------------------------------------------------------------------------
    def metadata_bytes(self, name: str) -> bytes:
        """The bytes to serve for metadata file ``name``: ``timestamp.json``, ``N.root.json``,
        ``N.snapshot.json``, ``N.targets.json``, ``N.releases.json``; an unversioned name
        (``root.json``) gives the newest version.

        Raises:
            NotPublished: no such file (never published, pruned, or not a metadata name).
        """
        return self._store.metadata_bytes(name)

    def target_bytes(self, path: str) -> bytes:
        """The bytes of a target the repository serves itself (``revocations.json``), by its
        hash-prefixed name (``<sha256>.revocations.json``) or, for the current one, by its path.

        Raises:
            NotPublished: no such file.
        """
        return self._store.target_bytes(path)

    # -- internals ------------------------------------------------------------------------------------
    def _load_signers(self) -> dict[str, CryptoSigner]:
        return {keyid: signer for keyid, (signer, _) in signers_in(self._keys_dir).items()}

    def _ready(self, state: State | None) -> _Ready:
        if state is None or state.targets is None or state.releases is None:
            raise PublishError("the repository is not ready: publish root and targets first (accept_published)")
        return _Ready(state.root, state.targets, state.targets_bytes, state.releases, state.releases_bytes,
                      state.snapshot, state.snapshot_bytes, state.timestamp.signed.version if state.timestamp else 0)

    def _publish(self, ready: _Ready, releases: Targets | None = None) -> int:
        """Write a new releases version (when given), then a new snapshot, then the timestamp
        that makes them current. Returns the timestamp version."""
        now = now_utc(self._clock)
        releases_bytes, releases_version = ready.releases_bytes, ready.releases.signed.version
        if releases is not None:
            releases.version = releases_version = ready.releases.signed.version + 1
            releases.expires = now + self._expiries.releases
            role = _releases_role(ready.targets.signed, KeyDirError)
            releases_bytes = self._sign(releases, role, RELEASES)
            self._store.write(f"{releases_version}.{RELEASES}.json", releases_bytes)
        previous_snapshot = ready.snapshot.signed.version if ready.snapshot is not None else 0
        snapshot = Snapshot(version=previous_snapshot + 1, expires=now + self._expiries.snapshot, meta={
            "targets.json": MetaFile.from_data(ready.targets.signed.version, ready.targets_bytes, ["sha256"]),
            f"{RELEASES}.json": MetaFile.from_data(releases_version, releases_bytes, ["sha256"]),
        })
        snapshot_bytes = self._sign(snapshot, ready.root.signed.roles["snapshot"], "snapshot")
        self._store.write(f"{snapshot.version}.snapshot.json", snapshot_bytes)
        version = self._write_timestamp(ready, snapshot.version, snapshot_bytes)
        self._store.prune(RELEASES, releases_version)
        self._store.prune("snapshot", snapshot.version)
        return version

    def _write_timestamp(self, ready: _Ready, snapshot_version: int, snapshot_bytes: bytes) -> int:
        timestamp = Timestamp(version=ready.timestamp_version + 1,
                              expires=now_utc(self._clock) + self._expiries.timestamp,
                              snapshot_meta=MetaFile.from_data(snapshot_version, snapshot_bytes, ["sha256"]))
        self._store.write(TIMESTAMP, self._sign(timestamp, ready.root.signed.roles["timestamp"], "timestamp"))
        return timestamp.version

    def _sign(self, signed: S, role: Role, name: str) -> bytes:
        return sign(Metadata(signed), self._require_keys(role, name, "the published metadata", KeyDirError))

    def _require_keys(self, role: Role, name: str, where: str, error: type[TrustError]) -> list[CryptoSigner]:
        held = [self._signers[keyid] for keyid in role.keyids if keyid in self._signers]
        if len(held) < role.threshold:
            wanted = ", ".join(short(k) for k in role.keyids)
            raise error(f"{where} names {name} key(s) {wanted}, and {self._keys_dir} holds {len(held)} of the "
                        f"{role.threshold} needed; copy the online {name} key from the key directory first",
                        role=name)
        return held

    def _refuse_expired(self, signed: Signed, name: str) -> None:
        if signed.is_expired(now_utc(self._clock)):
            raise PublishError(f"{name} v{signed.version} expired at {signed.expires.isoformat()}", role=name,
                               version=signed.version)


def _releases_role(targets: Targets, error: type[TrustError]) -> DelegatedRole:
    delegations = targets.delegations
    if delegations is None or delegations.roles is None or RELEASES not in delegations.roles:
        raise error(f"targets v{targets.version} does not delegate to {RELEASES!r}", role="targets",
                    version=targets.version)
    return delegations.roles[RELEASES]


def _check_target(path: str, sha256: str, length: int) -> None:
    if not isinstance(path, str) or not path or path.startswith("/") or "\\" in path \
            or any(part in ("", ".", "..") for part in path.split("/")):
        raise PublishError(f"target path {path!r} must be a relative path without empty, '.' or '..' parts",
                           path=path)
    if path == REVOCATIONS:
        raise PublishError(f"target path {REVOCATIONS!r} is reserved for set_revocations", path=path)
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise PublishError(f"target {path!r}: sha256 must be 64 lowercase hex digits, not {sha256!r}", path=path)
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise PublishError(f"target {path!r}: length must be a non-negative integer, not {length!r}", path=path)


def _canonical(doc: Mapping[str, Any] | None, what: str = "document") -> bytes:
    try:
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise PublishError(f"{what} is not JSON-serialisable ({exc})") from None

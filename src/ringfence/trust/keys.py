"""Offline key tooling: the key directory that holds Ringfence's TUF signing keys.

Why this shape (as in PEP 458): the keys that decide what agents trust, root and the top-level
targets role, stay offline and need a threshold of signatures, so a stolen server holds neither.
The top-level targets role signs one thing: a delegation of every path (``*``, ``*/*`` and so on,
see :data:`RELEASES_PATHS`) to the online role ``releases``. The server holds that role's key and
signs each new artifact the moment it is pushed. It also holds the online ``snapshot`` and
``timestamp`` keys, and nothing else. A compromised server can sign artifacts until ``releases``
is rotated; it can never rotate root.

Layout (private keys are PEM, mode 0600; every file is written atomically)::

    DIR/root/<keyid>.key        root keys, offline             DIR/root/archive/     retired ones
    DIR/targets/<keyid>.key     top-level targets keys, offline
    DIR/online/timestamp.key    the server's online keys       DIR/online/archive/   retired ones
    DIR/online/snapshot.key
    DIR/online/releases.key
    DIR/publish/N.root.json     every root version: clients walk the chain from theirs to the newest
    DIR/publish/root.json       the newest root: ship it with agents as their trusted root
    DIR/publish/targets.json    the newest top-level targets

Every operation writes what the server must publish into ``DIR/publish/`` (the server takes it with
:meth:`TrustRepository.accept_published <ringfence.trust.repository.TrustRepository.accept_published>`)
and, when an online key changes, the new key into ``DIR/online/``.

Rotations never strand an enrolled agent: a new root is signed by a threshold of the previous root's
keys and of its own, so a client that trusts version N verifies N+1 through the normal root update.
A new key is written before the metadata that names it; a crash in between leaves a key that no
metadata names, which :func:`describe_keys` reports and the next rotation replaces.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tuf.api.exceptions import UnsignedMetadataError

from ringfence.core.clock import Clock, SystemClock
from ringfence.trust._files import (
    KEY_SUFFIX,
    ONLINE_ROLES,
    RELEASES,
    now_utc,
    parse,
    read_signer,
    short,
    sign,
    signers_in,
    sync_directory,
    write_atomic,
    write_signer,
)
from ringfence.trust._tuf import CryptoSigner, DelegatedRole, Delegations, Metadata, Root, Targets
from ringfence.trust.errors import KeyDirError
from ringfence.trust.expiries import Expiries

ROTATABLE = ("root", *ONLINE_ROLES)
RELEASES_PATHS = ["*", "*/*", "*/*/*", "*/*/*/*"]
"""What targets delegates to ``releases``: every path up to four segments deep
(``sensor/ipc-templates/1.2.3/blob``). A TUF pattern's ``*`` never matches a ``/``, so ``*`` alone
would only cover single-segment paths."""
RENEW_WARNING = timedelta(days=30)
"""``describe_keys`` warns when root or targets expire sooner than this."""


@dataclass(frozen=True)
class KeyDir:
    """Paths of a key directory."""

    path: Path

    @property
    def root(self) -> Path:
        return self.path / "root"

    @property
    def targets(self) -> Path:
        return self.path / "targets"

    @property
    def online(self) -> Path:
        return self.path / "online"

    @property
    def publish(self) -> Path:
        return self.path / "publish"

    def online_key(self, role: str) -> Path:
        return self.online / f"{role}{KEY_SUFFIX}"


@dataclass(frozen=True)
class KeyChange:
    """What an offline operation produced and what the server must be handed."""

    action: str
    directory: Path
    publish: tuple[Path, ...]
    """Metadata files written into ``DIR/publish/`` for the server to publish."""
    online_keys: tuple[Path, ...]
    """Online private keys the server must be given (new or replaced)."""
    root_version: int
    targets_version: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "directory": str(self.directory),
            "publish": [str(p) for p in self.publish],
            "online_keys": [str(p) for p in self.online_keys],
            "root_version": self.root_version,
            "targets_version": self.targets_version,
        }


def init_keys(directory: Path, root_keys: int = 3, root_threshold: int = 2, targets_keys: int = 2,
              targets_threshold: int = 1, *, clock: Clock | None = None,
              expiries: Expiries | None = None) -> KeyChange:
    """Create a key directory: ed25519 keys for every role, root version 1 signed by all root
    keys, and top-level targets version 1 delegating ``*`` to the online ``releases`` role.

    Raises:
        KeyDirError: a threshold is not between 1 and its number of keys, or ``directory``
            exists and is not empty (init never overwrites keys).
    """
    _check_threshold("root", root_keys, root_threshold)
    _check_threshold("targets", targets_keys, targets_threshold)
    kd = KeyDir(Path(directory))
    if kd.path.exists() and (not kd.path.is_dir() or any(kd.path.iterdir())):
        raise KeyDirError(f"{kd.path} already exists and is not empty; init never overwrites keys",
                          path=str(kd.path))
    now, lifetimes = now_utc(clock or SystemClock()), expiries or Expiries()
    root_signers = [CryptoSigner.generate_ed25519() for _ in range(root_keys)]
    targets_signers = [CryptoSigner.generate_ed25519() for _ in range(targets_keys)]
    online = {role: CryptoSigner.generate_ed25519() for role in ONLINE_ROLES}

    root = Root(version=1, expires=now + lifetimes.root, consistent_snapshot=True)
    for signer in root_signers:
        root.add_key(signer.public_key, "root")
    root.roles["root"].threshold = root_threshold
    for signer in targets_signers:
        root.add_key(signer.public_key, "targets")
    root.roles["targets"].threshold = targets_threshold
    for role in ("timestamp", "snapshot"):
        root.add_key(online[role].public_key, role)

    releases_key = online[RELEASES].public_key
    targets = Targets(version=1, expires=now + lifetimes.targets)
    targets.delegations = Delegations(
        keys={releases_key.keyid: releases_key},
        roles={RELEASES: DelegatedRole(RELEASES, [releases_key.keyid], 1, terminating=True,
                                       paths=list(RELEASES_PATHS))},
    )
    root_bytes = sign(Metadata(root), root_signers)
    targets_bytes = sign(Metadata(targets), targets_signers)

    for private in (kd.path, kd.root, kd.targets, kd.online):
        private.mkdir(parents=True, exist_ok=True)
        os.chmod(private, 0o700)
    kd.publish.mkdir(exist_ok=True)
    for signer in root_signers:
        write_signer(kd.root / f"{signer.public_key.keyid}{KEY_SUFFIX}", signer)
    for signer in targets_signers:
        write_signer(kd.targets / f"{signer.public_key.keyid}{KEY_SUFFIX}", signer)
    for role, signer in online.items():
        write_signer(kd.online_key(role), signer)
    published = (*_write_root(kd, 1, root_bytes), _write_targets(kd, targets_bytes))
    return KeyChange("init", kd.path, published, tuple(kd.online_key(r) for r in ONLINE_ROLES), 1, 1)


def rotate_root(directory: Path, root_keys: int | None = None, root_threshold: int | None = None, *,
                clock: Clock | None = None, expiries: Expiries | None = None) -> KeyChange:
    """Replace every root key (``root_keys`` of them, default as many as now) and optionally the
    threshold: the next root version is signed by the current root keys and the new ones, and
    the current keys move to ``DIR/root/archive/``.

    Raises:
        KeyDirError: fewer than the threshold of current root keys are in ``DIR/root/``, or the
            new threshold is not between 1 and the new number of keys.
    """
    kd = _open(directory)
    current = _current_root(kd)
    role = current.signed.roles["root"]
    count = len(role.keyids) if root_keys is None else root_keys
    threshold = role.threshold if root_threshold is None else root_threshold
    _check_threshold("root", count, threshold)
    old_signers = _signers_for(kd.root, role.keyids, role.threshold, f"root v{current.signed.version}")
    new_signers = [CryptoSigner.generate_ed25519() for _ in range(count)]

    root = _next_root(current.signed, clock, expiries)
    for keyid in list(role.keyids):
        root.revoke_key(keyid, "root")
    for signer in new_signers:
        root.add_key(signer.public_key, "root")
    root.roles["root"].threshold = threshold
    data = sign(Metadata(root), [*old_signers, *new_signers])
    _check_chain(current.signed, data)

    for signer in new_signers:
        write_signer(kd.root / f"{signer.public_key.keyid}{KEY_SUFFIX}", signer)
    published = _write_root(kd, root.version, data)
    _archive_all_but(kd.root, set(root.roles["root"].keyids))
    return KeyChange("rotate root", kd.path, published, (), root.version, _current_targets(kd).signed.version)


def rotate_online(directory: Path, role: str, *, clock: Clock | None = None,
                  expiries: Expiries | None = None) -> KeyChange:
    """Give the online ``role`` (timestamp, snapshot or releases) a new key.

    ``timestamp`` and ``snapshot`` are named by root: a new root version, signed by the root
    keys. ``releases`` is named by the top-level targets delegation: a new targets version, signed
    by the targets keys. The new key replaces ``DIR/online/<role>.key`` (the old one goes to
    ``DIR/online/archive/``); clients follow through their normal update, without re-enrolment.

    Raises:
        KeyDirError: ``role`` is not an online role, or too few offline keys are present to sign.
    """
    if role not in ONLINE_ROLES:
        raise KeyDirError(f"role must be one of {', '.join(ONLINE_ROLES)} (root rotates with rotate_root), "
                          f"not {role!r}", role=role)
    kd = _open(directory)
    current = _current_root(kd)
    signer = CryptoSigner.generate_ed25519()
    if role != RELEASES:
        root_role = current.signed.roles["root"]
        signers = _signers_for(kd.root, root_role.keyids, root_role.threshold, f"root v{current.signed.version}")
        root = _next_root(current.signed, clock, expiries)
        for keyid in list(root.roles[role].keyids):
            root.revoke_key(keyid, role)
        root.add_key(signer.public_key, role)
        data = sign(Metadata(root), signers)
        _check_chain(current.signed, data)
        _replace_online_key(kd, role, signer)
        published = _write_root(kd, root.version, data)
        return KeyChange(f"rotate {role}", kd.path, published, (kd.online_key(role),), root.version,
                         _current_targets(kd).signed.version)

    targets_md = _current_targets(kd)
    targets_role = current.signed.roles["targets"]
    signers = _signers_for(kd.targets, targets_role.keyids, targets_role.threshold, "targets")
    targets = copy.deepcopy(targets_md.signed)
    delegations = targets.delegations
    if delegations is None or delegations.roles is None or RELEASES not in delegations.roles:
        raise KeyDirError(f"{kd.publish / 'targets.json'}: targets v{targets.version} does not delegate to "
                          f"{RELEASES!r}", role=RELEASES)
    targets.version += 1
    targets.expires = now_utc(clock or SystemClock()) + (expiries or Expiries()).targets
    for keyid in list(delegations.roles[RELEASES].keyids):
        targets.revoke_key(keyid, RELEASES)
    targets.add_key(signer.public_key, RELEASES)
    data = sign(Metadata(targets), signers)
    signed = parse(data, Targets, "new targets.json", KeyDirError)
    try:
        current.signed.verify_delegate("targets", signed.signed_bytes, signed.signatures)
    except UnsignedMetadataError as exc:
        raise KeyDirError(f"targets v{targets.version} would not verify under root v{current.signed.version}: "
                          f"{exc}", version=targets.version) from None
    _replace_online_key(kd, RELEASES, signer)
    return KeyChange(f"rotate {RELEASES}", kd.path, (_write_targets(kd, data),), (kd.online_key(RELEASES),),
                     current.signed.version, targets.version)


def describe_keys(directory: Path, *, clock: Clock | None = None) -> dict[str, Any]:
    """Key ids, thresholds, versions and expiries of every role, which private keys are present,
    and ``problems``: anything that would stop the next signature or an agent's update."""
    kd = _open(directory)
    now = now_utc(clock or SystemClock())
    root, targets = _current_root(kd).signed, _current_targets(kd).signed
    problems: list[str] = []
    held_root = set(signers_in(kd.root))
    held_targets = set(signers_in(kd.targets))
    report: dict[str, Any] = {"directory": str(kd.path)}
    for name, md, held, where in (("root", root, held_root, kd.root), ("targets", targets, held_targets, kd.targets)):
        role = root.roles[name]
        present = sorted(held & set(role.keyids))
        report[name] = {"version": md.version, "expires": md.expires.isoformat(), "threshold": role.threshold,
                        "keyids": list(role.keyids), "keys_present": len(present)}
        if len(present) < role.threshold:
            problems.append(f"{where} holds {len(present)} of the {name} keys, {role.threshold} needed to sign")
        if md.expires <= now:
            problems.append(f"{name} v{md.version} expired at {md.expires.isoformat()}")
        elif md.expires - now < RENEW_WARNING:
            problems.append(f"{name} v{md.version} expires at {md.expires.isoformat()}: renew it with a rotation")
    delegations = targets.delegations
    online_keyids = {
        "timestamp": list(root.roles["timestamp"].keyids),
        "snapshot": list(root.roles["snapshot"].keyids),
        RELEASES: (list(delegations.roles[RELEASES].keyids)
                   if delegations is not None and delegations.roles and RELEASES in delegations.roles else []),
    }
    for role_name, keyids in online_keyids.items():
        path = kd.online_key(role_name)
        held_keyid: str | None = None
        try:
            held_keyid = read_signer(path).public_key.keyid
        except KeyDirError as exc:
            problems.append(f"{path}: the online {role_name} key is missing" if not path.exists() else exc.message)
        report[role_name] = {"keyids": keyids, "key_file": str(path), "key_matches": held_keyid in keyids}
        if held_keyid is not None and held_keyid not in keyids:
            problems.append(f"{path}: key {short(held_keyid)} is not the {role_name} key the metadata names "
                            f"({', '.join(short(k) for k in keyids)}); rotate {role_name} again")
    report["publish"] = sorted(str(p) for p in kd.publish.glob("*.json"))
    report["problems"] = problems
    return report


# -- helpers ----------------------------------------------------------------------------------------
def _check_threshold(role: str, keys: int, threshold: int) -> None:
    if keys < 1:
        raise KeyDirError(f"{role} needs at least 1 key, not {keys}", role=role, keys=keys)
    if not 1 <= threshold <= keys:
        raise KeyDirError(f"{role} threshold must be between 1 and its {keys} keys, not {threshold}",
                          role=role, keys=keys, threshold=threshold)


def _open(directory: Path) -> KeyDir:
    kd = KeyDir(Path(directory))
    if not (kd.publish / "root.json").is_file():
        raise KeyDirError(f"{kd.publish / 'root.json'} not found: {kd.path} is not a key directory "
                          "(create one with init)", path=str(kd.path))
    return kd


def _current_root(kd: KeyDir) -> Metadata[Root]:
    path = kd.publish / "root.json"
    return parse(path.read_bytes(), Root, str(path), KeyDirError)


def _current_targets(kd: KeyDir) -> Metadata[Targets]:
    path = kd.publish / "targets.json"
    if not path.is_file():
        raise KeyDirError(f"{path} not found", path=str(path))
    return parse(path.read_bytes(), Targets, str(path), KeyDirError)


def _signers_for(directory: Path, keyids: list[str], threshold: int, what: str) -> list[CryptoSigner]:
    held = signers_in(directory)
    chosen = [signer for keyid, (signer, _) in held.items() if keyid in keyids]
    if len(chosen) < threshold:
        raise KeyDirError(f"{directory} holds {len(chosen)} of the {what} keys, {threshold} needed to sign "
                          f"(key ids {', '.join(short(k) for k in keyids)})", path=str(directory))
    return chosen


def _next_root(current: Root, clock: Clock | None, expiries: Expiries | None) -> Root:
    root = copy.deepcopy(current)
    root.version += 1
    root.expires = _expiry(clock, (expiries or Expiries()).root)
    return root


def _expiry(clock: Clock | None, lifetime: timedelta) -> datetime:
    return now_utc(clock or SystemClock()) + lifetime


def _check_chain(previous: Root, data: bytes) -> None:
    """Refuse to write a root that a client trusting ``previous`` would reject."""
    md = parse(data, Root, f"root v{previous.version + 1}", KeyDirError)
    result = md.signed.get_root_verification_result(previous, md.signed_bytes, md.signatures)
    if not result.verified:
        raise KeyDirError(f"root v{md.signed.version} would carry {len(result.first.signed)}/"
                          f"{result.first.threshold} signatures of root v{previous.version} and "
                          f"{len(result.second.signed)}/{result.second.threshold} of its own",
                          version=md.signed.version)


def _write_root(kd: KeyDir, version: int, data: bytes) -> tuple[Path, ...]:
    versioned, latest = kd.publish / f"{version}.root.json", kd.publish / "root.json"
    write_atomic(versioned, data)
    write_atomic(latest, data)
    return versioned, latest


def _write_targets(kd: KeyDir, data: bytes) -> Path:
    path = kd.publish / "targets.json"
    write_atomic(path, data)
    return path


def _replace_online_key(kd: KeyDir, role: str, signer: CryptoSigner) -> None:
    path = kd.online_key(role)
    if path.exists():
        old = path.read_bytes()
        try:
            name = f"{role}-{read_signer(path).public_key.keyid}{KEY_SUFFIX}"
        except KeyDirError:
            name = f"{role}-unreadable-{os.urandom(4).hex()}{KEY_SUFFIX}"
        archive = kd.online / "archive"
        archive.mkdir(mode=0o700, exist_ok=True)
        write_atomic(archive / name, old, mode=0o600)
    write_signer(path, signer)


def _archive_all_but(directory: Path, keep: set[str]) -> None:
    archive = directory / "archive"
    archive.mkdir(mode=0o700, exist_ok=True)
    for keyid, (_, path) in signers_in(directory).items():
        if keyid not in keep:
            os.replace(path, archive / path.name)
    sync_directory(archive)
    sync_directory(directory)

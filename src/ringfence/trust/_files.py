"""Files shared by the key tooling and the repository: atomic writes, private key files, parsing
and signing metadata.

Guarantees: a file is either its old or its new content, never a mix and never lost to a crash
(temporary file in the same directory, fsync, ``os.replace``, fsync of the directory); private
keys are PEM (PKCS#8) and written with mode 0600.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from tuf.api.exceptions import RepositoryError

from ringfence.core.clock import Clock
from ringfence.trust._tuf import CryptoSigner, Metadata, Root, Snapshot, Targets, Timestamp
from ringfence.trust.errors import KeyDirError, TrustError

RELEASES = "releases"
"""The online delegated role the server signs new artifacts with."""
REVOCATIONS = "revocations.json"
"""The target path of the signed revocation document."""
ONLINE_ROLES = ("timestamp", "snapshot", RELEASES)
KEY_SUFFIX = ".key"

S = TypeVar("S", Root, Timestamp, Snapshot, Targets)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` in one step that survives a crash."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_signer(path: Path) -> CryptoSigner:
    """The signer in the PEM private key file ``path``."""
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        raise KeyDirError(f"{path}: private key file not found", path=str(path)) from None
    try:
        return CryptoSigner(load_pem_private_key(pem, password=None))
    except (ValueError, TypeError) as exc:
        raise KeyDirError(f"{path}: not an unencrypted PEM private key ({exc})", path=str(path)) from None


def write_signer(path: Path, signer: CryptoSigner) -> None:
    write_atomic(path, signer.private_bytes, mode=0o600)


def signers_in(directory: Path) -> dict[str, tuple[CryptoSigner, Path]]:
    """Every private key directly in ``directory``, by key id (subdirectories such as ``archive/``
    are not looked at)."""
    if not directory.is_dir():
        raise KeyDirError(f"{directory}: key directory not found", path=str(directory))
    found: dict[str, tuple[CryptoSigner, Path]] = {}
    for path in sorted(directory.glob(f"*{KEY_SUFFIX}")):
        signer = read_signer(path)
        found[signer.public_key.keyid] = (signer, path)
    return found


def parse(data: bytes, kind: type[S], source: str, error: type[TrustError]) -> Metadata[S]:
    """``data`` as metadata of role type ``kind``, or ``error`` naming ``source``."""
    try:
        md: Metadata[Any] = Metadata.from_bytes(data)
    except RepositoryError as exc:
        raise error(f"{source}: not TUF metadata ({exc})", source=source) from None
    if not isinstance(md.signed, kind):
        raise error(f"{source}: expected {kind.type} metadata, found {md.signed.type}", source=source)
    return cast("Metadata[S]", md)


def sign(md: Metadata[S], signers: Iterable[CryptoSigner]) -> bytes:
    """Replace ``md``'s signatures with one from each signer and return its bytes."""
    md.signatures.clear()
    for signer in signers:
        md.sign(signer, append=True)
    return md.to_bytes()


def now_utc(clock: Clock) -> datetime:
    """The clock's time, whole seconds, in the UTC zone TUF requires."""
    return clock.now().astimezone(UTC).replace(microsecond=0)


def short(keyid: str) -> str:
    return keyid[:12]

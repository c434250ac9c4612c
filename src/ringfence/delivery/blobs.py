"""A content-addressed blob store on the local file system.

A blob's name is its SHA-256, so any CDN or object store can serve the same bytes. Writes are
atomic and durable: bytes go to a temporary file in the same file system, are hashed while
they stream in, fsynced, checked against the declared hash and size limit, and only then renamed
into place (and the directory fsynced). A failed or refused upload leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from ringfence.core.errors import InvalidInput, PayloadTooLarge
from ringfence.core.models import check_sha256

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class StoredBlob:
    sha256: str
    size: int


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        check_sha256(sha256)
        return self.root / "sha256" / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    async def put_stream(
        self, chunks: AsyncIterator[bytes], *, max_bytes: int, declared_sha256: str | None = None
    ) -> StoredBlob:
        """Store a stream. Raises ``PayloadTooLarge`` past ``max_bytes`` and ``InvalidInput``
        when ``declared_sha256`` does not match what arrived; nothing is kept in either case."""
        if declared_sha256 is not None:
            check_sha256(declared_sha256)
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self._tmp, prefix="upload-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(
                            f"upload is larger than the limit of {max_bytes} bytes", limit=max_bytes)
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if declared_sha256 is not None and actual != declared_sha256:
                raise InvalidInput(
                    f"declared sha256 {declared_sha256} does not match the uploaded bytes ({actual})",
                    field="sha256", value=declared_sha256, actual=actual)
            if size == 0:
                raise InvalidInput("the artifact is empty", field="body", value="")
            final = self.path(actual)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
            _fsync_dir(final.parent)
            return StoredBlob(actual, size)
        finally:
            tmp.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

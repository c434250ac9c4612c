"""The agent's side of TUF: is this artifact what the repository signed, and what is revoked?

:class:`TrustClient` wraps python-tuf's ``ngclient.Updater``, which runs the TUF client workflow
(root chain, timestamp, snapshot, top-level targets, then the delegation to ``releases``) and
rejects tampered metadata, rollback to older versions, freeze (expired metadata), mix-and-match
and signatures by keys the delegator does not name.

Guarantees:

* Trust starts from the root shipped with the agent (``trusted_root``), passed to every update as
  its bootstrap. ``metadata_dir`` caches each newer root the client verified
  (``root_history/N.root.json``; ``root.json`` is the newest), so key rotations are followed
  through the normal root update, without re-enrolment.
* Every call runs a fresh update: ``Updater`` refreshes once per lifetime, and only a fresh
  timestamp defeats a freeze attack. Metadata that did not change comes from the cache, so a
  call usually costs one small download (``timestamp.json``).
* The client never writes artifacts. The agent downloads by hash into its own staging area and
  asks :meth:`TrustClient.verify` about those bytes; ``revocations.json`` is the only target
  fetched here, and it stays in memory.
* Expiry is judged against this host's clock: python-tuf reads it itself.

URLs, matching :mod:`ringfence.trust.repository`: ``{base_url}/metadata/{name}`` and
``{base_url}/targets/{sha256}.{path}`` (consistent snapshots).

Not thread-safe: one client per metadata directory, used by one thread at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from tuf.api.exceptions import (
    DownloadError,
    DownloadHTTPError,
    DownloadLengthMismatchError,
    LengthOrHashMismatchError,
    RepositoryError,
)
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from ringfence.trust._files import RELEASES, REVOCATIONS
from ringfence.trust._tuf import Metadata, Root, Snapshot, TargetFile, Targets, Timestamp
from ringfence.trust.errors import BadMetadata, BadTarget, TrustError, Unreachable
from ringfence.trust.fetchers import HttpxFetcher

_METADATA_NAME = re.compile(r"^(?:[0-9]+\.)?(?P<role>[^/]+)\.json$")


class TrustClient:
    """Verifies artifacts and reads revocations against a Ringfence TUF repository.

    Args:
        metadata_dir: the client's own cache of verified metadata (created when missing).
        trusted_root: the root shipped with the agent, as bytes or a file.
        base_url: the repository's base URL (metadata under ``/metadata/``, targets under
            ``/targets/``).
        fetcher: how to reach it; an :class:`~ringfence.trust.fetchers.HttpxFetcher` by default.
        config: python-tuf's limits (root rotations, delegations, metadata sizes).

    Raises:
        BadMetadata: ``trusted_root`` is not a root signed by its own threshold.
    """

    def __init__(self, metadata_dir: Path, trusted_root: bytes | Path, base_url: str,
                 fetcher: FetcherInterface | None = None, *, config: UpdaterConfig | None = None) -> None:
        self._dir = Path(metadata_dir)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._root = trusted_root if isinstance(trusted_root, bytes) else Path(trusted_root).read_bytes()
        self._base = base_url.rstrip("/")
        self._owned: HttpxFetcher | None = None
        if fetcher is None:
            fetcher = self._owned = HttpxFetcher()
        self._fetcher = _Recorder(fetcher)
        self._config = config or UpdaterConfig()
        self._updater()  # verifies the shipped root and caches it as root.json

    def close(self) -> None:
        """Close the HTTP client this client made (one passed in is the caller's to close)."""
        if self._owned is not None:
            self._owned.close()

    def refresh(self) -> None:
        """Update the cached metadata to the repository's newest.

        Raises:
            BadMetadata: naming the file, role and version that failed to verify.
            Unreachable: the repository could not be fetched from.
        """
        self._refreshed()

    def verify(self, target_path: str, data: bytes | Path) -> TargetFile:
        """Refresh, then check that ``data`` (bytes, or a file read in chunks) has the length and
        hashes ``releases`` signs for ``target_path``. Returns the signed entry (``.custom`` holds
        what the server attached).

        Raises:
            BadTarget: the target is not signed, or the bytes differ from what is signed.
            BadMetadata: naming the file, role and version that failed to verify.
            Unreachable: the repository could not be fetched from.
        """
        updater = self._refreshed()
        with self._translated(target_path):
            info = updater.get_targetinfo(target_path)
        if info is None:
            raise BadTarget(f"target {target_path!r} is not signed: {self._signed_by()} does not list it",
                            path=target_path)
        try:
            if isinstance(data, Path):
                with data.open("rb") as handle:
                    info.verify_length_and_hashes(handle)
            else:
                info.verify_length_and_hashes(data)
        except LengthOrHashMismatchError as exc:
            raise BadTarget(f"target {target_path!r} differs from what {self._signed_by()} signs: {exc}",
                            path=target_path) from None
        return info

    def revocations(self) -> dict[str, Any]:
        """Refresh, then download and verify the signed ``revocations.json`` and return it.

        Raises:
            BadTarget: it is not signed, its bytes differ from what is signed, or it is not a JSON
                object.
            BadMetadata: naming the file, role and version that failed to verify.
            Unreachable: the repository could not be fetched from.
        """
        updater = self._refreshed()
        with self._translated(REVOCATIONS):
            info = updater.get_targetinfo(REVOCATIONS)
        if info is None:
            raise BadTarget(f"{REVOCATIONS} is not signed: {self._signed_by()} does not list it", path=REVOCATIONS)
        digest = info.hashes.get("sha256")
        if digest is None:
            raise BadTarget(f"{REVOCATIONS}: {self._signed_by()} gives no sha256", path=REVOCATIONS)
        with self._translated(REVOCATIONS):
            data = self._fetcher.download_bytes(f"{self._base}/targets/{digest}.{REVOCATIONS}", info.length)
        try:
            info.verify_length_and_hashes(data)
        except LengthOrHashMismatchError as exc:
            raise BadTarget(f"{REVOCATIONS} differs from what {self._signed_by()} signs: {exc}",
                            path=REVOCATIONS) from None
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise BadTarget(f"{REVOCATIONS} is not JSON ({exc})", path=REVOCATIONS) from None
        if not isinstance(doc, dict):
            raise BadTarget(f"{REVOCATIONS} is not a JSON object", path=REVOCATIONS)
        return doc

    def trusted_versions(self) -> dict[str, int]:
        """The version of each role in the cache of verified metadata, 0 for none yet."""
        versions: dict[str, int] = {}
        for role, kind in (("root", Root), ("timestamp", Timestamp), ("snapshot", Snapshot), ("targets", Targets),
                           (RELEASES, Targets)):
            versions[role] = 0
            path = self._dir / f"{role}.json"
            if path.is_file():
                md = _claimed(path.read_bytes())
                versions[role] = md.signed.version if md is not None and isinstance(md.signed, kind) else 0
        return versions

    # -- internals ------------------------------------------------------------------------------------
    def _updater(self) -> Updater:
        self._fetcher.reset()
        with self._translated(what="the trusted root"):
            return Updater(str(self._dir), f"{self._base}/metadata/", fetcher=self._fetcher, config=self._config,
                           bootstrap=self._root)

    def _refreshed(self) -> Updater:
        updater = self._updater()
        with self._translated():
            updater.refresh()
        return updater

    def _signed_by(self) -> str:
        versions = self.trusted_versions()
        return f"targets v{versions['targets']} / {RELEASES} v{versions[RELEASES]}"

    @contextmanager
    def _translated(self, target: str | None = None, what: str = "metadata") -> Iterator[None]:
        """python-tuf's errors, as this layer's tree, naming what failed: the last file received
        (and the role and version it claims), else ``what``."""
        try:
            yield
        except TrustError:
            raise
        except DownloadLengthMismatchError as exc:
            self._bad_data(exc, target, what)
        except DownloadHTTPError as exc:
            url = self._fetcher.attempted
            raise Unreachable(f"{_name(url)}: the repository answered HTTP {exc.status_code}", url=url,
                              status=exc.status_code) from None
        except DownloadError as exc:
            url = self._fetcher.attempted
            cause = exc.__cause__
            cause_text = f" ({type(cause).__name__}: {cause})" if cause and str(cause) not in str(exc) else ""
            raise Unreachable(f"{_name(url)}: transfer failed: {exc}{cause_text}", url=url) from None
        except RepositoryError as exc:
            self._bad_data(exc, target, what)

    def _bad_data(self, exc: Exception, target: str | None, what: str) -> NoReturn:
        url = self._fetcher.url
        if target is not None and url is not None and "/targets/" in url:
            raise BadTarget(f"target {target!r} ({_name(url)}): {exc}", path=target, url=url) from None
        details: dict[str, Any] = {}
        md = _claimed(bytes(self._fetcher.data)) if url is not None else None
        if url is not None:
            what, details = _name(url), {"url": url}
            if md is not None:
                role = _role_of(url) or md.signed.type
                what += f" ({role} v{md.signed.version}, expires {md.signed.expires.isoformat()})"
                details |= {"role": role, "version": md.signed.version}
        raise BadMetadata(f"{what} rejected: {type(exc).__name__}: {exc}", **details) from None


class _Recorder(FetcherInterface):
    """Passes fetches through and keeps the last URL and the bytes received from it, so an error
    can name the file, role and version it was about."""

    def __init__(self, inner: FetcherInterface) -> None:
        self.inner = inner
        self.attempted: str | None = None
        """The last URL asked for."""
        self.url: str | None = None
        """The last URL that answered; ``data`` holds what it sent."""
        self.data = bytearray()

    def reset(self) -> None:
        self.attempted, self.url, self.data = None, None, bytearray()

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.attempted = url
        chunks = self.inner.fetch(url)
        self.url, self.data = url, bytearray()
        return self._recorded(chunks)

    def _recorded(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.data += chunk
            yield chunk


def _claimed(data: bytes) -> Metadata[Any] | None:
    """What unverified bytes claim to be (for messages only), or None."""
    try:
        return Metadata.from_bytes(data)
    except (RepositoryError, ValueError, TypeError, KeyError):
        return None


def _role_of(url: str) -> str | None:
    """The role a metadata URL is for (``.../4.releases.json`` -> ``releases``)."""
    match = _METADATA_NAME.match(_name(url))
    return match["role"] if match and "/metadata/" in url else None


def _name(url: str | None) -> str:
    return url.rsplit("/", 1)[-1] if url else "repository"

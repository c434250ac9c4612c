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
  asks :meth:`TrustClient.verify` about those bytes; :meth:`TrustClient.fetch` downloads and
  verifies any other target by name (``revocations.json``) and hands its bytes over in memory.
* The verified metadata the cache holds is written durably (temporary file, fsync, rename, fsync
  of the directory): after a power cut it holds the old version or the new one, never a
  truncated file that would let the rollback protection start again from nothing.
* Expiry is judged against this host's clock: python-tuf reads it itself.
* A cache that cannot be written (a full disk) is :class:`Unreachable`, like a repository that
  cannot be asked: the agent goes on with its local decision and asks again later.
* ``budget_s`` bounds a whole call (every download it makes, however slowly the bytes come) by
  one wall-clock deadline; past it the call fails with :class:`Unreachable`.

URLs: ``{base_url}/metadata/{name}`` and ``{base_url}/targets/{path}``, the target's name as the
TUF specification forms it (with consistent snapshots, the first listed hash before the basename,
``dir/{hash}.name``; any hash algorithm the metadata lists).

Not thread-safe: one client per metadata directory, used by one thread at a time.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
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
    SlowRetrievalError,
)
from tuf.ngclient.config import UpdaterConfig
from tuf.ngclient.fetcher import FetcherInterface
from tuf.ngclient.updater import Updater

from ringfence.trust._files import RELEASES, REVOCATIONS, sync_directory, write_atomic
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

    def refresh(self, *, budget_s: float | None = None) -> None:
        """Update the cached metadata to the repository's newest.

        Raises:
            BadMetadata: naming the file, role and version that failed to verify.
            Unreachable: the repository could not be fetched from (within ``budget_s``).
        """
        with self._budget(budget_s):
            self._refreshed()

    def verify(self, target_path: str, data: bytes | Path, *, budget_s: float | None = None) -> TargetFile:
        """Refresh, then check that ``data`` (bytes, or a file read in chunks) has the length and
        hashes ``releases`` signs for ``target_path``. Returns the signed entry (``.custom`` holds
        what the server attached).

        Raises:
            BadTarget: the target is not signed, or the bytes differ from what is signed.
            BadMetadata: naming the file, role and version that failed to verify.
            Unreachable: the repository could not be fetched from (within ``budget_s``).
        """
        with self._budget(budget_s):
            return self._verify(target_path, data)

    def _verify(self, target_path: str, data: bytes | Path) -> TargetFile:
        _, info = self._signed(target_path)
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

    def revocations(self, *, budget_s: float | None = None) -> dict[str, Any]:
        """Refresh, then download and verify the signed ``revocations.json`` and return it.

        Raises:
            BadTarget: it is not signed, its bytes differ from what is signed, or it is not a JSON
                object.
            BadMetadata: naming the file, role and version that failed to verify.
            Unreachable: the repository could not be fetched from (within ``budget_s``).
        """
        with self._budget(budget_s):
            return self._revocations()

    def _revocations(self) -> dict[str, Any]:
        _, data = self._fetch(REVOCATIONS)
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise BadTarget(f"{REVOCATIONS} is not JSON ({exc})", path=REVOCATIONS) from None
        if not isinstance(doc, dict):
            raise BadTarget(f"{REVOCATIONS} is not a JSON object", path=REVOCATIONS)
        return doc

    def fetch(self, target_path: str, *, budget_s: float | None = None) -> tuple[TargetFile, bytes]:
        """Refresh, then download the target ``target_path`` and verify it against what
        ``releases`` signs (length and every listed hash); returns the signed entry and the bytes.

        Raises:
            BadTarget: the target is not signed, or the bytes differ from what is signed.
            BadMetadata: naming the file, role and version that failed to verify.
            Unreachable: the repository could not be fetched from (within ``budget_s``).
        """
        with self._budget(budget_s):
            return self._fetch(target_path)

    def _fetch(self, target_path: str) -> tuple[TargetFile, bytes]:
        updater, info = self._signed(target_path)
        with self._translated(target_path), tempfile.TemporaryDirectory(dir=self._dir, prefix=".fetch-") as scratch:
            into = os.path.join(scratch, "target")
            try:
                updater.download_target(info, into, f"{self._base}/targets/")
            except LengthOrHashMismatchError as exc:
                raise BadTarget(f"target {target_path!r} differs from what {self._signed_by()} signs: {exc}",
                                path=target_path) from None
            with open(into, "rb") as handle:
                return info, handle.read()

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
    @contextmanager
    def _budget(self, budget_s: float | None) -> Iterator[None]:
        self._fetcher.set_deadline(None if budget_s is None else time.monotonic() + budget_s)
        try:
            yield
        finally:
            self._fetcher.set_deadline(None)

    def _updater(self) -> Updater:
        self._fetcher.reset()
        with self._translated(what="the trusted root"):
            return _DurableUpdater(str(self._dir), f"{self._base}/metadata/", fetcher=self._fetcher,
                                   config=self._config, bootstrap=self._root)

    def _refreshed(self) -> Updater:
        updater = self._updater()
        with self._translated():
            updater.refresh()
        return updater

    def _signed(self, target_path: str) -> tuple[Updater, TargetFile]:
        """Refresh, then the signed entry of ``target_path``."""
        updater = self._refreshed()
        with self._translated(target_path):
            info = updater.get_targetinfo(target_path)
        if info is None:
            raise BadTarget(f"target {target_path!r} is not signed: {self._signed_by()} does not list it",
                            path=target_path)
        return updater, info

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
        except OSError as exc:  # the cache cannot be written (a full disk, say): ask again later
            raise Unreachable(f"the TUF cache in {self._dir} cannot be written: {exc.strerror or exc}") from None
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


class _DurableUpdater(Updater):
    """python-tuf's updater, persisting what it verified durably: each metadata file through a
    temporary file, fsync, rename and fsync of the directory, and ``root.json`` pointed at the
    newest root by a new link renamed over the old one (python-tuf writes without fsync, and
    removes the link before making the new one)."""

    def _persist_file(self, filename: str, data: bytes) -> None:
        write_atomic(Path(filename), data)

    def _update_root_symlink(self) -> None:
        link = Path(self._dir, "root.json")
        fresh = link.with_name(".root.json.new")
        with contextlib.suppress(FileNotFoundError):
            fresh.unlink()
        os.symlink(os.path.join("root_history", f"{self._trusted_set.root.version}.root.json"), fresh)
        os.replace(fresh, link)
        sync_directory(link.parent)


class _Recorder(FetcherInterface):
    """Passes fetches through and keeps the last URL and the bytes received from it, so an error
    can name the file, role and version it was about. Holds a call's deadline: handed to a
    fetcher that enforces one while bytes arrive (``deadline`` attribute, as
    :class:`~ringfence.trust.fetchers.HttpxFetcher` has), and checked here between chunks."""

    def __init__(self, inner: FetcherInterface) -> None:
        self.inner = inner
        self.attempted: str | None = None
        """The last URL asked for."""
        self.url: str | None = None
        """The last URL that answered; ``data`` holds what it sent."""
        self.data = bytearray()
        self.deadline: float | None = None

    def reset(self) -> None:
        self.attempted, self.url, self.data = None, None, bytearray()

    def set_deadline(self, deadline: float | None) -> None:
        self.deadline = deadline
        if hasattr(self.inner, "deadline"):
            self.inner.deadline = deadline

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.attempted = url
        self._check(url)
        chunks = self.inner.fetch(url)
        self.url, self.data = url, bytearray()
        return self._recorded(url, chunks)

    def _recorded(self, url: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self._check(url)
            self.data += chunk
            yield chunk

    def _check(self, url: str) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise SlowRetrievalError(f"GET {url}: the time allowed ran out")


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

"""How a :class:`~ringfence.trust.client.TrustClient` reaches the repository: python-tuf's one
I/O seam (``FetcherInterface._fetch``) and its in-memory twin.

:class:`HttpxFetcher` speaks HTTP through an ``httpx.Client`` and can carry the device's bearer
credential; every GET finishes within its timeout (a wall-clock deadline, however slowly the bytes
trickle: :mod:`ringfence.deadlines`) and before the fetcher's :attr:`~HttpxFetcher.deadline`, an
operation's budget. :class:`LoopbackFetcher` serves a repository's bytes in-process, with no sockets, and
records every URL it was asked for; tests and the simulator use it the way httpx's tests use
``MockTransport``.

Both raise only python-tuf's download errors (``DownloadHTTPError`` for an HTTP status,
``SlowRetrievalError`` for a timeout, ``DownloadError`` for anything else in the transfer), which
the client turns into :class:`~ringfence.trust.errors.Unreachable`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Protocol
from urllib.parse import unquote

import httpx
from tuf.api.exceptions import DownloadError, DownloadHTTPError, SlowRetrievalError
from tuf.ngclient.fetcher import FetcherInterface

from ringfence.deadlines import Exchange
from ringfence.trust.errors import NotPublished


class HttpxFetcher(FetcherInterface):
    """GET over httpx, streamed in chunks.

    Args:
        client: the client to send with (its TLS settings, proxies and headers apply); a new one is
            made, and owned, when None.
        credential: sent as ``Authorization: Bearer ...`` when set; may be changed later.
        timeout: seconds for the whole of one GET, from connecting to the last byte.
    """

    def __init__(self, client: httpx.Client | None = None, *, credential: str | None = None,
                 timeout: float = 10.0) -> None:
        self._owned = client is None
        self._client = client or httpx.Client(headers={"user-agent": "ringfence-agent"})
        self.credential = credential
        self._timeout = timeout
        self.deadline: float | None = None
        """``time.monotonic()`` by which every GET must have finished (an operation's budget), or None."""

    def close(self) -> None:
        if self._owned:
            self._client.close()

    def _fetch(self, url: str) -> Iterator[bytes]:
        headers = {"authorization": f"Bearer {self.credential}"} if self.credential else {}
        request = self._client.build_request("GET", url, headers=headers, timeout=self._timeout)
        deadline = min(time.monotonic() + self._timeout, math.inf if self.deadline is None else self.deadline)
        try:
            exchange = Exchange(self._client, request, deadline)
        except httpx.TimeoutException as exc:
            raise SlowRetrievalError(f"GET {url}: timed out ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise DownloadError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
        if exchange.response.status_code != 200:
            exchange.close()
            raise DownloadHTTPError(f"GET {url}: HTTP {exchange.response.status_code}", exchange.response.status_code)
        return self._chunks(url, exchange)

    @staticmethod
    def _chunks(url: str, exchange: Exchange) -> Iterator[bytes]:
        with exchange:
            try:
                yield from exchange.pieces()
            except httpx.TimeoutException as exc:
                raise SlowRetrievalError(f"GET {url}: timed out while reading ({type(exc).__name__})") from exc
            except httpx.HTTPError as exc:
                raise DownloadError(f"GET {url}: {type(exc).__name__}: {exc}") from exc


class Published(Protocol):
    """What a repository serves (``TrustRepository`` is one)."""

    def metadata_bytes(self, name: str) -> bytes: ...

    def target_bytes(self, path: str) -> bytes: ...


class LoopbackFetcher(FetcherInterface):
    """Serves ``repository`` under ``base_url`` in-process, laid out as the server lays it out
    (``{base_url}/metadata/{name}``, ``{base_url}/targets/{path}``). ``fetched`` lists every URL
    requested, in order."""

    def __init__(self, repository: Published, base_url: str = "http://repository.invalid/tuf") -> None:
        self.repository = repository
        self.base_url = base_url.rstrip("/")
        self.fetched: list[str] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        self.fetched.append(url)
        return iter([self.serve(url)])

    def serve(self, url: str) -> bytes:
        """The bytes at ``url``, or ``DownloadHTTPError`` 404 (override to simulate a server)."""
        prefix = f"{self.base_url}/"
        if not url.startswith(prefix):
            raise DownloadHTTPError(f"GET {url}: not under {self.base_url}", 404)
        kind, _, name = url[len(prefix):].partition("/")
        try:
            if kind == "metadata":
                return self.repository.metadata_bytes(unquote(name))
            if kind == "targets":
                return self.repository.target_bytes(unquote(name))
        except NotPublished as exc:
            raise DownloadHTTPError(f"GET {url}: HTTP 404 ({exc.message})", 404) from None
        raise DownloadHTTPError(f"GET {url}: HTTP 404", 404)

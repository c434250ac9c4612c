"""How the agent talks to the control plane: one narrow seam.

Errors, by what the agent should do about them::

    TransportError
    ├── Unreachable      no answer, a timeout, or a 5xx: keep running, back off, try again
    └── Rejected         the server answered 4xx: this request will not succeed as sent
        └── Unauthorized the credential (or enrolment token) is not accepted

:class:`HttpTransport` speaks the agent API over httpx. It takes an optional ``httpx.Client``
so tests can run the agent against an in-process server. Every exchange finishes within its
timeout, a wall-clock deadline however slowly the server sends (:mod:`ringfence.deadlines`): a
check-in, a revocation check, a whole download.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

import httpx

from ringfence.deadlines import Exchange, within


class TransportError(Exception):
    pass


class Unreachable(TransportError):
    pass


class Rejected(TransportError):
    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


class Unauthorized(Rejected):
    pass


class DownloadTooLarge(TransportError):
    pass


class Transport(Protocol):
    def enroll(self, token: str, attributes: dict[str, Any]) -> dict[str, Any]: ...

    def checkin(self, credential: str, body: dict[str, Any], timeout: float) -> dict[str, Any]: ...

    def revocations(self, credential: str, versions: dict[str, str], timeout: float) -> dict[str, Any]: ...

    def download(self, credential: str, url: str, part: Path, limit: int, timeout: float) -> None:
        """Append the artifact at ``url`` to ``part`` (resuming where it stops), at most
        ``limit`` bytes in all; fsynced when this returns. What arrived by ``timeout`` stays
        in ``part`` for the next try to resume."""
        ...


class HttpTransport:
    def __init__(self, server: str, client: httpx.Client | None = None, timeout: float = 10.0) -> None:
        self.server = server.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout, headers={"user-agent": "ringfence-agent"})
        self._timeout = timeout

    @property
    def client(self) -> httpx.Client:
        """The HTTP client it sends with (the agent's TUF fetchers share it)."""
        return self._client

    def close(self) -> None:
        self._client.close()

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.server}{path}"

    def _post(self, path: str, secret: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        request = self._client.build_request("POST", self._url(path), json=body, timeout=timeout,
                                             headers={"authorization": f"Bearer {secret}"})
        try:
            with Exchange(self._client, request, within(timeout)) as exchange:
                status, content = exchange.response.status_code, exchange.read()
        except httpx.HTTPError as exc:
            raise Unreachable(f"{path}: {type(exc).__name__}: {exc}") from exc
        return answer(status, content, path)

    def enroll(self, token: str, attributes: dict[str, Any]) -> dict[str, Any]:
        return self._post("/v1/agent/enroll", token, attributes, self._timeout)

    def checkin(self, credential: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        return self._post("/v1/agent/checkin", credential, body, timeout)

    def revocations(self, credential: str, versions: dict[str, str], timeout: float) -> dict[str, Any]:
        return self._post("/v1/agent/revocations", credential, {"versions": versions}, timeout)

    def download(self, credential: str, url: str, part: Path, limit: int, timeout: float) -> None:
        have = part.stat().st_size if part.exists() else 0
        headers = {"authorization": f"Bearer {credential}"}
        if have:
            headers["range"] = f"bytes={have}-"
        request = self._client.build_request("GET", self._url(url), headers=headers, timeout=timeout)
        try:
            with Exchange(self._client, request, within(timeout)) as exchange:
                response = exchange.response
                if response.status_code == 416:  # we already hold every byte (or more: start over)
                    if have > limit:
                        part.unlink()
                    return
                if response.status_code >= 400:
                    error = classify(response.status_code, exchange.read(), url)
                    assert error is not None
                    raise error
                # A partial answer must start where our bytes end; anything else starts over.
                resumed = response.status_code == 206 and response.headers.get(
                    "content-range", "").startswith(f"bytes {have}-")
                if response.status_code == 206 and not resumed:
                    part.unlink()
                    raise Unreachable(f"{url}: the server resumed at the wrong offset "
                                      f"({response.headers.get('content-range')!r}); starting over")
                with open(part, "ab" if resumed else "wb") as f:
                    written = have if resumed else 0
                    try:
                        for chunk in exchange.pieces():
                            written += len(chunk)
                            if written > limit:
                                raise DownloadTooLarge(f"{url} is larger than the {limit} bytes allowed")
                            f.write(chunk)
                    finally:  # what arrived is kept for the next try to resume from
                        f.flush()
                        os.fsync(f.fileno())
        except httpx.HTTPError as exc:
            raise Unreachable(f"{url}: {type(exc).__name__}: {exc}") from exc


def classify(status: int, content: bytes, what: str) -> TransportError | None:
    """What an answer of the agent API means, for the agent and the live fleet alike: None (a
    success), :class:`Unreachable` (a 5xx, 408 or 429: try again later) or :class:`Rejected` /
    :class:`Unauthorized` (a 4xx in the project's error shape, or its first 200 bytes)."""
    if status < 400:
        return None
    if status >= 500 or status in (408, 429):
        return Unreachable(f"{what}: the server answered {status}")
    details: dict[str, Any] = {}
    try:
        error = json.loads(content)["error"]
        code, message = str(error["code"]), str(error["message"])
        details = error.get("details") if isinstance(error.get("details"), dict) else {}
    except (ValueError, KeyError, TypeError, AttributeError):
        code, message = "error", content[:200].decode("utf-8", "replace")
    return (Unauthorized if status in (401, 403) else Rejected)(status, code, message, details)


def answer(status: int, content: bytes, what: str) -> dict[str, Any]:
    """The JSON object a successful answer carries.

    Raises:
        TransportError: what :func:`classify` makes of the answer, or :class:`Unreachable` for a
            success that is not a JSON object (a proxy's page, say: not an answer from the server).
    """
    error = classify(status, content, what)
    if error is not None:
        raise error
    try:
        result = json.loads(content)
    except ValueError:
        result = None
    if not isinstance(result, dict):
        raise Unreachable(f"{what}: the answer ({status}) is not a JSON object")
    return result

"""How the agent talks to the control plane: one narrow seam.

Errors, by what the agent should do about them::

    TransportError
    ├── Unreachable      no answer, a timeout, or a 5xx: keep running, back off, try again
    └── Rejected         the server answered 4xx: this request will not succeed as sent
        └── Unauthorized the credential (or enrolment token) is not accepted

:class:`HttpTransport` speaks the agent API over httpx. It takes an optional ``httpx.Client``
so tests can run the agent against an in-process server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import httpx


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
        ``limit`` bytes in all; fsynced when this returns."""
        ...


_CHUNK = 1 << 16


class HttpTransport:
    def __init__(self, server: str, client: httpx.Client | None = None, timeout: float = 10.0) -> None:
        self.server = server.rstrip("/")
        self._client = client or httpx.Client(timeout=timeout, headers={"user-agent": "ringfence-agent"})
        self._timeout = timeout

    def close(self) -> None:
        self._client.close()

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else f"{self.server}{path}"

    def _post(self, path: str, secret: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
        try:
            response = self._client.post(self._url(path), json=body, timeout=timeout,
                                         headers={"authorization": f"Bearer {secret}"})
        except httpx.HTTPError as exc:
            raise Unreachable(f"{path}: {type(exc).__name__}: {exc}") from exc
        _raise_for(response, path)
        try:
            result = response.json()
        except ValueError:
            result = None
        if not isinstance(result, dict):  # a proxy's error page, say: not an answer from the server
            raise Unreachable(f"{path}: the answer ({response.status_code}) is not a JSON object")
        return result

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
        try:
            with self._client.stream("GET", self._url(url), headers=headers, timeout=timeout) as response:
                if response.status_code == 416:  # we already hold every byte (or more: start over)
                    if have > limit:
                        part.unlink()
                    return
                _raise_for(response, url)
                # A partial answer must start where our bytes end; anything else starts over.
                resumed = response.status_code == 206 and response.headers.get(
                    "content-range", "").startswith(f"bytes {have}-")
                if response.status_code == 206 and not resumed:
                    part.unlink()
                    raise Unreachable(f"{url}: the server resumed at the wrong offset "
                                      f"({response.headers.get('content-range')!r}); starting over")
                with open(part, "ab" if resumed else "wb") as f:
                    written = have if resumed else 0
                    for chunk in response.iter_bytes(_CHUNK):
                        written += len(chunk)
                        if written > limit:
                            raise DownloadTooLarge(f"{url} is larger than the {limit} bytes allowed")
                        f.write(chunk)
                    f.flush()
                    os.fsync(f.fileno())
        except httpx.HTTPError as exc:
            raise Unreachable(f"{url}: {type(exc).__name__}: {exc}") from exc


def _raise_for(response: httpx.Response, what: str) -> None:
    status = response.status_code
    if status < 400:
        return
    if status >= 500 or status in (408, 429):
        raise Unreachable(f"{what}: the server answered {status}")
    if response.is_stream_consumed is False:
        response.read()
    details: dict[str, Any] = {}
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
        details = error.get("details") if isinstance(error.get("details"), dict) else {}
    except (ValueError, KeyError, TypeError, AttributeError):
        code, message = "error", response.text[:200]
    cls = Unauthorized if status in (401, 403) else Rejected
    raise cls(status, code, message, details)

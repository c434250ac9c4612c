"""A small HTTP client of the Ringfence API, and the CLI's exit codes.

Errors from the server arrive in the one error shape and become :class:`ApiError` with the
server's message; transport failures become :class:`ApiError` with status 0. Exit codes::

    0 ok   1 unexpected   2 invalid input (also usage errors)   3 not authorised
    4 not found   5 conflict (state or race)   6 server or database unavailable
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx

DEFAULT_SERVER = "http://127.0.0.1:8470"

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_AUTH, EXIT_NOT_FOUND, EXIT_CONFLICT, EXIT_UNAVAILABLE = range(7)


def exit_code_for(status: int) -> int:
    if status == 0 or status in (502, 503, 504):
        return EXIT_UNAVAILABLE
    if status in (401, 403):
        return EXIT_AUTH
    if status == 404:
        return EXIT_NOT_FOUND
    if status == 409:
        return EXIT_CONFLICT
    if status in (400, 413, 422):
        return EXIT_INVALID
    return EXIT_ERROR


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}

    @property
    def exit_code(self) -> int:
        return exit_code_for(self.status)


class Client:
    def __init__(self, server: str | None = None, token: str | None = None, timeout: float = 30.0) -> None:
        self.server = (server or os.environ.get("RINGFENCE_SERVER") or DEFAULT_SERVER).rstrip("/")
        self.token = token or os.environ.get("RINGFENCE_TOKEN") or None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiError(0, "unreachable", f"cannot reach the Ringfence server at {self.server}: {exc}") from None
        if response.status_code >= 400:
            raise _error(response)
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs)

    def upload(self, path: str, chunks: Iterator[bytes], size: int, params: dict[str, str]) -> Any:
        return self.request("POST", path, content=chunks, params=params,
                            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})


def _error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()["error"]
        return ApiError(response.status_code, body.get("code", "error"), body.get("message", response.text),
                        body.get("details"))
    except (ValueError, KeyError, TypeError):
        return ApiError(response.status_code, "error", f"HTTP {response.status_code}: {response.text[:200]}")

"""The one JSON error shape, for every 4xx and 5xx::

    {"error": {"status": 404, "code": "not_found", "message": "no release 'rel-x'", "details": {...}}}

Every exception from ``ringfence.core.errors`` maps to a status here; ``tests/integration/
test_error_shape.py`` pins the shape and the mapping.

Every refusal (4xx) is logged at WARNING on ``ringfence.server`` with method, path (without the
query string), client address, status, code and message — never headers or bodies, so no
credential — so refused requests, probing included, leave a trace (fields ``method``, ``path``,
``client``, ``status``, ``code`` in ``--log-format json``).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ringfence.core import errors as e

log = logging.getLogger("ringfence.server")

STATUS: dict[type[e.RingfenceError], int] = {
    e.InvalidInput: 400,
    e.PlanError: 400,
    e.Unauthorized: 401,
    e.Forbidden: 403,
    e.NotFound: 404,
    e.Conflict: 409,
    e.TransitionRejected: 409,
    e.PayloadTooLarge: 413,
    e.Unavailable: 503,
}

_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "payload_too_large", 422: "invalid_input",
               429: "too_many_requests", 503: "unavailable"}


def status_of(exc: e.RingfenceError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_body(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"status": status, "code": code, "message": message, "details": details or {}}}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, code, message, details), status_code=status, headers=headers)


def refused(request: Request, status: int, code: str, message: str) -> None:
    """Log a refused request (4xx): who asked for what and why it was refused."""
    if 400 <= status < 500:
        client = request.client.host if request.client is not None else None
        log.warning("refused %s %s from %s: %d %s: %s", request.method, request.url.path, client, status, code,
                    message, extra={"method": request.method, "path": request.url.path, "client": client,
                                    "status": status, "code": code})


def install(app: FastAPI) -> None:
    @app.exception_handler(e.RingfenceError)
    async def _domain(request: Request, exc: e.RingfenceError) -> JSONResponse:
        status = status_of(exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        refused(request, status, exc.code, exc.message)
        return error_response(status, exc.code, exc.message, _jsonable(exc.details), headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"field": ".".join(str(p) for p in err.get("loc", ()) if p != "body"),
                     "message": err.get("msg", "invalid")} for err in exc.errors()]
        first = problems[0] if problems else {"field": "?", "message": "invalid request"}
        message = f"{first['field']}: {first['message']}"
        refused(request, 422, "invalid_input", message)
        return error_response(422, "invalid_input", message, {"problems": problems})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        refused(request, exc.status_code, code, str(exc.detail))
        return error_response(exc.status_code, code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        return error_response(500, "internal", "internal server error; the server log has the details")


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in details.items():
        out[key] = value if isinstance(value, str | int | float | bool | list | dict | type(None)) else str(value)
    return out

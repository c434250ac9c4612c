"""The dashboard: what is rolling where, what halted it and why, and the buttons to act.

The pages are static HTML (``ui/shell.html`` around each page's ``ui/NAME.html``) with one
hand-written script and one style sheet; the script renders everything from the JSON API with
the person's API token and polls it every two seconds, so a halt shows without a reload. The token lives in the tab's
``sessionStorage`` and travels only as ``Authorization: Bearer``: no cookie carries it, so no
page of another site can make the browser act with it (no CSRF), and it never appears in a URL.
The shells themselves hold no data and need no token; every datum comes from an endpoint that
checks the token and the role, so a viewer's browser can show an operator's buttons only as
disabled, and the server refuses the call anyway.

Two read endpoints here serve what the public API has no single call for: the rollouts list with
each one's progress per wave and the fleet in counts (``/ui/data/overview``), and a rollout's
failure curves per stratum (``/ui/data/rollouts/{id}/curves``). They take the same tokens and
roles as ``GET /v1/releases`` (any role, no tenant tokens). None of these routes is in the
OpenAPI schema: they are the dashboard's, not the API's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from ringfence.core.errors import NotFound
from ringfence.server import auth
from ringfence.server.auth import Actor
from ringfence.store import overview

router = APIRouter(include_in_schema=False)
Reader = Annotated[Actor, Depends(auth.reader)]

UI = Path(__file__).resolve().parent / "ui"
_ASSETS = {"dashboard.js": "text/javascript; charset=utf-8", "dashboard.css": "text/css; charset=utf-8"}
# The pages load their script and styles from here only, and talk to this server only.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY"}


_BRAND = '<header class="bar"><a class="brand" href="/">Ringfence</a></header>'


def _page(name: str, title: str) -> HTMLResponse:
    """A page: the shell (head, and the bar with navigation; the sign-in page has the name only) around
    the page's own ``ui/NAME.html``."""
    text = (UI / "shell.html").read_text(encoding="utf-8")
    bar = _BRAND if name == "login" else (UI / "bar.html").read_text(encoding="utf-8")
    body = (UI / f"{name}.html").read_text(encoding="utf-8")
    html = (text.replace("{title}", title).replace("{page}", name).replace("<!--header-->", bar.rstrip("\n"))
            .replace("{body}", body))
    return HTMLResponse(html, headers={**_HEADERS, "Cache-Control": "no-store"})


@router.get("/")
def rollouts_page() -> HTMLResponse:
    """The rollouts and the fleet."""
    return _page("rollouts", "Rollouts")


@router.get("/ui/rollouts/{release_id}")
def rollout_page(release_id: str) -> HTMLResponse:
    """One rollout: waves, health per stratum, history, validation, approvals; the script reads
    the release id from the address."""
    return _page("rollout", "Rollout")


@router.get("/ui/audit")
def audit_page() -> HTMLResponse:
    return _page("audit", "Audit log")


@router.get("/ui/login")
def login_page() -> HTMLResponse:
    return _page("login", "Sign in")


@router.get("/ui/static/{name}")
def asset(name: str) -> Response:
    """The script and the style sheet (a fixed list: no path reaches outside ``ui/``)."""
    media = _ASSETS.get(name)
    if media is None:
        raise NotFound(f"no dashboard asset {name!r}", name=name)
    return Response((UI / name).read_bytes(), media_type=media,
                    headers={**_HEADERS, "Cache-Control": "no-cache"})


@router.get("/ui/data/overview")
def overview_data(_: Reader, request: Request,
                  limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    """The newest rollouts with their progress per wave and last transition, and the fleet."""
    rt = auth.runtime(request)
    with rt.db.session() as s:
        return {"rollouts": overview.rollouts(s, limit), "fleet": overview.fleet(s)}


@router.get("/ui/data/rollouts/{release_id}/curves")
def curves_data(release_id: str, _: Reader, request: Request,
                points: Annotated[int, Query(ge=2, le=200)] = 40) -> dict[str, Any]:
    """Share of exposed and of control devices failed over the rollout, per stratum."""
    rt = auth.runtime(request)
    with rt.db.session() as s:
        return overview.curves(s, release_id, rt.clock.now(), points)

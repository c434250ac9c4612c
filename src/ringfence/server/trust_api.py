"""The TUF repository over HTTP: what agents verify artifacts and revocations with
(:class:`ringfence.trust.TrustClient` asks for exactly these URLs under ``/v1/tuf``).

Metadata is served to enrolled devices and to people with a token; it holds no secret, but the
list of artifacts is not for the public. ``POST /v1/tuf/reload`` takes a key rotation in: the
server reads its online keys again and accepts what ``ringfence keys`` published.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ringfence.core.errors import Forbidden, NotFound
from ringfence.server import auth
from ringfence.server.auth import Actor
from ringfence.trust import TrustRepository

router = APIRouter(prefix="/v1/tuf")
Admin = Annotated[Actor, Depends(auth.admin)]
_HEADERS = {"Cache-Control": "no-cache"}


def _repository(request: Request) -> TrustRepository:
    if auth.device(request) is None:
        auth.actor(request, auth.READ)
    trust = auth.runtime(request).trust
    if trust is None:
        raise NotFound("signed delivery is off on this server: it has no TUF keys")
    return trust


@router.get("/metadata/{name}")
def metadata(name: str, request: Request) -> Response:
    return Response(_repository(request).metadata_bytes(name), media_type="application/json", headers=_HEADERS)


@router.get("/targets/{path:path}")
def target(path: str, request: Request) -> Response:
    return Response(_repository(request).target_bytes(path), media_type="application/octet-stream",
                    headers=_HEADERS)


@router.post("/reload")
def reload(who: Admin, request: Request) -> dict[str, Any]:
    """Read the online keys again and accept newly published root and targets metadata."""
    rt = auth.runtime(request)
    if who.team is not None:
        raise Forbidden("only a global admin reloads the server's signing keys", team=who.team)
    accepted = rt.reload_trust()
    with rt.db.session() as s:
        auth.audit(s, request, who, "tuf.reload", details={"accepted": accepted})
    assert rt.trust is not None
    return {"accepted": accepted, "versions": rt.trust.versions()}

"""The admin API: content types, artifacts, releases, rollouts, devices, enrolment tokens.

Routes own their transaction (``rt.db.session()``) and run database work in a worker thread;
every phase change goes through :func:`ringfence.store.releases.apply_intent` and is followed by
a reload of the check-in snapshot, so the fleet sees it at its next check-in.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from ringfence.core.errors import Conflict, Forbidden, InvalidInput, NotFound, PayloadTooLarge
from ringfence.core.models import check_sha256, check_version, parse_category
from ringfence.core.plan import parse_plan
from ringfence.core.rollout import OPERATOR_INTENTS, Intent, Phase
from ringfence.delivery.blobs import BlobStore
from ringfence.engine.reconciler import Observations, step
from ringfence.server import auth
from ringfence.server.auth import Actor
from ringfence.server.gate import owned_content_type, owned_release, required_approvals, start_gate
from ringfence.server.schemas import ContentTypeIn, DefinitionIn, EnrollTokenIn, ReasonIn, ReleaseIn
from ringfence.store import access, alerts, releases, validations
from ringfence.store.schema import ContentTypeRow, TeamRow
from ringfence.store.telemetry import rollout_status
from ringfence.trust import PublishError
from ringfence.validation import ContentTypeDefinition, ValidationResult, validate

router = APIRouter(prefix="/v1")
Reader = Annotated[Actor, Depends(auth.reader)]
Operator = Annotated[Actor, Depends(auth.operator)]
Releaser = Annotated[Actor, Depends(auth.releaser)]
Admin = Annotated[Actor, Depends(auth.admin)]
TenantReader = Annotated[Actor, Depends(auth.tenant_reader)]
TenantAdmin = Annotated[Actor, Depends(auth.tenant_admin)]


@router.post("/content-types", status_code=201)
def create_content_type(body: ContentTypeIn, who: Admin, request: Request) -> dict[str, Any]:
    rt = auth.runtime(request)
    category = parse_category(body.category)
    team = body.team if body.team is not None else who.team
    auth.require_owner(who, team, f"content type {body.name}")
    with rt.db.session() as s:
        if team is not None and s.get(TeamRow, team) is None:
            raise InvalidInput(f"no team named {team!r}; create it first", field="team", value=team)
        row = releases.create_content_type(s, body.name, category, actor=who.name, now=rt.clock.now(),
                                           definition=body.definition, definition_dir=body.definition_dir,
                                           unvalidated_reason=body.unvalidated_reason, team=team)
        auth.audit(s, request, who, "content-type.create", target=row.name, reason=row.unvalidated_reason or "",
                   details={"category": row.category, "team": team, "validated": row.definition is not None})
        return _content_type_json(row)


def _content_type_json(row: ContentTypeRow) -> dict[str, Any]:
    if row.definition is None:
        return {"name": row.name, "category": row.category, "team": row.team, "validated": False,
                "unvalidated_reason": row.unvalidated_reason}
    return {"name": row.name, "category": row.category, "team": row.team, "validated": True,
            "definition_dir": row.definition_dir}


@router.put("/content-types/{name:path}/definition")
def define_content_type(name: str, body: DefinitionIn, who: Admin, request: Request) -> dict[str, Any]:
    """Give a content type a new definition; later releases are validated against it, and a
    release not yet started can be validated again (``POST /v1/releases/{id}/validate``)."""
    rt = auth.runtime(request)
    with rt.db.session() as s:
        auth.require_owner(who, releases.get_content_type(s, name).team, f"content type {name}")
        row = releases.define_content_type(s, name, definition=body.definition, definition_dir=body.definition_dir)
        auth.audit(s, request, who, "content-type.define", target=name,
                   details={"definition_dir": body.definition_dir})
        return _content_type_json(row)


@router.get("/content-types")
def list_content_types(_: Reader, request: Request) -> dict[str, Any]:
    rt = auth.runtime(request)
    with rt.db.session() as s:
        return {"content_types": [_content_type_json(r) for r in releases.list_content_types(s)]}


@router.get("/content-types/{name:path}")
def get_content_type(name: str, _: Reader, request: Request) -> dict[str, Any]:
    """One content type with its definition (text and the server's directory for its consumer)
    and the consumer versions devices report, for ``ringfence validate --type``."""
    rt = auth.runtime(request)
    with rt.db.session() as s:
        row = releases.get_content_type(s, name)
        definition = validations.definition_of(s, name)
        live = validations.live_consumer_versions(s, definition) if definition is not None else ()
        return {**_content_type_json(row), "definition": row.definition, "definition_dir": row.definition_dir,
                "live_consumer_versions": list(live),
                "required_validators": list(validations.required_validators(definition)) if definition else []}


@router.post("/artifacts", status_code=201)
async def push_artifact(
    request: Request,
    content_type: Annotated[str, Query(max_length=128)],
    version: Annotated[str, Query(max_length=128)],
    sha256: Annotated[str | None, Query(description="declared hash; a mismatch is refused")] = None,
) -> dict[str, Any]:
    """Upload an artifact as the raw request body (streamed, hashed, stored by sha256)."""
    rt = auth.runtime(request)
    who = await asyncio.to_thread(auth.releaser, request)
    check_version(version)
    if sha256 is not None:
        check_sha256(sha256)
    limit = rt.config.max_artifact_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"artifact of {declared} bytes is larger than the limit of {limit} bytes", limit=limit)

    def _known() -> None:
        with rt.db.session() as s:
            owned_content_type(s, who, content_type)
            releases.ensure_new_artifact(s, content_type, version)

    await asyncio.to_thread(_known)  # fail before reading a large body
    blob = await rt.blobs.put_stream(request.stream(), max_bytes=limit, declared_sha256=sha256)

    def _record() -> dict[str, Any]:
        with rt.db.session() as s:
            row = releases.create_artifact(s, content_type=content_type, version=version, sha256=blob.sha256,
                                           size=blob.size, actor=who.name, now=rt.clock.now())
            auth.audit(s, request, who, "artifact.push", target=f"{content_type} {version}",
                       details={"sha256": blob.sha256, "size": blob.size, "signed": rt.trust is not None})
            pushed = releases.artifact_dict(row)
            seq = row.id
        # Signed once committed (a failed commit leaves no signature behind); if signing fails
        # here, creating a release of it or the next start signs it.
        rt.sign_artifact(content_type, version, blob.sha256, blob.size, seq)
        return pushed

    return await asyncio.to_thread(_record)


@router.get("/artifacts")
def list_artifacts(_: Reader, request: Request, content_type: str | None = None) -> dict[str, Any]:
    rt = auth.runtime(request)
    with rt.db.session() as s:
        return {"artifacts": [releases.artifact_dict(r) for r in releases.list_artifacts(s, content_type)]}


@router.get("/artifacts/{sha256}", response_class=FileResponse)
def download_artifact(sha256: str, request: Request) -> FileResponse:
    """The artifact's bytes, for devices (device credential) and people (API token)."""
    rt = auth.runtime(request)
    if auth.device(request) is None:
        auth.actor(request, auth.READ)
    check_sha256(sha256)
    path = rt.blobs.path(sha256)
    if not path.is_file():
        raise NotFound(f"no artifact with sha256 {sha256}", sha256=sha256)
    return FileResponse(path, media_type="application/octet-stream",
                        headers={"Cache-Control": "public, max-age=31536000, immutable"})


@router.post("/releases", status_code=201)
async def create_release(body: ReleaseIn, request: Request) -> dict[str, Any]:
    rt = auth.runtime(request)
    who = await asyncio.to_thread(auth.releaser, request)

    def _create() -> dict[str, Any]:
        with rt.db.session() as s:  # short: nothing is held while the validators run
            owned_content_type(s, who, body.content_type)
            artifact = releases.find_artifact(s, body.content_type, body.version)
            if artifact is not None:  # signed at its push; again (a no-op) in case that failed
                try:
                    rt.sign_artifact(artifact.content_type, artifact.version, artifact.sha256, artifact.size,
                                     artifact.id)
                except PublishError as exc:
                    raise Conflict(f"artifact {body.content_type} {body.version} is not what was signed when it was "
                                   f"pushed ({exc.message}): the database or the blob store was changed; refusing "
                                   "to release it", content_type=body.content_type, version=body.version) from None
            judged = _validation_inputs(s, body.content_type, body.version, body.plan, body.plan_origin)
        results = _judge(*judged, rt.blobs) if judged is not None else ()
        now = rt.clock.now()
        with rt.db.session() as s:
            row = releases.create_release(s, content_type=body.content_type, version=body.version,
                                          plan_source=body.plan, plan_origin=body.plan_origin, actor=who.name,
                                          now=now, approvals_required=required_approvals(
                                              rt, releases.get_content_type(s, body.content_type)))
            if judged is not None:
                validations.record(s, row.id, results, now)
            for action in step(releases.rollout_state(row), releases.release_plan(row), Observations(), now):
                releases.apply_intent(s, row.id, action.intent, actor="system", reason=action.reason, now=now)
            alerts.on_validation(s, row, results, now)
            auth.audit(s, request, who, "release.create", target=row.id,
                       details={"content_type": row.content_type, "version": row.version, "plan": row.plan_name,
                                "validation": _tally(results) if judged is not None else "none"})
            return rollout_status(s, row.id, rt.clock.now(), rt.snapshot.wave_reach)

    return await asyncio.to_thread(_create)


@router.post("/releases/{release_id}/validate")
async def revalidate_release(release_id: str, request: Request) -> dict[str, Any]:
    """Run the content type's validators on a release again (after a consumer fix or a new
    definition) and replace its results; only before the rollout starts."""
    rt = auth.runtime(request)
    who = await asyncio.to_thread(auth.releaser, request)

    def _run() -> dict[str, Any]:
        with rt.db.session() as s:
            row = owned_release(s, who, release_id)
            _not_started(row.phase, release_id)
            judged = _validation_inputs(s, row.content_type, row.version, row.plan_source, row.plan_name)
            if judged is None:
                raise Conflict(f"content type {row.content_type} has no definition to validate against",
                               content_type=row.content_type)
        results = _judge(*judged, rt.blobs)
        now = rt.clock.now()
        with rt.db.session() as s:
            row = releases.get_release(s, release_id)
            _not_started(row.phase, release_id)  # it may have started while the validators ran
            releases.bump_unstarted(s, row)  # and a start racing this commit must fail, not start
            validations.replace(s, release_id, results, now)
            alerts.on_validation(s, row, results, now)
            releases.note(s, release_id, "validate", actor=who.name, now=now,
                          reason=f"validated again: {_tally(results)}")
            auth.audit(s, request, who, "release.validate", target=release_id, reason=_tally(results))
            return rollout_status(s, release_id, rt.clock.now(), rt.snapshot.wave_reach)

    return await asyncio.to_thread(_run)


def _not_started(phase: str, release_id: str) -> None:
    if phase not in (Phase.DRAFT, Phase.READY):
        raise Conflict(f"release {release_id} has started (phase {phase}); its validation is part of its record",
                       release=release_id, phase=phase)


def _tally(results: tuple[ValidationResult, ...]) -> str:
    counts = {status: sum(r.status == status for r in results) for status in ("passed", "failed", "error")}
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n) or "no results"


def _validation_inputs(s: Session, content_type: str, version: str, plan: str,
                       plan_origin: str) -> tuple[ContentTypeDefinition, str, tuple[str, ...]] | None:
    """What the validators need for a release (definition, artifact sha256, live consumer
    versions), or None for a content type without a definition. Refuses an unknown artifact or a
    bad plan before the validators spend seconds on it."""
    definition = validations.definition_of(s, content_type)
    if definition is None:
        return None
    parse_plan(plan, plan_origin, definition.category)
    artifact = releases.find_artifact(s, content_type, version)
    if artifact is None:
        raise NotFound(f"no artifact {content_type} {version}; push it first", content_type=content_type,
                       version=version)
    return definition, artifact.sha256, validations.live_consumer_versions(s, definition)


def _judge(definition: ContentTypeDefinition, sha256: str, live: tuple[str, ...],
           blobs: BlobStore) -> tuple[ValidationResult, ...]:
    """Every result of the definition's required validators on the stored artifact; a run that
    cannot start at all (unreadable artifact) is one ``error`` result, never a pass."""
    try:
        return validate(definition, blobs.path(sha256), live).ordered()
    except (OSError, InvalidInput) as exc:
        return (ValidationResult("validation", None, "error", f"validation could not run: {exc}"),)


@router.get("/releases")
def list_releases(_: Reader, request: Request, content_type: str | None = None,
                  phase: str | None = None) -> dict[str, Any]:
    rt = auth.runtime(request)
    if phase is not None and phase not in {p.value for p in Phase}:
        raise InvalidInput(f"unknown phase {phase!r}", field="phase", value=phase)
    with rt.db.session() as s:
        rows = releases.list_releases(s, content_type=content_type, phase=phase)
        return {"releases": [{"release": r.id, "content_type": r.content_type, "version": r.version,
                              "plan": r.plan_name, "phase": r.phase, "wave": r.wave,
                              "created_at": r.created_at.isoformat(), "created_by": r.created_by} for r in rows]}


@router.get("/releases/{release_id}")
@router.get("/rollouts/{release_id}")
def get_rollout(release_id: str, _: Reader, request: Request) -> dict[str, Any]:
    rt = auth.runtime(request)
    with rt.db.session() as s:
        return rollout_status(s, release_id, rt.clock.now(), rt.snapshot.wave_reach)


@router.post("/rollouts/{release_id}/{action}")
async def rollout_action(release_id: str, action: str, request: Request,
                         body: ReasonIn | None = None) -> dict[str, Any]:
    """start | pause | resume | halt | rollback, with an optional reason."""
    try:
        intent = Intent(action)
    except ValueError:
        intent = None
    if intent is None or intent not in OPERATOR_INTENTS:
        names = ", ".join(sorted(i.value for i in OPERATOR_INTENTS))
        raise NotFound(f"unknown rollout action {action!r}; expected one of {names}", action=action)
    needs = auth.RELEASE if intent is Intent.START else auth.OPERATE
    rt = auth.runtime(request)
    who = await asyncio.to_thread(auth.actor, request, needs)
    reason = body.reason if body else ""
    emergency = body.emergency if body else False
    if emergency and intent is not Intent.START:
        raise InvalidInput("emergency applies only to start", field="emergency", value=True)

    def _apply() -> dict[str, Any]:
        with rt.db.session() as s:
            owned_release(s, who, release_id)
            text, details = reason, None
            if intent is Intent.START:
                text, details = start_gate(s, rt, who, release_id, reason, emergency=emergency)
            releases.apply_intent(s, release_id, intent, actor=who.name, reason=text, now=rt.clock.now(),
                                  details=details, role=who.role, source=auth.source(request))
        with rt.db.session() as s:
            return rollout_status(s, release_id, rt.clock.now(), rt.snapshot.wave_reach)

    status = await asyncio.to_thread(_apply)
    await rt.reload_views()
    return status


@router.get("/devices")
def list_devices(
    who: TenantReader, request: Request,
    tenant: str | None = None, platform: str | None = None, os_version: str | None = None,
    arch: str | None = None, region: str | None = None, channel: str | None = None, tag: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    rt = auth.runtime(request)
    if who.tenant is not None:
        if tenant is not None:
            auth.require_tenant(who, tenant)
        tenant = who.tenant
    filters = {k: v for k, v in {"tenant": tenant, "platform": platform, "os_version": os_version, "arch": arch,
                                 "region": region, "channel": channel}.items() if v is not None}
    with rt.db.session() as s:
        total, page = access.list_devices(s, filters, tag=tag, limit=limit, offset=offset)
    return {"total": total, "limit": limit, "offset": offset, "devices": page}


@router.post("/enroll-tokens", status_code=201)
def create_enroll_token(body: EnrollTokenIn, who: TenantAdmin, request: Request) -> dict[str, Any]:
    rt = auth.runtime(request)
    auth.require_tenant(who, body.tenant)
    if who.team is not None:
        raise Forbidden(f"the token of {who.name} is for team {who.team!r}; enrolment is the fleet's admins' "
                        "or the tenant's", team=who.team)
    with rt.db.session() as s:
        token_id, secret = access.create_enroll_token(s, tenant=body.tenant, actor=who.name, now=rt.clock.now())
        auth.audit(s, request, who, "enroll-token.create", target=token_id, details={"tenant": body.tenant})
    return {"id": token_id, "tenant": body.tenant, "token": secret}


@router.get("/whoami")
def whoami(who: TenantReader) -> dict[str, Any]:
    return {"name": who.name, "role": who.role, "token_id": who.token_id, "team": who.team, "tenant": who.tenant}



"""Content-type definitions and the validation results of releases: the data of the start gate.

A content type may carry a definition (:mod:`ringfence.validation`); the validators it requires
run on a release's artifact when the release is created, and every result is kept here, one row
each. :func:`start_problems` is the gate: for a content type with a definition, a rollout may
start only when every validator required by the definition or by its category
(:data:`~ringfence.validation.CATEGORY_MINIMUM`) has results and every result passed. A content
type without a definition was registered so on purpose, with a reason (``unvalidated_reason``):
its rollouts start without validation, and the status and history say so.

Functions take a session (the caller owns the transaction) and return rows or values.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ringfence.core.clock import utc
from ringfence.core.errors import InvalidInput, PlanProblem
from ringfence.core.models import Category
from ringfence.core.yamlpath import line_of
from ringfence.store.schema import ContentTypeRow, DeviceVersion, HistoryRow, ValidationRow
from ringfence.validation import (
    CATEGORY_MINIMUM,
    ContentTypeDefinition,
    DefinitionError,
    ValidationResult,
    parse_definition,
)

NO_RESULTS = "no validation results were recorded for this release"
MIN_REASON = 10  # characters: skipping validation is explained, not waved through


def check_definition(name: str, category: Category, text: str, directory: str | None) -> ContentTypeDefinition:
    """Parse a definition offered for content type ``name``. Raises :class:`DefinitionError`
    (every bad field with its line) for a definition that does not validate or names another
    content type or category, and ``InvalidInput`` when ``directory`` is not an absolute path of
    an existing directory on this server (the definition's consumer commands run there)."""
    if directory is None:
        raise InvalidInput("definition_dir is required with a definition: the directory on the server where its "
                           "consumer commands run", field="definition_dir")
    base = Path(directory)
    if not base.is_absolute() or not base.is_dir():
        raise InvalidInput(f"definition_dir {directory!r} is not an absolute path of a directory on the server",
                           field="definition_dir", value=directory)
    source = f"definition of {name}"
    definition = parse_definition(text, source, base)
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    problems = []
    if definition.name != name:
        problems.append(PlanProblem("name", f"the definition is for {definition.name!r}, not {name!r}",
                                    line_of(root, ["name"])))
    if definition.category != category:
        problems.append(PlanProblem("category", f"the definition's category is {definition.category.value!r}, "
                                    f"the content type's {category.value!r}", line_of(root, ["category"])))
    elif gaps := definition.category_gaps():
        problems.append(PlanProblem("validators.required", f"category {category.value} requires "
                                    f"{', '.join(CATEGORY_MINIMUM[category])}; missing: {', '.join(gaps)}",
                                    line_of(root, ["validators", "required"])))
    if problems:
        raise DefinitionError(problems, source)
    return definition


def check_unvalidated(name: str, category: Category, reason: str | None) -> str:
    """The reason a content type is registered without a definition, checked: skipping
    validation must be explained in a sentence."""
    if reason is None or len(reason.strip()) < MIN_REASON:
        raise InvalidInput(f"content type {name!r} ({category.value}) has no definition: give one (its category "
                           f"requires the validators {', '.join(CATEGORY_MINIMUM[category])}), or say why it is "
                           f"registered without validation in unvalidated_reason (at least {MIN_REASON} characters)",
                           field="unvalidated_reason", value=reason)
    return reason.strip()


def required_validators(definition: ContentTypeDefinition) -> tuple[str, ...]:
    """What the gate requires results of: the definition's validators, then its category's."""
    return tuple(dict.fromkeys([*definition.validators.required, *CATEGORY_MINIMUM[definition.category]]))


def definition_of(s: Session, content_type: str) -> ContentTypeDefinition | None:
    """The content type's definition, or None when it has none (or does not exist)."""
    row = s.get(ContentTypeRow, content_type)
    if row is None or row.definition is None:
        return None
    return parse_definition(row.definition, f"definition of {content_type}",
                            Path(row.definition_dir) if row.definition_dir else None)


def live_consumer_versions(s: Session, definition: ContentTypeDefinition) -> tuple[str, ...]:
    """The versions devices report for the definition's consumer, when a content type of the
    consumer's name exists (the consumer is then itself delivered by Ringfence); otherwise none."""
    if definition.consumer is None or s.get(ContentTypeRow, definition.consumer.name) is None:
        return ()
    return tuple(s.scalars(select(DeviceVersion.version).where(DeviceVersion.content_type == definition.consumer.name)
                           .distinct().order_by(DeviceVersion.version)))


def record(s: Session, release_id: str, results: Iterable[ValidationResult], now: datetime) -> None:
    for r in results:
        s.add(ValidationRow(release_id=release_id, validator=r.validator, target=r.target, status=r.status,
                            message=r.message.replace("\x00", ""), details=r.details, at=now))
    s.flush()


def replace(s: Session, release_id: str, fresh: Iterable[ValidationResult], now: datetime) -> None:
    """Replace a release's results with a new run's (the gate judges the latest run only)."""
    s.execute(delete(ValidationRow).where(ValidationRow.release_id == release_id))
    record(s, release_id, fresh, now)


def results(s: Session, release_id: str) -> list[ValidationRow]:
    return list(s.scalars(select(ValidationRow).where(ValidationRow.release_id == release_id)
                          .order_by(ValidationRow.id)))


def start_problems(s: Session, release_id: str, content_type: str) -> list[str]:
    """Why the release may not start: each failed or error result as ``validator: message``
    (failures first), then each required validator without results, or :data:`NO_RESULTS`.
    Empty when it may start: every required validator passed, or the content type is registered
    without validation (with its reason)."""
    row = s.get(ContentTypeRow, content_type)
    if row is None:
        return []
    if row.definition is None:
        return [] if row.unvalidated_reason else [
            f"content type {content_type} has no definition and no reason to skip validation"]
    definition = definition_of(s, content_type)
    assert definition is not None
    rows = results(s, release_id)
    if not rows:
        return [NO_RESULTS]
    bad = sorted((r for r in rows if r.status != "passed"), key=lambda r: (r.status != "failed", r.id))
    ran = {r.validator for r in rows}
    missing = [f"{name}: not run, but required by {_required_by(definition, name)}"
               for name in required_validators(definition) if name not in ran]
    return [f"{r.validator}: {r.message}" for r in bad] + missing


def _required_by(definition: ContentTypeDefinition, validator: str) -> str:
    return (f"the definition of {definition.name}" if validator in definition.validators.required
            else f"category {definition.category.value}")


def validation_json(s: Session, release_id: str, content_type: str) -> dict[str, Any] | None:
    """``{ok, required, results, problems, emergency_override, unvalidated_reason}``, or None
    for an unknown content type. ``ok`` is whether the gate is open on validation's merits (never
    for a content type registered without validation); ``problems`` what keeps it closed;
    ``emergency_override`` the start that overrode it, if any."""
    row = s.get(ContentTypeRow, content_type)
    if row is None:
        return None
    definition = definition_of(s, content_type)
    rows = results(s, release_id)
    problems = start_problems(s, release_id, content_type) if definition is not None else []
    override = s.scalars(select(HistoryRow).where(HistoryRow.release_id == release_id, HistoryRow.intent == "start")
                         .order_by(HistoryRow.id)).all()
    emergency = next((h for h in override if h.details.get("emergency")), None)
    return {
        "ok": definition is not None and not problems,
        "required": list(required_validators(definition)) if definition is not None else [],
        "problems": problems,
        "unvalidated_reason": row.unvalidated_reason if definition is None else None,
        "results": [{"validator": r.validator, "target": r.target, "status": r.status, "message": r.message,
                     "details": r.details, "at": utc(r.at).isoformat()} for r in rows],
        "emergency_override": None if emergency is None else {
            "at": utc(emergency.at).isoformat(), "actor": emergency.actor, "reason": emergency.details.get("reason"),
            "checks": emergency.details.get("checks", []), "approved_by": emergency.details.get("approved_by")},
    }

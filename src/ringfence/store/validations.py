"""Content-type definitions and the validation results of releases: the data of the start gate.

A content type may carry a definition (:mod:`ringfence.validation`); the validators it requires
run on a release's artifact when the release is created, and every result is kept here, one row
each. :func:`start_problems` is the gate: for a content type with a definition, a rollout may
start only when results were recorded and every one of them passed. Content types without a
definition have no gate.

Functions take a session (the caller owns the transaction) and return rows or values.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from ringfence.core.clock import utc
from ringfence.core.errors import InvalidInput, PlanProblem
from ringfence.core.models import Category
from ringfence.core.yamlpath import line_of
from ringfence.store.schema import ContentTypeRow, DeviceVersion, HistoryRow, ValidationRow
from ringfence.validation import ContentTypeDefinition, DefinitionError, ValidationResult, parse_definition

NO_RESULTS = "no validation results were recorded for this release"


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
    if problems:
        raise DefinitionError(problems, source)
    return definition


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


def results(s: Session, release_id: str) -> list[ValidationRow]:
    return list(s.scalars(select(ValidationRow).where(ValidationRow.release_id == release_id)
                          .order_by(ValidationRow.id)))


def start_problems(s: Session, release_id: str, content_type: str) -> list[str]:
    """Why the release may not start: each failed or error result as ``validator: message``
    (failures first), or :data:`NO_RESULTS`. Empty when it may start, and always for a content
    type without a definition."""
    row = s.get(ContentTypeRow, content_type)
    if row is None or row.definition is None:
        return []
    rows = results(s, release_id)
    if not rows:
        return [NO_RESULTS]
    bad = sorted((r for r in rows if r.status != "passed"), key=lambda r: (r.status != "failed", r.id))
    return [f"{r.validator}: {r.message}" for r in bad]


def validation_json(s: Session, release_id: str, content_type: str) -> dict[str, Any] | None:
    """``{ok, results, emergency_override}`` for a release whose content type has a definition,
    else None. ``emergency_override`` is the start that overrode a failed validation, if any."""
    row = s.get(ContentTypeRow, content_type)
    if row is None or row.definition is None:
        return None
    rows = results(s, release_id)
    override = s.scalars(select(HistoryRow).where(HistoryRow.release_id == release_id, HistoryRow.intent == "start")
                         .order_by(HistoryRow.id)).all()
    emergency = next((h for h in override if h.details.get("emergency")), None)
    return {
        "ok": bool(rows) and all(r.status == "passed" for r in rows),
        "results": [{"validator": r.validator, "target": r.target, "status": r.status, "message": r.message,
                     "details": r.details, "at": utc(r.at).isoformat()} for r in rows],
        "emergency_override": None if emergency is None else {
            "at": utc(emergency.at).isoformat(), "actor": emergency.actor, "reason": emergency.details.get("reason"),
            "checks": emergency.details.get("checks", [])},
    }

"""Alert subscriptions (webhooks) and their durable outbox of deliveries.

Guarantees:

* A delivery is inserted in the caller's transaction, next to the change it announces: a
  committed halt has one pending delivery per subscription that wants ``halt``, and a
  transaction that rolls back leaves none. :func:`on_transition` is called by
  :func:`ringfence.store.releases.apply_intent` for every phase change (halt, rollback,
  completion, and a release becoming ready when it needs approvals); :func:`on_validation` by
  the routes that record validation results.
* A pending delivery is sent at least once. :func:`claim_due` hands due deliveries to one sender:
  on PostgreSQL with ``FOR UPDATE SKIP LOCKED`` (nodes never wait for each other's rows), and
  it moves ``next_attempt_at`` forward by a lease, so a node that dies while sending leaves the
  delivery to be claimed again when the lease lapses. Receivers deduplicate on the delivery id.
* Attempts are counted and kept (time, status code, error); a delivery ends ``delivered`` (a
  2xx answer) or ``failed`` (its last allowed attempt failed) and is never sent again.

Functions take a session (the caller owns the transaction) and return rows or values.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from ringfence.analysis.verdicts import Verdict
from ringfence.core.clock import utc
from ringfence.core.errors import InvalidInput, NotFound, PlanError
from ringfence.core.plan import parse_plan
from ringfence.core.rollout import Phase, Transition
from ringfence.store.schema import ReleaseRow, WebhookDeliveryRow, WebhookRow
from ringfence.validation import ValidationResult

EVENTS = ("halt", "rollback", "complete", "validation_failed", "approval_needed", "judge_error", "pause")
"""What a subscription may ask for (all of them by default). ``test`` is sent on request only."""

FORMATS = ("json", "slack")
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

_PHASE_EVENTS = {Phase.HALTED: "halt", Phase.ROLLING_BACK: "rollback", Phase.COMPLETED: "complete",
                 Phase.PAUSED: "pause"}
_MIN_SECRET = 16


# -- subscriptions ------------------------------------------------------------------------------

def create_webhook(s: Session, *, url: str, format: str, events: Sequence[str] | None, secret: str | None,
                   enabled: bool, actor: str, now: datetime) -> WebhookRow:
    """A subscription; without ``secret`` one is generated (the caller shows it once)."""
    check_url(url)
    if format not in FORMATS:
        raise InvalidInput(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}", field="format",
                           value=format)
    wanted = list(EVENTS) if events is None else _check_events(events)
    if secret is None:
        secret = "whsec_" + secrets.token_urlsafe(32)
    elif not _MIN_SECRET <= len(secret) <= 200:
        raise InvalidInput(f"a webhook secret has {_MIN_SECRET} to 200 characters", field="secret")
    row = WebhookRow(id="wh-" + uuid.uuid4().hex[:12], url=url, format=format, events=wanted, secret=secret,
                     enabled=enabled, created_at=now, created_by=actor)
    s.add(row)
    s.flush()
    return row


def check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(url) > 2000:
        raise InvalidInput(f"a webhook URL is http(s)://host/...; got {url!r}", field="url", value=url)


def _check_events(events: Sequence[str]) -> list[str]:
    unknown = [e for e in events if e not in EVENTS]
    if unknown or not events:
        raise InvalidInput(f"events are some of {', '.join(EVENTS)}; got {', '.join(unknown) or 'none'}",
                           field="events", value=list(events))
    return [e for e in EVENTS if e in events]


def list_webhooks(s: Session) -> list[WebhookRow]:
    return list(s.scalars(select(WebhookRow).order_by(WebhookRow.created_at, WebhookRow.id)))


def get_webhook(s: Session, webhook_id: str) -> WebhookRow:
    row = s.get(WebhookRow, webhook_id)
    if row is None:
        raise NotFound(f"no webhook {webhook_id!r}", webhook=webhook_id)
    return row


def delete_webhook(s: Session, webhook_id: str) -> WebhookRow:
    """Remove a subscription and its deliveries (pending ones are not sent)."""
    row = get_webhook(s, webhook_id)
    s.execute(delete(WebhookDeliveryRow).where(WebhookDeliveryRow.webhook_id == webhook_id))
    s.delete(row)
    s.flush()
    return row


def delivery_counts(s: Session) -> dict[str, dict[str, int]]:
    """Per subscription, how many deliveries are pending, delivered and failed."""
    counts: dict[str, dict[str, int]] = {}
    for webhook_id, status, n in s.execute(
            select(WebhookDeliveryRow.webhook_id, WebhookDeliveryRow.status, func.count())
            .group_by(WebhookDeliveryRow.webhook_id, WebhookDeliveryRow.status)):
        counts.setdefault(webhook_id, dict.fromkeys((PENDING, DELIVERED, FAILED), 0))[status] = int(n)
    return counts


def webhook_json(row: WebhookRow, counts: Mapping[str, int] | None = None, *, url: str | None = None) -> dict[str, Any]:
    """A subscription as the API shows it: never the secret; ``url`` to show another form of it."""
    return {"id": row.id, "url": url if url is not None else row.url, "format": row.format,
            "events": list(row.events), "enabled": row.enabled, "created_at": utc(row.created_at).isoformat(),
            "created_by": row.created_by,
            "deliveries": dict(counts or dict.fromkeys((PENDING, DELIVERED, FAILED), 0))}


# -- the outbox ---------------------------------------------------------------------------------

def enqueue(s: Session, event: str, payload: Mapping[str, Any], now: datetime, *,
            webhook_id: str | None = None, release_id: str | None = None) -> list[str]:
    """One pending delivery of ``payload`` per enabled subscription that wants ``event`` (or to
    ``webhook_id`` alone, whatever it wants: the test event); returns their ids."""
    if webhook_id is not None:
        targets = [get_webhook(s, webhook_id)]
    else:
        targets = [w for w in s.scalars(select(WebhookRow).where(WebhookRow.enabled.is_(True)))
                   if event in w.events]
    ids = []
    for webhook in targets:
        row = WebhookDeliveryRow(id=uuid.uuid4().hex, webhook_id=webhook.id, event=event, release_id=release_id,
                                 payload=dict(payload), status=PENDING, attempts=0, created_at=now,
                                 next_attempt_at=now, attempt_log=[])
        s.add(row)
        ids.append(row.id)
    if ids:
        s.flush()
    return ids


def _wanted(s: Session, event: str) -> bool:
    return any(event in w.events for w in s.scalars(select(WebhookRow).where(WebhookRow.enabled.is_(True))))


def on_transition(s: Session, row: ReleaseRow, entry: Transition, now: datetime) -> None:
    """Enqueue the alert a phase change calls for, if any: halt, rollback, completion, or a
    release that became ready and waits for approvals. ``row`` is the release as it was before
    the change (its phase columns are stale; ``entry`` has the new ones)."""
    event = _PHASE_EVENTS.get(entry.to_phase)
    if entry.to_phase is Phase.READY and row.approvals_required > 0:
        event = "approval_needed"
    if event is None or entry.from_phase is entry.to_phase or not _wanted(s, event):
        return
    reason = entry.reason
    if event == "approval_needed":
        reason = (f"release {row.id} of {row.content_type} {row.version} by {row.created_by} needs "
                  f"{row.approvals_required} approval{'s' if row.approvals_required != 1 else ''} from people other "
                  "than its author before it can start")
    details = {"intent": entry.intent.value, "actor": entry.actor, "from_phase": entry.from_phase.value,
               "from_wave": entry.from_wave, "wave_index": entry.to_wave, **dict(entry.details)}
    if event == "approval_needed":
        details["approvals_required"] = row.approvals_required
    enqueue(s, event, release_payload(event, row, phase=entry.to_phase.value, wave=entry.to_wave, reason=reason,
                                      at=now, details=details), now, release_id=row.id)


def on_judge_error(s: Session, row: ReleaseRow, errors: Sequence[Verdict], now: datetime) -> None:
    """Enqueue ``judge_error`` when a rolling wave's judges start failing to run: the wave holds
    (an error is never a pass) and, after the plan's ``error_pause_after``, pauses for a person."""
    if not errors or not _wanted(s, "judge_error"):
        return
    first = errors[0]
    reason = (f"{row.content_type} {row.version}: the {first.judge} judge could not run ({first.sentence}); "
              "the wave holds until it can")
    enqueue(s, "judge_error", release_payload("judge_error", row, phase=row.phase, wave=row.wave, reason=reason,
                                              at=now, details={"verdicts": [v.as_dict() for v in errors[:20]]}),
            now, release_id=row.id)


def on_validation(s: Session, row: ReleaseRow, results: Iterable[ValidationResult], now: datetime) -> None:
    """Enqueue ``validation_failed`` when any result of a release's validation failed or is an
    error (a validator that could not judge is never a pass)."""
    bad = [r for r in results if r.status in ("failed", "error")]
    if not bad or not _wanted(s, "validation_failed"):
        return
    counts = {status: sum(r.status == status for r in bad) for status in ("failed", "error")}
    tally = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    first = bad[0]
    reason = (f"validation of {row.content_type} {row.version}: {tally}; first: {first.validator}"
              f"{f' on {first.target}' if first.target else ''}: {first.message}")
    details = {"results": [r.as_dict() for r in bad[:20]], "failed": counts["failed"], "error": counts["error"]}
    enqueue(s, "validation_failed", release_payload("validation_failed", row, phase=row.phase, wave=row.wave,
                                                    reason=reason, at=now, details=details), now, release_id=row.id)


def release_payload(event: str, row: ReleaseRow, *, phase: str, wave: int, reason: str, at: datetime,
                    details: Mapping[str, Any]) -> dict[str, Any]:
    """The facts of an alert about a release (the sender adds the link to the server)."""
    return {"event": event, "at": utc(at).isoformat(), "release": row.id, "content_type": row.content_type,
            "version": row.version, "phase": phase, "wave": _wave_name(row, wave), "reason": reason,
            "details": dict(details)}


def _wave_name(row: ReleaseRow, wave: int) -> str | None:
    try:
        waves = parse_plan(row.plan_source, f"release {row.id} plan").waves
    except PlanError:  # the plan was valid when stored; a newer parser may disagree
        return None
    return waves[min(wave, len(waves) - 1)].name if waves else None


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery one sender now owns until its lease lapses, with what sending needs."""

    id: str
    webhook_id: str
    url: str
    format: str
    secret: str
    event: str
    payload: dict[str, Any]
    attempt: int  # the number of the attempt about to be made, from 1


def claim_due(s: Session, now: datetime, *, lease: timedelta, limit: int) -> list[Claimed]:
    """Up to ``limit`` pending deliveries that are due, claimed for ``lease``: rows another
    node has locked are skipped, not waited for."""
    rows = list(s.scalars(
        select(WebhookDeliveryRow)
        .where(WebhookDeliveryRow.status == PENDING, WebhookDeliveryRow.next_attempt_at <= now)
        .order_by(WebhookDeliveryRow.next_attempt_at, WebhookDeliveryRow.id)
        .limit(limit)
        .with_for_update(skip_locked=True)))
    claimed = []
    for row in rows:
        webhook = s.get(WebhookRow, row.webhook_id)
        if webhook is None:  # deleted meanwhile (its deliveries go with it)
            continue
        row.next_attempt_at = now + lease
        claimed.append(Claimed(row.id, webhook.id, webhook.url, webhook.format, webhook.secret, row.event,
                               dict(row.payload), row.attempts + 1))
    s.flush()
    return claimed


def record_attempt(s: Session, delivery_id: str, *, attempt: int, at: datetime, status_code: int | None,
                   error: str | None, delivered: bool, retry_at: datetime | None) -> str | None:
    """Record attempt number ``attempt``: ``delivered``, or pending again until ``retry_at``, or
    ``failed`` (no ``retry_at``). Returns the outcome, or None when the delivery is gone or
    another sender already recorded this attempt (its claim lapsed and was taken over)."""
    row = s.get(WebhookDeliveryRow, delivery_id, with_for_update=True)
    if row is None or row.status != PENDING or row.attempts >= attempt:
        return None
    row.attempts = attempt
    row.last_attempt_at, row.last_status_code, row.last_error = at, status_code, error
    row.attempt_log = [*row.attempt_log, {"attempt": attempt, "at": utc(at).isoformat(),
                                          "status_code": status_code, "error": error}]
    if delivered:
        row.status, row.delivered_at, row.next_attempt_at = DELIVERED, at, None
    elif retry_at is None:
        row.status, row.next_attempt_at = FAILED, None
    else:
        row.next_attempt_at = retry_at
    s.flush()
    return row.status if row.status != PENDING else "retrying"


def deliveries(s: Session, webhook_id: str, *, limit: int = 100, status: str | None = None) -> list[WebhookDeliveryRow]:
    """A subscription's deliveries, newest first."""
    get_webhook(s, webhook_id)
    query = select(WebhookDeliveryRow).where(WebhookDeliveryRow.webhook_id == webhook_id)
    if status is not None:
        query = query.where(WebhookDeliveryRow.status == status)
    return list(s.scalars(query.order_by(WebhookDeliveryRow.created_at.desc(), WebhookDeliveryRow.id).limit(limit)))


def get_delivery(s: Session, delivery_id: str) -> WebhookDeliveryRow:
    row = s.get(WebhookDeliveryRow, delivery_id)
    if row is None:
        raise NotFound(f"no webhook delivery {delivery_id!r}", delivery=delivery_id)
    return row


def pending_count(s: Session) -> int:
    return s.scalar(select(func.count()).select_from(WebhookDeliveryRow)
                    .where(WebhookDeliveryRow.status == PENDING)) or 0


def delivery_json(row: WebhookDeliveryRow) -> dict[str, Any]:
    def _at(value: datetime | None) -> str | None:
        return utc(value).isoformat() if value is not None else None

    return {"id": row.id, "webhook": row.webhook_id, "event": row.event, "release": row.release_id,
            "status": row.status, "attempts": row.attempts, "created_at": _at(row.created_at),
            "next_attempt_at": _at(row.next_attempt_at) if row.status == PENDING else None,
            "last_attempt_at": _at(row.last_attempt_at), "last_status_code": row.last_status_code,
            "last_error": row.last_error, "delivered_at": _at(row.delivered_at),
            "attempt_log": list(row.attempt_log)}

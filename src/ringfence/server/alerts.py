"""Sending alerts: the dispatcher that empties the webhook outbox, and what it sends.

Every node runs a :class:`Dispatcher`. It claims due deliveries (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL, so nodes share the work without waiting on each other), sends them with one
``httpx.AsyncClient``, and records each attempt. An attempt succeeds on a 2xx answer; anything
else (another status, a refused connection, a timeout) is retried after ``webhook_backoff_s``,
then twice that, four times that ... capped at ``webhook_backoff_max_s``, until
``webhook_max_attempts`` attempts failed and the delivery is ``failed``. Redirects are not
followed. Times come from the server's clock, so tests drive retries by advancing it.

Every request is signed. With ``body`` the exact bytes sent and ``timestamp`` the value of
``X-Ringfence-Timestamp`` (Unix seconds of this attempt)::

    X-Ringfence-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>
    X-Ringfence-Event: halt | rollback | complete | validation_failed | approval_needed | test
    X-Ringfence-Delivery: <delivery id: the same on every retry, deduplicate on it>

A receiver recomputes the HMAC over the raw body with the subscription's secret, compares in
constant time (``hmac.compare_digest``), and rejects a timestamp more than a few minutes from
its own clock, so a captured request cannot be replayed later (see :func:`verify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

import ringfence
from ringfence.core.clock import Clock
from ringfence.server.config import ServerConfig
from ringfence.server.metrics import Metrics
from ringfence.store import alerts
from ringfence.store.alerts import Claimed
from ringfence.store.db import Database

log = logging.getLogger("ringfence.alerts")

SIGNATURE, TIMESTAMP, EVENT, DELIVERY = ("X-Ringfence-Signature", "X-Ringfence-Timestamp", "X-Ringfence-Event",
                                         "X-Ringfence-Delivery")
DEFAULT_TOLERANCE_S = 300


# -- what is sent (pure) ------------------------------------------------------------------------

def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Ringfence-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, now: float,
           tolerance_s: float = DEFAULT_TOLERANCE_S) -> bool:
    """What a receiver does: the signature matches and the timestamp is within ``tolerance_s``
    of ``now`` (Unix seconds)."""
    try:
        fresh = abs(now - int(timestamp)) <= tolerance_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


def retry_delay(attempt: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...): base, 2x, 4x, ... capped."""
    return float(min(cap_s, base_s * 2 ** (attempt - 1)))


def render(fmt: str, payload: Mapping[str, Any], base_url: str) -> bytes:
    """The body of a delivery: the payload with the link to the rollout, as JSON or as a Slack
    message."""
    doc = dict(payload)
    if doc.get("release"):
        doc["url"] = f"{base_url}/ui/rollouts/{doc['release']}"
    body = slack_message(doc) if fmt == "slack" else doc
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def summary(payload: Mapping[str, Any]) -> str:
    """One line a person reads in a chat channel."""
    event = payload.get("event")
    what = f"{payload.get('content_type')} {payload.get('version')}"
    reason = payload.get("reason") or ""
    wave = payload.get("wave")
    if event == "halt":
        return f"Ringfence halted {what} at wave {wave}: {reason}"
    if event == "rollback":
        return f"Ringfence is rolling back {what} (wave {wave}): {reason}"
    if event == "complete":
        return f"Ringfence completed the rollout of {what}: {reason}"
    if event == "validation_failed":
        return f"Ringfence: validation failed for {what} (release {payload.get('release')}): {reason}"
    if event == "approval_needed":
        return f"Ringfence: {what} is ready and waits for approval: {reason}"
    return f"Ringfence: {reason}"


def slack_message(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``{"text", "blocks"}`` for a Slack incoming webhook (and the tools that accept its format)."""
    line = summary(payload)
    facts = [f"*event* {payload.get('event')}"]
    if payload.get("release"):
        facts += [f"*release* {payload['release']}", f"*phase* {payload.get('phase')}"]
    context = " · ".join(_escape(f) for f in facts)
    if payload.get("url"):
        context += f" · <{payload['url']}|rollout status>"
    return {"text": _escape(line), "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": _escape(line)}},
                                     {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]}]}


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload_of_test(webhook_id: str, base_url: str, at: datetime, actor: str) -> dict[str, Any]:
    return {"event": "test", "at": at.isoformat(), "release": None, "content_type": None, "version": None,
            "phase": None, "wave": None,
            "reason": f"test alert for webhook {webhook_id}, sent at the request of {actor} by {base_url}",
            "details": {"webhook": webhook_id, "requested_by": actor}}


# -- sending ------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Attempt:
    claimed: Claimed
    at: datetime
    status_code: int | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class Dispatcher:
    """Empties the outbox: claim what is due, send it, record every attempt."""

    def __init__(self, db: Database, clock: Clock, config: ServerConfig, metrics: Metrics,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._db = db
        self._clock = clock
        self._config = config
        self._metrics = metrics
        self._transport = transport
        self._wake = asyncio.Event()
        self._lease = timedelta(seconds=2 * config.webhook_timeout_s + 30)
        self.sent = 0
        self.polls = 0  # looks at the outbox so far

    def wake(self) -> None:
        """Something was enqueued: look now (call on the event loop)."""
        self._wake.set()

    async def run(self) -> None:
        timeout = httpx.Timeout(self._config.webhook_timeout_s)
        headers = {"User-Agent": f"Ringfence/{ringfence.__version__}", "Content-Type": "application/json"}
        async with httpx.AsyncClient(timeout=timeout, headers=headers, follow_redirects=False,
                                     transport=self._transport) as client:
            while True:
                claimed = 0
                try:
                    claimed = await self.dispatch_once(client)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the database may be briefly away; try again next time
                    log.warning("cannot send webhook deliveries: %s", exc)
                self.polls += 1
                if claimed < self._config.webhook_batch:  # a full batch: more may be due at once
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._config.webhook_poll_s)
                    self._wake.clear()

    async def dispatch_once(self, client: httpx.AsyncClient) -> int:
        """Claim, send and record one batch; returns how many deliveries it held."""
        claimed = await asyncio.to_thread(self._claim)
        if not claimed:
            return 0
        attempts = await asyncio.gather(*(self._send(client, c) for c in claimed))
        outcomes = await asyncio.to_thread(self._record, attempts)
        for attempt, outcome in zip(attempts, outcomes, strict=True):
            if outcome is None:
                continue
            self._metrics.webhook_deliveries.labels(outcome).inc()
            c = attempt.claimed
            if outcome == alerts.FAILED:
                log.warning("webhook %s: gave up on %s delivery %s after %d attempts: %s", c.webhook_id, c.event,
                            c.id, c.attempt, attempt.error)
            elif outcome == "retrying":
                log.info("webhook %s: %s delivery %s attempt %d failed (%s); trying again", c.webhook_id, c.event,
                         c.id, c.attempt, attempt.error)
        self.sent += len(claimed)
        return len(claimed)

    def _claim(self) -> list[Claimed]:
        with self._db.session() as s:
            return alerts.claim_due(s, self._clock.now(), lease=self._lease, limit=self._config.webhook_batch)

    async def _send(self, client: httpx.AsyncClient, c: Claimed) -> _Attempt:
        at = self._clock.now()
        body = render(c.format, c.payload, self._config.base_url)
        timestamp = str(int(at.timestamp()))
        headers = {SIGNATURE: sign(c.secret, timestamp, body), TIMESTAMP: timestamp, EVENT: c.event, DELIVERY: c.id}
        began = time.perf_counter()
        try:
            response = await client.post(c.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return _Attempt(c, at, None, f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__)
        log.debug("webhook %s: %s -> %d in %.3fs", c.webhook_id, c.url, response.status_code,
                  time.perf_counter() - began)
        if 200 <= response.status_code < 300:
            return _Attempt(c, at, response.status_code, None)
        return _Attempt(c, at, response.status_code, f"HTTP {response.status_code}: {response.text[:200]}")

    def _record(self, attempts: list[_Attempt]) -> list[str | None]:
        cfg = self._config
        with self._db.session() as s:
            outcomes = []
            for a in attempts:
                retry_at = None
                if not a.ok and a.claimed.attempt < cfg.webhook_max_attempts:
                    delay = retry_delay(a.claimed.attempt, cfg.webhook_backoff_s, cfg.webhook_backoff_max_s)
                    retry_at = a.at + timedelta(seconds=delay)
                outcomes.append(alerts.record_attempt(s, a.claimed.id, attempt=a.claimed.attempt, at=a.at,
                                                      status_code=a.status_code, error=a.error, delivered=a.ok,
                                                      retry_at=retry_at))
            return outcomes

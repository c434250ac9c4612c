"""Alerts end to end, on SQLite and PostgreSQL: the real app sends signed webhooks to a real HTTP
receiver (a small server on a free port that records every request and answers as scripted).
Retries follow the server's manual clock: a test advances it past the backoff and the next
attempt goes out; no test sleeps through a backoff."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from ringfence.core.clock import ManualClock
from ringfence.core.models import Category
from ringfence.core.rollout import Intent
from ringfence.server.alerts import verify
from ringfence.store import alerts, releases
from ringfence.store.access import create_api_token, create_team
from ringfence.store.db import Database
from ringfence.store.schema import WebhookDeliveryRow
from tests.conftest import free_port
from tests.integration.conftest import CT, Api, error_of, make_api
from tests.integration.test_api import event, push, release, status, wait_for
from tests.support import UNVALIDATED

PUBLIC = "https://ringfence.example"
ONE_WAVE = "name: one\nwaves:\n  - name: all\n    share: 1.0\n    soak: 1m\n"
CANARY = ("name: canary-first\nwaves:\n  - name: canary\n    share: 1.0\n    soak: 1h\n"
          "    gates: {failure_budget: 1}\n")


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Receiver:
    """An HTTP server in a thread: records every POST and answers with the next scripted status
    (200 once the script is used up)."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.script: list[int] = []
        lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    receiver.requests.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                      body))
                    answer = receiver.script.pop(0) if receiver.script else 200
                self.send_response(answer)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _alerting(tmp_path: Path, db_url: str, **config: Any) -> Iterator[Api]:
    """The app with quick polling, 1 s backoff, 3 attempts, links to ``PUBLIC`` and a content type."""
    settings = {"webhook_poll_s": 0.05, "webhook_backoff_s": 1.0, "webhook_max_attempts": 3,
                "webhook_timeout_s": 2.0, "public_url": PUBLIC, **config}
    for api in make_api(tmp_path, db_url, **settings):
        assert api.http.post("/v1/content-types", json={"name": CT, "category": "rapid-response",
                                                        "unvalidated_reason": UNVALIDATED}).status_code == 201
        yield api


@pytest.fixture
def api(tmp_path: Path, db_url: str) -> Iterator[Api]:
    yield from _alerting(tmp_path, db_url)


def subscribe(api: Api, url: str, **body: Any) -> tuple[str, str]:
    r = api.http.post("/v1/webhooks", json={"url": url, **body})
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["secret"]


def deliveries(api: Api, webhook_id: str) -> list[dict[str, Any]]:
    r = api.http.get(f"/v1/webhooks/{webhook_id}/deliveries")
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["deliveries"]
    return found


def only_delivery(api: Api, webhook_id: str, **expected: Any) -> dict[str, Any]:
    """Wait until the subscription's one delivery shows ``expected``; return it."""
    def _matches() -> dict[str, Any] | None:
        found = deliveries(api, webhook_id)
        assert len(found) <= 1, found
        if found and all(found[0][k] == v for k, v in expected.items()):
            return found[0]
        return None
    delivery: dict[str, Any] = wait_for(_matches)
    return delivery


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


# -- what is sent ------------------------------------------------------------------------------------------

def test_a_halt_by_the_judges_is_delivered_signed_with_its_reason(api: Api, receiver: Receiver) -> None:
    # Given a subscription to halts, and two devices taking a release whose budget is one failure
    hook, secret = subscribe(api, receiver.url, events=["halt"])
    enroll = api.http.post("/v1/enroll-tokens", json={"tenant": "acme"}).json()["token"]
    devices = [api.device(enroll) for _ in range(2)]
    wait_for(lambda: api.http.get("/v1/server").json()["devices"] == 2)
    rid = release(api, "2.0", CANARY)
    assert api.http.post(f"/v1/rollouts/{rid}/start", json={"reason": "weekly content"}).status_code == 200
    # When both crash
    for d in devices:
        assert d.post("/v1/agent/checkin", json={"versions": {}}).json()["desired"][CT]["version"] == "2.0"
        d.post("/v1/agent/checkin", json={"versions": {}, "events": [event("intent", "2.0")]})
        d.post("/v1/agent/checkin", json={"versions": {CT: "2.0"}, "events": [event("crash", "2.0")]})
    halted = wait_for(lambda: (s := status(api, rid))["phase"] == "halted" and s)
    reason = halted["history"][-1]["reason"]
    assert "failure budget exceeded" in reason and "windows/eu-west" in reason

    # Then the receiver gets one signed halt whose reason is the history's
    wait_for(lambda: receiver.requests)
    delivery = only_delivery(api, hook, status="delivered")
    [got] = receiver.requests
    assert got.path == "/hook" and got.headers["content-type"] == "application/json"
    assert got.headers["x-ringfence-event"] == "halt"
    assert got.headers["x-ringfence-delivery"] == delivery["id"]
    timestamp = got.headers["x-ringfence-timestamp"]
    assert int(timestamp) == int(at(delivery["last_attempt_at"]).timestamp())
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(got.headers["x-ringfence-signature"], f"sha256={mac}")
    now = api.clock.now().timestamp()
    assert verify(secret, timestamp, got.body, got.headers["x-ringfence-signature"], now=now)
    assert not verify(secret, timestamp, got.body + b" ", got.headers["x-ringfence-signature"], now=now)
    assert not verify(secret, timestamp, got.body, got.headers["x-ringfence-signature"], now=now + 301), \
        "an old timestamp is refused"
    body = got.json()
    assert {k: body[k] for k in ("event", "release", "content_type", "version", "phase", "wave", "reason", "url")} == {
        "event": "halt", "release": rid, "content_type": CT, "version": "2.0", "phase": "halted", "wave": "canary",
        "reason": reason, "url": f"{PUBLIC}/ui/rollouts/{rid}"}
    assert body["details"]["actor"] == "reconciler" and body["details"]["from_phase"] == "rolling"
    assert at(body["at"]) == at(halted["history"][-1]["at"])
    assert (delivery["attempts"], delivery["last_status_code"], delivery["last_error"]) == (1, 200, None)
    # Only halts were asked for: the start, and later a rollback, send nothing
    api.http.post(f"/v1/rollouts/{rid}/rollback", json={"reason": "undo 2.0"})
    assert len(deliveries(api, hook)) == 1


def test_slack_format_and_every_rollout_event_by_default(api: Api, receiver: Receiver) -> None:
    hook, _ = subscribe(api, receiver.url, format="slack")
    assert api.http.get("/v1/webhooks").json()["webhooks"][0]["events"] == [
        "halt", "rollback", "complete", "validation_failed", "approval_needed", "judge_error", "pause"]
    rid = release(api, "1.0", CANARY)
    api.http.post(f"/v1/rollouts/{rid}/start")
    api.http.post(f"/v1/rollouts/{rid}/halt", json={"reason": "crash reports from canary"})
    api.http.post(f"/v1/rollouts/{rid}/rollback", json={"reason": "undo 1.0"})
    wait_for(lambda: len(receiver.requests) == 2)
    halt, rollback = sorted(receiver.requests, key=lambda r: r.headers["x-ringfence-event"])
    message = halt.json()
    assert set(message) == {"text", "blocks"}
    assert message["text"] == f"Ringfence halted {CT} 1.0 at wave canary: crash reports from canary"
    section, context = message["blocks"]
    assert section == {"type": "section", "text": {"type": "mrkdwn", "text": message["text"]}}
    assert context["type"] == "context"
    assert f"<{PUBLIC}/ui/rollouts/{rid}|rollout status>" in context["elements"][0]["text"]
    assert rollback.json()["text"] == f"Ringfence is rolling back {CT} 1.0 (wave canary): undo 1.0"

    # A completion is announced too
    wait_for(lambda: status(api, rid)["phase"] == "rolled_back")  # nobody was exposed
    done = release(api, "1.1", ONE_WAVE)
    assert api.http.post(f"/v1/rollouts/{done}/start").status_code == 200
    _confirm(api, "1.1")  # a completion needs a device that confirmed health
    api.clock.advance(61)
    wait_for(lambda: status(api, done)["phase"] == "completed")
    wait_for(lambda: len(receiver.requests) == 3)
    assert receiver.requests[-1].json()["text"].startswith(f"Ringfence completed the rollout of {CT} 1.1")
    # the receiver has the request before the dispatcher records the delivery
    wait_for(lambda: {d["event"]: d["status"] for d in deliveries(api, hook)} == {
        "halt": "delivered", "rollback": "delivered", "complete": "delivered"})


def _confirm(api: Api, version: str) -> None:
    """One device is told ``version``, announces it and confirms health."""
    token = api.http.post("/v1/enroll-tokens", json={"tenant": "acme"}).json()["token"]
    device = api.device(token, platform="linux", region="eu-west")

    def told() -> bool:
        answer = device.post("/v1/agent/checkin", json={"versions": {}}).json()
        return bool(answer["desired"].get(CT, {}).get("version") == version)

    wait_for(told)
    r = device.post("/v1/agent/checkin", json={"versions": {CT: version},
                                                "events": [event("intent", version), event("healthy", version)]})
    assert r.status_code == 200, r.text


@pytest.fixture
def gated(tmp_path: Path, db_url: str) -> Iterator[Api]:
    """A content type with the example sensor's definition, one approval for rapid-response."""
    example = Path(__file__).resolve().parents[2] / "examples" / "sensor"
    for api in make_api(tmp_path, db_url, webhook_poll_s=0.05, public_url=PUBLIC,
                        approvals={**dict.fromkeys(Category, 0), Category.RAPID_RESPONSE: 1}):
        assert api.http.post("/v1/content-types", json={
            "name": CT, "category": "rapid-response", "definition": (example / "ipc-templates.yaml").read_text(),
            "definition_dir": str(example)}).status_code == 201
        yield api


def test_a_release_that_failed_validation_and_waits_for_approval_is_announced(gated: Api, receiver: Receiver) -> None:
    api = gated
    subscribe(api, receiver.url, events=["validation_failed", "approval_needed"])
    data = (Path(__file__).resolve().parents[2] / "examples" / "sensor" / "instances" / "bad-field-count.json"
            ).read_bytes()
    assert push(api, "291.1", data).status_code == 201
    created = api.http.post("/v1/releases", json={"content_type": CT, "version": "291.1", "plan": ONE_WAVE})
    assert created.status_code == 201, created.text
    rid = created.json()["release"]
    wait_for(lambda: len(receiver.requests) == 2)
    got = {r.headers["x-ringfence-event"]: r.json() for r in receiver.requests}
    failed, waiting = got["validation_failed"], got["approval_needed"]
    assert failed["release"] == rid and failed["phase"] == "ready"
    assert failed["reason"].startswith(f"validation of {CT} 291.1: ") and "failed" in failed["reason"]
    assert failed["details"]["failed"] >= 1
    assert all(r["status"] in ("failed", "error") for r in failed["details"]["results"])
    assert waiting["release"] == rid and waiting["details"]["approvals_required"] == 1
    assert "needs 1 approval from people other than its author" in waiting["reason"]


# -- retries -----------------------------------------------------------------------------------------------

def test_a_failing_receiver_gets_retries_with_backoff_until_it_answers(api: Api, receiver: Receiver) -> None:
    receiver.script = [500, 500]
    hook, _ = subscribe(api, receiver.url)
    assert api.http.post(f"/v1/webhooks/{hook}/test").status_code == 202
    first = only_delivery(api, hook, attempts=1)
    t0 = at(first["last_attempt_at"])
    assert (first["status"], first["last_status_code"]) == ("pending", 500)
    assert first["last_error"].startswith("HTTP 500")
    assert at(first["next_attempt_at"]) == t0 + timedelta(seconds=1)

    # Nothing more until the clock passes the backoff
    api.polls()
    assert len(receiver.requests) == 1
    api.clock.advance(1)
    second = only_delivery(api, hook, attempts=2)
    assert at(second["next_attempt_at"]) == t0 + timedelta(seconds=3)  # then twice as long
    api.clock.advance(1)
    api.polls()  # not due yet: nothing is sent
    assert only_delivery(api, hook)["attempts"] == 2
    api.clock.advance(1)
    done = only_delivery(api, hook, status="delivered")
    assert (done["attempts"], done["last_status_code"], done["last_error"], done["next_attempt_at"]) == (
        3, 200, None, None)
    assert [(a["attempt"], at(a["at"]) - t0, a["status_code"]) for a in done["attempt_log"]] == [
        (1, timedelta(0), 500), (2, timedelta(seconds=1), 500), (3, timedelta(seconds=3), 200)]
    assert len(receiver.requests) == 3
    assert len({r.headers["x-ringfence-delivery"] for r in receiver.requests}) == 1, "one id: receivers dedupe"
    assert [int(r.headers["x-ringfence-timestamp"]) - int(t0.timestamp()) for r in receiver.requests] == [0, 1, 3]
    assert receiver.requests[0].json()["event"] == "test"


def test_an_unreachable_receiver_ends_failed_after_the_last_attempt(api: Api) -> None:
    hook, _ = subscribe(api, f"http://127.0.0.1:{free_port()}/nobody-listens")
    api.http.post(f"/v1/webhooks/{hook}/test")

    def _failed() -> dict[str, Any] | None:
        [delivery] = deliveries(api, hook)
        if delivery["status"] == "failed":
            return delivery
        api.clock.advance(10)  # past any backoff of this configuration
        return None

    failed = wait_for(_failed)
    assert failed["attempts"] == 3 and len(failed["attempt_log"]) == 3
    assert failed["last_status_code"] is None and "ConnectError" in failed["last_error"]
    assert failed["next_attempt_at"] is None
    api.clock.advance(3600)
    api.polls()
    assert deliveries(api, hook)[0]["attempts"] == 3, "a failed delivery is never sent again"
    listed = api.http.get("/v1/webhooks").json()["webhooks"][0]["deliveries"]
    assert listed == {"pending": 0, "delivered": 0, "failed": 1}
    assert 'ringfence_webhook_deliveries_total{outcome="failed"} 1.0' in api.http.get("/metrics").text


# -- the outbox commits with the change --------------------------------------------------------------------

def test_no_delivery_without_the_transition_and_one_with_it(api: Api, receiver: Receiver) -> None:
    hook, _ = subscribe(api, receiver.url, events=["halt"])
    rid = release(api, "1.0", CANARY)
    # A refused transition: a rollout that has not started cannot halt
    refused = api.http.post(f"/v1/rollouts/{rid}/halt", json={"reason": "too early"})
    assert refused.status_code == 409
    api.http.post(f"/v1/rollouts/{rid}/start")
    # A halt whose transaction fails afterwards: it and its delivery are gone together
    def _halt_then_fail() -> None:
        with api.db.session() as s:
            releases.apply_intent(s, rid, Intent.HALT, actor="tester", reason="not for long", now=api.clock.now())
            inside = s.scalars(select(WebhookDeliveryRow).where(WebhookDeliveryRow.release_id == rid)).all()
            assert [d.event for d in inside] == ["halt"]
            raise RuntimeError("the transaction fails after the halt")

    with pytest.raises(RuntimeError, match="after the halt"):
        _halt_then_fail()
    assert status(api, rid)["phase"] == "rolling"
    assert deliveries(api, hook) == []
    # The same halt, committed, has exactly its delivery
    assert api.http.post(f"/v1/rollouts/{rid}/halt", json={"reason": "for real"}).status_code == 200
    only_delivery(api, hook, status="delivered", event="halt", release=rid)
    assert [r.json()["reason"] for r in receiver.requests] == ["for real"]


@pytest.mark.pg
def test_two_nodes_never_send_the_same_delivery_at_once(pg_url: str) -> None:
    """PostgreSQL, several nodes: a claimed delivery is skipped by the others while it is locked
    and while its lease runs; a node that lost its claim cannot record over the new owner."""
    db = Database(pg_url)
    db.migrate()
    clock = ManualClock()
    lease = timedelta(seconds=40)
    try:
        with db.session() as s:
            webhook = alerts.create_webhook(s, url="http://127.0.0.1:9/x", format="json", events=None, secret=None,
                                            enabled=True, actor="admin", now=clock.now())
            [delivery] = alerts.enqueue(s, "test", {"event": "test"}, clock.now(), webhook_id=webhook.id)
        with db.session() as first:
            assert [c.id for c in alerts.claim_due(first, clock.now(), lease=lease, limit=10)] == [delivery]
            with db.session() as second:  # while the first node's transaction holds the row
                assert alerts.claim_due(second, clock.now(), lease=lease, limit=10) == []
        with db.session() as second:  # committed: the lease keeps it the first node's
            assert alerts.claim_due(second, clock.now(), lease=lease, limit=10) == []
        clock.advance(41)  # the first node died while sending: another node takes over
        with db.session() as second:
            [again] = alerts.claim_due(second, clock.now(), lease=lease, limit=10)
        assert (again.id, again.attempt) == (delivery, 1)
        with db.session() as s:
            assert alerts.record_attempt(s, delivery, attempt=1, at=clock.now(), status_code=200, error=None,
                                         delivered=True, retry_at=None) == "delivered"
        with db.session() as s:  # the first node comes back with its answer: too late
            assert alerts.record_attempt(s, delivery, attempt=1, at=clock.now(), status_code=500, error="HTTP 500",
                                         delivered=False, retry_at=clock.now()) is None
            assert alerts.get_delivery(s, delivery).status == "delivered"
    finally:
        db.dispose()


# -- the API and who may use it ----------------------------------------------------------------------------

def test_subscriptions_are_managed_by_global_admins_and_read_by_the_fleets_readers(api: Api) -> None:
    url = "https://hooks.slack.example/services/T000/B000/very-secret-path"
    r = api.http.post("/v1/webhooks", json={"url": url, "format": "slack", "events": ["halt", "rollback"]})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["secret"].startswith("whsec_") and len(created["secret"]) > 40, "generated, shown once"
    assert (created["url"], created["events"], created["enabled"], created["created_by"]) == (
        url, ["halt", "rollback"], True, "admin")
    given = api.http.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/x", "secret": "s" * 20}).json()
    assert given["secret"] == "s" * 20

    listed = api.http.get("/v1/webhooks").json()["webhooks"]
    assert {w["id"] for w in listed} == {created["id"], given["id"]}
    assert all("secret" not in w for w in listed), "the secret is never listed"
    viewer = api.as_token(api.token_for("viewer"))
    [seen] = [w for w in viewer.get("/v1/webhooks").json()["webhooks"] if w["id"] == created["id"]]
    assert seen["url"] == "https://hooks.slack.example/…", "a Slack URL's path is a credential"
    assert viewer.get(f"/v1/webhooks/{created['id']}/deliveries").json()["deliveries"] == []
    assert viewer.post("/v1/webhooks", json={"url": url}).status_code == 403
    assert viewer.post(f"/v1/webhooks/{created['id']}/test").status_code == 403
    assert viewer.request("DELETE", f"/v1/webhooks/{created['id']}").status_code == 403
    with api.db.session() as s:
        create_team(s, "red", actor="admin", now=api.clock.now())
        _, team_admin = create_api_token(s, name="red-admin", role="admin", team="red", now=api.clock.now())
    refused = api.as_token(team_admin).post("/v1/webhooks", json={"url": url})
    assert refused.status_code == 403 and "every team's rollouts" in error_of(refused)["message"]

    for bad, field in (({"url": "ftp://example.com/x"}, "url"), ({"url": "https://"}, "url"),
                       ({"url": url, "events": ["halt", "explode"]}, "events"),
                       ({"url": url, "events": []}, "events"), ({"url": url, "secret": "short"}, "secret")):
        wrong = api.http.post("/v1/webhooks", json=bad)
        assert wrong.status_code == 400 and error_of(wrong)["details"]["field"] == field, (bad, wrong.text)
    assert api.http.post("/v1/webhooks", json={"url": url, "format": "xml"}).status_code == 422

    gone = api.http.request("DELETE", f"/v1/webhooks/{created['id']}")
    assert gone.status_code == 200 and gone.json()["id"] == created["id"]
    assert api.http.get(f"/v1/webhooks/{created['id']}/deliveries").status_code == 404
    assert api.http.request("DELETE", f"/v1/webhooks/{created['id']}").status_code == 404
    assert api.http.post("/v1/webhooks/wh-nope/test").status_code == 404
    audit = api.http.get("/v1/audit", params={"action": "webhook.*"}).json()["entries"]
    assert [(e["action"], e["target"]) for e in audit] == [
        ("webhook.create", created["id"]), ("webhook.create", given["id"]), ("webhook.delete", created["id"])]
    assert audit[0]["details"]["url"] == "https://hooks.slack.example/…", "the audit log keeps no credential"


def test_the_test_event_reaches_the_receiver(api: Api, receiver: Receiver) -> None:
    hook, secret = subscribe(api, receiver.url, events=["halt"])
    queued = api.http.post(f"/v1/webhooks/{hook}/test")
    assert queued.status_code == 202 and queued.json()["status"] == "pending" and queued.json()["event"] == "test"
    delivered = only_delivery(api, hook, status="delivered")
    assert delivered["id"] == queued.json()["id"]
    [got] = receiver.requests
    assert got.headers["x-ringfence-event"] == "test"
    assert verify(secret, got.headers["x-ringfence-timestamp"], got.body, got.headers["x-ringfence-signature"],
                  now=api.clock.now().timestamp())
    body = got.json()
    assert body["event"] == "test" and body["release"] is None and "url" not in body
    assert body["details"] == {"webhook": hook, "requested_by": "admin"}

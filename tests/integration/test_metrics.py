"""What an operator's monitoring reads, on SQLite and PostgreSQL: ``GET /metrics`` after check-ins
and a rollout (Prometheus text format, no token, aggregate numbers only), and the log line every
refused request leaves."""

from __future__ import annotations

import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import CT, Api
from tests.integration.test_api import event, release, status, wait_for

ONE_WAVE = "name: one\nwaves:\n  - name: all\n    share: 1.0\n    soak: 1m\n"


def scrape(api: Api) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of an unauthenticated scrape: name -> labels -> value."""
    r = api.as_token(None).get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def test_metrics_count_check_ins_events_judges_and_rollouts(setup: tuple[Api, str]) -> None:
    api, enroll = setup
    devices = [api.device(enroll, region=region) for region in ("eu-west", "us-east")]
    wait_for(lambda: api.http.get("/v1/server").json()["devices"] == 2)
    rid = release(api, "1.0", ONE_WAVE)
    api.http.post(f"/v1/rollouts/{rid}/start")
    for d in devices:
        assert d.post("/v1/agent/checkin", json={"versions": {}}).json()["desired"][CT]["version"] == "1.0"
        d.post("/v1/agent/checkin", json={"versions": {}, "events": [event("intent", "1.0")]})
        d.post("/v1/agent/checkin", json={"versions": {CT: "1.0"}, "events": [event("activated", "1.0"),
                                                                               event("healthy", "1.0")]})
    api.clock.advance(61)
    wait_for(lambda: status(api, rid)["phase"] == "completed")

    got = scrape(api)
    assert got["ringfence_checkins_total"][()] == 6
    assert got["ringfence_checkin_seconds_count"][()] == 6
    assert got["ringfence_events_total"] == {
        (("kind", "intent"),): 2, (("kind", "activated"),): 2, (("kind", "healthy"),): 2}
    assert got["ringfence_judge_evaluations_total"][()] >= 1
    assert got["ringfence_reconciler_tick_seconds_count"][()] >= 1
    assert got["ringfence_rollouts"][(("phase", "completed"),)] == 1
    assert got["ringfence_rollouts"][(("phase", "rolling"),)] == 0
    assert got["ringfence_devices"][()] == 2
    assert "ringfence_write_queue_depth" in got and got["ringfence_webhook_pending"][()] == 0
    assert got["ringfence_audit_entries_total"][()] >= 4  # content type, enrolment token, artifact, release, ...
    assert got["ringfence_database_up"][()] == 1
    text = api.as_token(None).get("/metrics").text
    assert "# TYPE ringfence_webhook_deliveries_total counter" in text
    # Aggregates only: no release, device, tenant or content type is named
    device_ids = [d["id"] for d in api.http.get("/v1/devices").json()["devices"]]
    assert not [secret for secret in (rid, CT, "acme", *device_ids) if secret in text]
    assert "/metrics" not in api.http.get("/openapi.json").json()["paths"]


def test_every_refused_request_is_logged_without_its_credential(setup: tuple[Api, str],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    api, _ = setup
    caplog.set_level(logging.WARNING, logger="ringfence.server")
    bogus = "rft_not-a-real-token-0123456789"
    assert api.as_token(bogus).get("/v1/releases").status_code == 401
    viewer = api.as_token(api.token_for("viewer"))
    assert viewer.post("/v1/webhooks", json={"url": "https://hooks.example/x"}).status_code == 403
    assert api.http.post("/v1/rollouts/rel-nope/halt").status_code == 404
    refusals = [r for r in caplog.records if r.name == "ringfence.server" and r.getMessage().startswith("refused")]
    seen = [(r.levelname, getattr(r, "method", None), getattr(r, "path", None), getattr(r, "status", None),
             getattr(r, "code", None)) for r in refusals]
    assert seen == [("WARNING", "GET", "/v1/releases", 401, "unauthorized"),
                    ("WARNING", "POST", "/v1/webhooks", 403, "forbidden"),
                    ("WARNING", "POST", "/v1/rollouts/rel-nope/halt", 404, "not_found")]
    assert all(getattr(r, "client", None) for r in refusals)
    assert "unknown, revoked or expired" in refusals[0].getMessage()
    assert not [r for r in caplog.records if bogus in r.getMessage()], "no credential in the log"

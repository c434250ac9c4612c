"""``GET /metrics``: the server's numbers in the Prometheus text format.

Counters and histograms are incremented where things happen (a check-in answered, the judges
looking at a rollout, a reconciler tick, a webhook attempt); gauges are read when Prometheus
scrapes (devices and the write queue from memory; rollouts per phase, pending webhook
deliveries and the audit log's length from one short database read). Each app has its own
:class:`Metrics` with its own registry, so several apps in one process never collide.

The endpoint is unauthenticated, as Prometheus scrapers usually are, and shows only aggregate
numbers: no release, device, tenant or person is named. Put it behind the network's controls
like any other port of the control plane.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from ringfence.core.rollout import Phase
from ringfence.store import alerts, audit
from ringfence.store.schema import ReleaseRow

if TYPE_CHECKING:
    from ringfence.server.runtime import Runtime

log = logging.getLogger("ringfence.server")
router = APIRouter()

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SLOW = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The server's instruments. Incrementing one costs what prometheus_client costs (a lock-free
    add on CPython's counters): no database, no extra locks on the check-in path."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.checkins = Counter("ringfence_checkins", "Check-ins answered.", registry=self.registry)
        self.checkin_seconds = Histogram("ringfence_checkin_seconds", "Time to answer a check-in, events "
                                         "and admissions stored.", buckets=_FAST, registry=self.registry)
        self.events = Counter("ringfence_events", "Events devices reported in check-ins, by kind.", ["kind"],
                              registry=self.registry)
        self.unadmitted_events = Counter("ringfence_unadmitted_events", "Events about a live rollout from devices "
                                         "it never admitted: stored, but counted for nothing.", registry=self.registry)
        self.judge_evaluations = Counter("ringfence_judge_evaluations", "Times the health judges read a "
                                         "rollout's exposed strata and gave verdicts.", registry=self.registry)
        self.reconciler_tick_seconds = Histogram("ringfence_reconciler_tick_seconds", "Duration of one "
                                                 "reconciler pass over every moving rollout.", buckets=_SLOW,
                                                 registry=self.registry)
        self.webhook_deliveries = Counter("ringfence_webhook_deliveries", "Webhook delivery attempts, by outcome: "
                                          "delivered, retrying (failed, tried again later), failed (gave up).",
                                          ["outcome"], registry=self.registry)

    def checked_in(self, kinds: Iterable[str], seconds: float) -> None:
        self.checkins.inc()
        self.checkin_seconds.observe(seconds)
        for kind in kinds:
            self.events.labels(kind).inc()

    def watch(self, rt: Runtime) -> None:
        """Read ``rt``'s gauges at every scrape."""
        self.registry.register(_RuntimeCollector(rt))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _RuntimeCollector(Collector):
    def __init__(self, rt: Runtime) -> None:
        self._rt = rt

    def describe(self) -> Iterable[Metric]:
        return []  # names are only known at collection; nothing to check them against up front

    def collect(self) -> Iterator[Metric]:
        rt = self._rt
        yield GaugeMetricFamily("ringfence_devices", "Enrolled devices.", value=len(rt.snapshot.devices))
        batcher = getattr(rt, "batcher", None)
        if batcher is not None:
            yield GaugeMetricFamily("ringfence_write_queue_depth", "Check-in writes waiting for the batcher.",
                                    value=batcher.depth)
        reconciler = getattr(rt, "reconciler", None)
        if reconciler is not None:
            yield CounterMetricFamily("ringfence_reconciler_errors", "Reconciler passes or rollouts that failed.",
                                      value=reconciler.errors)
        try:
            with rt.db.session() as s:
                phases = dict.fromkeys((p.value for p in Phase), 0)
                phases.update({phase: int(n) for phase, n in
                               s.execute(select(ReleaseRow.phase, func.count()).group_by(ReleaseRow.phase))})
                pending = alerts.pending_count(s)
                entries = audit.head(s).seq
        except Exception as exc:  # a scrape must answer while the database is away
            log.warning("metrics: cannot read the database: %s", exc)
            yield GaugeMetricFamily("ringfence_database_up", "1 when the last scrape could read the database.",
                                    value=0)
            return
        yield GaugeMetricFamily("ringfence_database_up", "1 when the last scrape could read the database.", value=1)
        rollouts = GaugeMetricFamily("ringfence_rollouts", "Releases by rollout phase.", labels=["phase"])
        for phase, n in phases.items():
            rollouts.add_metric([phase], n)
        yield rollouts
        yield GaugeMetricFamily("ringfence_webhook_pending", "Webhook deliveries not yet delivered or given up.",
                                value=pending)
        yield CounterMetricFamily("ringfence_audit_entries", "Entries in the audit log.", value=entries)


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text format; unauthenticated, aggregate numbers only."""
    rt: Runtime = request.app.state.runtime
    return Response(rt.metrics.render(), media_type=CONTENT_TYPE_LATEST)

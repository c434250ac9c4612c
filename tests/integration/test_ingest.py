"""The write batcher on each backend: durable items are acknowledged only once stored, and
sightings of one device are merged, not lost."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from ringfence.core.errors import Unavailable
from ringfence.core.models import DeviceAttributes, EventKind
from ringfence.server.ingest import WriteBatcher
from ringfence.store.access import Sighting, enroll_device
from ringfence.store.db import Database
from ringfence.store.schema import DeviceRow, DeviceVersion, EventRow, WatchedRow
from ringfence.store.telemetry import Event
from tests.integration.store_support import add_content_type, rolling_release

T0 = datetime(2024, 7, 19, 4, 9, tzinfo=UTC)


def test_sightings_of_one_device_are_merged_and_events_acknowledged_when_stored(db: Database) -> None:
    with db.session() as s:
        record, _ = enroll_device(s, DeviceAttributes(platform="windows", region="eu-west"), T0)

    async def scenario() -> list[str]:
        batcher = WriteBatcher(db, flush_interval_s=0.01, max_batch=100, max_pending=1000, sighting_interval_s=60)
        runner = asyncio.create_task(batcher.run())
        moved = DeviceAttributes(platform="windows", region="us-east", os_version="11")
        batcher.submit(Sighting(record.id, T0 + timedelta(seconds=1), attributes=moved))
        batcher.submit(Sighting(record.id, T0 + timedelta(seconds=2), versions={"a": "1"}))
        batcher.submit(Sighting(record.id, T0 + timedelta(seconds=3), versions={"b": "2"}))
        assert batcher.depth == 1  # one device, one merged sighting
        event = Event(record.id, "e1", None, "a", "1", EventKind.INTENT, "windows/us-east", T0, T0, {})
        ack = batcher.submit(event, durable=True)
        assert ack is not None
        await asyncio.wait_for(ack, 5)
        with db.session() as s:  # acknowledged: stored, while the sighting still waits its turn
            stored = list(s.scalars(select(EventRow.event_id)))
            assert s.get(DeviceRow, record.id).region == "eu-west"  # type: ignore[union-attr]
        runner.cancel()
        await batcher.flush()
        return stored

    assert asyncio.run(scenario()) == ["e1"]
    with db.session() as s:
        row = s.get(DeviceRow, record.id)
        assert row is not None
        assert (row.region, row.os_version) == ("us-east", "11")
        assert row.last_seen_at is not None
        versions = {v.content_type: v.version for v in s.scalars(select(DeviceVersion))}
    assert versions == {"a": "1", "b": "2"}


def test_an_unreachable_database_fails_acknowledgements_with_unavailable() -> None:
    """PostgreSQL gone while the server runs: nothing is acknowledged, every waiting check-in
    gets Unavailable (503 over HTTP, and the agent retries), and the batcher keeps running."""
    db = Database("postgresql+psycopg://postgres@127.0.0.1:1/gone")

    async def scenario() -> tuple[BaseException | None, int, bool]:
        batcher = WriteBatcher(db, flush_interval_s=0.01, max_batch=100, max_pending=1000)
        runner = asyncio.create_task(batcher.run())
        event = Event("d1", "e1", None, "a", "1", EventKind.INTENT, "windows/eu-west", T0, T0, {})
        ack = batcher.submit(event, durable=True)
        assert ack is not None
        with pytest.raises(Unavailable) as failed:
            await asyncio.wait_for(ack, 30)
        alive = not runner.done()
        runner.cancel()
        return failed.value, batcher.failures, alive

    error, failures, alive = asyncio.run(scenario())
    assert "postgresql+psycopg://postgres@127.0.0.1:1/gone" in str(error)
    assert failures == 1
    assert alive
    db.dispose()


def test_merged_sightings_keep_each_rollouts_earliest_first_check_in(db: Database) -> None:
    add_content_type(db, "sensor/ipc-templates")
    release_id = rolling_release(db, "sensor/ipc-templates", "291")
    with db.session() as s:
        record, _ = enroll_device(s, DeviceAttributes(platform="windows", region="eu-west"), T0)

    async def scenario() -> None:
        batcher = WriteBatcher(db, flush_interval_s=0.01, max_batch=100, max_pending=1000, sighting_interval_s=60)
        batcher.submit(Sighting(record.id, T0 + timedelta(seconds=5), watched={release_id: T0 + timedelta(seconds=5)}))
        batcher.submit(Sighting(record.id, T0 + timedelta(seconds=9), watched={release_id: T0 + timedelta(seconds=9)}))
        await batcher.flush()

    asyncio.run(scenario())
    with db.session() as s:
        rows = [(w.release_id, w.device_id, w.first_seen_at) for w in s.scalars(select(WatchedRow))]
    assert [(r, d, at.replace(tzinfo=UTC)) for r, d, at in rows] == [(release_id, record.id, T0 + timedelta(seconds=5))]

"""The write path: check-ins produce sightings, events, admissions and placebo records; one background task
writes them in batches (one transaction per batch), so thousands of check-ins a second cost a
few commits.

An item submitted with ``durable=True`` returns a future that completes only after its batch
committed: the agent API awaits it before acknowledging an intent or handing out a version to a
newly admitted device. Sightings (last seen, reported versions) are fire-and-forget. When a
batch fails, every waiting future fails with ``Unavailable`` and the caller answers 503; the
agent retries. An admission the database refuses (the rollout stopped meanwhile, or other nodes
filled a capped wave first) fails with :class:`AdmissionRefused`, and the device is told the
baseline instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from ringfence.core.errors import Unavailable
from ringfence.store.access import Sighting, record_sightings
from ringfence.store.db import Database
from ringfence.store.telemetry import (
    Admission,
    Event,
    PlaceboAsked,
    PlaceboSeen,
    record_admissions,
    record_events,
    record_placebos,
)

log = logging.getLogger("ringfence.ingest")

Item = Sighting | Event | Admission | PlaceboAsked | PlaceboSeen


@dataclass(slots=True)
class _Pending:
    item: Item
    done: asyncio.Future[None] | None


class WriteBatcher:
    """Two lanes. Durable items (events, admissions) are written first, in small group commits,
    because a device waits for their acknowledgement. Sightings are merged per device in memory
    (the newest last-seen, the union of changed versions) and written every
    ``sighting_interval_s`` in their own transaction, so a busy fleet's last-seen updates never
    queue in front of an intent."""

    def __init__(self, db: Database, *, flush_interval_s: float, max_batch: int, max_pending: int,
                 sighting_interval_s: float = 0.25) -> None:
        self._db = db
        self._interval = flush_interval_s
        self._sighting_interval = sighting_interval_s
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending: list[_Pending] = []
        self._sightings: dict[str, Sighting] = {}
        self._wake = asyncio.Event()
        self.batches_written = 0
        self.items_written = 0
        self.failures = 0

    @property
    def depth(self) -> int:
        return len(self._pending) + len(self._sightings)

    def submit(self, item: Item, *, durable: bool = False) -> asyncio.Future[None] | None:
        if self.depth >= self._max_pending:
            raise Unavailable(f"the write queue is full ({self._max_pending} items); retry later",
                              retry_after_s=1)
        if isinstance(item, Sighting) and not durable:
            earlier = self._sightings.get(item.device_id)
            self._sightings[item.device_id] = item if earlier is None else _merge(earlier, item)
            return None
        future: asyncio.Future[None] | None = None
        if durable:
            future = asyncio.get_running_loop().create_future()
            self._wake.set()
        self._pending.append(_Pending(item, future))
        return future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        last_sightings = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._sighting_interval)
            self._wake.clear()
            # Let concurrent requests join this batch (group commit).
            await asyncio.sleep(self._interval)
            await self._flush_durable()
            if loop.time() - last_sightings >= self._sighting_interval:
                last_sightings = loop.time()
                await self._flush_sightings()

    async def flush(self) -> None:
        """Write everything pending (at shutdown)."""
        await self._flush_durable()
        await self._flush_sightings()

    async def _flush_durable(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch:]
            try:
                refused = await asyncio.to_thread(self._write, [p.item for p in batch])
            except Exception as exc:
                self.failures += 1
                log.exception("writing a batch of %d items failed", len(batch))
                error = exc if isinstance(exc, Unavailable) else Unavailable(f"could not store the report: {exc}")
                for p in batch:
                    if p.done is not None and not p.done.done():
                        p.done.set_exception(error)
                continue
            self.batches_written += 1
            self.items_written += len(batch)
            full = {id(a) for a in refused}
            for p in batch:
                if p.done is None or p.done.done():
                    continue
                if isinstance(p.item, Admission) and id(p.item) in full:
                    p.done.set_exception(AdmissionRefused(p.item))
                else:
                    p.done.set_result(None)

    async def _flush_sightings(self) -> None:
        if not self._sightings:
            return
        sightings, self._sightings = self._sightings, {}
        try:
            await asyncio.to_thread(self._write, list(sightings.values()))
        except Exception:
            self.failures += 1
            log.exception("writing %d sightings failed; keeping them for the next try", len(sightings))
            for device_id, older in sightings.items():  # newer ones that arrived meanwhile win
                newer = self._sightings.get(device_id)
                self._sightings[device_id] = older if newer is None else _merge(older, newer)
            return
        self.batches_written += 1
        self.items_written += len(sightings)

    def _write(self, items: list[Item]) -> list[Admission]:
        admissions = [i for i in items if isinstance(i, Admission)]
        events = [i for i in items if isinstance(i, Event)]
        sightings = [i for i in items if isinstance(i, Sighting)]
        asked = [i for i in items if isinstance(i, PlaceboAsked)]
        seen = [i for i in items if isinstance(i, PlaceboSeen)]
        with self._db.session() as s:
            refused = record_admissions(s, admissions, shared=not self._db.is_sqlite)
            record_events(s, events)
            record_placebos(s, asked, seen)
            record_sightings(s, sightings)
        return refused


def _merge(older: Sighting, newer: Sighting) -> Sighting:
    """One sighting that says what both said: the newer time and attributes, all changed versions,
    the earlier first check-in of each rollout."""
    versions = {**(older.versions or {}), **(newer.versions or {})}
    sequences = [q for q in (older.sequence, newer.sequence) if q is not None]
    watched = {**(newer.watched or {}), **(older.watched or {})}
    return Sighting(newer.device_id, newer.at, newer.attributes or older.attributes, versions or None,
                    max(sequences) if sequences else None, watched or None)


class AdmissionRefused(Exception):
    """An admission the database refused: the rollout stopped (halted, paused, rolled back) since
    the snapshot decided, or other nodes filled the wave first."""

    def __init__(self, admission: Admission) -> None:
        super().__init__(f"admission to wave {admission.wave} of {admission.release_id} in {admission.stratum} "
                         "refused: the rollout is no longer rolling or the wave is full")
        self.admission = admission

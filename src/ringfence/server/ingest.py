"""The write path: check-ins produce sightings, events and admissions; one background task
writes them in batches (one transaction per batch), so thousands of check-ins a second cost a
few commits.

An item submitted with ``durable=True`` returns a future that completes only after its batch
committed: the agent API awaits it before acknowledging an intent or handing out a version to a
newly admitted device. Sightings (last seen, reported versions) are fire-and-forget. When a
batch fails, every waiting future fails with ``Unavailable`` and the caller answers 503; the
agent retries. An admission the database refuses (other nodes filled a capped wave first) fails
with :class:`WaveFull`, and the device is told the baseline instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from ringfence.core.errors import Unavailable
from ringfence.store.access import Sighting, record_sightings
from ringfence.store.db import Database
from ringfence.store.telemetry import Admission, Event, record_admissions, record_events

log = logging.getLogger("ringfence.ingest")

Item = Sighting | Event | Admission


@dataclass(slots=True)
class _Pending:
    item: Item
    done: asyncio.Future[None] | None


class WriteBatcher:
    def __init__(self, db: Database, *, flush_interval_s: float, max_batch: int, max_pending: int) -> None:
        self._db = db
        self._interval = flush_interval_s
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self.batches_written = 0
        self.items_written = 0
        self.failures = 0

    @property
    def depth(self) -> int:
        return len(self._pending)

    def submit(self, item: Item, *, durable: bool = False) -> asyncio.Future[None] | None:
        if len(self._pending) >= self._max_pending:
            raise Unavailable(f"the write queue is full ({self._max_pending} items); retry later",
                              retry_after_s=1)
        future: asyncio.Future[None] | None = None
        if durable:
            future = asyncio.get_running_loop().create_future()
            self._wake.set()
        self._pending.append(_Pending(item, future))
        return future

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval * 10)
            self._wake.clear()
            # Let concurrent requests join this batch (group commit).
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
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
            for p in batch:
                if p.done is None or p.done.done():
                    continue
                if any(p.item is r for r in refused):
                    p.done.set_exception(WaveFull(p.item))  # type: ignore[arg-type]
                else:
                    p.done.set_result(None)

    def _write(self, items: list[Item]) -> list[Admission]:
        admissions = [i for i in items if isinstance(i, Admission)]
        events = [i for i in items if isinstance(i, Event)]
        sightings = [i for i in items if isinstance(i, Sighting)]
        with self._db.session() as s:
            refused = record_admissions(s, admissions, shared=not self._db.is_sqlite)
            record_events(s, events)
            record_sightings(s, sightings)
        return refused


class WaveFull(Exception):
    """An admission the database refused: other nodes filled the wave first."""

    def __init__(self, admission: Admission) -> None:
        super().__init__(f"wave {admission.wave} of {admission.release_id} is full in {admission.stratum}")
        self.admission = admission

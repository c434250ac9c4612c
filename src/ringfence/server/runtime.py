"""Everything a running server holds: settings, database, clock, snapshot, batcher, blob store
and reconciler, with their start-up and shut-down order."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import IO

from ringfence.core.clock import Clock, SystemClock
from ringfence.core.errors import Unavailable
from ringfence.delivery.blobs import BlobStore
from ringfence.server.config import ServerConfig
from ringfence.server.control import Reconciler, load_views, rollouts_marker
from ringfence.server.ingest import WriteBatcher
from ringfence.server.snapshot import FleetSnapshot
from ringfence.store.access import iter_device_records
from ringfence.store.db import Database, redact

log = logging.getLogger("ringfence.server")
LOCK_FILE = "server.lock"


class Runtime:
    def __init__(self, config: ServerConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.db = Database(config.database_url)
        self.blobs = BlobStore(config.blob_dir)
        self.snapshot = FleetSnapshot()
        self.batcher: WriteBatcher
        self.reconciler: Reconciler
        self._tasks: list[asyncio.Task[None]] = []
        self._lock_file: IO[str] | None = None
        self._reload_lock: asyncio.Lock

    async def start(self) -> None:
        self._take_data_dir_lock()
        self.db.check()
        if not self.db.is_current():
            raise Unavailable(
                f"the database at {redact(self.db.url)} is not initialised or needs migrating; "
                "run `ringfence init --data-dir DIR` first")
        self._reload_lock = asyncio.Lock()
        self.batcher = WriteBatcher(self.db, flush_interval_s=self.config.flush_interval_s,
                                    max_batch=self.config.max_batch, max_pending=self.config.max_pending_writes,
                                    sighting_interval_s=self.config.sighting_interval_s)
        self.reconciler = Reconciler(self.db, self.clock, self.config.engine, self.config.reconcile_interval_s,
                                     self.reload_views, judge_interval_s=self.config.judge_interval_s,
                                     on_phase=self.snapshot.set_phase)

        def _devices() -> None:
            with self.db.session() as s:
                self.snapshot.load_devices(iter_device_records(s))

        await asyncio.to_thread(_devices)
        await self.reload_views()
        log.info("fleet snapshot: %d devices, %d active rollouts", len(self.snapshot.devices),
                 len(self.snapshot.views))
        self._tasks = [
            asyncio.create_task(self.batcher.run(), name="ingest"),
            asyncio.create_task(self.reconciler.run(), name="reconciler"),
            asyncio.create_task(self._refresh_population(), name="population"),
        ]
        if not self.db.is_sqlite:
            self._tasks.append(asyncio.create_task(self._watch_rollouts(), name="rollout-watch"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self.batcher.flush()
        self.reconciler.leadership.release()
        self.db.dispose()
        if self._lock_file is not None:
            self._lock_file.close()

    async def reload_views(self) -> None:
        """Re-read active rollouts and baselines into the snapshot (after any transition)."""
        async with self._reload_lock:
            known = set(self.snapshot.admissions)
            loaded = await asyncio.to_thread(load_views, self.db, known)
            self.snapshot.install_views(loaded)

    async def _watch_rollouts(self) -> None:
        """On PostgreSQL several nodes share the database: a halt or a wave change made by
        another node (or its reconciler) reaches this node's snapshot within one interval."""

        def _marker() -> tuple[int, int]:
            with self.db.session() as s:
                return rollouts_marker(s)

        while True:
            await asyncio.sleep(self.config.rollout_watch_s)
            try:
                if await asyncio.to_thread(_marker) != self.snapshot.marker:
                    await self.reload_views()
            except Exception as exc:  # the database may be briefly away; try again next time
                log.warning("cannot check for rollout changes: %s", exc)

    async def _refresh_population(self) -> None:
        while True:
            await asyncio.sleep(self.config.population_refresh_s)
            if self.snapshot.population_changed:
                self.snapshot.refresh_tables()

    def _take_data_dir_lock(self) -> None:
        if not self.db.is_sqlite:
            return
        path = Path(self.config.data_dir) / LOCK_FILE
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise Unavailable(
                f"another ringfence server is using {self.config.data_dir}; one server process owns an "
                "SQLite data directory (use PostgreSQL for several nodes)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_file = handle

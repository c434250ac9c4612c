"""Everything a running server holds: settings, database, clock, snapshot, batcher, blob store,
reconciler, alert dispatcher and metrics, with their start-up and shut-down order."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from pathlib import Path
from typing import IO, Any

from ringfence.core.clock import Clock, SystemClock
from ringfence.core.errors import Unavailable
from ringfence.delivery.blobs import BlobStore
from ringfence.server.alerts import Dispatcher
from ringfence.server.config import ServerConfig
from ringfence.server.control import Reconciler, load_views, rollouts_marker
from ringfence.server.ingest import WriteBatcher
from ringfence.server.metrics import Metrics
from ringfence.server.snapshot import FleetSnapshot
from ringfence.store.access import iter_device_records
from ringfence.store.db import Database, redact
from ringfence.store.releases import list_artifacts
from ringfence.trust import TrustRepository, target_path

log = logging.getLogger("ringfence.server")
LOCK_FILE = "server.lock"
STOP_TIMEOUT_S = 10.0


class Runtime:
    def __init__(self, config: ServerConfig, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        self.db = Database(config.database_url)
        self.blobs = BlobStore(config.blob_dir)
        self.snapshot = FleetSnapshot()
        self.metrics = Metrics()
        self.metrics.watch(self)
        self.alerts = Dispatcher(self.db, self.clock, config, self.metrics)
        self.batcher: WriteBatcher
        self.reconciler: Reconciler
        self.trust: TrustRepository | None = None
        self._published_revocations: dict[str, Any] | None = None
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
                                     on_phase=self.snapshot.set_phase, metrics=self.metrics,
                                     reach=self.snapshot.wave_reach)

        def _devices() -> None:
            with self.db.session() as s:
                self.snapshot.load_devices(iter_device_records(s))

        await asyncio.to_thread(_devices)
        await asyncio.to_thread(self._open_trust)
        await self.reload_views()
        log.info("fleet snapshot: %d devices, %d active rollouts", len(self.snapshot.devices),
                 len(self.snapshot.views))
        self._tasks = [
            asyncio.create_task(self.batcher.run(), name="ingest"),
            asyncio.create_task(self.reconciler.run(), name="reconciler"),
            asyncio.create_task(self._refresh_population(), name="population"),
            asyncio.create_task(self.alerts.run(), name="alerts"),
        ]
        if not self.db.is_sqlite:
            self._tasks.append(asyncio.create_task(self._watch_rollouts(), name="rollout-watch"))
        if self.trust is not None:
            self._tasks.append(asyncio.create_task(self._refresh_timestamp(), name="tuf-timestamp"))

    async def stop(self) -> None:
        """Stop the background services and flush what is queued. Every step is bounded: a
        worker thread stuck in the database must not keep the process from exiting."""
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_S)
            if stuck:
                log.error("background services did not stop within %.0fs: %s", STOP_TIMEOUT_S,
                          ", ".join(sorted(t.get_name() for t in stuck)))
        try:
            await asyncio.wait_for(self.batcher.flush(), STOP_TIMEOUT_S)
        except Exception as exc:  # TimeoutError included: what is lost was not yet acknowledged
            log.error("could not flush queued writes at shutdown: %s", exc or type(exc).__name__)
        try:
            await asyncio.wait_for(asyncio.to_thread(self.reconciler.leadership.release), STOP_TIMEOUT_S)
        except Exception as exc:  # the lock ends with its connection anyway
            log.error("could not release the reconciler's leadership: %s", exc or type(exc).__name__)
        self.db.dispose()
        if self._lock_file is not None:
            self._lock_file.close()

    async def reload_views(self) -> None:
        """Re-read active rollouts and baselines into the snapshot (after any transition)."""
        async with self._reload_lock:
            known = set(self.snapshot.admissions)
            loaded = await asyncio.to_thread(load_views, self.db, known)
            self.snapshot.install_views(loaded)
            if self.trust is not None:
                await asyncio.to_thread(self.publish_revocations)
        self.alerts.wake()  # a transition may have enqueued alerts: send them now

    # -- signed delivery ---------------------------------------------------------------------
    def _open_trust(self) -> None:
        """Open the TUF repository when the server has online keys: accept what the key tooling
        published, and sign every artifact stored before signing was turned on."""
        keys = self.config.trust_key_dir
        if keys is None:
            log.warning("no TUF keys (run `ringfence keys init` and give --trust-keys): artifacts are not signed")
            return
        self.trust = TrustRepository(Path(self.config.data_dir) / "tuf", keys / "online", self.clock)
        accepted = self.trust.accept_published(keys / "publish")
        if accepted:
            log.info("TUF: accepted %s", ", ".join(accepted))
        with self.db.session() as s:
            for artifact in list_artifacts(s, None):
                self.sign_artifact(artifact.content_type, artifact.version, artifact.sha256, artifact.size,
                                   artifact.id)
        self.trust.refresh_timestamp()

    def sign_artifact(self, content_type: str, version: str, sha256: str, size: int, seq: int) -> None:
        """Sign an artifact into the repository (no-op when signing is off or it is signed).
        ``seq`` orders a content type's artifacts: agents refuse to go back to an older one
        unless the newer one is revoked."""
        if self.trust is not None:
            self.trust.add_target(target_path(content_type, version), sha256, size,
                                  {"content_type": content_type, "version": version, "seq": seq})

    def publish_revocations(self) -> None:
        """Sign the versions devices must leave (rolled back) as ``revocations.json``, when
        they changed."""
        assert self.trust is not None
        doc = {"revoked": {ct: {version: {"release": r.release_id, "phase": r.phase, "reason": r.reason}
                                for version, r in sorted(versions.items())}
                           for ct, versions in sorted(self.snapshot.revoked.items()) if versions}}
        if doc != self._published_revocations:
            self.trust.set_revocations(doc)
            self._published_revocations = doc

    def reload_trust(self) -> list[str]:
        """After a key rotation: read the online keys again and accept newly published metadata."""
        keys = self.config.trust_key_dir
        if self.trust is None or keys is None:
            raise Unavailable("signed delivery is off on this server: it has no TUF keys")
        self.trust.reload_keys()
        accepted = self.trust.accept_published(keys / "publish")
        self.trust.refresh_timestamp()
        return accepted

    async def _refresh_timestamp(self) -> None:
        while True:
            await asyncio.sleep(self.config.timestamp_refresh_s)
            try:
                assert self.trust is not None
                await asyncio.to_thread(self.trust.refresh_timestamp)
            except Exception as exc:  # keys away or disk full: say so loudly, try again
                log.error("cannot refresh the TUF timestamp: %s", exc)

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

"""Server settings and safety limits, in one typed place with conservative defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ringfence.core.models import Category
from ringfence.engine.reconciler import EngineLimits
from ringfence.store.change import DEFAULT_APPROVALS


@dataclass(frozen=True, slots=True)
class ServerConfig:
    data_dir: Path
    database_url: str
    host: str = "127.0.0.1"
    port: int = 8470
    # Agent traffic
    poll_interval_s: float = 60.0  # told to agents; they add jitter
    max_events_per_checkin: int = 200
    # Artifacts
    max_artifact_bytes: int = 512 * 1024 * 1024
    # Background services
    reconcile_interval_s: float = 0.5
    judge_interval_s: float = 2.0  # judges re-read the exposed strata at least this often (and on failures)
    flush_interval_s: float = 0.01  # group commit of events and admissions
    sighting_interval_s: float = 0.25  # last-seen and reported versions, merged per device
    max_batch: int = 5_000
    max_pending_writes: int = 200_000
    population_refresh_s: float = 2.0
    rollout_watch_s: float = 1.0  # PostgreSQL: how often to look for other nodes' transitions
    engine: EngineLimits = field(default_factory=EngineLimits)
    # Change management: approvals a release of each category needs (people other than its author)
    approvals: Mapping[Category, int] = field(default_factory=lambda: dict(DEFAULT_APPROVALS))

    # Signed delivery: a key directory made by `ringfence keys init` (only ``online/`` and
    # ``publish/`` are read); default ``DATA_DIR/keys`` when it exists. None of it: unsigned.
    trust_keys: Path | None = None
    timestamp_refresh_s: float = 3600.0  # re-sign the TUF timestamp (it lives a day) this often

    # Alerts (webhooks): a delivery is tried at once, then after backoff, 2x, 4x, ... (capped)
    # until max_attempts have failed. Links in alerts point at public_url (default http://HOST:PORT).
    public_url: str | None = field(default_factory=lambda: os.environ.get("RINGFENCE_PUBLIC_URL") or None)
    webhook_timeout_s: float = 5.0  # per attempt: connect, send and read the answer
    webhook_max_attempts: int = 8
    webhook_backoff_s: float = 1.0
    webhook_backoff_max_s: float = 300.0
    webhook_poll_s: float = 1.0  # how often each node looks for due deliveries
    webhook_batch: int = 50  # deliveries one node claims and sends at a time

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def base_url(self) -> str:
        """Where people reach this server: the links in alerts start here."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def trust_key_dir(self) -> Path | None:
        chosen = self.trust_keys or self.data_dir / "keys"
        return chosen if (chosen / "online").is_dir() else None

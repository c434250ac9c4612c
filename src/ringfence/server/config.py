"""Server settings and safety limits, in one typed place with conservative defaults."""

from __future__ import annotations

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

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def trust_key_dir(self) -> Path | None:
        chosen = self.trust_keys or self.data_dir / "keys"
        return chosen if (chosen / "online").is_dir() else None

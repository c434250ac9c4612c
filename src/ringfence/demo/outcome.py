"""What the demo showed, as numbers: the outcome of the story, and whether it was the story told.

The story: a good release completes; a release of the 2024 file, started past its failed
validation through the emergency path, halts in its first wave with no device exposed beyond that
canary, the machines it crashed revert
by themselves, and a rollback returns everyone else. :func:`untold` names every part that did
not happen; an outcome with none is the story as told, and ``ringfence demo`` exits 0.

Counts are the server's (``rollout status``), read at two moments: ``bad_failed`` once the
crashed machines have reverted by themselves, before the rollback is ordered (devices that then
follow the rollback report ``recalled``: reverted, not failed), and everything else at the end.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ringfence.core.clock import utc

HALTED_PHASES = ("halted", "rolling_back", "rolled_back")


@dataclass(slots=True)
class Outcome:
    """The JSON keys of ``ringfence demo --json`` are a contract: extend, never rename."""

    devices: int = 0  # simulated plus real
    simulated_devices: int = 0
    real_agents: list[dict[str, Any]] = field(default_factory=list)
    good_release: str | None = None
    good_release_phase: str | None = None
    good_release_s: float | None = None  # start to completed
    bad_release: str | None = None
    bad_release_phase: str | None = None
    bad_validation_failed: list[str] = field(default_factory=list)  # the validators that failed it
    bad_emergency: dict[str, Any] | None = None
    bad_halted_wave: str | None = None
    bad_halted_by: str | None = None
    bad_halt_reason: str | None = None
    bad_exposed: int = 0
    bad_first_wave: str | None = None  # the plan's canary
    bad_canary_admitted: int = 0  # devices the canary admitted (within its caps)
    bad_beyond_canary: int = 0  # devices admitted by any later wave: must be none
    bad_failed: int = 0
    bad_self_reverted: int = 0  # failed devices that went back to the last-known-good before any rollback
    bad_reverted: int = 0  # every exposed device back on the last-known-good, by itself or by the rollback
    first_failure_to_halt_s: float | None = None
    fleet: dict[str, Any] = field(default_factory=dict)  # the simulated fleet's own counters
    dashboard_url: str = ""
    data_dir: str = ""
    data_dir_removed: bool = False
    wall_s: float = 0.0
    problems: list[str] = field(default_factory=list)  # things that went wrong on the way (timeouts)

    def as_dict(self) -> dict[str, Any]:
        found = asdict(self)
        found["problems"] = untold(self)
        found["ok"] = not found["problems"]
        return found


def untold(o: Outcome) -> list[str]:
    """Every part of the story that did not happen as told, in order; empty: it did."""
    found = list(o.problems)
    if o.good_release_phase != "completed":
        found.append(f"the good release ended {o.good_release_phase or 'unstarted'}, not completed")
    if o.bad_release_phase not in HALTED_PHASES:
        found.append(f"the bad release ended {o.bad_release_phase or 'unstarted'}, not halted and rolled back")
    elif o.bad_halted_wave is None:
        found.append("the bad release was not halted (its history has no halt)")
    elif o.bad_first_wave is not None and o.bad_halted_wave != o.bad_first_wave:
        found.append(f"the bad release left its canary: halted in wave {o.bad_halted_wave!r}, not "
                     f"{o.bad_first_wave!r}")
    if o.bad_beyond_canary > 0:
        found.append(f"the bad release reached {o.bad_beyond_canary} devices beyond its canary's "
                     f"{o.bad_canary_admitted}")
    if o.bad_release is not None and o.bad_failed < 1:
        found.append("no device failed on the bad release")
    if o.bad_release is not None and o.bad_reverted < 1:
        found.append("no device reverted from the bad release")
    return list(dict.fromkeys(found))


def halt_of(status: dict[str, Any]) -> dict[str, Any] | None:
    """The history entry that halted the rollout, or None."""
    return next((h for h in status.get("history", []) if h.get("to") == "halted"), None)


def seconds_between(first: datetime | None, then: str | None) -> float | None:
    """``then`` (ISO text) minus ``first``, never negative; None when either is unknown."""
    if first is None or then is None:
        return None
    return round(max((utc(datetime.fromisoformat(then)) - utc(first)).total_seconds(), 0.0), 2)


def first_failure_at(data_dir: Path, release: str) -> datetime | None:
    """When the first device reported a failure of ``release`` (its own clock), as the server
    stored it: read from the demo's own SQLite database, which no API call summarises."""
    from sqlalchemy import func, select

    from ringfence.core.models import FAILURE_KINDS
    from ringfence.store.db import DB_FILE, Database
    from ringfence.store.schema import EventRow

    db = Database(f"sqlite:///{(data_dir / DB_FILE).resolve()}", pool_size=1)
    try:
        with db.session() as s:
            at = s.scalar(select(func.min(EventRow.at)).where(
                EventRow.release_id == release, EventRow.kind.in_([k.value for k in FAILURE_KINDS])))
    finally:
        db.dispose()
    return utc(at) if at is not None else None

"""Helpers shared by the store tests (``test_store*.py``): a clock, a three-wave plan, and
short ways to put a content type, an artifact and a release in the database."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ringfence.core.models import Category, DeviceAttributes
from ringfence.core.rollout import Intent
from ringfence.store.access import DeviceRecord, enroll_device
from ringfence.store.db import Database
from ringfence.store.releases import apply_intent, create_artifact, create_content_type, create_release
from ringfence.store.schema import ReleaseRow

T0 = datetime(2024, 7, 19, 4, 0, tzinfo=UTC)

PLAN = """\
name: three-waves
waves:
  - name: canary
    max_devices: 2
    soak: 1m
    gates: {failure_budget: 1, min_devices: 1}
  - name: early
    share: 0.5
    soak: 1m
  - name: everyone
    share: 1.0
    soak: 1m
"""


def at(seconds: float) -> datetime:
    """``T0`` plus ``seconds``."""
    return T0 + timedelta(seconds=seconds)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def count(s: Session, table: type[Any]) -> int:
    return s.scalar(select(func.count()).select_from(table)) or 0


def add_content_type(db: Database, name: str = "sensor/ipc-templates") -> str:
    with db.session() as s:
        create_content_type(s, name, Category.RAPID_RESPONSE, actor="alice", now=T0,
                            unvalidated_reason="rollout mechanics only, no validation")
    return name


def add_release(db: Database, content_type: str, version: str, *, plan: str = PLAN, now: datetime = T0) -> str:
    """Push ``version`` of ``content_type`` (which must exist) and create a draft release of it."""
    with db.session() as s:
        create_artifact(s, content_type=content_type, version=version, sha256=sha(version), size=41_000,
                        actor="alice", now=now)
        return create_release(s, content_type=content_type, version=version, plan_source=plan, actor="alice",
                              now=now).id


def drive(db: Database, release_id: str, *intents: Intent, now: datetime = T0, actor: str = "alice") -> None:
    """Apply ``intents`` in order, each in its own transaction, one second apart."""
    for i, intent in enumerate(intents):
        with db.session() as s:
            apply_intent(s, release_id, intent, actor=actor, reason=f"step {i}",
                         now=now + timedelta(seconds=i))


def ready_release(db: Database, content_type: str, version: str) -> str:
    release_id = add_release(db, content_type, version)
    drive(db, release_id, Intent.PREPARE)
    return release_id


def rolling_release(db: Database, content_type: str, version: str) -> str:
    release_id = add_release(db, content_type, version)
    drive(db, release_id, Intent.PREPARE, Intent.START)
    return release_id


def release_row(db: Database, release_id: str) -> ReleaseRow:
    with db.session() as s:
        row = s.get(ReleaseRow, release_id)
        assert row is not None
        return row


def add_device(db: Database, *, now: datetime = T0, **attributes: Any) -> DeviceRecord:
    """Enroll one device (windows in eu-west unless ``attributes`` say otherwise)."""
    attrs = DeviceAttributes(**{"platform": "windows", "region": "eu-west", **attributes})
    with db.session() as s:
        record, _ = enroll_device(s, attrs, now)
    return record

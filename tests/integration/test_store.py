"""The store's foundations on SQLite and PostgreSQL: migrations match the models, opening a
database, connection settings, and errors when the database is not there.

The repositories are tested in ``test_store_access.py``, ``test_store_releases.py``,
``test_store_telemetry.py`` and ``test_store_concurrency.py``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from ringfence.core.errors import Unavailable
from ringfence.core.models import Category
from ringfence.store.db import Database, alembic_config, redact
from ringfence.store.releases import create_content_type
from ringfence.store.schema import Base, ContentTypeRow, DeviceVersion
from tests.integration.store_support import T0

TABLES = {t.name for t in Base.metadata.sorted_tables}


# --- migrations ---------------------------------------------------------------------------

def test_is_current_only_after_migrate(db_url: str) -> None:
    database = Database(db_url)
    try:
        assert not database.is_current()
        database.migrate()
        assert database.is_current()
    finally:
        database.dispose()


def test_migrate_is_idempotent_and_keeps_data(db: Database) -> None:
    with db.session() as s:
        create_content_type(s, "agent/binary", Category.SOFTWARE, actor="alice", now=T0,
                            unvalidated_reason="rollout mechanics only, no validation")
    db.migrate()
    db.migrate()
    assert db.is_current()
    with db.session() as s:
        assert [r.name for r in s.scalars(select(ContentTypeRow))] == ["agent/binary"]
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [head]


def test_migrations_produce_exactly_the_models(db: Database) -> None:
    assert set(inspect(db.engine).get_table_names()) >= TABLES
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_migrations_downgrade_to_nothing_and_back(db: Database) -> None:
    cfg = alembic_config(db.engine)
    command.downgrade(cfg, "base")
    assert not db.is_current()
    assert not TABLES & set(inspect(db.engine).get_table_names())
    db.migrate()
    assert db.is_current()
    assert set(inspect(db.engine).get_table_names()) >= TABLES


# --- opening a database -------------------------------------------------------------------

def test_foreign_keys_are_enforced(db: Database) -> None:
    with db.session() as s:
        s.add(DeviceVersion(device_id="no-such-device", content_type="agent/binary", version="1.0", reported_at=T0))
        with pytest.raises(IntegrityError):
            s.flush()
        s.rollback()


def test_connection_settings(db: Database) -> None:
    """SQLite: WAL, durable commits, foreign keys, a generous busy timeout. PostgreSQL: READ
    COMMITTED, which the per-content-type start lock relies on (the sibling check after the
    lock must see what the lock holder committed)."""
    with db.session() as s:
        if db.is_sqlite:
            assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert s.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
            assert s.execute(text("PRAGMA busy_timeout")).scalar() == 30000
        else:
            assert s.execute(text("SHOW transaction_isolation")).scalar() == "read committed"


def test_sqlite_transactions_take_the_write_lock_at_once(tmp_path: Path) -> None:
    """BEGIN IMMEDIATE: a transaction that has only read already holds the write lock, so a
    second writer waits at its start instead of failing half-way."""
    db = Database(f"sqlite:///{tmp_path / 'ringfence.db'}")
    db.migrate()
    path = make_url(db.url).database
    assert path is not None
    try:
        with db.session() as s:
            s.execute(select(ContentTypeRow)).all()
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
            finally:
                other.close()
    finally:
        db.dispose()


@pytest.mark.parametrize(
    "url",
    ["postgresql+psycopg://ringfence:hunter2@127.0.0.1:1/ringfence", "sqlite:////nonexistent/dir/ringfence.db"],
    ids=["postgresql", "sqlite"],
)
def test_unreachable_database_is_unavailable_with_redacted_url(url: str) -> None:
    database = Database(url)
    try:
        with pytest.raises(Unavailable) as info:
            database.check()
        assert redact(url) in info.value.message
        assert "hunter2" not in str(info.value)
        with pytest.raises(Unavailable) as info:
            database.migrate()
        assert redact(url) in info.value.message
        with pytest.raises(Unavailable) as info, database.session() as s:
            s.execute(text("SELECT 1"))
        assert redact(url) in info.value.message
        assert "hunter2" not in str(info.value)
    finally:
        database.dispose()


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql+psycopg://ringfence:hunter2@db.example:5432/rf",
     "postgresql+psycopg://ringfence:***@db.example:5432/rf"),
    ("postgresql://ringfence:p@ss:w0rd@db.example/rf", "postgresql://ringfence:***@db.example/rf"),
    ("postgresql://ringfence@db.example/rf", "postgresql://ringfence@db.example/rf"),
    ("postgresql://db.example/rf", "postgresql://db.example/rf"),
    ("sqlite:////var/lib/ringfence/ringfence.db", "sqlite:////var/lib/ringfence/ringfence.db"),
])
def test_redact_hides_passwords(url: str, expected: str) -> None:
    assert redact(url) == expected


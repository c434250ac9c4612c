"""Shared fixtures: databases (SQLite and PostgreSQL), a migrated store, free ports.

PostgreSQL is the scale path and is tested for real at ``RINGFENCE_TEST_PG`` (default
``127.0.0.1:5432``, trust auth). Without it those tests skip with the reason, unless
``RINGFENCE_REQUIRE_PG=1`` (CI), where a missing server is a failure.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from ringfence.store.db import Database

PG_ADMIN_URL = os.environ.get("RINGFENCE_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REQUIRE_PG = os.environ.get("RINGFENCE_REQUIRE_PG") == "1"


def _pg_reachable() -> str | None:
    """None when PostgreSQL answers, else why not."""
    try:
        engine = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any failure means "not here"
        return f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {str(exc).splitlines()[0]}"
    return None


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of a reachable PostgreSQL, or skip (fail under RINGFENCE_REQUIRE_PG=1)."""
    problem = _pg_reachable()
    if problem is not None:
        if REQUIRE_PG:
            pytest.fail(f"RINGFENCE_REQUIRE_PG=1 but {problem}")
        pytest.skip(problem)
    return PG_ADMIN_URL


def create_pg_database(admin_url: str) -> str:
    """Create an empty database with a unique name; returns its URL."""
    name = f"rf_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_pg_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    url = create_pg_database(pg_server)
    try:
        yield url
    finally:
        drop_pg_database(pg_server, url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database URL on each backend (the same test runs on both)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ringfence.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    """A migrated database on each backend."""
    database = Database(db_url)
    database.migrate()
    try:
        yield database
    finally:
        database.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port

"""Opening the database: URL, engine settings per backend, migrations.

``RINGFENCE_DATABASE_URL`` selects PostgreSQL (``postgresql+psycopg://...``); otherwise the
embedded default is SQLite in ``<data dir>/ringfence.db``. SQLite runs in WAL mode with
``synchronous=FULL`` (an acknowledged write survives power loss) and every transaction begins
``IMMEDIATE`` (writers queue instead of failing half-way); one server process owns the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ringfence.core.errors import Unavailable

DB_FILE = "ringfence.db"


def database_url(data_dir: Path | None) -> str:
    url = os.environ.get("RINGFENCE_DATABASE_URL", "").strip()
    if url:
        return url
    if data_dir is None:
        raise Unavailable("no database: pass --data-dir or set RINGFENCE_DATABASE_URL")
    return f"sqlite:///{(data_dir / DB_FILE).resolve()}"


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in creds else f"{scheme}://{user}@{host}"


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _sqlite_pragmas(engine)
        return engine
    return create_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
        connect_args={"connect_timeout": 5},
    )


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "ringfence.store:migrations")
    if engine is not None:
        cfg.attributes["engine"] = engine
    return cfg


class Database:
    """An engine and a session factory. ``session()`` is one transaction: commit on success,
    roll back on any error, so nothing is half-written."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        try:
            with self._sessions() as s, s.begin():
                yield s
        except OperationalError as exc:
            raise Unavailable(f"database {redact(self.url)} failed: {_first_line(exc)}") from exc

    def check(self) -> None:
        """Raise :class:`Unavailable` with a clear message if the database cannot be reached."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            raise Unavailable(
                f"cannot reach the database at {redact(self.url)}: {_first_line(exc)}"
            ) from exc

    def migrate(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        self.check()
        command.upgrade(alembic_config(self.engine), "head")

    def is_current(self) -> bool:
        with self.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        return current == head

    def dispose(self) -> None:
        self.engine.dispose()


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return (str(orig).strip().splitlines() or [type(orig).__name__])[0]

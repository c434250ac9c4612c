"""End-to-end fixtures: a real ``ringfence server`` process on each backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import AgentProcess, ServerProcess


@pytest.fixture(autouse=True)
def _no_agent_outlives_its_test() -> Iterator[None]:
    yield
    while AgentProcess.started:
        AgentProcess.started.pop().cleanup()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.pg)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    """An initialised, running server (SQLite in its data dir, or a fresh PostgreSQL database)."""
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    proc = ServerProcess(tmp_path / "data", database_url=url)
    proc.init()
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()

"""The pure rooms (core, analysis, engine) import nothing that does I/O and nothing from the
rooms that do (store, server, agent, cli, web, delivery)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ringfence

PACKAGE = Path(ringfence.__file__).resolve().parent
PURE = ("core", "analysis", "engine")
FORBIDDEN = (
    "ringfence.store", "ringfence.server", "ringfence.agent", "ringfence.cli", "ringfence.web",
    "ringfence.delivery", "sqlalchemy", "alembic", "fastapi", "starlette", "httpx", "requests", "psycopg",
    "psycopg2", "uvicorn",
)


def pure_modules() -> list[Path]:
    return sorted(p for room in PURE if (PACKAGE / room).is_dir() for p in (PACKAGE / room).rglob("*.py"))


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path = PACKAGE) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``path`` names, relative ones resolved,
    including ``from ringfence import store`` (which names ``ringfence.store``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    own = module_name(path, root)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, node.module] if node.module else base_parts)
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_the_pure_rooms_exist() -> None:
    modules = [module_name(p) for p in pure_modules()]
    assert "ringfence.core.plan" in modules
    assert "ringfence.engine.reconciler" in modules


@pytest.mark.parametrize("path", pure_modules(), ids=module_name)
def test_pure_module_imports_no_io(path: Path) -> None:
    bad = sorted(name for name in imported_modules(path) if forbidden(name))
    assert not bad, f"{module_name(path)} imports {', '.join(bad)}"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import sqlalchemy.orm", True),
        ("from fastapi import FastAPI", True),
        ("from ringfence import store", True),
        ("from ringfence.server.app import create_app", True),
        ("from ..store import db", True),
        ("import httpx as h", True),
        ("from ringfence.core import plan", False),
        ("from . import plan", False),
        ("import requests_toolbelt", False),
        ("import hashlib", False),
    ],
)
def test_the_checker_sees_each_import_form(tmp_path: Path, source: str, expected: bool) -> None:
    """The checker itself: a module placed in ringfence/engine/ with this one line."""
    fake = tmp_path / "ringfence" / "engine" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(source + "\n")
    assert any(forbidden(n) for n in imported_modules(fake, tmp_path / "ringfence")) is expected

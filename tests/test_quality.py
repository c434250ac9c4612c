"""House rules that are checked, not hoped for: strict typing, lint, and a README that documents
every command of the CLI (a command nobody can find is a command nobody uses safely)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import typer.main

from ringfence.cli.main import app

ROOT = Path(__file__).resolve().parent.parent


def _tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)


def test_package_is_strictly_typed() -> None:
    result = _tool("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_code_is_lint_clean() -> None:
    result = _tool("ruff", "check", "--output-format", "concise", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def _commands(group: Any, prefix: str = "ringfence") -> list[str]:
    names: list[str] = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            names += _commands(command, f"{prefix} {name}")
        else:
            names.append(f"{prefix} {name}")
    return names


def test_readme_documents_every_command() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = _commands(typer.main.get_command(app))
    assert "ringfence rollout status" in commands
    documented = set(re.findall(r"`(ringfence [a-z-]+(?: [a-z][a-z-]*)?)", readme))
    # `rollout start|pause|...` and `content-type create NAME ... / content-type list` forms
    for line in readme.splitlines():
        if m := re.search(r"`ringfence ([a-z-]+) ([a-z\\|]+)", line):
            documented |= {f"ringfence {m.group(1)} {verb}" for verb in re.split(r"\\?\|", m.group(2))}
        documented |= {f"ringfence {a} {b}" for a, b in re.findall(r"`([a-z-]+) ([a-z]+)`", line)}
    missing = [c for c in commands if c not in documented]
    assert not missing, f"README.md does not document: {missing}"

"""What every command module of the CLI shares: consoles, the common options, the error
wrapper (one line on stderr, an exit code by kind) and JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from ringfence.cli.client import EXIT_INVALID, ApiError
from ringfence.core.errors import PlanError, RingfenceError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

Server = Annotated[str | None, typer.Option("--server", envvar="RINGFENCE_SERVER", help="API base URL")]
Token = Annotated[str | None, typer.Option("--token", envvar="RINGFENCE_TOKEN", help="API token")]
Json = Annotated[bool, typer.Option("--json", help="print JSON")]
DataDir = Annotated[Path, typer.Option("--data-dir", help="where the database and artifacts live")]

P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str, code: int) -> typer.Exit:
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def reports(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn API, domain and file errors into one line on stderr and an exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            raise fail(exc.message, exc.exit_code) from None
        except PlanError as exc:
            lines = [f"{exc.source}:{p.line or '?'}: {p.field}: {p.message}" for p in exc.problems]
            raise fail("\n".join(lines), EXIT_INVALID) from None
        except RingfenceError as exc:
            from ringfence.cli.client import exit_code_for
            from ringfence.server.errors import status_of

            raise fail(exc.message, exit_code_for(status_of(exc))) from None
        except OSError as exc:
            raise fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), EXIT_INVALID) from None

    return wrapper


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")

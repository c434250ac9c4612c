"""``ringfence validate``: is this artifact safe to release? Judged offline, before anybody is
exposed to it.

Runs the validators a content-type definition requires (:mod:`ringfence.validation`) on one
artifact and prints one line per result, failures first, then a summary; ``--json`` prints one
JSON object as the last line on stdout: ``{"ok", "results": [{"validator", "target", "status",
"message", "details"}], "skipped"}``.

Exit codes (from :mod:`ringfence.cli.client`): 0 every result passed; 1 (``EXIT_ERROR``) a result
failed or is an error — an error is never a pass; 2 (``EXIT_INVALID``) the command could not judge
at all: bad options, a definition that does not validate (every problem with its field and line),
an unreadable artifact, or ``--type``, which needs the server and is not available offline yet.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ringfence.cli.client import EXIT_ERROR, EXIT_INVALID, EXIT_OK
from ringfence.core.errors import InvalidInput

_out = Console(soft_wrap=True, highlight=False)
_err = Console(stderr=True, soft_wrap=True, highlight=False)


def _fail(message: str, code: int) -> typer.Exit:
    _err.print(f"error: {message}", markup=False)
    return typer.Exit(code)


def _names(values: list[str]) -> tuple[str, ...]:
    """``--skip contract --skip fuzz`` or ``--skip contract,fuzz``."""
    return tuple(name.strip() for value in values for name in value.split(",") if name.strip())


def validate_command(
    artifact: Annotated[Path, typer.Argument(help="the artifact to judge")],
    content_type: Annotated[str | None, typer.Option("--type", help="a content type registered on the server")] = None,
    type_file: Annotated[Path | None, typer.Option("--type-file", help="a content-type definition (YAML)")] = None,
    skip: Annotated[list[str] | None, typer.Option("--skip", help="a required validator not to run (repeatable)")]
    = None,
    live_version: Annotated[list[str] | None, typer.Option("--live-version",
                                                           help="a consumer version seen in the fleet (repeatable)")]
    = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of the fuzz validator's mutations")] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Run a content type's required validators on an artifact; exit 1 if any result is not a pass."""
    from ringfence.validation import DefinitionError, Limits, load_definition, validate

    if (content_type is None) == (type_file is None):
        raise _fail("give exactly one of --type TYPE or --type-file DEFINITION.yaml", EXIT_INVALID)
    if content_type is not None:
        raise _fail(f"--type {content_type}: content types registered on the server are not available offline yet:"
                    " use --type-file DEFINITION.yaml", EXIT_INVALID)
    assert type_file is not None
    try:
        definition = load_definition(type_file)
        report = validate(definition, artifact, live_version or (), skip=_names(skip or []),
                          limits=Limits(fuzz_seed=seed))
    except DefinitionError as exc:
        lines = [f"{exc.source}:{p.line or '?'}: {p.field}: {p.message}" for p in exc.problems]
        raise _fail("\n".join(lines), EXIT_INVALID) from None
    except InvalidInput as exc:
        raise _fail(exc.message, EXIT_INVALID) from None
    except OSError as exc:
        raise _fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), EXIT_INVALID) from None

    if json_out:
        sys.stdout.write(json.dumps(report.as_dict(), sort_keys=False) + "\n")
    else:
        for result in report.ordered():
            _out.print(f"{result.status:<6}  {result.validator:<8}  {result.message}", markup=False)
        if report.skipped:
            _out.print(f"not run (--skip): {', '.join(report.skipped)}", markup=False)
        counts = {s: sum(1 for r in report.results if r.status == s) for s in ("failed", "error", "passed")}
        verdict = "ok" if report.ok else "NOT OK"
        _out.print(f"{verdict}: {definition.name} {artifact}: {counts['failed']} failed, {counts['error']} error,"
                   f" {counts['passed']} passed", markup=False)
    raise typer.Exit(EXIT_OK if report.ok else EXIT_ERROR)

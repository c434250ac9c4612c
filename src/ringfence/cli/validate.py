"""``ringfence validate``: is this artifact safe to release? Judged offline, before anybody is
exposed to it.

Runs the validators a content-type definition requires (:mod:`ringfence.validation`) on one
artifact and prints one line per result, failures first, then a summary; ``--json`` prints one
JSON object as the last line on stdout: ``{"ok", "results": [{"validator", "target", "status",
"message", "details"}], "skipped"}``.

Exit codes (from :mod:`ringfence.cli.client`): 0 every result passed; 1 (``EXIT_ERROR``) a result
failed or is an error — an error is never a pass; 2 (``EXIT_INVALID``) the command could not judge
at all: bad options, a definition that does not validate (every problem with its field and line),
an unreadable artifact, or a ``--type`` whose consumer is not on this machine.

``--type TYPE`` reads the definition registered with the content type on the server
(``RINGFENCE_SERVER`` / ``RINGFENCE_TOKEN`` or ``--server`` / ``--token``) and adds the consumer
versions the fleet reports; the consumer runs here, from the directory the definition names, so
run it where that directory exists (the server's host, or a checkout at the same path).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from ringfence.cli.client import EXIT_ERROR, EXIT_INVALID, EXIT_OK
from ringfence.core.errors import InvalidInput

if TYPE_CHECKING:
    from ringfence.validation import ContentTypeDefinition

_out = Console(soft_wrap=True, highlight=False)
_err = Console(stderr=True, soft_wrap=True, highlight=False)


def _fail(message: str, code: int) -> typer.Exit:
    _err.print(f"error: {message}", markup=False)
    return typer.Exit(code)


def _names(values: list[str]) -> tuple[str, ...]:
    """``--skip contract --skip fuzz`` or ``--skip contract,fuzz``."""
    return tuple(name.strip() for value in values for name in value.split(",") if name.strip())


def _registered(content_type: str, server: str | None, token: str | None) -> tuple[ContentTypeDefinition,
                                                                                 tuple[str, ...]]:
    """The definition registered on the server for ``content_type``, and the consumer versions
    its fleet reports."""
    from ringfence.cli.client import ApiError, Client
    from ringfence.validation import parse_definition

    try:
        with Client(server, token) as client:
            found = client.get(f"/v1/content-types/{content_type}")
    except ApiError as exc:
        raise _fail(exc.message, exc.exit_code) from None
    if not found.get("definition"):
        raise _fail(f"content type {content_type!r} has no definition on the server: register one with "
                    "`ringfence content-type create ... --definition FILE`, or use --type-file", EXIT_INVALID)
    base = Path(found["definition_dir"] or ".")
    if not base.is_dir():
        raise _fail(f"the consumer of {content_type} lives in {base} on the server, which is not on this machine: "
                    "run where it is, or use --type-file", EXIT_INVALID)
    definition = parse_definition(found["definition"], f"definition of {content_type}", base)
    return definition, tuple(found.get("live_consumer_versions") or ())


def validate_command(
    artifact: Annotated[Path, typer.Argument(help="the artifact to judge")],
    content_type: Annotated[str | None, typer.Option("--type", help="a content type registered on the server")] = None,
    server: Annotated[str | None, typer.Option("--server", envvar="RINGFENCE_SERVER", help="API base URL (--type)")
                      ] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="RINGFENCE_TOKEN", help="API token (--type)")] = None,
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
    from ringfence.validation import DefinitionError, Limits, Report, ValidationResult, load_definition, validate

    if (content_type is None) == (type_file is None):
        raise _fail("give exactly one of --type TYPE or --type-file DEFINITION.yaml", EXIT_INVALID)
    live = tuple(live_version or ())
    try:
        if content_type is not None:
            definition, fleet = _registered(content_type, server, token)
            live += fleet
        else:
            assert type_file is not None
            definition = load_definition(type_file)
        report = validate(definition, artifact, live, skip=_names(skip or []), limits=Limits(fuzz_seed=seed))
        if gaps := definition.category_gaps():  # what the server's gate would find missing
            report = Report((*report.results, ValidationResult(
                "category", None, "failed", f"category {definition.category.value} also requires "
                f"{', '.join(gaps)}, which {definition.name}'s definition does not run; the server refuses it")),
                report.skipped)
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

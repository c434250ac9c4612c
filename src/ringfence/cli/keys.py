"""``ringfence keys``: the offline TUF key directory (:mod:`ringfence.trust.keys`).

Run these on the machine that keeps the offline keys, never on the server. Each command that
signs writes what the server must publish into ``DIR/publish/`` and says what to hand over: that
directory, and the changed online keys from ``DIR/online/``. ``DIR/root/`` and ``DIR/targets/``
never leave. Like every command: errors print one line on stderr and exit non-zero (codes in
:mod:`ringfence.cli.client`); ``--json`` prints one JSON document on stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ringfence.cli.client import EXIT_INVALID
from ringfence.cli.common import Json, err, fail, out, print_json, reports
from ringfence.trust.keys import ROTATABLE, KeyChange, describe_keys, init_keys, rotate_online, rotate_root

keys_app = typer.Typer(help="Offline TUF signing keys: create, rotate and inspect a key directory.",
                       no_args_is_help=True)

Directory = Annotated[Path, typer.Argument(help="the key directory", show_default=False)]


def _report_change(change: KeyChange, json_out: bool) -> None:
    if json_out:
        print_json(change.as_dict())
        return
    out.print(f"{change.action}: root v{change.root_version}, targets v{change.targets_version} in {change.directory}")
    out.print("Wrote, for the server to publish:")
    for path in change.publish:
        out.print(f"  {path}", markup=False, highlight=False)
    if change.online_keys:
        out.print("Online keys the server must be given (copy into its online keys directory):")
        for path in change.online_keys:
            out.print(f"  {path}", markup=False, highlight=False)
    out.print(f"Hand the server {change.directory / 'publish'} (it accepts every newer file in it). Keep "
              f"{change.directory / 'root'} and {change.directory / 'targets'} offline.", markup=False)


@keys_app.command("init")
@reports
def keys_init(
    directory: Directory,
    root_keys: Annotated[int, typer.Option("--root-keys", help="how many root keys")] = 3,
    root_threshold: Annotated[int, typer.Option("--root-threshold", help="root signatures needed")] = 2,
    targets_keys: Annotated[int, typer.Option("--targets-keys", help="how many top-level targets keys")] = 2,
    targets_threshold: Annotated[int, typer.Option("--targets-threshold", help="targets signatures needed")] = 1,
    json_out: Json = False,
) -> None:
    """Create a key directory: offline root and targets keys with thresholds, the server's online
    keys, root v1 and targets v1 (which delegates every path to the online releases role)."""
    _report_change(init_keys(directory, root_keys, root_threshold, targets_keys, targets_threshold), json_out)


@keys_app.command("rotate")
@reports
def keys_rotate(
    directory: Directory,
    role: Annotated[str, typer.Option("--role", help="root, timestamp, snapshot or releases",
                                      show_default=False)],
    root_keys: Annotated[int | None, typer.Option("--root-keys", help="with --role root: how many new root "
                                                                      "keys (default: as many as now)")] = None,
    root_threshold: Annotated[int | None, typer.Option("--root-threshold", help="with --role root: the new "
                                                                               "threshold (default: unchanged)")
                              ] = None,
    json_out: Json = False,
) -> None:
    """Give a role new keys. Root and the online timestamp and snapshot keys make a new root
    version (signed by the current root keys, and for root also by the new ones); releases makes a
    new targets version. Enrolled agents follow without re-enrolment."""
    if role not in ROTATABLE:
        raise fail(f"--role must be one of {', '.join(ROTATABLE)}, not {role!r}", EXIT_INVALID)
    if role != "root" and (root_keys is not None or root_threshold is not None):
        raise fail("--root-keys and --root-threshold go with --role root", EXIT_INVALID)
    change = rotate_root(directory, root_keys, root_threshold) if role == "root" else rotate_online(directory, role)
    _report_change(change, json_out)


@keys_app.command("show")
@reports
def keys_show(directory: Directory, json_out: Json = False) -> None:
    """Key ids, thresholds, versions and expiries of every role, which private keys are present,
    and any problem that would stop the next signature or an agent's update (exit 2 if any)."""
    report = describe_keys(directory)
    if json_out:
        print_json(report)
    else:
        out.print(f"{report['directory']}: root v{report['root']['version']}, targets v{report['targets']['version']}",
                  markup=False, highlight=False)
        table = Table("role", "version", "threshold", "key ids", "private keys here", "expires")
        for role in ("root", "targets"):
            r = report[role]
            table.add_row(role, str(r["version"]), str(r["threshold"]), _ids(r["keyids"]),
                          f"{r['keys_present']} of {len(r['keyids'])}", r["expires"][:16].replace("T", " "))
        for role in ("timestamp", "snapshot", "releases"):
            r = report[role]
            table.add_row(role, "-", "1", _ids(r["keyids"]), "yes" if r["key_matches"] else "no", "online")
        out.print(table)
        for problem in report["problems"]:
            err.print(f"problem: {problem}", markup=False, highlight=False)
    if report["problems"]:
        raise typer.Exit(EXIT_INVALID)


def _ids(keyids: list[str]) -> str:
    return " ".join(k[:8] for k in keyids)

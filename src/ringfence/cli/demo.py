"""``ringfence demo``: the README's first command. The whole system on this machine — a control
plane, hundreds of simulated agents over real HTTP and a few real agent processes — telling one
story: a good release completes; the 2024 file, started through the emergency path, halts in its
first wave and undoes itself (see :mod:`ringfence.demo`).

Progress goes to stderr (a spinner on a terminal, plain lines otherwise), so that with
``--json`` the last line on stdout is one JSON object. ``--headless`` stops everything once the
story is told; without it the server, the fleet and the lab keep running for the dashboard until
Ctrl-C. Exit 0 when the story happened as told, 1 when it did not (saying what did not happen),
and the usual codes for errors (2 invalid input, 6 the server did not start).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.status import Status
from rich.text import Text

from ringfence.cli.client import EXIT_ERROR
from ringfence.cli.common import Json, err, out, reports

if TYPE_CHECKING:
    from ringfence.demo import Outcome

_STATUS_EVERY_S = 10.0  # without a terminal, the changing status line is printed at most this often


class _Narrator:
    """The story's progress on stderr: lines that stay, each with the seconds since the start,
    and one status line that changes (a spinner on a terminal; otherwise printed now and then)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.began = time.monotonic()
        self._status: Status | None = console.status("starting") if console.is_terminal else None
        self._last_status = ""
        self._last_status_at = 0.0
        if self._status is not None:
            self._status.start()

    def _stamp(self, text: str, style: str = "") -> Text:
        return Text.assemble((f"{time.monotonic() - self.began:6.1f}s ", "dim"), (text, style))

    def step(self, text: str) -> None:
        self.console.print(self._stamp(text), soft_wrap=True)

    def status(self, text: str) -> None:
        if self._status is not None:
            self._status.update(self._stamp(text))
            return
        now = time.monotonic()
        if text != self._last_status and now - self._last_status_at >= _STATUS_EVERY_S:
            self.console.print(self._stamp(text, "dim"), soft_wrap=True)
            self._last_status, self._last_status_at = text, now

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None


@reports
def demo_command(
    headless: Annotated[bool, typer.Option("--headless", help="stop everything once the story is told instead of "
                                                              "keeping the server up for the dashboard")] = False,
    json_out: Json = False,
    devices: Annotated[int, typer.Option("--devices", min=20, max=5000, help="simulated agents (one process, "
                                                                            "real HTTP)")] = 600,
    real_agents: Annotated[int, typer.Option("--real-agents", min=0, max=12, help="real `ringfence agent run` "
                                             "processes supervising the sample sensor")] = 3,
    port: Annotated[int | None, typer.Option("--port", help="the server's port (default: a free one)")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="a new or empty directory for the "
                                                  "database, artifacts and logs (default: a temporary one, "
                                                  "removed at exit)")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="seed of the simulated fleet's jitter")] = None,
) -> None:
    """Run the whole system on this machine: a good release completes, then the 2024 file, started
    through the emergency path, halts in its first wave and rolls back, the crashed machines
    reverting by themselves. Prints a summary and the dashboard's address."""
    from ringfence.demo import DemoSettings, Examples, Stage, run_demo, stop_all, untold

    settings = DemoSettings(devices=devices, real_agents=real_agents, port=port, seed=seed, headless=headless)
    examples = Examples.find()
    directory = data_dir.resolve() if data_dir is not None else Path(tempfile.mkdtemp(prefix="ringfence-demo-"))
    narrator = _Narrator(err)
    stage = Stage()
    told: list[Outcome] = []

    def show(outcome: Outcome) -> None:  # the story is told and everything keeps running
        told.append(outcome)
        outcome.data_dir_removed = data_dir is None  # at exit
        narrator.close()
        token = stage.control_plane.admin_token if stage.control_plane is not None else ""
        _show(outcome, json_out, token, removed=data_dir is None)

    interrupted = False
    try:
        told.append(asyncio.run(run_demo(settings, examples, directory, narrator, stage, told=show)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        interrupted = True
    finally:
        narrator.close()
        stop_all(stage)
        if data_dir is None:
            shutil.rmtree(directory, ignore_errors=True)
    if not told:
        err.print("stopped before the story was told", highlight=False)
        raise typer.Exit(130 if interrupted else EXIT_ERROR)
    outcome = told[-1]
    outcome.data_dir_removed = data_dir is None
    if headless:
        if json_out:
            sys.stdout.write(json.dumps(outcome.as_dict(), separators=(",", ":")) + "\n")
        else:
            _summary(outcome)
    elif interrupted:
        err.print("stopped: fleet, agents and server", highlight=False)
    problems = untold(outcome)
    if problems:
        err.print(f"error: the story did not happen as told: {'; '.join(problems)}", markup=False, highlight=False)
        raise typer.Exit(EXIT_ERROR)


def _show(outcome: Outcome, json_out: bool, token: str, removed: bool) -> None:
    """The story is told; the server keeps running: the summary, the dashboard and its token."""
    if json_out:
        sys.stdout.write(json.dumps(outcome.as_dict(), separators=(",", ":")) + "\n")
        sys.stdout.flush()
    else:
        _summary(outcome)
    console = err if json_out else out
    console.print(Text.assemble(("Dashboard: ", "bold"), outcome.dashboard_url,
                                "  (log in with this admin token:)"))
    console.print(token, markup=False, highlight=False)
    console.print(f"Data in {outcome.data_dir}" + (" (removed at exit)" if removed else ""), highlight=False)
    console.print("The fleet, the lab and the server keep running. Press Ctrl-C to stop them.", highlight=False)


def _summary(o: Outcome) -> None:
    from ringfence.demo import untold

    problems = untold(o)
    head = Text("the story as told", "bold green") if not problems else Text("NOT the story as told", "bold red")
    out.print(Text.assemble(("Ringfence demo: ", "bold"), head, f" ({o.wall_s:.0f}s)"))
    good = f"{o.good_release} {o.good_release_phase}"
    if o.good_release_s is not None:
        good += f" in {o.good_release_s:.0f}s"
    real = len(o.real_agents)
    out.print(f"  good release {good}: {o.devices} devices ({o.simulated_devices} simulated, {real} real "
              f"agent{'' if real == 1 else 's'})", highlight=False, markup=False)
    if o.bad_release is not None:
        failed = ", ".join(o.bad_validation_failed) or "nothing"
        emergency = o.bad_emergency or {}
        out.print(f"  bad release {o.bad_release}: validation failed ({failed}); emergency start by "
                  f"{emergency.get('started_by', '?')}, approved by {emergency.get('approved_by', '?')}",
                  highlight=False, markup=False)
        if o.bad_halted_wave is not None:
            to_halt = "?" if o.first_failure_to_halt_s is None else f"{o.first_failure_to_halt_s:.1f}s"
            out.print(f"    halted in wave {o.bad_halted_wave!r} by the {o.bad_halted_by}, {to_halt} after the first "
                      f"failure: {o.bad_halt_reason}", highlight=False, markup=False)
        share = 100 * o.bad_exposed / o.devices if o.devices else 0.0
        out.print(f"    exposed {o.bad_exposed} of {o.devices} devices ({share:.1f}%), failed {o.bad_failed}, "
                  f"reverted {o.bad_reverted} ({o.bad_self_reverted} by themselves, the rest by the rollback); "
                  f"phase {o.bad_release_phase}", highlight=False, markup=False)
    for m in o.real_agents:
        blocked = "; ".join(f"{v} blocked: {why}" for v, why in m["blocked"].items())
        out.print(f"  {m['name']}: {m['boots']} boots, {m['host_crashes']} crashes, runs {m['running']}"
                  + (f"; {blocked}" if blocked else ""), highlight=False, markup=False)
    for p in problems:
        out.print(Text.assemble(("  problem: ", "red"), p))

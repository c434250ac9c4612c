"""``ringfence sim``: simulated fleets.

``sim run`` and ``sim compare`` run the offline simulator (:mod:`ringfence.sim`): a scenario's
fleet of up to millions of hosts in arrays, Ringfence's engine and judges on a simulated clock,
and models of other strategies; a progress bar per strategy on stderr, a table or ``--json`` (one
object, or one list, as the last line), and ``--plot`` for a PNG of the curves.
``sim live`` runs many simulated agents in this process against a real server, over the agent
API, with faults chosen on the command line. Like every command: ``--server`` /
``RINGFENCE_SERVER``, one-line errors with the exit codes of :mod:`ringfence.cli.client`, and
``--json`` for one JSON object — here the fleet's counters, as the last line on stdout.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from ringfence.cli.client import DEFAULT_SERVER, EXIT_AUTH, EXIT_ERROR, EXIT_INVALID, EXIT_UNAVAILABLE
from ringfence.core.errors import InvalidInput
from ringfence.core.models import PLATFORMS

if TYPE_CHECKING:
    from ringfence.core.plan import Plan
    from ringfence.sim.live import LiveFleet
    from ringfence.sim.result import RunResult
    from ringfence.sim.scenario import Scenario

FAULTS = ("crash", "silent", "probe")
_LIVE_OPTIONS = {"trial_s": "--trial", "heartbeat_s": "--heartbeat", "poll_bounds_s": "--min-interval/--max-interval",
                 "reboot_s": "--reboot", "ramp_s": "--ramp", "max_connections": "--connections"}

sim_app = typer.Typer(help="Simulated fleets: millions of hosts offline, or many agents against a server.",
                      no_args_is_help=True)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def _fail(message: str, code: int) -> typer.Exit:
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _names(value: str, option: str) -> tuple[str, ...]:
    names = tuple(n.strip().lower() for n in value.split(",") if n.strip())
    if not names:
        raise _fail(f"{option} needs at least one name (comma-separated)", EXIT_INVALID)
    return names


@sim_app.command("live")
def live(
    server: Annotated[str | None, typer.Option("--server", envvar="RINGFENCE_SERVER", help="API base URL")] = None,
    enroll_token: Annotated[str | None, typer.Option("--enroll-token", envvar="RINGFENCE_ENROLL_TOKEN",
                                                     help="enrolment token the devices enroll with")] = None,
    devices: Annotated[int, typer.Option("--devices", min=1, max=100_000, help="how many devices")] = 100,
    duration: Annotated[float | None, typer.Option("--duration", help="seconds to run (default: until "
                                                                      "interrupted)")] = None,
    platforms: Annotated[str, typer.Option("--platforms", help="comma-separated platforms the fleet spreads "
                                                               "over")] = ",".join(PLATFORMS),
    regions: Annotated[str, typer.Option("--regions", help="comma-separated regions")] = "eu-west,us-east",
    bad_version: Annotated[str | None, typer.Option("--bad-version", help="a version that fails as it loads")
                           ] = None,
    bad_platforms: Annotated[str | None, typer.Option("--bad-platforms", help="comma-separated platforms it "
                                                                              "fails on (default: all)")] = None,
    fault: Annotated[str, typer.Option("--fault", help="how it fails: crash (reboots; the crash-loop guard "
                                                       "reverts), silent (never reports again), probe (fails its "
                                                       "trial)")] = "crash",
    trial: Annotated[float, typer.Option("--trial", help="seconds a new version is on trial")] = 10.0,
    heartbeat: Annotated[float, typer.Option("--heartbeat", help="seconds between heartbeats in trial")] = 5.0,
    min_interval: Annotated[float, typer.Option("--min-interval", help="shortest check-in interval obeyed")] = 1.0,
    max_interval: Annotated[float, typer.Option("--max-interval", help="longest check-in interval obeyed")
                            ] = 3600.0,
    reboot: Annotated[float, typer.Option("--reboot", help="seconds a crashed host takes to come back")] = 2.0,
    ramp: Annotated[float, typer.Option("--ramp", help="devices start over this many seconds")] = 5.0,
    connections: Annotated[int, typer.Option("--connections", min=1, help="HTTP connections shared by the "
                                                                          "fleet")] = 16,
    seed: Annotated[int | None, typer.Option("--seed", help="seed of the jitter")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print the counters as one JSON line at the end")] = False,
) -> None:
    """Run N simulated agents against a real server, speaking the agent API, with a bad version
    that crashes, goes silent or fails its probe on chosen platforms."""
    from ringfence.sim.live import (
        EnrolmentRefused,
        FaultKind,
        FaultSpec,
        FleetConfig,
        LiveFleet,
        LiveFleetError,
        ServerUnreachable,
        spread,
    )

    if not enroll_token:
        raise _fail("no enrolment token: give --enroll-token or set RINGFENCE_ENROLL_TOKEN", EXIT_INVALID)
    if duration is not None and duration <= 0:
        raise _fail("--duration must be positive", EXIT_INVALID)
    if fault not in FAULTS:
        raise _fail(f"--fault must be one of {', '.join(FAULTS)}, not {fault!r}", EXIT_INVALID)
    if bad_version is None and bad_platforms is not None:
        raise _fail("--bad-platforms needs --bad-version", EXIT_INVALID)
    bad = None
    if bad_version is not None:
        only = frozenset(_names(bad_platforms, "--bad-platforms")) if bad_platforms is not None else frozenset()
        bad = FaultSpec(bad_version, FaultKind(fault), only)
    try:
        config = FleetConfig(trial_s=trial, heartbeat_s=heartbeat, poll_bounds_s=(min_interval, max_interval),
                             reboot_s=reboot, ramp_s=ramp, max_connections=connections)
        fleet = LiveFleet(server or DEFAULT_SERVER, enroll_token,
                          spread(devices, platforms=_names(platforms, "--platforms"),
                                 regions=_names(regions, "--regions")),
                          fault=bad, config=config, seed=seed)
    except InvalidInput as exc:
        setting = str(exc.details.get("field"))
        message = exc.message.replace(setting, _LIVE_OPTIONS[setting], 1) if setting in _LIVE_OPTIONS else exc.message
        raise _fail(message, EXIT_INVALID) from None
    try:
        asyncio.run(_drive(fleet, duration, show=not json_out))
    except KeyboardInterrupt:
        pass  # stopped by the operator: report what the fleet did
    except EnrolmentRefused as exc:
        raise _fail(str(exc), EXIT_AUTH) from None
    except ServerUnreachable as exc:
        raise _fail(str(exc), EXIT_UNAVAILABLE) from None
    except LiveFleetError as exc:
        raise _fail(str(exc), EXIT_ERROR) from None
    report = fleet.report()
    if json_out:
        sys.stdout.write(json.dumps(report, separators=(",", ":")) + "\n")
    else:
        out.print(_view(report))


async def _drive(fleet: LiveFleet, duration: float | None, *, show: bool) -> None:
    """Run the fleet for ``duration`` (or until interrupted), redrawing its counters twice a second."""
    await fleet.start()
    loop = asyncio.get_running_loop()
    ends = None if duration is None else loop.time() + duration
    try:
        if not show:
            await (asyncio.sleep(duration) if duration is not None else asyncio.Event().wait())
            return
        with Live(_view(fleet.report()), console=err, transient=True, refresh_per_second=2) as screen:
            while ends is None or loop.time() < ends:
                await asyncio.sleep(0.5 if ends is None else max(0.0, min(0.5, ends - loop.time())))
                screen.update(_view(fleet.report()))
    finally:
        await fleet.stop()


def _view(report: dict[str, Any]) -> Group:
    counters = Table("devices", "enrolled", "check-ins", "errors", "downloads", "healthy", "crashed",
                     "auto-reverted", "rolled back", "recalled", "silent", "updating",
                     title=f"live fleet after {report['elapsed_s']:.0f}s")
    counters.add_row(*(str(report[k]) for k in ("devices", "enrolled", "checkins", "errors", "downloads", "healthy",
                                                "crashed", "auto_reverted", "rolled_back", "recalled", "silent",
                                                "in_flight")))
    versions = Table("content type", "version", "devices", title="running")
    for content_type, counts in report["versions"].items():
        for version, n in counts.items():
            versions.add_row(content_type, version, str(n))
    return Group(counters, versions)


# -- offline: the simulator ------------------------------------------------------------------------

def _scenario(name: str, hosts: int | None) -> Scenario:
    from ringfence.sim.scenario import load_scenario

    try:
        scenario = load_scenario(name)
    except InvalidInput as exc:
        raise _fail(exc.message, EXIT_INVALID) from None
    return scenario.scaled(hosts) if hosts else scenario


def _plan(path: Path | None, scenario: Scenario) -> Plan | None:
    """The plan file, parsed with the scenario's content category (its health defaults)."""
    if path is None:
        return None
    from ringfence.core.plan import parse_plan

    try:
        return parse_plan(path.read_text(encoding="utf-8"), str(path), scenario.category)
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror}", EXIT_INVALID) from None
    except InvalidInput as exc:
        raise _fail(exc.message, EXIT_INVALID) from None


def _progress(json_out: bool, label: str) -> tuple[Progress | None, Callable[[str, float], None] | None]:
    """A progress bar per strategy on stderr (not with --json: stdout stays one JSON line)."""
    if json_out or not sys.stderr.isatty():
        return None, None
    bars = Progress(TextColumn("{task.description:<30}"), BarColumn(), TextColumn("{task.percentage:>5.1f} %"),
                    TimeElapsedColumn(), console=err, transient=False)
    tasks: dict[str, TaskID] = {}

    def tick(strategy: str, fraction: float) -> None:
        if strategy not in tasks:
            tasks[strategy] = bars.add_task(f"{label}: {strategy}", total=1.0)
        bars.update(tasks[strategy], completed=min(fraction, 1.0))

    return bars, tick


def _results_table(results: list[RunResult], title: str) -> Table:
    table = Table("strategy", "exposed", "crashed", "auto-recovered", "manual repair", "failure -> halt",
                  "99 % updated", "halted", title=title)
    for r in results:
        halt = "-" if r.first_failure_to_halt_s is None else f"{r.first_failure_to_halt_s:,.0f} s"
        t99 = "-" if r.time_to_99pct_s is None else f"{r.time_to_99pct_s / 60:,.0f} min"
        table.add_row(r.strategy, f"{r.exposed:,}", f"{r.crashed:,}", f"{r.auto_recovered:,}",
                      f"{r.manual_repair:,}", halt, t99, "yes" if r.halted else "no")
    return table


@sim_app.command("run")
def run(
    scenario: Annotated[str, typer.Argument(help="a built-in scenario (crowdstrike-2024, good-update, "
                                                 "subtle-regression) or a scenario YAML file")],
    plan: Annotated[Path | None, typer.Option("--plan", help="plan file (default: the default plan for the "
                                                             "scenario's content category)")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="random seed (default: the scenario's)")] = None,
    hosts: Annotated[int | None, typer.Option("--hosts", min=100, max=50_000_000,
                                              help="scale the scenario's fleet to about this many hosts")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="write a PNG of the run's curves")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON object (last line)")] = False,
) -> None:
    """Simulate Ringfence rolling out the scenario's update with a plan."""
    from ringfence.sim.run import run_plan

    sc = _scenario(scenario, hosts)
    parsed = _plan(plan, sc)
    bars, tick = _progress(json_out, sc.name)
    began = time.perf_counter()
    if bars is not None:
        with bars:
            result = run_plan(sc, parsed, seed if seed is not None else sc.seed, progress=tick,
                              name=f"ringfence ({parsed.name if parsed else 'default plan'})")
    else:
        result = run_plan(sc, parsed, seed if seed is not None else sc.seed,
                          name=f"ringfence ({parsed.name if parsed else 'default plan'})")
    result.wall_s = time.perf_counter() - began
    if plot is not None:
        from ringfence.sim.plot import plot_runs

        plot_runs([result], plot, f"{sc.name}, {result.hosts:,} hosts")
    if json_out:
        print(json.dumps(result.as_dict()))
        return
    out.print(_results_table([result], f"{sc.name}: {result.hosts:,} hosts, seed {result.seed}"))
    for h in result.history:
        out.print(f"  {h['at_s']:>8,.0f} s  {h['intent']:<16} {h['reason']}", markup=False, highlight=False)
    if plot is not None:
        out.print(f"plot: {plot}")


@sim_app.command("compare")
def compare_cmd(
    scenario: Annotated[str, typer.Argument(help="a built-in scenario or a scenario YAML file")],
    plan: Annotated[Path | None, typer.Option("--plan", help="Ringfence's plan (default: the category's)")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="random seed (default: the scenario's)")] = None,
    hosts: Annotated[int | None, typer.Option("--hosts", min=100, max=50_000_000,
                                              help="scale the scenario's fleet to about this many hosts")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="write a PNG with one line per strategy")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print one JSON list (last line)")] = False,
) -> None:
    """Every built-in strategy and Ringfence's plan on the same fleet, side by side."""
    from ringfence.sim.run import compare

    sc = _scenario(scenario, hosts)
    parsed = _plan(plan, sc)
    bars, tick = _progress(json_out, sc.name)
    the_seed = seed if seed is not None else sc.seed
    if bars is not None:
        with bars:
            results = compare(sc, the_seed, parsed, tick)
    else:
        results = compare(sc, the_seed, parsed)
    if plot is not None:
        from ringfence.sim.plot import plot_runs

        plot_runs(results, plot, f"{sc.name}, {results[0].hosts:,} hosts")
    if json_out:
        print(json.dumps([r.as_dict() for r in results]))
        return
    out.print(_results_table(results, f"{sc.name}: {results[0].hosts:,} hosts, seed {the_seed}"))
    if plot is not None:
        out.print(f"plot: {plot}")

"""Running the demo: the control plane, the fleet and the lab up, the story told, everything down.

Shutdown is in the reverse order of start-up and runs however the demo ends (the story told,
an error, Ctrl-C, SIGTERM): the simulated fleet stops, the lab's agents get SIGTERM (SIGKILL
after a grace period) and any sensor they left behind is killed, then the server gets the same.
Every child runs in its own session, so a Ctrl-C in the terminal reaches only the demo, which
stops them in that order; :func:`stop_all` can run again from the caller's ``finally``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ringfence.demo.control_plane import Api, ControlPlane, free_port, port_is_free
from ringfence.demo.errors import InvalidInput
from ringfence.demo.lab import Lab, Machine
from ringfence.demo.outcome import Outcome
from ringfence.demo.settings import BAD_VERSION, CONTENT_TYPE, GOOD_VERSION, SIM_REGIONS, DemoSettings, Examples
from ringfence.demo.story import Narrator, Story
from ringfence.sim.live import FaultKind, FaultSpec, FleetConfig, LiveFleet, spread

log = logging.getLogger("ringfence.demo")


@dataclass(slots=True)
class Stage:
    """What the demo started, so that it can all be stopped (by :func:`stop_all`)."""

    control_plane: ControlPlane | None = None
    lab: Lab | None = None
    fleet: LiveFleet | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


async def run_demo(settings: DemoSettings, examples: Examples, data_dir: Path, narrator: Narrator, stage: Stage, *,
                   told: Callable[[Outcome], None] | None = None) -> Outcome:
    """Tell the story on a fresh control plane in ``data_dir``. Headless, return once it is
    told; otherwise call ``told(outcome)`` and keep everything running until cancelled
    (Ctrl-C or SIGTERM). Everything started is recorded in ``stage`` and stopped before this
    returns or raises; the caller may :func:`stop_all` it again, in case this was cut short."""
    began = time.monotonic()
    port = settings.port or free_port()
    if settings.port is not None and not port_is_free(port):
        raise InvalidInput(f"port {port} is in use; give another --port or leave it out", field="port", value=port)
    outcome = Outcome(simulated_devices=settings.devices, devices=settings.devices + settings.real_agents,
                      data_dir=str(data_dir), dashboard_url=f"http://127.0.0.1:{port}/")
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if main is not None:
            loop.add_signal_handler(sig, main.cancel)
    try:
        narrator.step(f"control plane: SQLite in {data_dir}, server on port {port}")
        stage.control_plane = cp = ControlPlane(data_dir, port, settings.agent_poll_s)
        await cp.start(settings.startup_timeout_s)
        api = Api(cp.url, cp.admin_token)
        try:
            story = Story(api, settings, examples, narrator, outcome)
            enroll_token = await story.prepare()
            stage.lab = lab = Lab(data_dir / "lab", settings.real_agents, server_url=cp.url, enroll_token=enroll_token,
                                  sensor=examples.sensor, content_type=CONTENT_TYPE, trial_s=settings.lab_trial_s,
                                  reboot_s=settings.lab_reboot_s, trusted_root=cp.trusted_root)
            lab.start()
            stage.tasks.append(asyncio.create_task(lab.supervise(on_exit=_exited(narrator)), name="lab"))
            stage.fleet = fleet = _fleet(settings, cp.url, enroll_token)
            await fleet.start()
            await story.enrolled(fleet, lab)
            if await story.good_release():
                await story.settled_on(fleet, lab, GOOD_VERSION)
                await story.bad_release(fleet, lab)
            outcome.real_agents = lab.report()
            outcome.fleet = _fleet_summary(fleet)
            outcome.wall_s = round(time.monotonic() - began, 1)
            if not settings.headless:
                if told is not None:
                    told(outcome)
                await asyncio.Event().wait()  # until Ctrl-C or SIGTERM
        finally:
            await api.close()
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await stop_fleet(stage)
        stop_all(stage)
    return outcome


def _fleet(settings: DemoSettings, server_url: str, enroll_token: str) -> LiveFleet:
    """The simulated devices: spread over every platform and three regions; 291.2 crashes the
    Windows ones as it loads, again at every boot, until their crash-loop guard reverts it."""
    config = FleetConfig(trial_s=settings.sim_trial_s, heartbeat_s=settings.sim_heartbeat_s,
                         poll_bounds_s=(settings.sim_poll_s, 3600.0), crash_after_s=settings.sim_crash_after_s,
                         reboot_s=settings.sim_reboot_s, ramp_s=settings.sim_ramp_s)
    return LiveFleet(server_url, enroll_token, spread(settings.devices, regions=SIM_REGIONS),
                     fault=FaultSpec(BAD_VERSION, FaultKind.CRASH, frozenset({"windows"}), CONTENT_TYPE),
                     config=config, seed=settings.seed)


def _fleet_summary(fleet: LiveFleet) -> dict[str, object]:
    report = fleet.report()
    keep = ("devices", "checkins", "errors", "crashed", "auto_reverted", "rolled_back", "recalled", "healthy",
            "versions")
    return {k: report[k] for k in keep}


def _exited(narrator: Narrator) -> Callable[[Machine], None]:
    def tell(machine: Machine) -> None:
        if machine.exited is None:
            narrator.step(f"{machine.name}: the sensor crashed and took the machine down (crash "
                          f"{machine.host_crashes}); rebooting")
        else:
            narrator.step(f"{machine.name}: the agent exited with {machine.exited} (see {machine.log_path})")

    return tell


async def stop_fleet(stage: Stage) -> None:
    for task in stage.tasks:
        task.cancel()
    for task in stage.tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    stage.tasks.clear()
    if stage.fleet is not None:
        fleet, stage.fleet = stage.fleet, None
        try:
            await fleet.stop()
        except Exception:  # a bug in one simulated device must not keep the processes running
            log.exception("the simulated fleet stopped with an error")


def stop_all(stage: Stage) -> None:
    """The lab's agents and sensors, then the server: SIGTERM, then SIGKILL. Idempotent."""
    if stage.lab is not None:
        stage.lab.stop()
    if stage.control_plane is not None:
        stage.control_plane.stop()

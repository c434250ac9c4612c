"""The demo's settings in one typed place, and the example files it publishes.

Times are a demo's, not a fleet's: the server asks agents to check in every second, the
simulated devices obey at most every few seconds (so one process can drive hundreds of them on
a shared two-core machine), and trials, crashes and reboots take seconds. The plan
(``examples/plans/demo.yaml``) keeps the shape of the rapid-content plan on that clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ringfence.core.errors import InvalidInput

CONTENT_TYPE = "sensor/ipc-templates"
GOOD_VERSION = "291.1"
BAD_VERSION = "291.2"
SIM_REGIONS = ("eu-west", "us-east", "ap-south")
LAB_REGION = "lab"  # the real agents' own region: their strata are theirs, so every canary includes them
LAB_PLATFORMS = ("windows", "linux", "macos")  # the real agents cycle through these
MAX_DEVICES = 5000
MAX_REAL_AGENTS = 12


@dataclass(frozen=True, slots=True)
class DemoSettings:
    """What ``ringfence demo`` runs. ``port`` None: a free port."""

    devices: int = 600
    real_agents: int = 3
    port: int | None = None
    seed: int | None = None
    headless: bool = False
    # The server's check-in interval; the real agents follow it.
    agent_poll_s: float = 1.0
    # Simulated devices: a trial, a crash partway through it and a reboot, in seconds.
    sim_trial_s: float = 4.0
    sim_heartbeat_s: float = 2.0
    sim_crash_after_s: float = 1.5
    sim_reboot_s: float = 2.5
    # Real agents: their trial, and how long a crashed machine takes to come back.
    lab_trial_s: float = 3.0
    lab_reboot_s: float = 1.0
    # How long the story waits for each thing it expects before it says it did not happen.
    startup_timeout_s: float = 60.0
    release_timeout_s: float = 150.0
    halt_timeout_s: float = 60.0
    settle_timeout_s: float = 30.0
    rollback_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not 20 <= self.devices <= MAX_DEVICES:
            raise InvalidInput(f"--devices must be from 20 to {MAX_DEVICES}, not {self.devices}", field="devices",
                               value=self.devices)
        if not 0 <= self.real_agents <= MAX_REAL_AGENTS:
            raise InvalidInput(f"--real-agents must be from 0 to {MAX_REAL_AGENTS}, not {self.real_agents}",
                               field="real_agents", value=self.real_agents)
        if self.port is not None and not 1 <= self.port <= 65535:
            raise InvalidInput(f"--port must be from 1 to 65535, not {self.port}", field="port", value=self.port)

    @property
    def sim_poll_s(self) -> float:
        """The shortest interval a simulated device checks in at: about 150 check-ins a second
        for the whole fleet, which one process drives with room to spare."""
        return max(3.0, self.devices / 150)

    @property
    def sim_ramp_s(self) -> float:
        """The fleet powers on over this long, so enrolments do not all arrive at once."""
        return max(3.0, self.devices / 100)


@dataclass(frozen=True, slots=True)
class Examples:
    """The files of ``examples/`` the demo publishes: the content type's definition (its
    reference consumer, the sample sensor, sits next to it), the good and the 2024-style
    instance, and the plan."""

    root: Path

    @property
    def definition(self) -> Path:
        return self.root / "sensor" / "ipc-templates.yaml"

    @property
    def sensor(self) -> Path:
        return self.root / "sensor" / "sensor.py"

    @property
    def good(self) -> Path:
        return self.root / "sensor" / "instances" / "good.json"

    @property
    def bad(self) -> Path:
        return self.root / "sensor" / "instances" / "bad-field-count.json"

    @property
    def plan(self) -> Path:
        return self.root / "plans" / "demo.yaml"

    def missing(self) -> list[Path]:
        return [p for p in (self.definition, self.sensor, self.good, self.bad, self.plan) if not p.is_file()]

    @classmethod
    def find(cls, start: Path | None = None) -> Examples:
        """``examples/`` of the checkout this package runs from (``pip install -e .``), else of the
        current directory; InvalidInput naming what is missing otherwise."""
        here = Path(__file__).resolve().parents[3] / "examples"
        candidates = [here, (start or Path.cwd()) / "examples"]
        for root in candidates:
            found = cls(root.resolve())
            if not found.missing():
                return found
        missing = ", ".join(str(p) for p in cls(candidates[0]).missing())
        raise InvalidInput("the demo publishes the examples of a Ringfence checkout and cannot find them "
                           f"(missing: {missing}); run it from the repository, installed with `pip install -e .`",
                           field="examples", value=str(candidates[0]))

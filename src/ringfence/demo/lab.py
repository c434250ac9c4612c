"""The lab: a few real endpoints, each a ``ringfence agent run`` process over its own state
directory, supervising the sample sensor as the program under update.

The sensor runs like a kernel driver (``crash: host``): when it reads past the end of its input
array, it takes the machine down, and the agent with it (exit code 70, nothing written). The lab
is the power supply: it brings a crashed machine back after ``reboot_s``, as a real one reboots,
and the agent finds the evidence in its journal at start-up. After ``boot_limit`` boots of the
same bad version the crash-loop guard reverts it before the sensor loads it again — with no
person and no server involved — which is what the demo shows.

Each machine states its platform (windows, linux, macos in turn) and the region ``lab``, so the
lab's devices form strata of their own and every canary includes them. :meth:`Lab.stop` is
synchronous and idempotent: SIGTERM to every agent (which stops its sensor), SIGKILL after a
grace period, then any sensor an agent left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ringfence.agent.agent import HOST_CRASH_EXIT
from ringfence.demo.control_plane import RINGFENCE, child_env, stop_process
from ringfence.demo.settings import LAB_PLATFORMS, LAB_REGION

OS_VERSIONS = {"windows": "11", "linux": "6.8", "macos": "14.5"}


@dataclass(slots=True)
class Machine:
    """One lab endpoint: who it says it is, where it keeps its state, and what happened to it."""

    name: str
    platform: str
    state_dir: Path
    proc: subprocess.Popen[bytes] | None = None
    boots: int = 0
    host_crashes: int = 0
    exited: int | None = None  # an exit other than a host crash: the lab does not restart it
    reboot_at: float | None = None

    @property
    def log_path(self) -> Path:
        return self.state_dir.parent / f"{self.name}.log"

    def attributes(self) -> dict[str, Any]:
        return {"platform": self.platform, "os_version": OS_VERSIONS.get(self.platform, ""), "arch": "x86_64",
                "region": LAB_REGION, "tags": ["lab"]}

    def journal(self) -> dict[str, Any]:
        """The agent's journal, as ``agent run --once --json`` prints it ({} when unreadable)."""
        from ringfence.agent.journal import Journal, JournalError, summary

        try:
            return summary(Journal.open(self.state_dir).state)
        except (OSError, JournalError, ValueError):
            return {}


class Lab:
    """``count`` real agents against ``server_url``; :meth:`start`, then :meth:`supervise` (a task
    that reboots crashed machines), then :meth:`stop`."""

    def __init__(self, root: Path, count: int, *, server_url: str, enroll_token: str, sensor: Path,
                 content_type: str, trial_s: float, reboot_s: float, trusted_root: Path | None = None) -> None:
        self.root = root
        self.server_url = server_url
        self.enroll_token = enroll_token
        self.trusted_root = trusted_root
        self.reboot_s = reboot_s
        self.config = root / "agent.yaml"
        self._sensor = sensor
        self._content_type = content_type
        self._trial_s = trial_s
        self.machines = [Machine(f"lab-{LAB_PLATFORMS[i % len(LAB_PLATFORMS)]}-{i + 1}",
                                 LAB_PLATFORMS[i % len(LAB_PLATFORMS)], root / f"lab-{i + 1}")
                         for i in range(count)]
        self._stopping = False

    def _write_config(self) -> None:
        ct = self._content_type
        self.root.mkdir(parents=True, exist_ok=True)
        self.config.write_text(f"""# The lab's agents: the sample sensor under update, crashing as a kernel driver does.
boot_limit: 2
heartbeat: 1s
revocation_timeout: 2s
content_types:
  {ct}:
    applier: content
    file_name: ipc-templates.json
    trial: {self._trial_s:g}s
    probe: workload
workload:
  command: ["{{python}}", {json.dumps(str(self._sensor))}, "run", "--content", "{{content}}",
            "--ready-file", "{{ready_file}}", "--platform", "{{platform}}"]
  content_type: {ct}
  crash: host
""")

    def start(self) -> None:
        self._write_config()
        for m in self.machines:
            m.state_dir.mkdir(parents=True, exist_ok=True)
            (self.root / f"{m.name}.attributes.json").write_text(json.dumps(m.attributes()))
            self._boot(m)

    def _boot(self, m: Machine) -> None:
        argv = [*RINGFENCE, "agent", "run", "--server", self.server_url, "--state-dir", str(m.state_dir),
                "--enroll-token", self.enroll_token, "--config", str(self.config),
                "--attributes", str(self.root / f"{m.name}.attributes.json")]
        if self.trusted_root is not None:
            argv += ["--trusted-root", str(self.trusted_root)]
        with m.log_path.open("ab") as log:
            log.write(f"--- boot {m.boots + 1} ---\n".encode())
            log.flush()
            m.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                      env=child_env(), start_new_session=True)
        m.boots += 1
        m.reboot_at = None

    async def supervise(self, on_exit: Callable[[Machine], None] | None = None) -> None:
        """Until cancelled: a machine whose agent died with the host comes back ``reboot_s``
        later. Any other exit is left alone (``exited`` says how). ``on_exit(machine)`` is told
        of each."""
        loop = asyncio.get_running_loop()
        while True:
            for m in self.machines:
                if self._stopping or m.proc is None or m.exited is not None:
                    continue
                code = m.proc.poll()
                if code is None:
                    continue
                if m.reboot_at is None:
                    if code == HOST_CRASH_EXIT:
                        m.host_crashes += 1
                        m.reboot_at = loop.time() + self.reboot_s
                    else:
                        m.exited = code
                    if on_exit is not None:
                        on_exit(m)
                elif loop.time() >= m.reboot_at:
                    self._boot(m)
            await asyncio.sleep(0.2)

    def report(self) -> list[dict[str, Any]]:
        found = []
        for m in self.machines:
            content = m.journal().get("content", {}).get(self._content_type, {})
            found.append({"name": m.name, "platform": m.platform, "region": LAB_REGION, "boots": m.boots,
                          "host_crashes": m.host_crashes, "running": content.get("active"),
                          "blocked": content.get("blocked", {}),
                          **({"exited": m.exited} if m.exited is not None else {})})
        return found

    def stop(self) -> None:
        """Every agent stopped (SIGTERM, then SIGKILL), then any sensor left running."""
        self._stopping = True
        for m in self.machines:
            if m.proc is not None and m.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    m.proc.send_signal(signal.SIGTERM)
        for m in self.machines:
            stop_process(m.proc)
            _stop_workload(m.state_dir)


def _stop_workload(state_dir: Path) -> None:
    """The sensor an agent started (its own process group) if it outlived the agent; only if the
    process is still the one the pid file names (its command line mentions this state dir)."""
    pidfile = state_dir / "run" / "workload.pid"
    try:
        pid = int(json.loads(pidfile.read_text())["pid"])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, KeyError, TypeError):
        return
    if str(state_dir).encode() not in cmdline:
        return
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)

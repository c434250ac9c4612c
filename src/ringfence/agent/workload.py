"""The supervised workload: the program that consumes the content under update (a sensor, a
detection engine). Starting it is what "loading the content" means, so the agent starts it
only after the crash-loop guard and the revocation check, and restarts it when the active
version changes.

``crash`` says what a crash of the workload does to the machine. ``process``: it is an ordinary
program; the agent sees the exit and acts. ``host``: it runs where a crash takes the whole
machine down (a kernel driver), so the agent process dies with it, without writing anything,
and the next start finds the evidence in the journal — exactly the situation the crash-loop
guard exists for.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ringfence.agent.commands import last_lines
from ringfence.agent.durable import write_atomic

log = logging.getLogger("ringfence.agent")


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    command: tuple[str, ...]  # "{content}", "{ready_file}" and "{platform}" are replaced
    content_type: str
    crash: str = "process"  # or "host"
    ready_timeout_s: float = 10.0


class Workload:
    def __init__(self, spec: WorkloadSpec, content_path: Path, run_dir: Path, platform: str = "") -> None:
        self.spec = spec
        self.platform = platform
        self.name = _display_name(spec.command)
        self.content_path = content_path
        self.ready_file = run_dir / "workload.ready"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = run_dir / "workload.log"
        self._pidfile = run_dir / "workload.pid"

    def start(self) -> None:
        self.stop()
        self._stop_leftover()
        with contextlib.suppress(FileNotFoundError):
            self.ready_file.unlink()
        argv = [a.replace("{content}", str(self.content_path)).replace("{ready_file}", str(self.ready_file))
                .replace("{platform}", self.platform) for a in self.spec.command]
        with open(self._log, "ab") as out:
            self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                          start_new_session=True)
        write_atomic(self._pidfile, json.dumps({"pid": self._proc.pid, "argv": argv}).encode())
        log.info("started %s (pid %d) on %s", self.name, self._proc.pid, self.content_path)

    def stop(self, grace_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self._pidfile.unlink()
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _stop_leftover(self, grace_s: float = 5.0) -> None:
        """A workload started by an agent that died without stopping it (SIGKILL, power cut of
        the agent alone) must not run twice. Only a process whose command line is the one
        recorded is stopped, so a recycled pid is left alone."""
        try:
            recorded = json.loads(self._pidfile.read_text())
            pid, argv = int(recorded["pid"]), list(recorded["argv"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            cmdline = []
        if [a.decode(errors="replace") for a in cmdline] == argv:
            log.warning("stopping %s (pid %d) left running by the previous agent", self.name, pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
                deadline = time.monotonic() + grace_s
                while time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
                    time.sleep(0.05)
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            self._pidfile.unlink()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def exit_code(self) -> int | None:
        """The exit code if the workload was started and has exited, else None."""
        return None if self._proc is None else self._proc.poll()

    def ready(self) -> bool:
        """Running, and has written its ready file since it was started (the file is removed
        before every start)."""
        return self.running and self.ready_file.exists()

    def log_tail(self, limit: int = 400) -> str:
        """The end of the workload's output, whole lines only."""
        try:
            data = self._log.read_bytes()[-limit * 4:]
        except OSError:
            return ""
        return last_lines(data.decode(errors="replace"), limit)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def _display_name(command: tuple[str, ...]) -> str:
    """``python examples/sensor/sensor.py run`` -> ``sensor.py``."""
    scripts = [a for a in command if a.endswith(".py")]
    return Path(scripts[0] if scripts else command[0]).name

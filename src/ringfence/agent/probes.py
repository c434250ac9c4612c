"""Health probes: is the version under trial working? Pluggable; a probe returns a
:class:`ProbeResult` (never raises), and a probe that does not answer within its timeout has
failed — a hang is not health.

Built in: :class:`CommandProbe` (exit code 0 is healthy), :class:`HttpProbe` (a 2xx answer),
:class:`CallableProbe` (a Python function, for embedding) and :class:`WorkloadProbe` (the
supervised program that consumes the content is running and has reported ready since it loaded
this version).
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from ringfence.agent import commands
from ringfence.agent.config import ProbeSpec
from ringfence.agent.workload import Workload


@dataclass(frozen=True, slots=True)
class ProbeResult:
    ok: bool
    reason: str


class Probe(Protocol):
    def check(self) -> ProbeResult: ...


class CommandProbe:
    def __init__(self, argv: tuple[str, ...], timeout_s: float = 10.0, env: dict[str, str] | None = None) -> None:
        self.argv = argv
        self.timeout_s = timeout_s
        self.env = env or {}

    def check(self) -> ProbeResult:
        try:
            done = commands.run(self.argv, {**os.environ, **self.env}, self.timeout_s)
        except commands.TimedOut:
            return ProbeResult(False, f"health command {self.argv[0]} did not answer within {self.timeout_s:g}s")
        except OSError as exc:
            return ProbeResult(False, f"health command {self.argv[0]} could not run: {exc}")
        if done.returncode != 0:
            return ProbeResult(False, f"health command {self.argv[0]} exited with {done.returncode}: {done.output}")
        return ProbeResult(True, "health command passed")


class HttpProbe:
    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    def check(self) -> ProbeResult:
        try:
            response = httpx.get(self.url, timeout=self.timeout_s)
        except httpx.TimeoutException:
            return ProbeResult(False, f"{self.url} did not answer within {self.timeout_s:g}s")
        except httpx.HTTPError as exc:
            return ProbeResult(False, f"{self.url}: {type(exc).__name__}: {exc}")
        if not response.is_success:
            return ProbeResult(False, f"{self.url} answered {response.status_code}")
        return ProbeResult(True, f"{self.url} answered {response.status_code}")


class CallableProbe:
    """Runs ``fn`` in a worker thread; ``True`` (or a passing ProbeResult) is healthy. A hung
    function is abandoned after the timeout and counts as a failure."""

    def __init__(self, fn: Callable[[], bool | ProbeResult], timeout_s: float = 10.0) -> None:
        self.fn = fn
        self.timeout_s = timeout_s
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe")

    def check(self) -> ProbeResult:
        future = self._pool.submit(self.fn)
        try:
            result = future.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            # The hung call keeps its thread; a fresh pool keeps later probes independent of it.
            self._pool.shutdown(wait=False)
            self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="probe")
            return ProbeResult(False, f"probe {getattr(self.fn, '__name__', 'function')} did not answer "
                                      f"within {self.timeout_s:g}s")
        except Exception as exc:  # a probe that raises has failed, with its reason
            return ProbeResult(False, f"probe raised {type(exc).__name__}: {exc}")
        if isinstance(result, ProbeResult):
            return result
        return ProbeResult(bool(result), "probe passed" if result else "probe returned false")


class WorkloadProbe:
    def __init__(self, workload: Workload) -> None:
        self.workload = workload

    def check(self) -> ProbeResult:
        code = self.workload.exit_code()
        if code is not None:
            return ProbeResult(False, f"{self.workload.name} exited with {describe_exit(code)}")
        if not self.workload.ready():
            return ProbeResult(False, f"{self.workload.name} has not reported ready")
        return ProbeResult(True, f"{self.workload.name} is running and ready")


def probe_for(spec: ProbeSpec, content_type: str, content_dir: Path, workload: Workload | None) -> Probe | None:
    """The probe a content type's config asks for (None: the trial needs only the workload to
    keep running, or nothing at all)."""
    if spec.kind == "command":
        env = {"RINGFENCE_CONTENT_TYPE": content_type, "RINGFENCE_CONTENT_DIR": str(content_dir)}
        return CommandProbe(spec.command, spec.timeout_s, env)
    if spec.kind == "http":
        return HttpProbe(spec.url, spec.timeout_s)
    if spec.kind == "workload" and workload is not None:
        return WorkloadProbe(workload)
    return None


def describe_exit(code: int) -> str:
    """``-6`` -> ``signal SIGABRT``; ``3`` -> ``code 3``."""
    if code < 0:
        import signal

        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"

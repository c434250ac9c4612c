"""Health probes against real processes, a real HTTP server and real hangs: a probe never raises,
and one that does not answer within its timeout has failed."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringfence.agent.probes import CallableProbe, CommandProbe, HttpProbe, ProbeResult, WorkloadProbe, describe_exit
from ringfence.agent.workload import Workload, WorkloadSpec
from tests.unit.agent.conftest import Reply, TinyServer

PY = sys.executable


def elapsed(since: float) -> float:
    return time.monotonic() - since


# -- CommandProbe -----------------------------------------------------------------------------

def test_command_probe_passes_on_exit_zero() -> None:
    assert CommandProbe((PY, "-c", "pass")).check() == ProbeResult(True, "health command passed")


def test_command_probe_fails_on_a_non_zero_exit_with_its_output() -> None:
    script = "import sys; print('queue depth 9000', file=sys.stderr); sys.exit(2)"

    result = CommandProbe((PY, "-c", script)).check()

    assert not result.ok
    assert "exited with 2" in result.reason
    assert "queue depth 9000" in result.reason


def test_command_probe_gets_its_environment() -> None:
    script = "import os, sys; sys.exit(0 if os.environ.get('PROBE_TARGET') == 'db' else 5)"

    assert CommandProbe((PY, "-c", script), env={"PROBE_TARGET": "db"}).check().ok
    assert not CommandProbe((PY, "-c", script)).check().ok


def test_a_hanging_command_probe_fails_at_its_timeout() -> None:
    started = time.monotonic()

    result = CommandProbe(("sleep", "30"), timeout_s=0.5).check()

    assert elapsed(started) < 5
    assert not result.ok
    assert result.reason == "health command sleep did not answer within 0.5s"


def test_a_missing_probe_program_fails_without_raising(tmp_path: Path) -> None:
    result = CommandProbe((str(tmp_path / "no-such-check"),)).check()

    assert not result.ok
    assert "could not run" in result.reason


# -- HttpProbe --------------------------------------------------------------------------------

def test_http_probe_passes_on_2xx(http_server: TinyServer) -> None:
    http_server.route("GET", "/healthz", Reply(200, b"ok"))
    http_server.route("GET", "/created", Reply(204))
    url = f"{http_server.url}/healthz"

    assert HttpProbe(url).check() == ProbeResult(True, f"{url} answered 200")
    assert HttpProbe(f"{http_server.url}/created").check().ok
    assert [r.path for r in http_server.requests] == ["/healthz", "/created"]


def test_http_probe_fails_on_an_error_status(http_server: TinyServer) -> None:
    http_server.route("GET", "/healthz", Reply(500, b"database down"))
    url = f"{http_server.url}/healthz"

    assert HttpProbe(url).check() == ProbeResult(False, f"{url} answered 500")
    assert not HttpProbe(f"{http_server.url}/missing").check().ok  # 404


def test_http_probe_fails_when_nothing_listens(closed_url: str) -> None:
    result = HttpProbe(f"{closed_url}/healthz", timeout_s=2).check()

    assert not result.ok
    assert "ConnectError" in result.reason


def test_http_probe_fails_at_its_timeout_when_the_server_never_answers(silent_url: str) -> None:
    started = time.monotonic()

    result = HttpProbe(f"{silent_url}/healthz", timeout_s=0.5).check()

    assert elapsed(started) < 5
    assert result == ProbeResult(False, f"{silent_url}/healthz did not answer within 0.5s")


# -- CallableProbe ----------------------------------------------------------------------------

def test_callable_probe_results() -> None:
    def fine() -> bool:
        return True

    assert CallableProbe(fine).check() == ProbeResult(True, "probe passed")
    assert CallableProbe(lambda: False).check() == ProbeResult(False, "probe returned false")
    custom = ProbeResult(False, "cache hit rate 2%")
    assert CallableProbe(lambda: custom).check() is custom
    assert CallableProbe(lambda: ProbeResult(True, "warm")).check() == ProbeResult(True, "warm")


def test_a_callable_probe_that_raises_has_failed_with_its_reason() -> None:
    def broken() -> bool:
        raise RuntimeError("socket closed")

    assert CallableProbe(broken).check() == ProbeResult(False, "probe raised RuntimeError: socket closed")


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown, so a deliberately hung probe thread ends with the test."""
    event = threading.Event()
    yield event
    event.set()


def test_a_hung_callable_probe_fails_at_its_timeout_and_does_not_block_the_next(release: threading.Event) -> None:
    calls: list[str] = []

    def sometimes_hangs() -> bool:
        calls.append("call")
        if len(calls) == 1:
            release.wait(30)
        return True

    probe = CallableProbe(sometimes_hangs, timeout_s=0.5)
    started = time.monotonic()

    first = probe.check()

    assert elapsed(started) < 5
    assert first == ProbeResult(False, "probe sometimes_hangs did not answer within 0.5s")
    second_started = time.monotonic()
    assert probe.check() == ProbeResult(True, "probe passed")  # the first call is still hung
    assert elapsed(second_started) < 0.5
    assert not release.is_set()
    assert len(calls) == 2


def test_describe_exit() -> None:
    assert describe_exit(-6) == "signal SIGABRT"
    assert describe_exit(-9) == "signal SIGKILL"
    assert describe_exit(3) == "code 3"
    assert describe_exit(0) == "code 0"
    assert describe_exit(-200) == "signal 200"  # no such signal: still said plainly


# -- WorkloadProbe ----------------------------------------------------------------------------

READY_THEN_SLEEP = """
import sys, time
ready_file, content = sys.argv[1], sys.argv[2]
with open(ready_file, "w") as f:
    f.write(content)
time.sleep(30)
"""


@pytest.fixture
def workloads() -> Iterator[list[Workload]]:
    started: list[Workload] = []
    yield started
    for workload in started:
        workload.stop(grace_s=2)


def make(workloads: list[Workload], tmp_path: Path, *command: str) -> Workload:
    workload = Workload(WorkloadSpec(command=command, content_type="sensor/ipc-templates"),
                        tmp_path / "content" / "current", tmp_path)
    workloads.append(workload)
    return workload


def wait_for(probe: WorkloadProbe, what: str, timeout: float = 10) -> ProbeResult:
    deadline = time.monotonic() + timeout
    while True:
        result = probe.check()
        if what in result.reason or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


def test_workload_probe_passes_once_the_running_workload_reports_ready(workloads: list[Workload],
                                                                       tmp_path: Path) -> None:
    workload = make(workloads, tmp_path, PY, "-c", READY_THEN_SLEEP, "{ready_file}", "{content}")
    probe = WorkloadProbe(workload)
    assert probe.check() == ProbeResult(False, f"{workload.name} has not reported ready")  # not started yet

    workload.start()
    result = wait_for(probe, "is running and ready")

    assert result == ProbeResult(True, f"{workload.name} is running and ready")
    assert workload.ready_file.read_text() == str(tmp_path / "content" / "current")  # placeholders filled

    workload.stop(grace_s=2)
    assert not probe.check().ok  # stopped on purpose: not running, so not healthy


def test_workload_probe_fails_with_the_exit_code_of_a_crashed_workload(workloads: list[Workload],
                                                                       tmp_path: Path) -> None:
    workload = make(workloads, tmp_path, PY, "-c", "import sys; sys.exit(7)")
    probe = WorkloadProbe(workload)
    workload.start()

    result = wait_for(probe, "exited")

    assert result == ProbeResult(False, f"{workload.name} exited with code 7")


def test_workload_probe_names_the_signal_that_killed_the_workload(workloads: list[Workload],
                                                                  tmp_path: Path) -> None:
    workload = make(workloads, tmp_path, PY, "-c", "import os; os.abort()")
    workload.start()

    result = wait_for(WorkloadProbe(workload), "exited")

    assert result == ProbeResult(False, f"{workload.name} exited with signal SIGABRT")


def test_a_stale_ready_file_from_an_earlier_run_does_not_count(workloads: list[Workload], tmp_path: Path) -> None:
    workload = make(workloads, tmp_path, PY, "-c", "import time; time.sleep(30)")
    workload.ready_file.write_text("left over from the previous version")

    workload.start()
    time.sleep(0.2)

    assert workload.running
    assert not workload.ready_file.exists()
    assert WorkloadProbe(workload).check() == ProbeResult(False, f"{workload.name} has not reported ready")

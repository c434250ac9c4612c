"""The sample sensor as a real OS process: it runs on good content, stops cleanly on a signal,
refuses malformed content with a clear error, and dies by SIGABRT on the 2024 out-of-bounds read
(a non-wildcard criterion on a field the content declares but the sensor does not supply)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SENSOR = ROOT / "examples" / "sensor" / "sensor.py"
GOOD = ROOT / "examples" / "sensor" / "content" / "good"
BAD_291 = ROOT / "examples" / "sensor" / "content" / "bad-291"
FORMAT = "ringfence-sample-channel/1"
IPC = {"ipc-pipe": {"fields": 21}}  # as declared by Channel File 291: one more field than sensor 7.11 supplies


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGFENCE_SENSOR_")}
    return {**env, **extra}


def sensor(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SENSOR), *map(str, args)],
        capture_output=True,
        text=True,
        env=env or _env(),
        timeout=30,
        check=False,
    )


def check(content: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = sensor("check", "--content", content, *args, env=env)
    assert proc.returncode == 0, proc.stderr
    summary: dict[str, Any] = json.loads(proc.stdout)
    return summary


class Running:
    """``sensor.py run`` as a child process with a ready file in a temporary directory."""

    def __init__(self, content: Path, ready_file: Path, *args: str) -> None:
        self.ready_file = ready_file
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(SENSOR),
                "run",
                "--content",
                str(content),
                "--ready-file",
                str(ready_file),
                "--interval",
                "0.05",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )

    def ready(self, timeout: float = 10) -> dict[str, Any]:
        """The ready file, once the process has written it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"sensor exited {self.proc.returncode} before ready:\n{self.stderr()}")
            if self.ready_file.exists():
                state: dict[str, Any] = json.loads(self.ready_file.read_text())
                return state
            time.sleep(0.02)
        raise AssertionError(f"no ready file within {timeout}s")

    def exit_code(self, timeout: float = 10) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def stderr(self) -> str:
        self.exit_code()
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


Start = Callable[..., Running]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start ``sensor.py run``; every process started is killed at the end of the test."""
    started: list[Running] = []

    def _start(content: Path, *args: str) -> Running:
        running = Running(content, tmp_path / "state" / "ready.json", *args)
        started.append(running)
        return running

    yield _start
    for running in started:
        running.stop()


def channel(
    tmp_path: Path,
    instances: list[dict[str, Any]],
    name: str = "channel.json",
    template_types: dict[str, Any] | None = None,
) -> Path:
    path = tmp_path / "content" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "template_types": template_types or IPC, "instances": instances}
    path.write_text(json.dumps(doc))
    return path


# -- running and stopping ------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_good_content_runs_and_stops_cleanly_on_a_signal(start: Start, signum: signal.Signals) -> None:
    # Given the good example content
    running = start(GOOD)

    # When the sensor has loaded it
    state = running.ready()

    # Then the ready file says what it runs, and the heartbeat moves
    assert state["pid"] == running.proc.pid
    assert state["instances"] == 5
    assert state["sensor_version"] == "7.11"
    assert state["platform"] == "windows"
    assert [Path(f).name for f in state["files"]] == ["channel-291.json", "channel-310.json"]
    assert state["started_at"] <= state["heartbeat_at"]
    deadline = time.monotonic() + 10
    while json.loads(running.ready_file.read_text())["heartbeat_at"] == state["heartbeat_at"]:
        assert time.monotonic() < deadline, "heartbeat never advanced"
        time.sleep(0.02)

    # And a signal stops it with exit code 0, removing the ready file
    running.proc.send_signal(signum)
    assert running.exit_code(timeout=5) == 0
    assert not running.ready_file.exists()
    assert list(running.ready_file.parent.iterdir()) == []  # no temporary file left behind


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_no_content_is_a_valid_state(start: Start, tmp_path: Path, kind: str) -> None:
    content = tmp_path / "nothing-here"
    if kind == "empty":
        content.mkdir()
    running = start(content)
    state = running.ready()
    assert state["instances"] == 0
    assert state["files"] == []
    running.proc.send_signal(signal.SIGTERM)
    assert running.exit_code(timeout=5) == 0
    assert check(content)["instances"] == 0


# -- the 2024 crash ------------------------------------------------------------------------------


def test_bad_291_crashes_a_running_sensor_by_sigabrt(start: Start) -> None:
    running = start(BAD_291)
    assert running.exit_code() == -signal.SIGABRT
    err = running.stderr()
    assert "out-of-bounds read: instance 291-d template ipc-pipe reads field 20" in err
    assert "sensor 7.11 supplies 20 fields (0-19)" in err
    assert not running.ready_file.exists()  # it crashed while loading, before it was ever ready


def test_bad_291_crashes_check_too() -> None:
    proc = sensor("check", "--content", BAD_291)
    assert proc.returncode == -signal.SIGABRT
    assert proc.stdout == ""
    assert "instance 291-d template ipc-pipe reads field 20" in proc.stderr


def test_bad_291_is_fine_on_the_fixed_sensor(start: Start) -> None:
    assert check(BAD_291, "--sensor-version", "8.0")["instances"] == 6
    running = start(BAD_291, "--sensor-version", "8.0")
    assert running.ready()["instances"] == 6
    running.proc.send_signal(signal.SIGTERM)
    assert running.exit_code(timeout=5) == 0


def test_bad_291_is_fine_where_the_template_type_is_not_used() -> None:
    summary = check(BAD_291, "--platform", "linux")
    assert summary["platform"] == "linux"
    assert summary["instances"] == 2
    assert sorted(summary["skipped"]) == ["291-a", "291-b", "291-c", "291-d"]


def test_a_wildcard_on_the_21st_field_never_reads_it(tmp_path: Path) -> None:
    path = channel(tmp_path, [{"id": "w", "template": "ipc-pipe", "criteria": {"0": "x", "20": "*"}}])
    assert check(path)["instances"] == 1


def test_the_last_supplied_field_is_read_without_a_crash(tmp_path: Path) -> None:
    path = channel(tmp_path, [{"id": "edge", "template": "ipc-pipe", "criteria": {"19": "x"}}])
    assert check(path)["instances"] == 1


def test_content_is_checked_in_full_before_anything_is_interpreted(tmp_path: Path) -> None:
    # a crashing instance in the first file, a malformed one in the second: the clean refusal wins
    channel(tmp_path, [{"id": "291-d", "template": "ipc-pipe", "criteria": {"20": "x"}}], name="a.json")
    channel(tmp_path, [{"id": "m", "template": "ipc-pipe", "criteria": {"x": "y"}}], name="b.json")
    proc = sensor("check", "--content", tmp_path / "content")
    assert proc.returncode == 3, proc.stderr
    assert "b.json" in proc.stderr


def test_an_unknown_template_type_is_skipped_with_a_warning(tmp_path: Path) -> None:
    path = channel(
        tmp_path,
        [{"id": "n1", "template": "dns-query", "criteria": {"0": "x"}}],
        template_types={"dns-query": {"fields": 4}},
    )
    proc = sensor("check", "--content", path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["skipped"] == ["n1"]
    assert "warning: skipping instance n1" in proc.stderr
    assert "'dns-query' is unknown to sensor 7.11" in proc.stderr


# -- malformed content is refused cleanly --------------------------------------------------------


def _doc(*instances: dict[str, Any], **top: Any) -> str:
    """A channel file's text: one ipc-pipe template type and ``instances``, with ``top`` keys replaced."""
    doc: dict[str, Any] = {"format": FORMAT, "template_types": IPC, "instances": list(instances), **top}
    return json.dumps({k: v for k, v in doc.items() if v is not None})


def _ipc(criteria: dict[str, Any], instance_id: str = "i1") -> dict[str, Any]:
    return {"id": instance_id, "template": "ipc-pipe", "criteria": criteria}


MALFORMED: list[tuple[str, str, str]] = [
    ("bad-json", '{"format": ', "not valid JSON"),
    ("top-level-array", "[]", "top level must be a JSON object, not array"),
    ("wrong-format", _doc(format="other/1"), "format is 'other/1', expected 'ringfence-sample-channel/1'"),
    ("no-format", _doc(format=None), "format is missing"),
    ("no-template-types", _doc(template_types=None), "'template_types' must be a JSON object, found nothing"),
    ("no-instances", _doc(instances=None), "'instances' must be a JSON array, found nothing"),
    ("instances-not-array", _doc(instances={}), "'instances' must be a JSON array, found a JSON object"),
    (
        "bad-field-count",
        _doc(template_types={"ipc-pipe": {"fields": "21"}}),
        "template type 'ipc-pipe': 'fields' must be a positive integer",
    ),
    ("instance-without-id", _doc({"template": "ipc-pipe", "criteria": {}}), "instances[0] has no 'id'"),
    ("no-criteria", _doc({"id": "i1", "template": "ipc-pipe"}), "instance 'i1': missing 'criteria'"),
    ("negative-index", _doc(_ipc({"-1": "x"})), "instance 'i1': criterion key '-1' is not a field index"),
    ("non-integer-index", _doc(_ipc({"2.5": "x"})), "instance 'i1': criterion key '2.5' is not a field index"),
    (
        "undeclared-template",
        _doc({"id": "i1", "template": "file-write", "criteria": {}}),
        "instance 'i1': template type 'file-write' is not declared in 'template_types'",
    ),
    (
        "index-beyond-declared",
        _doc(_ipc({"21": "x"})),
        "instance 'i1': criterion on field 21 but template type 'ipc-pipe' declares 21 fields (0-20)",
    ),
    ("pattern-not-a-string", _doc(_ipc({"3": 7})), "instance 'i1': criterion on field 3: pattern must be a string"),
    ("duplicate-id", _doc(_ipc({}), _ipc({})), "instance 'i1': duplicate instance id"),
]


@pytest.mark.parametrize(("name", "text", "problem"), MALFORMED, ids=[m[0] for m in MALFORMED])
@pytest.mark.parametrize("command", ["check", "run"])
def test_malformed_content_exits_3_naming_file_and_problem(
    tmp_path: Path, command: str, name: str, text: str, problem: str
) -> None:
    content = tmp_path / "content"
    content.mkdir()
    (content / f"{name}.json").write_text(text)
    ready = ["--ready-file", str(tmp_path / "ready.json")] if command == "run" else []
    proc = sensor(command, "--content", content, *ready)
    assert proc.returncode == 3, proc.stderr
    assert f"sensor: bad content: {content / name}.json: " in proc.stderr
    assert problem in proc.stderr
    assert not (tmp_path / "ready.json").exists()


# -- the consumer interface and options ----------------------------------------------------------


def test_describe_json_is_the_consumer_interface_per_version() -> None:
    proc = sensor("describe", "--json")
    assert proc.returncode == 0, proc.stderr
    interface = json.loads(proc.stdout)
    assert interface["format"] == FORMAT
    assert interface["default_version"] == "7.11"
    ipc_711 = interface["versions"]["7.11"]["template_types"]["ipc-pipe"]
    assert ipc_711["fields"] == 20
    assert ipc_711["platforms"] == ["windows"]
    assert [f["index"] for f in ipc_711["inputs"]] == list(range(20))
    assert {f["type"] for f in ipc_711["inputs"]} == {"string"}
    assert interface["versions"]["8.0"]["template_types"]["ipc-pipe"]["fields"] == 21
    for version in interface["versions"].values():
        assert set(version["template_types"]) == {"file-write", "ipc-pipe", "process-start"}


def test_describe_tells_the_truth_about_every_field_count(tmp_path: Path) -> None:
    # For every version and template type described, the last supplied field loads and the next one crashes
    interface = json.loads(sensor("describe", "--json").stdout)
    for version, spec in interface["versions"].items():
        for template, support in spec["template_types"].items():
            supplied = support["fields"]
            declared = {template: {"fields": supplied + 1}}
            platform = ["--platform", support["platforms"][0], "--sensor-version", version]
            last = channel(
                tmp_path,
                [{"id": "last", "template": template, "criteria": {str(supplied - 1): "x"}}],
                name="last.json",
                template_types=declared,
            )
            assert check(last, *platform)["instances"] == 1
            past = channel(
                tmp_path,
                [{"id": "past", "template": template, "criteria": {str(supplied): "x"}}],
                name="past.json",
                template_types=declared,
            )
            proc = sensor("check", "--content", past, *platform)
            assert proc.returncode == -signal.SIGABRT, (version, template, proc.stderr)
            assert f"reads field {supplied} but sensor {version} supplies {supplied} fields" in proc.stderr


def test_describe_one_version_and_as_text() -> None:
    only = json.loads(sensor("describe", "--json", "--sensor-version", "8.0").stdout)
    assert list(only["versions"]) == ["8.0"]
    text = sensor("describe").stdout
    assert "sensor 7.11 (default)" in text
    assert "ipc-pipe" in text
    assert "20 fields" in text


def test_options_come_from_the_environment_and_flags_win() -> None:
    env = _env(RINGFENCE_SENSOR_VERSION="8.0", RINGFENCE_SENSOR_PLATFORM="macos")
    summary = check(GOOD, env=env)
    assert (summary["sensor_version"], summary["platform"]) == ("8.0", "macos")
    assert check(BAD_291, env=_env(RINGFENCE_SENSOR_VERSION="8.0"))["instances"] == 6

    assert check(GOOD, "--platform", "linux", env=env)["platform"] == "linux"
    proc = sensor("check", "--content", BAD_291, "--sensor-version", "7.11", env=_env(RINGFENCE_SENSOR_VERSION="8.0"))
    assert proc.returncode == -signal.SIGABRT


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--sensor-version", "9.9"], {}, "unknown sensor version '9.9'"),
        ([], {"RINGFENCE_SENSOR_VERSION": "9.9"}, "unknown sensor version '9.9'"),
        (["--platform", "plan9"], {}, "unknown platform 'plan9'"),
    ],
)
def test_unknown_version_or_platform_is_a_usage_error(args: list[str], env: dict[str, str], message: str) -> None:
    proc = sensor("check", "--content", GOOD, *args, env=_env(**env))
    assert proc.returncode == 2
    assert message in proc.stderr

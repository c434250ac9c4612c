"""The agent's config file and attributes file: what a valid file yields, and that every bad
value is refused with InvalidInput naming its field path."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringfence.agent.appliers import Commands, Unpack
from ringfence.agent.config import AgentConfig, ContentTypeSpec, ProbeSpec, load_attributes, load_config
from ringfence.agent.workload import WorkloadSpec
from ringfence.core.errors import InvalidInput

BASE = {"server": "http://127.0.0.1:8000", "state_dir": Path("/var/lib/ringfence-agent")}


def write(tmp_path: Path, text: str, name: str = "agent.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_are_conservative() -> None:
    config = AgentConfig(**BASE)

    assert config.boot_limit == 2
    assert config.revocation_timeout_s == 2.0
    assert config.max_download_bytes == 1 << 30
    assert config.poll_bounds_s == (1.0, 3600.0)
    assert config.workload is None
    assert config.default == ContentTypeSpec()
    assert config.default.applier == "content"
    assert config.default.probe == ProbeSpec(kind="none")
    assert config.default.unpack == Unpack(file_name="content", extract_tar=True)
    assert (config.default.trial_s, config.default.keep, config.default.commands) == (10.0, 3, None)
    assert config.spec("anything/else") is config.default


def test_an_empty_file_gives_the_defaults_plus_what_came_from_the_command_line(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), **BASE, enroll_token="tok")

    assert config == AgentConfig(**BASE, enroll_token="tok")


FULL = """
    boot_limit: 3
    revocation_timeout: 5s
    request_timeout: 1m
    heartbeat: 2
    max_download_bytes: 1048576
    content_types:
      default:
        keep: 4
        trial: 30s
      sensor/ipc-templates:
        applier: content
        file_name: channel.json
        extract_tar: false
        keep: 2
        trial: 1m30s
        probe: workload
      agent/binary:
        applier: command
        install: ["{python}", "{config_dir}/install.py", "install"]
        rollback: ["{python}", "{config_dir}/install.py", "rollback"]
        remove: "{config_dir}/remove.sh"
        command_timeout: 5m
        probe: {command: ["{python}", "-c", "pass"], timeout: 3s}
      web/assets:
        probe: {http: "http://127.0.0.1:8080/healthz", timeout: 1.5}
      plain/none:
        probe: none
    workload:
      command: ["{python}", "{config_dir}/sensor.py", "run", "--content", "{content}", "--ready-file", "{ready_file}"]
      content_type: sensor/ipc-templates
      crash: host
      ready_timeout: 20s
"""


def test_a_full_config(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    here = str(tmp_path.resolve())

    config = load_config(path, **BASE)

    assert config.server == BASE["server"]
    assert (config.boot_limit, config.revocation_timeout_s, config.request_timeout_s, config.heartbeat_s,
            config.max_download_bytes) == (3, 5.0, 60.0, 2.0, 1048576)
    assert config.default == ContentTypeSpec(keep=4, trial_s=30.0)
    assert "default" not in config.content_types
    assert sorted(config.content_types) == ["agent/binary", "plain/none", "sensor/ipc-templates", "web/assets"]
    assert config.spec("sensor/ipc-templates") == ContentTypeSpec(
        applier="content", unpack=Unpack(file_name="channel.json", extract_tar=False),
        probe=ProbeSpec(kind="workload"), trial_s=90.0, keep=2)
    binary = config.spec("agent/binary")
    assert binary.applier == "command"
    assert binary.commands == Commands(
        install=(sys.executable, f"{here}/install.py", "install"),
        rollback=(sys.executable, f"{here}/install.py", "rollback"),
        remove=(f"{here}/remove.sh",), timeout_s=300.0)
    assert binary.probe == ProbeSpec(kind="command", command=(sys.executable, "-c", "pass"), timeout_s=3.0)
    assert config.spec("web/assets").probe == ProbeSpec(kind="http", url="http://127.0.0.1:8080/healthz",
                                                        timeout_s=1.5)
    assert config.spec("web/assets").trial_s == 10.0  # not inherited from "default": defaults are per field
    assert config.spec("plain/none").probe == ProbeSpec(kind="none")
    assert config.spec("other/type") == config.default
    assert config.workload == WorkloadSpec(
        command=(sys.executable, f"{here}/sensor.py", "run", "--content", "{content}", "--ready-file",
                 "{ready_file}"),
        content_type="sensor/ipc-templates", crash="host", ready_timeout_s=20.0)


def test_config_dir_is_the_directory_of_the_file_even_when_given_relative(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path / "etc", """
        workload: {command: ["{config_dir}/sensor"], content_type: a}
    """)
    monkeypatch.chdir(tmp_path)

    config = load_config(Path("etc/agent.yaml"), **BASE)

    assert config.workload is not None
    assert config.workload.command == (f"{tmp_path.resolve()}/etc/sensor",)


BAD = [
    ("colour: red", "colour"),
    ("- just\n- a list", "<root>"),
    ("content_types: 5", "content_types"),
    ("content_types: [{a: 1}]", "content_types"),
    ("content_types: {a: {colour: red}}", "content_types.a.colour"),
    ("content_types: {a: 7}", "content_types.a"),
    ("content_types: {a: {applier: docker}}", "content_types.a.applier"),
    ("content_types: {a: {applier: command}}", "content_types.a.install"),
    ("content_types: {a: {applier: command, install: []}}", "content_types.a.install"),
    ("content_types: {a: {applier: command, install: [{x: 1}]}}", "content_types.a.install"),
    ("content_types: {a: {applier: command, install: [x], rollback: 5}}", "content_types.a.rollback"),
    ("content_types: {a: {applier: command, install: [x], command_timeout: 0}}", "content_types.a.command_timeout"),
    ("content_types: {a: {install: [x]}}", "content_types.a"),
    ("content_types: {a: {command_timeout: 5m}}", "content_types.a"),
    ("content_types: {a: {file_name: sub/dir.json}}", "content_types.a.file_name"),
    ("content_types: {a: {file_name: .hidden}}", "content_types.a.file_name"),
    ("content_types: {a: {file_name: ''}}", "content_types.a.file_name"),
    ("content_types: {a: {extract_tar: 'yes'}}", "content_types.a.extract_tar"),
    ("content_types: {a: {keep: 1}}", "content_types.a.keep"),
    ("content_types: {a: {keep: 2.5}}", "content_types.a.keep"),
    ("content_types: {a: {probe: ping}}", "content_types.a.probe"),
    ("content_types: {a: {probe: 5}}", "content_types.a.probe"),
    ("content_types: {a: {probe: {command: [x], http: 'http://h/'}}}", "content_types.a.probe"),
    ("content_types: {a: {probe: {timeout: 5s}}}", "content_types.a.probe"),
    ("content_types: {a: {probe: {command: [x], retries: 3}}}", "content_types.a.probe.retries"),
    ("content_types: {a: {probe: {command: []}}}", "content_types.a.probe.command"),
    ("content_types: {a: {probe: {http: 'ftp://h/x'}}}", "content_types.a.probe.http"),
    ("content_types: {a: {probe: {http: 'localhost:80'}}}", "content_types.a.probe.http"),
    ("content_types: {a: {probe: {http: 'http://h/', timeout: 0s}}}", "content_types.a.probe.timeout"),
    ("content_types: {a: {trial: 0}}", "content_types.a.trial"),
    ("content_types: {a: {trial: -5}}", "content_types.a.trial"),
    ("content_types: {a: {trial: soon}}", "content_types.a.trial"),
    ("content_types: {a: {trial: true}}", "content_types.a.trial"),
    ("content_types: {Bad Name: {}}", "content_types.Bad Name"),
    ("content_types: {../up: {}}", "content_types.../up"),
    ("revocation_timeout: 0s", "revocation_timeout"),
    ("revocation_timeout: -1", "revocation_timeout"),
    ("request_timeout: 5 minutes", "request_timeout"),
    ("heartbeat: .nan", "heartbeat"),
    ("heartbeat: .inf", "heartbeat"),
    ("boot_limit: 0", "boot_limit"),
    ("boot_limit: true", "boot_limit"),
    ("boot_limit: '2'", "boot_limit"),
    ("max_download_bytes: 0", "max_download_bytes"),
    ("workload: [sensor]", "workload"),
    ("workload: {command: [sensor]}", "workload"),
    ("workload: {content_type: a}", "workload"),
    ("workload: {command: [sensor], content_type: a, crash: kernel}", "workload.crash"),
    ("workload: {command: [sensor], content_type: a, restart: always}", "workload.restart"),
    ("workload: {command: [], content_type: a}", "workload.command"),
    ("workload: {command: [sensor], content_type: a, ready_timeout: 0}", "workload.ready_timeout"),
    ("trust: keys/1.root.json", "trust"),
    ("trust: {root: 5}", "trust.root"),
    ("trust: {root: ''}", "trust.root"),
    ("trust: {root: r.json, mirror: x}", "trust.mirror"),
]


@pytest.mark.parametrize(("text", "where"), BAD, ids=[t for t, _ in BAD])
def test_bad_config_is_refused_naming_the_field(tmp_path: Path, text: str, where: str) -> None:
    path = write(tmp_path, text)

    with pytest.raises(InvalidInput) as caught:
        load_config(path, **BASE)

    assert caught.value.details["field"] == where
    assert f"{path}: {where}: " in caught.value.message


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        boot_limit: 2
        content_types:
          a: {keep: 3
        heartbeat: 5s
    """)

    with pytest.raises(InvalidInput) as caught:
        load_config(path, **BASE)

    assert caught.value.details["field"] == "config"
    assert f"{path} line 4 is not valid YAML" in caught.value.message


def test_a_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read the agent config") as caught:
        load_config(tmp_path / "nope.yaml", **BASE)

    assert caught.value.details["field"] == "config"


# -- attributes -------------------------------------------------------------------------------

def test_attributes_from_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, """
        platform: linux
        os_version: 22.04
        arch: x86_64
        region: eu-west
        agent_version: 3
        channel: beta
        tags: [edge, pos-terminal]
    """, "attributes.yaml")

    assert load_attributes(path) == {"platform": "linux", "os_version": "22.04", "arch": "x86_64",
                                      "region": "eu-west", "agent_version": "3", "channel": "beta",
                                      "tags": ["edge", "pos-terminal"]}


def test_attributes_from_json(tmp_path: Path) -> None:
    path = write(tmp_path, '{"platform": "windows", "tags": []}', "attributes.json")

    assert load_attributes(path) == {"platform": "windows", "tags": []}


BAD_ATTRIBUTES = [
    ("colour: red", "colour"),
    ("tags: edge", "tags"),
    ("tags: [edge, 5]", "tags"),
    ("platform: [linux]", "platform"),
    ("region: true", "region"),
    ("region:", "region"),
    ("- platform: linux", "attributes"),
    ("just a string", "attributes"),
    ("platform: [linux", "attributes"),
]


@pytest.mark.parametrize(("text", "where"), BAD_ATTRIBUTES, ids=[t for t, _ in BAD_ATTRIBUTES])
def test_bad_attributes_are_refused_naming_the_field(tmp_path: Path, text: str, where: str) -> None:
    path = write(tmp_path, text, "attributes.yaml")

    with pytest.raises(InvalidInput) as caught:
        load_attributes(path)

    assert caught.value.details["field"] == where
    assert str(path) in caught.value.message


def test_a_missing_attributes_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="cannot read the attributes file") as caught:
        load_attributes(tmp_path / "nope.yaml")

    assert caught.value.details["field"] == "attributes"


# -- signed delivery: the trusted root -------------------------------------------------------

def test_the_trusted_root_is_resolved_against_the_config_files_directory(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path / "etc", "trust: {root: keys/1.root.json}\n")
    monkeypatch.chdir(tmp_path)

    config = load_config(Path("etc/agent.yaml"), **BASE)

    assert config.trusted_root == tmp_path.resolve() / "etc" / "keys" / "1.root.json"
    assert AgentConfig(**BASE).trusted_root is None  # without one, artifacts are not TUF-verified


def test_the_command_lines_trusted_root_wins_over_the_config_file(tmp_path: Path) -> None:
    path = write(tmp_path, "trust: {root: /etc/ringfence/root.json}\n")

    config = load_config(path, **BASE, trusted_root=tmp_path / "given.json")

    assert config.trusted_root == tmp_path / "given.json"
    assert load_config(path, **BASE).trusted_root == Path("/etc/ringfence/root.json")


@pytest.fixture
def _root_logger_restored() -> Iterator[None]:
    """``run_agent`` configures the root logger for the process; give the next test its own back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("_root_logger_restored")
def test_a_trusted_root_that_is_not_a_root_stops_the_agent_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ringfence.agent.daemon import main

    (tmp_path / "root.json").write_text("{}")
    code = main(["--server", "http://127.0.0.1:9", "--state-dir", str(tmp_path / "state"), "--once",
                 "--trusted-root", str(tmp_path / "root.json")])

    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: cannot use the trusted root {tmp_path / 'root.json'}: ")


@pytest.mark.usefixtures("_root_logger_restored")
def test_a_missing_trusted_root_stops_the_agent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ringfence.agent.daemon import main

    code = main(["--server", "http://127.0.0.1:9", "--state-dir", str(tmp_path / "state"), "--once",
                 "--trusted-root", str(tmp_path / "nowhere.json")])

    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"error: cannot use the trusted root {tmp_path / 'nowhere.json'}: No such file or directory"

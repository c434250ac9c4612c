"""The agent's settings: safety limits with conservative defaults, and how each content type
is applied and probed. One typed config; nothing else in the agent has a magic number.

The optional config file (``ringfence agent run --config FILE``) is YAML::

    boot_limit: 2                 # boots of a version in trial before the crash-loop guard reverts
    revocation_timeout: 2s        # the start-up revocation check gives up after this
    max_download_bytes: 1073741824
    trust:                        # signed delivery: every artifact must be a TUF target
      root: keys/1.root.json      # the root shipped with the agent (relative to this file)
    content_types:
      sensor/ipc-templates:       # settings for one content type ("default" applies to the rest)
        applier: content          # content (files, atomic link swap) or command
        file_name: channel.json   # the artifact's file name inside its version directory
        keep: 3                   # versions kept on disk
        trial: 10s                # how long a new version must stay healthy before it is committed
        probe: workload           # none, workload, {command: [argv...], timeout: 10s} or {http: URL}
        install: [argv...]        # command applier: install, rollback, remove; command_timeout: 5m
    workload:                     # the program that consumes the content (e.g. a sensor)
      command: ["{python}", "{config_dir}/sensor.py", "run", "--content", "{content}",
                "--ready-file", "{ready_file}"]
      content_type: sensor/ipc-templates
      crash: process              # or host: its crash takes the machine (and the agent) down

With a trusted root (``trust.root``, or ``--trusted-root`` which takes precedence), every
artifact is verified with TUF before it is staged and downgrades need a signed revocation (see
:mod:`ringfence.agent.signed`); without one, only the sha256 the server names is checked.

``{python}`` is the agent's interpreter and ``{config_dir}`` the config file's directory; in
the workload command ``{content}`` is the active version's directory, ``{ready_file}`` the file
the workload writes once it has loaded, and ``{platform}`` the device's platform.
Every problem is reported with its field path.
"""

from __future__ import annotations

import math
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ringfence import __version__
from ringfence.agent.appliers import Commands, Unpack
from ringfence.agent.workload import WorkloadSpec
from ringfence.core.durations import parse_duration
from ringfence.core.errors import InvalidInput
from ringfence.core.models import check_content_type_name

PROBE_KINDS = ("none", "workload", "command", "http")


@dataclass(frozen=True, slots=True)
class ProbeSpec:
    kind: str = "none"
    command: tuple[str, ...] = ()
    url: str = ""
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class ContentTypeSpec:
    applier: str = "content"
    unpack: Unpack = field(default_factory=Unpack)
    commands: Commands | None = None
    probe: ProbeSpec = field(default_factory=ProbeSpec)
    trial_s: float = 10.0
    keep: int = 3


@dataclass(frozen=True, slots=True)
class AgentConfig:
    server: str
    state_dir: Path
    enroll_token: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    boot_limit: int = 2
    revocation_timeout_s: float = 2.0
    request_timeout_s: float = 10.0
    download_timeout_s: float = 300.0
    max_download_bytes: int = 1 << 30
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 300.0
    jitter: float = 0.1  # check-ins are spread by +-10% of the interval
    heartbeat_s: float = 5.0  # check-in interval while a version is in trial
    poll_bounds_s: tuple[float, float] = (1.0, 3600.0)  # the server's interval is clamped to this
    max_download_failures: int = 3  # corrupt downloads of one version before it is given up
    content_types: dict[str, ContentTypeSpec] = field(default_factory=dict)
    default: ContentTypeSpec = field(default_factory=ContentTypeSpec)
    workload: WorkloadSpec | None = None
    trusted_root: Path | None = None  # the TUF root shipped with the agent; None: artifacts are not TUF-verified

    def spec(self, content_type: str) -> ContentTypeSpec:
        return self.content_types.get(content_type, self.default)


def load_config(path: Path, **base: Any) -> AgentConfig:
    """Read a config file; ``base`` holds what came from the command line."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidInput(f"cannot read the agent config {path}: {exc.strerror}", field="config",
                           value=str(path)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise InvalidInput(f"agent config {path}{where} is not valid YAML", field="config", value=str(path)) from None
    return _Reader(path).config(raw or {}, base)


def default_attributes() -> dict[str, Any]:
    """What the agent can tell about its host without being told."""
    system = platform.system().lower()
    family = {"darwin": "macos", "windows": "windows"}.get(system, system or "unknown")
    return {"platform": family, "os_version": platform.release()[:64], "arch": platform.machine().lower()[:32],
            "agent_version": __version__}


def load_attributes(path: Path) -> dict[str, Any]:
    """A device's self-description (platform, os_version, arch, region, tags, agent_version)."""
    allowed = {"platform", "os_version", "arch", "region", "tags", "agent_version", "channel"}
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidInput(f"cannot read the attributes file {path}: {exc.strerror}", field="attributes",
                           value=str(path)) from None
    except yaml.YAMLError:
        raise InvalidInput(f"attributes file {path} is not valid YAML or JSON", field="attributes",
                           value=str(path)) from None
    if not isinstance(raw, dict):
        raise InvalidInput(f"attributes file {path} must hold a mapping", field="attributes", value=str(path))
    for key, value in raw.items():
        if key not in allowed:
            raise InvalidInput(f"attributes file {path}: unknown field {key!r}; expected one of "
                               f"{', '.join(sorted(allowed))}", field=str(key), value=value)
        if key == "tags":
            if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
                raise InvalidInput(f"attributes file {path}: tags must be a list of strings", field="tags",
                                   value=value)
        elif not isinstance(value, str | int | float) or isinstance(value, bool):
            raise InvalidInput(f"attributes file {path}: {key} must be a string", field=str(key), value=value)
    return {k: (v if k == "tags" else str(v)) for k, v in raw.items()}


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.substitutions = {"{python}": sys.executable, "{config_dir}": str(path.resolve().parent)}

    def fail(self, where: str, message: str, value: Any = None) -> InvalidInput:
        return InvalidInput(f"agent config {self.path}: {where}: {message}", field=where, value=value)

    def mapping(self, raw: Any, where: str, allowed: set[str]) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.fail(where or "<root>", "must be a mapping", raw)
        for key in raw:
            if key not in allowed:
                path = f"{where}.{key}" if where else str(key)
                raise self.fail(path, f"unknown field; expected one of {', '.join(sorted(allowed))}", key)
        return raw

    def seconds(self, raw: Any, where: str) -> float:
        if isinstance(raw, bool):
            raise self.fail(where, "must be a duration like 2s or 5m", raw)
        if isinstance(raw, int | float):
            value = float(raw)
        else:
            try:
                value = parse_duration(str(raw)).total_seconds()
            except ValueError as exc:
                raise self.fail(where, str(exc), raw) from None
        if not math.isfinite(value) or value <= 0:
            raise self.fail(where, "must be positive", raw)
        return value

    def integer(self, raw: Any, where: str, minimum: int) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < minimum:
            raise self.fail(where, f"must be an integer >= {minimum}", raw)
        return raw

    def argv(self, raw: Any, where: str) -> tuple[str, ...]:
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not raw or not all(isinstance(a, str | int | float) for a in raw):
            raise self.fail(where, "must be a command: a non-empty list of arguments", raw)
        out = []
        for arg in raw:
            text = str(arg)
            for key, value in self.substitutions.items():
                text = text.replace(key, value)
            out.append(text)
        return tuple(out)

    def config(self, raw: Any, base: dict[str, Any]) -> AgentConfig:
        top = self.mapping(raw, "", {"boot_limit", "revocation_timeout", "max_download_bytes", "heartbeat",
                                     "request_timeout", "content_types", "workload", "trust"})
        values = dict(base)
        if "boot_limit" in top:
            values["boot_limit"] = self.integer(top["boot_limit"], "boot_limit", 1)
        if "revocation_timeout" in top:
            values["revocation_timeout_s"] = self.seconds(top["revocation_timeout"], "revocation_timeout")
        if "request_timeout" in top:
            values["request_timeout_s"] = self.seconds(top["request_timeout"], "request_timeout")
        if "heartbeat" in top:
            values["heartbeat_s"] = self.seconds(top["heartbeat"], "heartbeat")
        if "max_download_bytes" in top:
            values["max_download_bytes"] = self.integer(top["max_download_bytes"], "max_download_bytes", 1)
        specs: dict[str, ContentTypeSpec] = {}
        raw_types = top.get("content_types", {})
        for name, body in self.mapping(raw_types, "content_types", set(
                raw_types if isinstance(raw_types, dict) else ())).items():
            where = f"content_types.{name}"
            if name != "default":
                try:
                    check_content_type_name(str(name))
                except InvalidInput as exc:
                    raise self.fail(where, exc.message, name) from None
            specs[str(name)] = self.content_type(body, where)
        if "default" in specs:
            values["default"] = specs.pop("default")
        values["content_types"] = specs
        if "workload" in top:
            values["workload"] = self.workload(top["workload"])
        if "trust" in top:
            root = self.trusted_root(top["trust"])
            if values.get("trusted_root") is None:  # the command line's --trusted-root wins
                values["trusted_root"] = root
        return AgentConfig(**values)

    def trusted_root(self, raw: Any) -> Path:
        body = self.mapping(raw, "trust", {"root"})
        root = body.get("root")
        if not isinstance(root, str) or not root:
            raise self.fail("trust.root", "must be the path of the root file shipped with the agent", root)
        return self.path.resolve().parent / Path(root).expanduser()

    def content_type(self, raw: Any, where: str) -> ContentTypeSpec:
        body = self.mapping(raw or {}, where, {"applier", "file_name", "extract_tar", "keep", "trial", "probe",
                                               "install", "rollback", "remove", "command_timeout"})
        applier = body.get("applier", "content")
        if applier not in ("content", "command"):
            raise self.fail(f"{where}.applier", "must be content or command", applier)
        file_name = str(body.get("file_name", "content"))
        if "/" in file_name or file_name.startswith(".") or not file_name:
            raise self.fail(f"{where}.file_name", "must be a plain file name", file_name)
        extract = body.get("extract_tar", True)
        if not isinstance(extract, bool):
            raise self.fail(f"{where}.extract_tar", "must be true or false", extract)
        commands = None
        if applier == "command":
            if "install" not in body:
                raise self.fail(f"{where}.install", "is required for the command applier")
            commands = Commands(
                install=self.argv(body["install"], f"{where}.install"),
                rollback=self.argv(body["rollback"], f"{where}.rollback") if "rollback" in body else (),
                remove=self.argv(body["remove"], f"{where}.remove") if "remove" in body else (),
                timeout_s=self.seconds(body.get("command_timeout", 300), f"{where}.command_timeout"))
        elif {"install", "rollback", "remove", "command_timeout"} & body.keys():
            raise self.fail(where, "install, rollback, remove and command_timeout need applier: command")
        return ContentTypeSpec(
            applier=applier, unpack=Unpack(file_name=file_name, extract_tar=extract), commands=commands,
            probe=self.probe(body.get("probe", "none"), f"{where}.probe"),
            trial_s=self.seconds(body.get("trial", 10), f"{where}.trial"),
            keep=self.integer(body.get("keep", 3), f"{where}.keep", 2))

    def probe(self, raw: Any, where: str) -> ProbeSpec:
        if isinstance(raw, str):
            if raw not in ("none", "workload"):
                raise self.fail(where, "must be none, workload, {command: [...]} or {http: URL}", raw)
            return ProbeSpec(kind=raw)
        body = self.mapping(raw, where, {"command", "http", "timeout"})
        timeout = self.seconds(body.get("timeout", 10), f"{where}.timeout")
        if ("command" in body) == ("http" in body):
            raise self.fail(where, "needs exactly one of command or http", raw)
        if "command" in body:
            return ProbeSpec(kind="command", command=self.argv(body["command"], f"{where}.command"),
                             timeout_s=timeout)
        url = str(body["http"])
        if not url.startswith(("http://", "https://")):
            raise self.fail(f"{where}.http", "must be an http:// or https:// URL", url)
        return ProbeSpec(kind="http", url=url, timeout_s=timeout)

    def workload(self, raw: Any) -> WorkloadSpec:
        body = self.mapping(raw, "workload", {"command", "content_type", "crash", "ready_timeout"})
        if "command" not in body or "content_type" not in body:
            raise self.fail("workload", "needs command and content_type", raw)
        crash = body.get("crash", "process")
        if crash not in ("process", "host"):
            raise self.fail("workload.crash", "must be process or host", crash)
        return WorkloadSpec(command=self.argv(body["command"], "workload.command"),
                            content_type=str(body["content_type"]), crash=crash,
                            ready_timeout_s=self.seconds(body.get("ready_timeout", 10), "workload.ready_timeout"))

"""A sample sensor: the program a content update can crash.

On 19 July 2024 an endpoint sensor loaded Channel File 291. Its template type declared 21 input
fields; the sensor supplied 20. Earlier instances of that template type had a wildcard on the 21st
field, and a wildcard matches without reading its field, so nothing ever read index 20. The new
instances had a real criterion there: the content interpreter read past the end of the input array
and the machine crashed as soon as the content loaded.

This program reproduces that bug on purpose, as a real process, so that Ringfence's agent, tests and
demos supervise something that actually dies:

* It loads channel files (JSON, ``ringfence-sample-channel/1``) the way a detection engine loads
  templates: each instance names a template type, and each non-wildcard criterion reads one field of
  the input array that the sensor supplies for that type.
* Which fields a sensor supplies is fixed per sensor version (``SENSOR_VERSIONS``): 7.11 supplies 20
  fields for ``ipc-pipe``, 8.0 supplies 21. That table is the *consumer interface*; ``describe``
  prints it for validators.
* A criterion on a field the content declares but the sensor does not supply is an out-of-bounds
  read. The sensor prints one line naming the instance, template and field, then calls
  ``os.abort()``: the process dies by SIGABRT, not by a polite exit code.
* Content that is malformed in any other way is refused cleanly (exit code 3) with a message that
  names the file, the instance and what is wrong. Only the 2024 bug crashes.

Guarantees: nothing is read from a field whose criterion is the wildcard ``*``; content is parsed and
checked in full before any instance is interpreted; the ready file is only ever replaced atomically;
``run`` exits 0 within half a second of SIGTERM or SIGINT. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn, TypeVar

FORMAT = "ringfence-sample-channel/1"
WILDCARD = "*"
PLATFORMS = ("windows", "macos", "linux")
DEFAULT_PLATFORM = "windows"
DEFAULT_VERSION = "7.11"
ENV_PLATFORM = "RINGFENCE_SENSOR_PLATFORM"
ENV_VERSION = "RINGFENCE_SENSOR_VERSION"

EXIT_OK = 0
EXIT_BAD_CONTENT = 3  # malformed content; usage errors exit 2 (argparse)

_FIELD_INDEX = re.compile(r"[0-9]+")
_T = TypeVar("_T")


# -- the consumer interface ------------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateSupport:
    """What one sensor version supplies for one template type."""

    fields: int
    platforms: tuple[str, ...] = PLATFORMS

    def inputs(self, template: str) -> list[str]:
        """The synthetic input array the sensor builds for an instance: exactly ``fields`` values."""
        return [f"{template}[{i}]" for i in range(self.fields)]


@dataclass(frozen=True)
class SensorVersion:
    """A released sensor: the template types it knows and how many input fields it supplies."""

    name: str
    templates: Mapping[str, TemplateSupport]


def _version(name: str, ipc_pipe_fields: int) -> SensorVersion:
    return SensorVersion(
        name,
        {
            "file-write": TemplateSupport(12),
            "ipc-pipe": TemplateSupport(ipc_pipe_fields, platforms=("windows",)),
            "process-start": TemplateSupport(16),
        },
    )


SENSOR_VERSIONS: Mapping[str, SensorVersion] = {
    "7.11": _version("7.11", ipc_pipe_fields=20),  # the 2024 mismatch: content may declare 21
    "8.0": _version("8.0", ipc_pipe_fields=21),  # the fixed sensor
}


def consumer_interface(version: str | None = None) -> dict[str, Any]:
    """The consumer interface as data: per sensor version, per template type, the fields supplied.

    Every field is a string. ``platforms`` lists where instances of the type are interpreted; on other
    platforms they are skipped.
    """
    names = [version] if version is not None else list(SENSOR_VERSIONS)
    versions: dict[str, Any] = {}
    for name in names:
        sensor = SENSOR_VERSIONS[name]
        versions[name] = {
            "template_types": {
                template: {
                    "fields": support.fields,
                    "platforms": list(support.platforms),
                    "inputs": [{"index": i, "name": f"field{i}", "type": "string"} for i in range(support.fields)],
                }
                for template, support in sorted(sensor.templates.items())
            }
        }
    return {"format": FORMAT, "default_version": DEFAULT_VERSION, "platforms": list(PLATFORMS), "versions": versions}


# -- content ---------------------------------------------------------------------------------------


class ContentError(Exception):
    """A channel file is malformed. The sensor refuses it cleanly: exit code 3, nothing interpreted."""

    def __init__(self, path: Path, problem: str, instance: str | None = None) -> None:
        self.path = path
        self.problem = problem
        self.instance = instance
        where = f"{path}: instance {instance!r}" if instance is not None else str(path)
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Criterion:
    """One field test: ``pattern`` is compared with ``inputs[index]``, unless it is the wildcard."""

    index: int
    pattern: str

    @property
    def wildcard(self) -> bool:
        return self.pattern == WILDCARD


@dataclass(frozen=True)
class Instance:
    """A template instance from a channel file."""

    id: str
    template: str
    criteria: tuple[Criterion, ...]
    source: Path


@dataclass(frozen=True)
class ChannelFile:
    path: Path
    template_types: Mapping[str, int]  # declared field count per template type
    instances: tuple[Instance, ...]


def content_files(content: Path) -> list[Path]:
    """The channel files at ``content``: a directory's ``*.json`` in sorted order, or one file.

    A missing path means no content, which is a valid state for a sensor.
    """
    if content.is_dir():
        return sorted(p for p in content.glob("*.json") if p.is_file())
    if content.exists():
        return [content]
    return []


def parse_channel_file(path: Path) -> ChannelFile:
    """Read and check one channel file completely; raises ``ContentError`` naming what is wrong."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ContentError(path, f"cannot be read: {exc}") from exc
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ContentError(path, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    if not isinstance(doc, dict):
        raise ContentError(path, f"top level must be a JSON object, not {_kind(doc)}")
    if doc.get("format") != FORMAT:
        found = repr(doc["format"]) if "format" in doc else "missing"
        raise ContentError(path, f"format is {found}, expected {FORMAT!r}")

    declared = _template_types(path, _required(path, doc, "template_types", dict))
    instances: list[Instance] = []
    seen: set[str] = set()
    for position, item in enumerate(_required(path, doc, "instances", list)):
        instance = _instance(path, position, item, declared)
        if instance.id in seen:
            raise ContentError(path, "duplicate instance id", instance.id)
        seen.add(instance.id)
        instances.append(instance)
    return ChannelFile(path, declared, tuple(instances))


def _template_types(path: Path, raw: dict[str, Any]) -> dict[str, int]:
    declared: dict[str, int] = {}
    for name, spec in raw.items():
        fields = spec.get("fields") if isinstance(spec, dict) else None
        if not isinstance(fields, int) or isinstance(fields, bool) or fields < 1:
            raise ContentError(path, f"template type {name!r}: 'fields' must be a positive integer")
        declared[name] = fields
    return declared


def _instance(path: Path, position: int, item: object, declared: Mapping[str, int]) -> Instance:
    if not isinstance(item, dict):
        raise ContentError(path, f"instances[{position}] must be a JSON object, not {_kind(item)}")
    instance_id = item.get("id")
    if not isinstance(instance_id, str) or not instance_id:
        raise ContentError(path, f"instances[{position}] has no 'id' (a non-empty string)")
    template = item.get("template")
    if not isinstance(template, str):
        raise ContentError(path, "missing 'template' (a template type name)", instance_id)
    if template not in declared:
        raise ContentError(path, f"template type {template!r} is not declared in 'template_types'", instance_id)
    raw_criteria = item.get("criteria")
    if not isinstance(raw_criteria, dict):
        raise ContentError(path, "missing 'criteria' (an object of field index -> pattern)", instance_id)

    fields = declared[template]
    criteria: list[Criterion] = []
    for key, pattern in raw_criteria.items():
        if not _FIELD_INDEX.fullmatch(key):
            raise ContentError(
                path, f"criterion key {key!r} is not a field index (a non-negative integer)", instance_id
            )
        index = int(key)
        if index >= fields:
            raise ContentError(
                path,
                f"criterion on field {index} but template type {template!r} declares {fields} fields (0-{fields - 1})",
                instance_id,
            )
        if not isinstance(pattern, str):
            raise ContentError(path, f"criterion on field {index}: pattern must be a string", instance_id)
        criteria.append(Criterion(index, pattern))
    return Instance(instance_id, template, tuple(sorted(criteria, key=lambda c: c.index)), path)


def _required(path: Path, doc: Mapping[str, Any], key: str, kind: type[_T]) -> _T:
    value = doc.get(key)
    if not isinstance(value, kind):
        found = "nothing" if key not in doc else f"a JSON {_kind(value)}"
        raise ContentError(path, f"{key!r} must be a JSON {_KINDS[kind]}, found {found}")
    return value


_KINDS: Mapping[type, str] = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}


def _kind(value: object) -> str:
    return _KINDS.get(type(value), "number")


# -- interpreting ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """What a sensor is running after loading its content."""

    sensor: SensorVersion
    platform: str
    files: tuple[Path, ...]
    instances: tuple[Instance, ...]  # interpreted and active
    skipped: tuple[Instance, ...]  # template type unknown to this sensor, or not on this platform
    matched: int  # instances whose every criterion matched the synthetic inputs

    def summary(self) -> dict[str, Any]:
        return {
            "sensor_version": self.sensor.name,
            "platform": self.platform,
            "instances": len(self.instances),
            "skipped": [i.id for i in self.skipped],
            "matched": self.matched,
            "files": [str(p) for p in self.files],
        }


def load(content: Path, sensor: SensorVersion, platform: str) -> Loaded:
    """Parse every channel file, then interpret every instance, as a sensor does at start-up.

    Raises ``ContentError`` for malformed content before anything is interpreted. An out-of-bounds
    read does not raise: the process aborts.
    """
    files = content_files(content)
    parsed = [parse_channel_file(path) for path in files]
    active: list[Instance] = []
    skipped: list[Instance] = []
    matched = 0
    for instance in (i for channel in parsed for i in channel.instances):
        support = sensor.templates.get(instance.template)
        if support is None:
            _say(
                f"warning: skipping instance {instance.id} ({instance.source}): template type"
                f" {instance.template!r} is unknown to sensor {sensor.name}"
            )
            skipped.append(instance)
            continue
        if platform not in support.platforms:
            _say(f"skipping instance {instance.id}: template type {instance.template!r} is not used on {platform}")
            skipped.append(instance)
            continue
        if _interpret(instance, sensor, support):
            matched += 1
        active.append(instance)
    return Loaded(sensor, platform, tuple(files), tuple(active), tuple(skipped), matched)


def _interpret(instance: Instance, sensor: SensorVersion, support: TemplateSupport) -> bool:
    """Evaluate an instance against the inputs the sensor supplies; True when every criterion matched.

    A wildcard matches without reading its field. Any other criterion reads ``inputs[index]``, and
    reading past the end of the array is the 2024 crash.
    """
    inputs = support.inputs(instance.template)
    matched = True
    for criterion in instance.criteria:
        if criterion.wildcard:
            continue
        try:
            value = inputs[criterion.index]
        except IndexError:
            _out_of_bounds_read(instance, sensor, criterion.index, len(inputs))
        matched = matched and value == criterion.pattern
    return matched


def _out_of_bounds_read(instance: Instance, sensor: SensorVersion, index: int, supplied: int) -> NoReturn:
    """Die the way the 2024 sensor died: at once, by signal, with no clean-up."""
    _say(
        f"out-of-bounds read: instance {instance.id} template {instance.template} reads field {index}"
        f" but sensor {sensor.name} supplies {supplied} fields (0-{supplied - 1})"
    )
    sys.stdout.flush()
    sys.stderr.flush()
    _no_core_file()
    os.abort()


def _no_core_file() -> None:
    """A crash loop should not fill the disk with core files."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_CORE)
        resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    except (OSError, ValueError):
        pass


# -- running ---------------------------------------------------------------------------------------


def write_ready_file(path: Path, state: Mapping[str, Any]) -> None:
    """Replace ``path`` atomically: a reader sees the old document or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run(loaded: Loaded, ready_file: Path | None, interval: float, stop: threading.Event) -> int:
    """Inspect every ``interval`` seconds until ``stop`` is set; keep the ready file's heartbeat fresh."""
    started = time.time()
    state: dict[str, Any] = {"pid": os.getpid(), "started_at": started, "heartbeat_at": started, **loaded.summary()}
    if ready_file is not None:
        write_ready_file(ready_file, state)
    _say(
        f"version {loaded.sensor.name} on {loaded.platform}: {len(loaded.instances)} instances"
        f" from {len(loaded.files)} files, running"
    )
    while not stop.wait(interval):
        if ready_file is not None:
            state["heartbeat_at"] = time.time()
            write_ready_file(ready_file, state)
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)
    _say("stopped")
    return EXIT_OK


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handle(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


# -- command line ----------------------------------------------------------------------------------


def _say(message: str) -> None:
    print(f"sensor: {message}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sensor.py",
        description="Sample sensor: loads channel files and crashes (SIGABRT) on an out-of-bounds field read.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def content_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--content", type=Path, required=True, help="a directory of *.json channel files, or one file")
        sub.add_argument("--platform", help=f"one of {', '.join(PLATFORMS)} (env {ENV_PLATFORM}; default windows)")
        sub.add_argument("--sensor-version", help=f"one of {', '.join(SENSOR_VERSIONS)} (env {ENV_VERSION})")

    run_cmd = commands.add_parser("run", help="load content, write the ready file, inspect until SIGTERM")
    content_options(run_cmd)
    run_cmd.add_argument("--ready-file", type=Path, help="JSON written once loaded, rewritten on every heartbeat")
    run_cmd.add_argument("--interval", type=float, default=1.0, help="seconds between inspections (default 1.0)")

    check_cmd = commands.add_parser("check", help="load content once and print a JSON summary")
    content_options(check_cmd)

    describe_cmd = commands.add_parser("describe", help="print the consumer interface of every sensor version")
    describe_cmd.add_argument("--sensor-version", help="only this version")
    describe_cmd.add_argument("--json", action="store_true", help="as JSON")
    return parser


def _resolve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[SensorVersion, str]:
    """Sensor version and platform: flag, else environment variable, else default."""
    version = args.sensor_version or os.environ.get(ENV_VERSION) or DEFAULT_VERSION
    platform = args.platform or os.environ.get(ENV_PLATFORM) or DEFAULT_PLATFORM
    if version not in SENSOR_VERSIONS:
        parser.error(f"unknown sensor version {version!r} (known: {', '.join(SENSOR_VERSIONS)})")
    if platform not in PLATFORMS:
        parser.error(f"unknown platform {platform!r} (known: {', '.join(PLATFORMS)})")
    return SENSOR_VERSIONS[version], platform


def _describe(interface: Mapping[str, Any]) -> str:
    lines: list[str] = [f"content format {interface['format']}; every input field is a string"]
    for name, version in interface["versions"].items():
        default = " (default)" if name == interface["default_version"] else ""
        lines.append(f"sensor {name}{default}")
        for template, spec in version["template_types"].items():
            lines.append(f"  {template:<14} {spec['fields']:>3} fields  on {', '.join(spec['platforms'])}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)

    if args.command == "describe":
        if args.sensor_version is not None and args.sensor_version not in SENSOR_VERSIONS:
            parser.error(f"unknown sensor version {args.sensor_version!r} (known: {', '.join(SENSOR_VERSIONS)})")
        interface = consumer_interface(args.sensor_version)
        print(json.dumps(interface, indent=2) if args.json else _describe(interface))
        return EXIT_OK

    sensor, platform = _resolve(parser, args)
    if args.command == "run" and not args.interval > 0:
        parser.error("--interval must be positive")
    stop = _stop_on_signals() if args.command == "run" else threading.Event()
    try:
        loaded = load(args.content, sensor, platform)
    except ContentError as exc:
        _say(f"bad content: {exc}")
        return EXIT_BAD_CONTENT

    if args.command == "check":
        print(json.dumps({"ok": True, **loaded.summary()}, sort_keys=True))
        return EXIT_OK
    return run(loaded, args.ready_file, args.interval, stop)


if __name__ == "__main__":
    sys.exit(main())

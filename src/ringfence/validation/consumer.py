"""The reference consumer, run as a real process: the one I/O seam of validation.

:func:`run_process` runs an argv with a timeout and returns an :class:`Outcome` — it never raises
for what the program did (exit code, death by signal, hang). :func:`consumer_interface` asks the
consumer what it supplies (``describe``) and reads the answer into a :class:`ConsumerInterface`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ringfence.validation.definition import Consumer

_TAIL = 2000  # characters of output kept per run


class ConsumerUnavailable(Exception):
    """The consumer could not be run or did not describe itself; validators that need it say error."""


@dataclass(frozen=True)
class Outcome:
    """How one process ended. ``returncode`` is negative when it was killed by a signal."""

    argv: tuple[str, ...]
    returncode: int | None  # None: timed out (and was killed)
    stdout: str
    stderr: str
    seconds: float

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    @property
    def signal_name(self) -> str | None:
        if self.returncode is None or self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"

    @property
    def last_words(self) -> str:
        """The last non-empty line on stderr (or stdout): usually why it stopped."""
        for stream in (self.stderr, self.stdout):
            lines = [line.strip() for line in stream.splitlines() if line.strip()]
            if lines:
                return lines[-1]
        return ""

    def as_dict(self) -> dict[str, Any]:
        return {"argv": list(self.argv), "returncode": self.returncode, "signal": self.signal_name,
                "timed_out": self.timed_out, "seconds": round(self.seconds, 3),
                "stdout": self.stdout[-_TAIL:], "stderr": self.stderr[-_TAIL:]}


def expand(argv: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """Fill ``{python}``, ``{artifact}``, ``{os}``... in each argument; unknown braces stay as written."""
    filled = {"python": sys.executable, **values}
    out: list[str] = []
    for arg in argv:
        text = arg
        for key, value in filled.items():
            text = text.replace("{" + key + "}", value)
        out.append(text)
    return out


def run_process(argv: Sequence[str], cwd: Path, timeout_s: float) -> Outcome:
    """Run ``argv`` from ``cwd`` in its own process group; a program that outlives ``timeout_s``
    is killed with everything it started and reported as timed out. A program that cannot be
    started at all raises ConsumerUnavailable."""
    import time

    started = time.monotonic()
    try:
        proc = subprocess.Popen(list(argv), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    except OSError as exc:
        raise ConsumerUnavailable(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from None
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        return Outcome(tuple(argv), None, _text(stdout), _text(stderr), time.monotonic() - started)
    return Outcome(tuple(argv), proc.returncode, stdout, stderr, time.monotonic() - started)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


@dataclass(frozen=True)
class TemplateInterface:
    fields: int
    platforms: tuple[str, ...]


@dataclass(frozen=True)
class ConsumerInterface:
    """Per consumer version, per template type: how many input fields it supplies, and where."""

    versions: Mapping[str, Mapping[str, TemplateInterface]]

    @classmethod
    def from_document(cls, doc: Any) -> ConsumerInterface:
        try:
            return cls({
                version: {name: TemplateInterface(int(spec["fields"]), tuple(spec.get("platforms", ())))
                          for name, spec in body["template_types"].items()}
                for version, body in doc["versions"].items()
            })
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConsumerUnavailable(f"the consumer's interface document is not understood ({exc!r})") from None


def consumer_interface(consumer: Consumer, cwd: Path) -> ConsumerInterface:
    """Run the consumer's ``describe`` command and read its interface."""
    outcome = run_process(expand([*consumer.command, *consumer.describe], {}), cwd, consumer.timeout_s)
    if outcome.returncode != 0:
        how = "timed out" if outcome.timed_out else f"exited {outcome.returncode}"
        raise ConsumerUnavailable(f"{consumer.name} describe {how}: {outcome.last_words}")
    try:
        return ConsumerInterface.from_document(json.loads(outcome.stdout))
    except json.JSONDecodeError as exc:
        raise ConsumerUnavailable(f"{consumer.name} describe did not print JSON: {exc.msg}") from None


def run_check(consumer: Consumer, cwd: Path, artifact: Path, values: Mapping[str, str]) -> Outcome:
    """Load ``artifact`` into the consumer once (its ``check`` command) for one platform and version."""
    argv = expand([*consumer.command, *consumer.check], {"artifact": str(artifact.resolve()), **values})
    return run_process(argv, cwd, consumer.timeout_s)

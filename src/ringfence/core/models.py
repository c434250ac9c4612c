"""Domain values shared by every room. Frozen dataclasses: nothing here talks to I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from ringfence.core.errors import InvalidInput


class Category(StrEnum):
    """What kind of content a content type carries; decides required validators and which
    customer controls apply."""

    RAPID_RESPONSE = "rapid-response"
    SYSTEM_CRITICAL = "system-critical"
    SOFTWARE = "software"
    CONFIGURATION = "configuration"


PLATFORMS = ("windows", "macos", "linux")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def check_content_type_name(name: str) -> str:
    if not _NAME.fullmatch(name) or len(name) > 128:
        raise InvalidInput(
            f"content type name {name!r} must be lower-case words joined by '/', '-', '_' or '.'",
            field="name",
            value=name,
        )
    return name


def check_version(version: str) -> str:
    if not _VERSION.fullmatch(version):
        raise InvalidInput(
            f"version {version!r} must be 1-128 characters of letters, digits, '.', '+', '_', '-'",
            field="version",
            value=version,
        )
    return version


def check_sha256(digest: str) -> str:
    if not _SHA256.fullmatch(digest):
        raise InvalidInput(
            f"sha256 {digest!r} must be 64 lower-case hex digits", field="sha256", value=digest
        )
    return digest


def parse_category(value: str) -> Category:
    try:
        return Category(value)
    except ValueError:
        allowed = ", ".join(c.value for c in Category)
        raise InvalidInput(
            f"unknown category {value!r}; expected one of {allowed}", field="category", value=value
        ) from None


@dataclass(frozen=True, slots=True)
class DeviceAttributes:
    """What a device says about itself at check-in, plus what enrolment decided (tenant)."""

    platform: str
    os_version: str = ""
    arch: str = ""
    region: str = ""
    tenant: str = "default"
    channel: str = "ga"
    tags: frozenset[str] = field(default_factory=frozenset)
    agent_version: str = ""

    def get(self, dimension: str) -> str:
        """The value of one stratum dimension (platform, os_version, arch, region, tenant,
        channel)."""
        if dimension not in STRATUM_DIMENSIONS:
            raise KeyError(dimension)
        value: str = getattr(self, dimension)
        return value or "unknown"


STRATUM_DIMENSIONS = ("platform", "os_version", "arch", "region", "tenant", "channel")
DEFAULT_STRATA: tuple[str, ...] = ("platform", "region")


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    attributes: DeviceAttributes


@dataclass(frozen=True, slots=True)
class ContentType:
    name: str
    category: Category


@dataclass(frozen=True, slots=True)
class Artifact:
    content_type: str
    version: str
    sha256: str
    size: int
    created_at: datetime


def stratum_key(attributes: DeviceAttributes, dimensions: tuple[str, ...]) -> str:
    """The stratum a device is judged in, e.g. ``windows/eu-west`` for platform x region."""
    return "/".join(attributes.get(d) for d in dimensions)


class EventKind(StrEnum):
    """What a device reports about a version, in the order of an update's life.

    ``intent`` is sent *before* activation, so a device that dies while activating is still
    counted as exposed. ``activated`` follows the atomic switch; ``healthy`` commits the version
    as the device's last-known-good; ``failed`` is an update that could not be applied or did
    not pass its trial; ``rolled_back`` is a return to the last-known-good while running because
    the version failed here, ``auto_reverted`` one made at start-up by the crash-loop guard, and
    ``recalled`` one the server ordered (the release was rolled back or the version revoked) — a
    revert, but not a failure of this device; ``crash`` is an unclean exit
    found at the next start; ``heartbeat`` says a version in trial is still alive.
    """

    INTENT = "intent"
    ACTIVATED = "activated"
    HEALTHY = "healthy"
    FAILED = "failed"
    CRASH = "crash"
    PROBE_FAILED = "probe_failed"
    ROLLED_BACK = "rolled_back"
    AUTO_REVERTED = "auto_reverted"
    RECALLED = "recalled"
    HEARTBEAT = "heartbeat"


FAILURE_KINDS = frozenset({EventKind.CRASH, EventKind.PROBE_FAILED, EventKind.FAILED, EventKind.ROLLED_BACK,
                           EventKind.AUTO_REVERTED})
REVERT_KINDS = frozenset({EventKind.ROLLED_BACK, EventKind.AUTO_REVERTED, EventKind.RECALLED})

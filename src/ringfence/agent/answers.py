"""What the server's check-in answer asks of this agent, checked before anything acts on it,
and the seam for verifying an artifact beyond its hash.

The answer comes over the network, so it is untrusted input: names and versions become
directory names, hashes are compared with what is downloaded. A malformed entry is logged and
ignored; it never reaches the update lifecycle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ringfence.agent.journal import State, VersionRef
from ringfence.core.errors import InvalidInput
from ringfence.core.models import check_content_type_name, check_sha256, check_version

log = logging.getLogger("ringfence.agent")


class Verifier(Protocol):
    """Checks an artifact beyond its hash (signatures). The hash itself is always checked."""

    def verify(self, content_type: str, ref: VersionRef, path: Path) -> None:
        """Raise ValueError naming what is wrong."""
        ...


class HashOnly:
    """The default verifier: the sha256 check the agent always does is the whole check."""

    def verify(self, content_type: str, ref: VersionRef, path: Path) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Desired:
    """One content type's entry of the answer: a target (``version`` None: no content), or a
    rollback away from ``rollback_from``; plus the plan's intent policy."""

    content_type: str
    version: str | None
    sha256: str
    size: int
    url: str
    release: str | None
    rollback_from: str | None
    require_intent_ack: bool
    intent_ack_timeout_s: float


def parse_desired(content_type: str, raw: Any) -> Desired | None:
    try:
        check_content_type_name(content_type)
        version = raw.get("version")
        if version is not None:
            check_version(str(version))
            check_sha256(str(raw["sha256"]))
        rollback_from = raw.get("rollback_from")
        activation = raw.get("activation") or {}
        return Desired(
            content_type=content_type, version=None if version is None else str(version),
            sha256=str(raw.get("sha256") or ""), size=int(raw.get("size") or 0), url=str(raw.get("url") or ""),
            release=raw.get("release"), rollback_from=None if rollback_from is None else str(rollback_from),
            require_intent_ack=bool(activation.get("require_intent_ack", True)),
            intent_ack_timeout_s=float(activation.get("intent_ack_timeout_s", 30.0)))
    except (InvalidInput, AttributeError, KeyError, TypeError, ValueError) as exc:
        log.error("ignoring the server's answer for %s: %s", content_type, exc)
        return None


@dataclass(frozen=True, slots=True)
class Revocation:
    """A version the device runs that the server revoked, and where to go instead."""

    content_type: str
    version: str
    back: VersionRef | None  # the last-known-good (or an older committed version); None: no content
    reason: str


def revocations(state: State, revoked: dict[str, Any], *, at_start: bool = False,
                gone: dict[str, set[str]] | None = None) -> list[Revocation]:
    """Of the server's ``revoked`` answer, the versions this device actually runs. ``gone``: more
    revoked versions per content type (from the signed revocations), never chosen as the way
    back."""
    out: list[Revocation] = []
    for content_type, info in revoked.items():
        c = state.content.get(content_type)
        version = str(info.get("version", ""))
        if c is None or c.active is None or c.active.version != version:
            continue
        reason = f"revoked by the server: {info.get('reason') or 'rolled back'}"
        if at_start:
            reason += " (found before loading it)"
        avoid = {version} | (gone or {}).get(content_type, set())
        back = c.lkg if c.lkg is not None and c.lkg.version not in avoid else c.way_back(version, avoid)
        out.append(Revocation(content_type, version, back, reason))
    return out

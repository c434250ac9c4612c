"""Durations as plans and agent settings write them: ``45s``, ``30m``, ``2h``, ``1d``, ``1h30m``, or
plain seconds. A module of its own so that the agent, which reads durations in its settings,
does not load the plan model with them."""

from __future__ import annotations

import re
from datetime import timedelta

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(text: str) -> timedelta:
    """Parse ``45s``, ``30m``, ``2h``, ``1d``, ``1h30m`` (or plain seconds) into a timedelta."""
    text = text.strip()
    if text.isdigit():
        return timedelta(seconds=int(text))
    m = _DURATION.fullmatch(text)
    if not text or not m:
        raise ValueError(f"{text!r} is not a duration like 45s, 30m, 2h, 1d or 1h30m")
    d, h, mi, s = (int(g) if g else 0 for g in m.groups())
    return timedelta(days=d, hours=h, minutes=mi, seconds=s)


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return "".join(parts)
